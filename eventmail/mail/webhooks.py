"""Webhooks: an account's webhook settings, the calls decided for its incoming deliveries and outgoing delivery results (Mox's JSON bodies), and their signatures.

As in Mox (webhook/webhook.go, queue/hook.go), an account has an incoming webhook (a URL and an
optional Authorization header value) called for each message delivered to it, and an outgoing
webhook (URL, Authorization, and the events it wants; none named: all) called for the queue's
results for the messages it sent. The body is Mox's webhook.Incoming or webhook.Outgoing, so a
receiver written for Mox's webhooks works unchanged. Each call is decided once, as a
`WebhookQueued` event in the queue stream holding the body; `eventmail.mail.webhookqueue` posts
it and records each attempt. Besides Mox's Authorization header, every request is signed with
HMAC-SHA256 under a per-account secret (`X-Eventmail-Signature`, docs/webhooks.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from ..proto import events_pb2 as pb
from ..store import QUEUE, Account, Committed, Store, StoreError
from . import moxjson
from .admin import AdminError

log = logging.getLogger(__name__)

# Account settings (AccountSetting events in the account's stream): JSON objects, and the secret.
SETTING_INCOMING = "webhook.incoming"  # {"URL", "Authorization"}
SETTING_OUTGOING = "webhook.outgoing"  # {"URL", "Authorization", "Events", "Since"}
SETTING_SECRET = "webhook.secret"
# Mox's outgoing events (webhook.OutgoingEvent); an account may ask for any of them. Which ones
# this server produces is in docs/webhooks.md.
OUTGOING_EVENTS = ("delivered", "suppressed", "delayed", "failed", "relayed", "expanded", "canceled", "unrecognized")
# Deliveries that fire the incoming webhook: over SMTP (also through a backup MX's hand-off) and
# from a local account's submission (Mox delivers those through its MX as well). Not the
# server's own delivery status notifications: those are the outgoing webhook's business.
INCOMING_KINDS = frozenset({"smtp", "submission-local"})

# Bounds: browsers and most servers take URLs of 2,000 characters (RFC 9110 §4.1 recommends
# supporting at least 8,000, but a webhook URL longer than 2,048 is a mistake); an Authorization
# value of a bearer token or basic credentials is well under 1 KiB.
MAX_URL_LENGTH = 2048
MAX_AUTHORIZATION_LENGTH = 1024
# 256 bits of HMAC key (RFC 2104 §3: at least the hash's output length), as hex.
SECRET_BYTES = 32
SIGNATURE_HEADER = "X-Eventmail-Signature"
# How far a receiver should let the signature's time be from its clock (docs/webhooks.md).
SIGNATURE_TOLERANCE_SECONDS = 300
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


@dataclass(frozen=True)
class HookTarget:
    url: str
    authorization: str = ""


@dataclass(frozen=True)
class WebhookSettings:
    """An account's webhook settings, as its log has them."""

    incoming: HookTarget | None = None
    outgoing: HookTarget | None = None
    events: tuple[str, ...] = ()  # the outgoing events wanted; empty: all
    outgoing_since: float = 0.0  # when the outgoing webhook was set: older queue results are not reported
    secret: str = ""

    def wants(self, event: str) -> bool:
        return self.outgoing is not None and (not self.events or event in self.events)

    def public(self) -> dict[str, Any]:
        """For a settings page or the CLI: everything but the Authorization values, whose
        presence is shown instead (the secret is shown: the receiver needs it)."""
        def target(t: HookTarget | None) -> dict[str, Any] | None:
            return None if t is None else {"url": t.url, "authorization": bool(t.authorization)}

        return {"incoming": target(self.incoming), "outgoing": target(self.outgoing), "events": list(self.events),
                "secret": self.secret}


def _json_setting(acct: Account, key: str) -> dict[str, Any]:
    value = acct.view.setting(key)
    if not value:
        return {}
    try:
        data = json.loads(value)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def settings(acct: Account) -> WebhookSettings:
    """The account's webhook settings (pure read of its projection)."""
    inc, out = _json_setting(acct, SETTING_INCOMING), _json_setting(acct, SETTING_OUTGOING)
    return WebhookSettings(
        incoming=HookTarget(str(inc["URL"]), str(inc.get("Authorization", ""))) if inc.get("URL") else None,
        outgoing=HookTarget(str(out["URL"]), str(out.get("Authorization", ""))) if out.get("URL") else None,
        events=tuple(str(e) for e in out.get("Events") or ()),
        outgoing_since=float(out.get("Since") or 0.0),
        secret=acct.view.setting(SETTING_SECRET) or "",
    )


