"""IMAP URLs (RFC 5092) naming a message of the logged-in account, or a part of one, for CATENATE (RFC 4469)."""

# CATENATE builds a message from literal text and URLs of messages already stored (RFC 4469 §3).
# Only URLs of this account are read: a relative one (`/INBOX;UIDVALIDITY=5/;UID=3/;SECTION=1`,
# RFC 4469 §5 and RFC 5092 §4 resolve it against the session's server and user), or an absolute
# `imap://user@host/...` whose user is the logged-in one (the host is not compared: no name
# of this server is trusted more than the account it reads from). URLAUTH (RFC 4467) is not
# offered, so `;URLAUTH=` URLs and other users' mail are refused, as is anything else a URL
# cannot be resolved to: each a `NO [BADURL url]` (RFC 4469 §6), which fails the whole APPEND.

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from eventmail.imap.commands import MailboxNameError, decode_mutf7
from eventmail.imap.errors import ImapError, no
from eventmail.mime.imapform import extract_section
from eventmail.store import Account

# RFC 5092 §11: [imap://[iuserinfo@]host[:port]] "/" enc-mailbox [";UIDVALIDITY=" nz-number]
#   "/;UID=" nz-number ["/;SECTION=" enc-section] ["/;PARTIAL=" number ["." nz-number]]
_SERVER_RE = re.compile(r"imap://(?:(?P<user>[^@/;]*)(?:;[^@/]*)?@)?[^/]+(?=/)", re.IGNORECASE)
_PATH_RE = re.compile(
    r"/(?P<mailbox>[^;/?#][^;?#]*?|)(?:;UIDVALIDITY=(?P<uidvalidity>[1-9][0-9]{0,9}))?"
    r"/;UID=(?P<uid>[1-9][0-9]{0,9})"
    r"(?:/;SECTION=(?P<section>[^/?#;]*))?"
    r"(?:/;PARTIAL=(?P<offset>[0-9]{1,10})(?:\.(?P<length>[1-9][0-9]{0,9}))?)?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class MessageUrl:
    """What a URL names: a message (by mailbox name, UIDVALIDITY if given and UID), its section
    (RFC 9051 §6.4.5 syntax, "" for the whole message) and a partial (offset, length)."""

    mailbox: str
    uidvalidity: int | None
    uid: int
    section: str
    partial: tuple[int, int | None] | None


def _bad(url: str, why: str) -> ImapError:
    return no(f"bad URL: {why}", "BADURL", url.encode("utf-8", "replace"))


def parse_url(url: str, mine: Callable[[str], bool]) -> MessageUrl:
    """The message a URL names when it is relative or its user is one `mine` accepts (the
    logged-in account); NO [BADURL] for anything else."""
    rest = url
    server = _SERVER_RE.match(url)
    try:
        if server is not None:
            if not mine(urllib.parse.unquote(server.group("user") or "", errors="strict")):
                raise _bad(url, "only the logged-in user's own messages can be used")
            rest = url[server.end():]
        m = _PATH_RE.fullmatch(rest)
        if m is None:
            raise _bad(url, "not an IMAP URL of one message (RFC 5092) of this account")
        name = urllib.parse.unquote(m.group("mailbox"), errors="strict")
        section = urllib.parse.unquote(m.group("section") or "", errors="strict")
    except UnicodeDecodeError as e:
        raise _bad(url, "not UTF-8 once %-decoded") from e
    if name.upper() == "INBOX":
        name = "INBOX"
    elif "&" in name:
        # RFC 2192 URLs carried the modified UTF-7 form; RFC 5092 §3.3 the UTF-8 one
        try:
            name = decode_mutf7(name)
        except MailboxNameError:
            pass
    partial = None
    if m.group("offset") is not None:
        length = m.group("length")
        partial = (int(m.group("offset")), int(length) if length else None)
    uidvalidity = m.group("uidvalidity")
    return MessageUrl(name, int(uidvalidity) if uidvalidity else None, int(m.group("uid")), section, partial)


async def fetch_url(acct: Account, url: str, mine: Callable[[str], bool]) -> bytes:
    """The octets a URL names (as BODY[section]<partial> would return them), or NO [BADURL]."""
    target = parse_url(url, mine)
    mb = acct.view.mailbox(target.mailbox)
    if mb is None:
        raise _bad(url, "no such mailbox")
    if target.uidvalidity is not None and target.uidvalidity != mb.uidvalidity:
        raise _bad(url, "UIDVALIDITY does not match")
    msg = acct.view.message(mb.id, target.uid)
    structure = acct.view.structure(mb.id, target.uid)
    if msg is None or structure is None:
        raise _bad(url, "no such message")
    raw = await acct.read_message(msg.blob_id)
    data = extract_section(raw, structure, target.section) if target.section else raw
    if data is None:
        raise _bad(url, "no such section")
    if target.partial is not None:
        offset, length = target.partial
        data = data[offset:] if length is None else data[offset : offset + length]
    return data


__all__ = ["MessageUrl", "fetch_url", "parse_url"]
