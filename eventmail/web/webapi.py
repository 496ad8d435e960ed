"""The webapi v0 as Mox's: POST /v0/<Method> with a form field `request` holding JSON, HTTP basic auth with the account's address; a GET on a method documents it.

Method names, JSON field names, the error object ({"Code", "Message"} with status 400), 401 for
bad credentials and 429 when the failed-login limits refuse are Mox's (webapi/webapi.go,
webapisrv/server.go), so a client written for Mox's Go package works unchanged. Where eventmail
differs, it says so in docs/web.md: message ids are (mailbox id << 32 | uid), so a move
gives the message a new id, as IMAP does; Send takes text, HTML and attached files, not yet
inline or alternative files.

Credentials are checked as IMAP checks them: a SASL PLAIN exchange under sasl.guard's limiter
(the same one the server's IMAP and SMTP listeners share, when the caller passes it). Writes go
through the mail layer (mail.moves, mail.suppressions); Send hands a composed message to the
caller's `send` (the submission path: DKIM, Sent copy, local delivery, outbound queue).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.policy
import email.utils
import html
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage, Message
from typing import Any, NoReturn

from aiohttp import web

from ..mail import moves, suppressions
from ..mail.moxjson import message_id, message_json, parse, split_message_id
from ..sasl import Failure, FailureReason, LoginLimiter, Success
from ..sasl.guard import may_send_password
from ..store import Account, Store, normalize_address
from .session import check_password

log = logging.getLogger("eventmail.webapi")

# The largest request body: a Send with base64 attachments. Mox's default message size limit
# is 100 MB; ours is kept lower until the listener's own limits land (docs/security.md).
# aiohttp holds every request to the client_max_size of the application that made it, the root
# one (64 KiB, web.server.HttpLimits.max_body_bytes), never a sub-application's: so the handler
# raises it for itself, after the login, rather than in make_webapi_app.
MAX_REQUEST_BYTES = 32 * 1024 * 1024


class ApiError(Exception):
    """A webapi error: answered 400 with {"Code": code, "Message": message}, as Mox does."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _fail(code: str, message: str) -> NoReturn:
    raise ApiError(code, message)


@dataclass(frozen=True)
class Outgoing:
    """A message composed by Send, for the submission path."""

    account: str
    mail_from: str
    recipients: list[str]
    message: bytes
    requiretls: bool
    remote_ip: str


# The submission path: queues `Outgoing` and returns its queue id (a hex string), or raises
# ApiError (e.g. "messageLimitReached").
Sender = Callable[[Outgoing], Awaitable[str]]


# ---------------------------------------------------------------- request decoding