# ---------------------------------------------------------------- validation


def _loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """A webhook URL: https (http only to a loopback address, for a receiver on this host), with a
    host, no credentials (they go in the Authorization value), bounded; else AdminError."""
    if len(url) > MAX_URL_LENGTH:
        raise AdminError(f"webhook URL longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise AdminError("webhook URL: spaces and control characters are not allowed")
    from yarl import URL  # aiohttp's URL parser, the one the webhook is posted with; loaded only here

    try:
        parsed = URL(url)
    except (ValueError, TypeError) as e:
        raise AdminError(f"webhook URL: {e}") from None
    # The URL is not repeated in these texts (they are logged): its query may hold a token.
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise AdminError("webhook URL: expected https://HOST/PATH")
    if parsed.scheme == "http" and not _loopback(parsed.host):
        raise AdminError("webhook URL: https is required (plain http only to a loopback address)")
    if parsed.user is not None or parsed.password is not None:
        raise AdminError("webhook URL: no user or password in the URL; give them as the Authorization value")
    if parsed.fragment:
        raise AdminError("webhook URL: no #fragment (it is never sent)")
    return url


def check_authorization(value: str) -> str:
    """An Authorization header value: printable, one line (no header injection), bounded."""
    if len(value) > MAX_AUTHORIZATION_LENGTH:
        raise AdminError(f"webhook authorization longer than {MAX_AUTHORIZATION_LENGTH} characters")
    # RFC 9110 §5.5: a field value is visible characters, spaces and tabs; no CR or LF.
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        raise AdminError("webhook authorization: control characters are not allowed")
    return value.strip()


def check_events(events: str | list[str]) -> tuple[str, ...]:
    """Outgoing events, comma-separated or a list, each one of Mox's; empty: all."""
    items = [e.strip().lower() for e in (events.split(",") if isinstance(events, str) else events) if e.strip()]
    for e in items:
        if e not in OUTGOING_EVENTS:
            raise AdminError(f"webhook event {e!r}: one of {', '.join(OUTGOING_EVENTS)}")
    return tuple(dict.fromkeys(items))


def new_secret() -> str:
    return secrets.token_hex(SECRET_BYTES)


# ---------------------------------------------------------------- changing the settings (mail-layer functions)


async def set_incoming(acct: Account, url: str, authorization: str = "") -> str:
    """Set (or, with an empty URL, clear) the account's incoming webhook. Returns the signing
    secret, made on first use."""
    value = ""
    if url:
        value = json.dumps({"URL": check_url(url), "Authorization": check_authorization(authorization)})
    return await _write(acct, SETTING_INCOMING, value)


async def set_outgoing(acct: Account, url: str, authorization: str = "", events: str | list[str] = "",
                       now: float | None = None) -> str:
    """Set (or clear) the account's outgoing webhook; only queue results from now on are reported.
    Returns the signing secret, made on first use."""
    value = ""
    if url:
        value = json.dumps({"URL": check_url(url), "Authorization": check_authorization(authorization),
                            "Events": list(check_events(events)), "Since": time.time() if now is None else now})
    return await _write(acct, SETTING_OUTGOING, value)


async def rotate_secret(acct: Account) -> str:
    """A new signing secret: hooks posted from now on (pending ones too) are signed with it."""
    secret = new_secret()
    await acct.append([pb.Event(account_setting=pb.AccountSetting(key=SETTING_SECRET, value=secret))])
    return secret


async def _write(acct: Account, key: str, value: str) -> str:
    events = [pb.Event(account_setting=pb.AccountSetting(key=key, value=value))]
    secret = settings(acct).secret
    if value and not secret:
        secret = new_secret()
        events.append(pb.Event(account_setting=pb.AccountSetting(key=SETTING_SECRET, value=secret)))
    await acct.append(events)
    return secret


# ---------------------------------------------------------------- signatures


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: `t=TIMESTAMP,v1=HEX`, HEX being HMAC-SHA256 under the
    secret (its ASCII text as the key) of "TIMESTAMP." followed by the body's bytes."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, now: float,
           tolerance: float = SIGNATURE_TOLERANCE_SECONDS) -> bool:
    """What a receiver does (docs/webhooks.md has it in other languages): the header's time
    within `tolerance` of now (a replayed request is refused), and a v1 value equal, compared in
    constant time, to the HMAC of that time and the body."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        k, _, v = item.strip().partition("=")
        fields.setdefault(k, []).append(v)
    try:
        timestamp = int(fields.get("t", [""])[0])
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    want = sign(secret, timestamp, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(want, v) for v in fields.get("v1", []))


# ---------------------------------------------------------------- incoming deliveries

MSG_ID = re.compile(r"<[^<>\s]+>")
# Mox's isAutomated (queue/hook.go): list mail, bulk mail, and auto-submitted mail (RFC 3834 §5).
AUTOMATED_FIELDS = ("List-Id", "List-Unsubscribe", "List-Unsubscribe-Post", "Precedence")


def _verdict_fields(verdict_json: str) -> tuple[bool, bool, list[str]]:
    """(MailFromValidated, MsgFromValidated, DKIMVerifiedDomains) from a delivery's recorded
    authentication verdict (eventmail.mailauth.verdict's JSON): SPF passed for MAIL FROM; DMARC
    passed for the From domain; the domains of passing DKIM signatures."""
    try:
        data = json.loads(verdict_json) if verdict_json else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    spf, dmarc = data.get("spf"), data.get("dmarc")
    spf = spf if isinstance(spf, dict) else {}
    dmarc = dmarc if isinstance(dmarc, dict) else {}
    dkim = [s for s in data.get("dkim") or [] if isinstance(s, dict)]
    mail_from_ok = spf.get("identity") == "mailfrom" and spf.get("result") == "pass"
    domains = list(dict.fromkeys(str(s.get("domain", "")) for s in dkim if s.get("result") == "pass" and s.get("domain")))
    return mail_from_ok, dmarc.get("result") == "pass", domains


def incoming_payload(raw: bytes, *, msg_id: int, origin: pb.Origin, received: float, mailbox: str) -> str:
    """Mox's webhook.Incoming for a delivered message, as JSON (fields in Mox's order). Parses:
    run it off the event loop."""
    msg = moxjson.parse(raw)
    assert isinstance(msg, EmailMessage)
    refs = MSG_ID.findall(" ".join(str(v) for v in msg.get_all("References", [])))
    in_reply_to = MSG_ID.findall(str(msg.get("In-Reply-To", "")))
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    automated = (not origin.mail_from or any(msg.get(f) is not None for f in AUTOMATED_FIELDS)
                 or (auto != "" and auto != "no") or msg.get_content_type() == "multipart/report")
    mail_from_ok, msg_from_ok, dkim_domains = _verdict_fields(origin.verdict)
    body = {
        "Version": 0,
        "From": moxjson.addresses(msg, "From"),
        "To": moxjson.addresses(msg, "To"),
        "CC": moxjson.addresses(msg, "Cc"),
        "BCC": moxjson.addresses(msg, "Bcc"),
        "ReplyTo": moxjson.addresses(msg, "Reply-To"),
        "Subject": str(msg.get("Subject", "")),
        "MessageID": str(msg.get("Message-ID", "")).strip(),
        "InReplyTo": in_reply_to[0] if in_reply_to else "",
        "References": refs,
        "Date": moxjson.date(msg),
        "Text": moxjson.readable_text(msg, "plain"),
        "HTML": moxjson.readable_text(msg, "html"),
        "Structure": moxjson.structure(msg),
        "Meta": {
            "MsgID": msg_id,
            "MailFrom": origin.mail_from,
            "MailFromValidated": mail_from_ok,
            "MsgFromValidated": msg_from_ok,
            "RcptTo": origin.rcpt_to[0] if origin.rcpt_to else "",
            "DKIMVerifiedDomains": dkim_domains,
            "RemoteIP": origin.remote_ip,
            "Received": moxjson.go_time(received),
            "MailboxName": mailbox,
            "Automated": automated,
        },
    }
    return json.dumps(body, ensure_ascii=False)


async def queue_incoming(store: Store, acct: Account, added: Committed, raw: bytes) -> None:
    """Queue the incoming webhook for a message just delivered to `acct`, when the account has
    one and the delivery is of a kind that fires it (INCOMING_KINDS). Called by ingest after the
    delivery is committed and before the protocol answers. A failure to queue is logged, never
    raised: the message is delivered, and refusing it now would only bring a duplicate."""
    m = added.event.message_added
    target = settings(acct).incoming
    if target is None or m.origin.kind not in INCOMING_KINDS:
        return
    mb = acct.view.mailbox_by_id(m.mailbox_id)
    try:
        payload = await asyncio.to_thread(
            incoming_payload, raw, msg_id=moxjson.message_id(m.mailbox_id, m.uid), origin=m.origin,
            received=added.time_us / 1e6, mailbox=mb.name if mb is not None else "")
    except Exception as e:  # the email package raises many kinds on hostile input; the message is delivered
        log.warning("webhook for %s's incoming message uid %d not queued: its body could not be built: %r",
                    acct.name, m.uid, e)
        return
    try:
        (c,) = await store.stream(QUEUE).append([pb.Event(webhook_queued=pb.WebhookQueued(
            account=acct.name, url=target.url, authorization=target.authorization, event="incoming",
            payload=payload))])
    except StoreError as e:
        log.error("webhook for %s's incoming message uid %d not queued: %s", acct.name, m.uid, e)
        return
    log.info("webhook %d queued: incoming message for %s", c.seq, acct.name)


# ---------------------------------------------------------------- outgoing delivery results


def smtp_codes(reply: str) -> tuple[int, str]:
    """(SMTPCode, SMTPEnhancedCode) of a reply such as "550 5.1.1 no such user" (Mox's
    parseSMTPCodes): 0 and "" when it has none."""
    words = reply.split(None, 2)
    if not words or len(words[0]) != 3 or not words[0].isdigit() or words[0][0] not in "2345":
        return 0, ""
    code = int(words[0])
    enhanced = ""
    if len(words) > 1:
        pieces = words[1].split(".")
        # RFC 3463 §2: class.subject.detail, the class that of the reply.
        if len(pieces) == 3 and all(p.isdigit() for p in pieces) and pieces[0] == words[0][0]:
            enhanced = words[1]
    return code, enhanced


def outgoing_payload(event: str, *, queue_id: str, message_id: str, subject: str, queued: float, reply: str,
                     suppressing: bool, error: str) -> str:
    """Mox's webhook.Outgoing as JSON (fields in Mox's order). QueueMsgID is the queue id read as
    a hexadecimal number and FromID the queue id itself, as the webapi's Send answers them."""
    code, enhanced = smtp_codes(reply)
    try:
        numeric = int(queue_id, 16)
    except ValueError:
        numeric = 0
    return json.dumps({
        "Version": 0,
        "Event": event,
        "DSN": False,
        "Suppressing": suppressing,
        "QueueMsgID": numeric,
        "FromID": queue_id,
        "MessageID": message_id,
        "Subject": subject,
        "WebhookQueued": moxjson.go_time(queued),
        "SMTPCode": code,
        "SMTPEnhancedCode": enhanced,
        "Error": error,
        "Extra": {},
    }, ensure_ascii=False)


