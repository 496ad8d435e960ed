"""GETMETADATA and SETMETADATA (RFC 5464), LIST RETURN (METADATA) (RFC 9590), and the unsolicited METADATA response."""

# The entries live in the mail layer (eventmail.mail.metadata): this module turns commands into
# its reads and writes and its limits into response codes.

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from eventmail.imap import commands as c
from eventmail.imap import mailboxes
from eventmail.imap import responses as r
from eventmail.imap.errors import no
from eventmail.mail import metadata as mail_metadata
from eventmail.store import MailboxView

if TYPE_CHECKING:
    from eventmail.imap.session import Session

_ATOM_SPECIALS = frozenset('(){ %*"\\]')


def entry_value(name: str) -> r.Value:
    """An entry name as an astring: an atom when it can be one (as RFC 5464's examples show)."""
    if name and all(" " < ch < "\x7f" and ch not in _ATOM_SPECIALS for ch in name):
        return r.Atom(name)
    return name


def value_of(data: bytes) -> r.Value:
    """An entry value: nstring, or literal8 when it holds NUL (RFC 5464 §5 value)."""
    return r.Literal(data, binary=True) if b"\x00" in data else data


def metadata_response(mailbox: str, items: Iterable[tuple[str, bytes | None]]) -> r.Untagged:
    """`* METADATA "INBOX" (/private/comment "text")` (RFC 5464 §4.4.1)."""
    flat: list[r.Value] = []
    for name, data in items:
        flat.extend((entry_value(name), None if data is None else value_of(data)))
    return r.Untagged((r.Atom("METADATA"), r.Mailbox(mailbox), tuple(flat)))


def changed_response(mailbox: str, names: Iterable[str]) -> r.Untagged:
    """The unsolicited `* METADATA "INBOX" /shared/comment` naming changed entries, without
    their values (RFC 5464 §4.4.2)."""
    return r.Untagged((r.Atom("METADATA"), r.Mailbox(mailbox), *(entry_value(n) for n in names)))


def _mailbox_id(view: MailboxView, name: str) -> int:
    return mail_metadata.SERVER if name == "" else mailboxes.existing_mailbox(view, name).id


def found_entries(view: MailboxView, mailbox_id: int, names: Iterable[str], depth: int | None,
                  maxsize: int | None) -> tuple[list[tuple[str, bytes | None]], int | None]:
    """What a GETMETADATA (or LIST's METADATA option) returns: entries found, NIL for a full entry
    name that has no value, and the size of the largest value MAXSIZE held back (RFC 5464 §4.2.1
    LONGENTRIES), or None."""
    names = list(names)
    found = dict(mail_metadata.lookup(view, mailbox_id, names, depth))
    longest: int | None = None
    out: list[tuple[str, bytes | None]] = []
    for name, data in sorted(found.items()):
        if maxsize is not None and len(data) > maxsize:
            longest = max(longest or 0, len(data))
        else:
            out.append((name, data))
    for name in names:
        key = mail_metadata.entry_key(name)
        if key not in found and mail_metadata.check_entry_name(key) is None and (key, None) not in out:
            out.append((key, None))  # asked for and absent: NIL, as Dovecot answers
    return out, longest


async def getmetadata(s: Session, cmd: c.GetMetadata) -> AsyncIterator[r.Response]:
    acct = s.need_acct()
    mailbox_id = _mailbox_id(acct.view, cmd.mailbox)
    entries, longest = found_entries(acct.view, mailbox_id, cmd.entries, cmd.depth, cmd.maxsize)
    name = cmd.mailbox if mailbox_id == mail_metadata.SERVER else mailboxes.existing_mailbox(acct.view, cmd.mailbox).name
    if entries:
        yield metadata_response(name, entries)
    code = None if longest is None else r.ResponseCode("METADATA", (r.Atom("LONGENTRIES"), longest))
    yield r.ok(cmd.tag, "GETMETADATA completed", code)


async def setmetadata(s: Session, cmd: c.SetMetadata) -> AsyncIterator[r.Response]:
    acct = s.need_acct()
    mailbox_id = _mailbox_id(acct.view, cmd.mailbox)
    try:
        await mail_metadata.set_entries(acct, mailbox_id, cmd.entries)
    except mail_metadata.MetadataError as e:
        # RFC 5464 §4.3: NO [METADATA MAXSIZE n] / [METADATA TOOMANY]; nothing was changed
        if e.code == "MAXSIZE":
            raise no(str(e), "METADATA", r.Atom("MAXSIZE"), e.size or 0) from e
        if e.code is not None:
            raise no(str(e), "METADATA", r.Atom(e.code)) from e
        raise no(str(e)) from e
    yield r.ok(cmd.tag, "SETMETADATA completed")


def list_metadata(s: Session, cmd: c.List, mailbox_id: int, name: str) -> list[r.Response]:
    """RFC 9590 §2: after a mailbox's LIST response, its METADATA response with each entry asked
    for, NIL where it has none (as Mox and Stalwart answer); a value over the optional MAXSIZE is
    left out."""
    acct = s.need_acct()
    entries, _longest = found_entries(acct.view, mailbox_id, cmd.metadata, 0, cmd.metadata_maxsize)
    return [metadata_response(name, entries)] if entries else []


__all__ = ["changed_response", "entry_value", "getmetadata", "list_metadata", "metadata_response", "setmetadata"]