def _field(req: Mapping[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """A field of the request, matched case-insensitively as Go's encoding/json does."""
    for k, v in req.items():
        if k.lower() == name.lower():
            if v is None:
                return default
            if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
                _fail("protocol", f"parsing request: field {name}: expected a number")
            if not isinstance(v, kind):
                _fail("protocol", f"parsing request: field {name}: wrong type")
            return v
    return default


def _check_fields(req: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    """Mox decodes with DisallowUnknownFields: an unknown field is a protocol error."""
    lower = {a.lower() for a in allowed}
    for k in req:
        if k.lower() not in lower:
            _fail("protocol", f'parsing request: json: unknown field "{k}"')


def _check_control(s: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in s):
        _fail("user", "checking header values: control characters not allowed")


def _address(addr: str) -> str:
    """An address as Mox's smtp.ParseAddress accepts it, or a badAddress error."""
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or any(c.isspace() or ord(c) < 0x20 for c in addr) or "@" in domain:
        _fail("badAddress", f"parsing address {addr!r}: invalid address")
    return addr


def _name_addresses(req: Mapping[str, Any], name: str) -> list[tuple[str, str]]:
    out = []
    for item in _field(req, name, list, []):
        if not isinstance(item, dict):
            _fail("protocol", f"parsing request: field {name}: expected objects")
        _check_fields(item, ("Name", "Address"))
        display = _field(item, "Name", str, "")
        _check_control(display)
        out.append((display, _address(_field(item, "Address", str, ""))))
    return out


def _flag_in(flag: str) -> str:
    """Mox names system flags in lower case (\\seen); the store keeps IMAP's spelling."""
    system = {"\\seen": "\\Seen", "\\answered": "\\Answered", "\\flagged": "\\Flagged",
              "\\deleted": "\\Deleted", "\\draft": "\\Draft"}
    if flag.lower() in system:
        return system[flag.lower()]
    if not flag or flag.startswith("\\") or any(c in '(){ %*"\\]' or ord(c) <= 0x20 or ord(c) >= 0x7F for c in flag):
        _fail("user", f"parsing flags: invalid keyword {flag!r}")
    return flag


def _flag_out(flag: str) -> str:
    return flag.lower() if flag.startswith("\\") else flag


# ---------------------------------------------------------------- message parts


def _part_bytes(raw: bytes, path: list[int]) -> bytes:
    part: Message = parse(raw)
    for i, index in enumerate(path):
        subparts = list(part.iter_parts()) if isinstance(part, EmailMessage) and part.is_multipart() else []
        if not isinstance(index, int) or index < 0 or index >= len(subparts):
            _fail("partNotFound", f"part {index} at index {i} not found")
        part = subparts[index]
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


# ---------------------------------------------------------------- the methods


@dataclass
class Call:
    """One authenticated call: the account and where it came from."""

    store: Store
    account: str
    login: str
    remote_ip: str
    request: Mapping[str, Any]


Handler = Callable[["WebApi", Call], Awaitable[Any]]


@dataclass(frozen=True)
class Method:
    handler: Handler
    fields: tuple[str, ...]
    example_request: dict[str, Any]
    example_response: dict[str, Any] | None  # None: the response is bytes
    doc: str


class WebApi:
    """The methods, with the dependencies the app factory was given."""

    def __init__(self, store: Store, send: Sender | None, hostname: str) -> None:
        self.store = store
        self.send_message = send
        self.hostname = hostname

    # Suppressions

    async def suppression_list(self, call: Call) -> dict[str, Any]:
        return {"Suppressions": [
            {"ID": s.id, "Created": _time(s.created_us), "Account": s.account, "BaseAddress": s.address,
             "OriginalAddress": s.address, "Manual": s.manual, "Reason": s.reason}
            for s in suppressions.suppressions(self.store, call.account)]}

    async def suppression_add(self, call: Call) -> dict[str, Any]:
        addr = _address(_field(call.request, "EmailAddress", str, ""))
        manual = _field(call.request, "Manual", bool, False)
        reason = _field(call.request, "Reason", str, "")
        await suppressions.add(self.store, call.account, addr, reason, manual)
        return {}

    async def suppression_remove(self, call: Call) -> dict[str, Any]:
        addr = _address(_field(call.request, "EmailAddress", str, ""))
        await suppressions.remove(self.store, call.account, addr)
        return {}

    async def suppression_present(self, call: Call) -> dict[str, Any]:
        addr = _address(_field(call.request, "EmailAddress", str, ""))
        return {"Present": suppressions.present(self.store, call.account, addr)}

    # Messages

    def _locate(self, acct: Account, call: Call) -> tuple[int, int, str, Any]:
        msg_id = _field(call.request, "MsgID", int, 0)
        mailbox_id, uid = split_message_id(msg_id)
        mb = acct.view.mailbox_by_id(mailbox_id) if msg_id > 0 else None
        m = acct.view.message(mailbox_id, uid) if mb is not None else None
        if mb is None or m is None:
            _fail("messageNotFound", "message not found")
        return mailbox_id, uid, mb.name, m

    async def message_get(self, call: Call) -> dict[str, Any]:
        async with self.store.use_account(call.account) as acct:
            _, _, mailbox, m = self._locate(acct, call)
            raw = await acct.read_message(m.blob_id)
        message, structure, msg_from = await asyncio.to_thread(message_json, raw)
        meta = {
            "Size": m.size, "DSN": structure["ContentType"] == "multipart/report",
            "Flags": [_flag_out(f) for f in m.flags], "MailFrom": "", "MailFromValidated": False, "RcptTo": "",
            "MsgFrom": msg_from, "MsgFromValidated": False, "DKIMVerifiedDomains": [], "RemoteIP": "",
            "MailboxName": mailbox,
        }
        return {"Message": message, "Structure": structure, "Meta": meta}

    async def message_raw_get(self, call: Call) -> bytes:
        async with self.store.use_account(call.account) as acct:
            _, _, _, m = self._locate(acct, call)
            return await acct.read_message(m.blob_id)

    async def message_part_get(self, call: Call) -> bytes:
        path = _field(call.request, "PartPath", list, [])
        async with self.store.use_account(call.account) as acct:
            _, _, _, m = self._locate(acct, call)
            raw = await acct.read_message(m.blob_id)
        return await asyncio.to_thread(_part_bytes, raw, path)

    async def message_delete(self, call: Call) -> dict[str, Any]:
        async with self.store.use_account(call.account) as acct:
            mailbox_id, uid, _, _ = self._locate(acct, call)
            await moves.expunge(acct, mailbox_id, [uid])
        return {}

    async def _flags(self, call: Call, mode: str) -> dict[str, Any]:
        flags = [_flag_in(f) if isinstance(f, str) else _fail("protocol", "parsing request: Flags: expected strings")
                 for f in _field(call.request, "Flags", list, [])]
        async with self.store.use_account(call.account) as acct:
            mailbox_id, uid, _, _ = self._locate(acct, call)
            await moves.set_flags(acct, mailbox_id, [uid], flags, mode="add" if mode == "add" else "remove")
        return {}

    async def message_flags_add(self, call: Call) -> dict[str, Any]:
        return await self._flags(call, "add")

    async def message_flags_remove(self, call: Call) -> dict[str, Any]:
        return await self._flags(call, "remove")

    async def message_move(self, call: Call) -> dict[str, Any]:
        dest = _field(call.request, "DestMailboxName", str, "")
        async with self.store.use_account(call.account) as acct:
            mailbox_id, uid, _, _ = self._locate(acct, call)
            target = acct.view.mailbox("INBOX" if dest.lower() == "inbox" else dest)
            if target is None:
                _fail("user", f"looking up destination mailbox: mailbox {dest!r} not found")
            if target.id != mailbox_id:
                await moves.copy(acct, mailbox_id, [uid], target.id, move=True)
        return {}

    # Send

    def _account_addresses(self, account: str) -> list[str]:
        return sorted(a for a, owner in self.store.system.addresses.items() if owner == account and not a.startswith("@"))

    async def send(self, call: Call) -> dict[str, Any]:
        req = call.request
        text, html_body = _field(req, "Text", str, ""), _field(req, "HTML", str, "")
        if not text and not html_body:
            _fail("missingBody", "at least text or html body required")
        froms = _name_addresses(req, "From")
        if len(froms) > 1:
            _fail("multipleFrom", "multiple from-addresses not allowed")
        if froms:
            from_name, from_addr = froms[0]
        else:
            own = self._account_addresses(call.account)
            login = normalize_address(call.login)
            from_name, from_addr = "", login if login in own else (own[0] if own else "")
        if self.store.system.account_for(from_addr) != call.account:
            _fail("badFrom", "from-address not configured for account")
        to, cc, bcc = (_name_addresses(req, n) for n in ("To", "CC", "BCC"))
        recipients = [a for _, a in to + cc + bcc]
        if not recipients:
            _fail("noRecipients", "no recipients")
        for name in ("AlternativeFiles", "InlineFiles"):
            if _field(req, name, list, []):
                _fail("user", f"{name} are not supported yet by this server; use AttachedFiles")
        if _field(req, "FutureRelease", str, ""):
            _fail("user", "FutureRelease is not supported yet by this server")
        for addr in recipients:
            if self.store.system.account_for(addr) is None and suppressions.present(self.store, call.account, addr):
                _fail("user", f"{addr} is on the suppression list")

        msg = EmailMessage(policy=email.policy.SMTP)
        msg["From"] = Address(from_name, addr_spec=from_addr)
        for header, addrs in (("To", to), ("Cc", cc), ("Reply-To", _name_addresses(req, "ReplyTo"))):
            if addrs:
                msg[header] = [Address(n, addr_spec=a) for n, a in addrs]
        subject = _field(req, "Subject", str, "")
        _check_control(subject)
        if subject:
            msg["Subject"] = subject
        mid = _field(req, "MessageID", str, "")
        _check_control(mid)
        if mid and not (mid.startswith("<") and mid.endswith(">")):
            _fail("malformedMessageID", "missing <> in message-id")
        domain = from_addr.rpartition("@")[2]
        mid = mid or f"<{secrets.token_urlsafe(18)}@{domain}>"
        msg["Message-ID"] = mid
        refs = [r for r in _field(req, "References", list, []) if isinstance(r, str)]
        for r in refs:
            _check_control(r)
        if refs:
            msg["References"] = " ".join(refs)
            msg["In-Reply-To"] = refs[-1]
        date = _field(req, "Date", str, "")
        try:
            when = datetime.fromisoformat(date) if date else datetime.now(UTC)
        except ValueError:
            _fail("protocol", f"parsing request: Date: {date!r} is not RFC 3339")
        msg["Date"] = email.utils.format_datetime(when)
        user_agent = False
        for pair in _field(req, "Headers", list, []):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                _fail("protocol", "parsing request: Headers: expected [key, value] pairs")
            _check_control(pair[0])
            _check_control(pair[1])
            user_agent = user_agent or pair[0].lower() in ("user-agent", "x-mailer")
            msg[pair[0]] = pair[1]
        if not user_agent:
            msg["User-Agent"] = "eventmail/webapi"
        for key, value in (_field(req, "Extra", dict, {}) or {}).items():
            _check_control(str(key))
            _check_control(str(value))
        if text:
            msg.set_content(text)
            if html_body:
                msg.add_alternative(html_body, subtype="html")
        else:
            msg.set_content(html_body, subtype="html")
        for f in _field(req, "AttachedFiles", list, []):
            if not isinstance(f, dict):
                _fail("protocol", "parsing request: AttachedFiles: expected objects")
            _check_fields(f, ("Name", "ContentType", "ContentID", "Data"))
            try:
                data = base64.b64decode(_field(f, "Data", str, ""), validate=True)
            except (binascii.Error, ValueError) as e:
                _fail("user", f"parsing attachment as base64: {e}")
            ctype = _field(f, "ContentType", str, "") or "application/octet-stream"
            maintype, _, subtype = ctype.partition("/")
            msg.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream",
                               filename=_field(f, "Name", str, "") or None)
        raw = msg.as_bytes()
        if self.send_message is None:
            _fail("server", "sending is not configured on this listener")
        requiretls = _field(req, "RequireTLS", bool, False) is True
        queue_id = await self.send_message(Outgoing(call.account, from_addr, recipients, raw, requiretls, call.remote_ip))
        try:
            numeric = int(queue_id, 16)
        except ValueError:
            numeric = 0
        return {"MessageID": mid, "Submissions": [
            {"Address": a, "QueueMsgID": numeric, "FromID": queue_id} for a in recipients]}


def _time(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat().replace("+00:00", "Z")


_MSG_EXAMPLE = {"MsgID": 4294967297}
_EMPTY: dict[str, Any] = {}
METHODS: dict[str, Method] = {
    "Send": Method(
        WebApi.send,
        ("From", "To", "CC", "BCC", "ReplyTo", "MessageID", "References", "Date", "Subject", "Text", "HTML",
         "Extra", "Headers", "AlternativeFiles", "InlineFiles", "AttachedFiles", "RequireTLS", "FutureRelease",
         "SaveSent"),
        {"To": [{"Name": "", "Address": "bob@example.org"}], "Subject": "hi", "Text": "hello"},
        {"MessageID": "<abc@example.org>", "Submissions": [{"Address": "bob@example.org", "QueueMsgID": 1,
                                                           "FromID": "000000000001"}]},
        "Compose a message and submit it for delivery to all recipients (To, CC, BCC). Error codes: "
        "badAddress, missingBody, multipleFrom, badFrom, noRecipients, messageLimitReached, "
        "recipientLimitReached, messageTooLarge, malformedMessageID."),
    "SuppressionList": Method(WebApi.suppression_list, (), {}, {"Suppressions": []},
                              "The account's suppressed addresses: mail to them is refused."),
    "SuppressionAdd": Method(WebApi.suppression_add, ("EmailAddress", "Manual", "Reason"),
                             {"EmailAddress": "bob@example.org", "Manual": True, "Reason": "asked to stop"}, {},
                             "Add an address to the account's suppression list."),
    "SuppressionRemove": Method(WebApi.suppression_remove, ("EmailAddress",), {"EmailAddress": "bob@example.org"},
                                {}, "Remove an address from the account's suppression list."),
    "SuppressionPresent": Method(WebApi.suppression_present, ("EmailAddress",),
                                 {"EmailAddress": "bob@example.org"}, {"Present": True},
                                 "Whether an address is on the account's suppression list."),
    "MessageGet": Method(WebApi.message_get, ("MsgID",), _MSG_EXAMPLE,
                         {"Message": {}, "Structure": {}, "Meta": {}},
                         "A message's headers, text and HTML, MIME structure and metadata. Error: messageNotFound."),
    "MessageRawGet": Method(WebApi.message_raw_get, ("MsgID",), _MSG_EXAMPLE, None,
                            "The message as stored, as text/plain."),
    "MessagePartGet": Method(WebApi.message_part_get, ("MsgID", "PartPath"), {"MsgID": 4294967297, "PartPath": [0]},
                             None, "One MIME part, decoded. Errors: messageNotFound, partNotFound."),
    "MessageDelete": Method(WebApi.message_delete, ("MsgID",), _MSG_EXAMPLE, _EMPTY, "Remove a message for good."),
    "MessageFlagsAdd": Method(WebApi.message_flags_add, ("MsgID", "Flags"),
                              {"MsgID": 4294967297, "Flags": ["\\seen", "custom"]}, _EMPTY,
                              "Add flags (\\seen, \\answered, $forwarded, $junk, ...) and keywords."),
    "MessageFlagsRemove": Method(WebApi.message_flags_remove, ("MsgID", "Flags"),
                                 {"MsgID": 4294967297, "Flags": ["\\seen"]}, _EMPTY, "Remove flags and keywords."),
    "MessageMove": Method(WebApi.message_move, ("MsgID", "DestMailboxName"),
                          {"MsgID": 4294967297, "DestMailboxName": "Archive"}, _EMPTY,
                          "Move a message to another mailbox, which must exist (its id changes, as in IMAP)."),
}


# ---------------------------------------------------------------- HTTP


def _error(code: str, message: str) -> web.Response:
    return web.Response(status=400, content_type="application/json", charset="utf-8",
                        text=json.dumps({"Code": code, "Message": message}, ensure_ascii=False) + "\n")


def _unauthorized(msg: str) -> web.Response:
    return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="webapi"'}, content_type="text/plain",
                        text="401 - unauthorized - " + msg + "\n")


def _basic_auth(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{body}</body></html>"""


def _index_page() -> str:
    items = "".join(f'<li><a href="{html.escape(name)}">{html.escape(name)}</a> — {html.escape(m.doc)}</li>'
                    for name, m in METHODS.items())
    return _PAGE.format(title="webapi v0", body=(
        "<p>POST to /webapi/v0/&lt;Method&gt; with form field <code>request</code> holding the JSON request, "
        "HTTP basic authentication with the account's email address; compatible with Mox's webapi.</p>"
        f"<ul>{items}</ul>"))


def _method_page(name: str, m: Method) -> str:
    req = html.escape(json.dumps(m.example_request, indent="\t", ensure_ascii=False))
    resp = ("(the response is the raw bytes)" if m.example_response is None
            else html.escape(json.dumps(m.example_response, indent="\t", ensure_ascii=False)))
    return _PAGE.format(title=f"webapi v0 {html.escape(name)}", body=(
        f"<p>{html.escape(m.doc)}</p><h2>Example request</h2>"
        f'<form method="post"><textarea name="request" rows="12" cols="80">{req}</textarea><br>'
        '<button type="submit">Call</button></form>'
        f"<h2>Example response</h2><pre>{resp}</pre>"))


def make_webapi_app(
    store: Store, *, limiter: LoginLimiter, send: Sender | None = None, hostname: str = "localhost",
    allow_plaintext: bool = False,
) -> web.Application:
    """The webapi as an aiohttp sub-application, to be mounted at /webapi (routes /, /v0/ and
    /v0/<Method>). `limiter` is the server's failed-login limiter (shared with IMAP and SMTP);
    `send` is the submission path Send queues through (None: Send answers a server error);
    `allow_plaintext` lets loopback clients authenticate without TLS (localserve), as IMAP does."""
    api = WebApi(store, send, hostname)

    async def root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(location=request.path.rstrip("/") + "/v0/")

    async def index(request: web.Request) -> web.StreamResponse:
        return web.Response(text=_index_page(), content_type="text/html", charset="utf-8")

    async def method(request: web.Request) -> web.StreamResponse:
        name = request.match_info["method"]
        m = METHODS.get(name)
        if m is None:
            raise web.HTTPNotFound()
        if request.method == "GET":
            return web.Response(text=_method_page(name, m), content_type="text/html", charset="utf-8")
        if request.method != "POST":
            return web.Response(status=405, text="405 - method not allowed - use get or post\n")
        peer = request.remote or ""
        creds = _basic_auth(request.headers.get("Authorization", ""))
        if creds is None:
            return _unauthorized("use http basic auth with email address as username")
        if not may_send_password(tls=request.secure, peer=peer, allow_plaintext=allow_plaintext):
            return web.Response(status=403, text="403 - forbidden - credentials only over https\n")
        login, password = creds
        result = await check_password(store, limiter, login, password, peer, "webapi")
        if isinstance(result, Failure):
            if result.reason is FailureReason.LIMITED:
                return web.Response(status=429, text="429 - too many auth attempts\n")
            log.warning("webapi: authentication failed for %r from %s: %s", login, peer, result.reason.value)
            return _unauthorized("use http basic auth with email address as username")
        assert isinstance(result, Success)
        account = result.username
        form = await request.clone(client_max_size=MAX_REQUEST_BYTES).post()
        raw = form.get("request")
        if not isinstance(raw, str) or not raw:
            return _error("protocol", "missing/empty request")
        try:
            req = json.loads(raw)
        except ValueError as e:
            return _error("protocol", f"parsing request: {e}")
        if not isinstance(req, dict):
            return _error("protocol", "parsing request: expected a JSON object")
        try:
            _check_fields(req, m.fields)
            out = await m.handler(api, Call(store, account, login, peer, req))
        except ApiError as e:
            log.info("webapi %s %s: %s %s", account, name, e.code, e.message)
            return _error(e.code, e.message)
        log.info("webapi %s %s: ok", account, name)
        if isinstance(out, bytes):
            return web.Response(body=out, content_type="text/plain")
        return web.Response(text=json.dumps(out, ensure_ascii=False) + "\n", content_type="application/json",
                            charset="utf-8")

    app = web.Application()
    app.router.add_get("/", root)
    app.router.add_get("/v0/", index)
    app.router.add_route("*", "/v0/{method}", method)
    return app


__all__ = ["METHODS", "ApiError", "Outgoing", "Sender", "make_webapi_app", "message_id", "split_message_id"]