# ---------------------------------------------------------------- the operator's commands


class WebhookOps:
    """`eventmail account webhook ...` through the control socket (or on the store)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def commands(self) -> dict[str, Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]]:
        return {"account.webhook": self.webhook}

    async def webhook(self, args: Mapping[str, Any]) -> dict[str, Any]:
        name, what = args.get("name"), args.get("what")
        if not isinstance(name, str) or name not in self.store.system.accounts:
            raise AdminError(f"no account {name}")
        url = args.get("url") if isinstance(args.get("url"), str) else ""
        authorization = args.get("authorization") if isinstance(args.get("authorization"), str) else ""
        events = args.get("events") if isinstance(args.get("events"), str) else ""
        async with self.store.use_account(name) as acct:
            if what == "incoming":
                secret = await set_incoming(acct, str(url), str(authorization))
                done = f"incoming webhook {url}" if url else "incoming webhook cleared"
            elif what == "outgoing":
                secret = await set_outgoing(acct, str(url), str(authorization), str(events))
                wanted = settings(acct).events
                done = (f"outgoing webhook {url} for {', '.join(wanted) if wanted else 'every event'}" if url
                        else "outgoing webhook cleared")
            elif what == "new-secret":
                secret = await rotate_secret(acct)
                done = "new signing secret"
            elif what == "show":
                s = settings(acct)
                lines = [f"incoming\t{_shown(s.incoming)}",
                         f"outgoing\t{_shown(s.outgoing)}" + (f"\tevents {','.join(s.events)}" if s.events else ""),
                         f"secret\t{s.secret or 'none yet'}"]
                return {"message": "\n".join(lines)}
            else:
                raise AdminError(f"webhook {what!r}: one of incoming, outgoing, show, new-secret")
        return {"message": f"account {name}: {done}; signing secret {secret}"}


def _shown(t: HookTarget | None) -> str:
    if t is None:
        return "none"
    return t.url + ("\t(with authorization)" if t.authorization else "")


__all__ = [
    "OUTGOING_EVENTS", "SIGNATURE_HEADER", "HookTarget", "WebhookOps", "WebhookSettings", "check_authorization",
    "check_events", "check_url", "incoming_payload", "outgoing_payload", "queue_incoming", "rotate_secret",
    "set_incoming", "set_outgoing", "settings", "sign", "verify",
]
