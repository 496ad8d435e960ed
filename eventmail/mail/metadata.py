"""Mailbox and server annotations (IMAP METADATA, RFC 5464): their events, their projection, their limits.

An entry is a slash-separated name under /private or /shared with a value of octets; it belongs
to one mailbox (by id) or to the server, which for us is the account (mailbox id 0). SETMETADATA
records one MetadataChanged event with every entry it sets or removes, so a command changes all
of them or none (RFC 5464 §4.3). The projection keeps the current entries beside the mailbox
view: a rename keeps a mailbox's entries (they follow its id), a delete drops them (RFC 5464
§4.1: a new mailbox of the same name inherits nothing), and renaming INBOX copies INBOX's entries
to the new mailbox while INBOX keeps its own (rename_inbox_entries, called by mail.mailboxes).

The limits are decided here, before the event is written; the projection only folds what the
events say (an event naming a mailbox that no longer exists changes nothing).
"""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..proto import events_pb2 as pb
from ..store import Account, Change, Delivery, MailboxView

SERVER = 0  # the mailbox id of server (account-wide) entries
# RFC 5464 §4.1: a server must accept values of at least 1024 octets and at least 10 entries
# per mailbox or server. One value may have 32 KiB: half the literal limit of a command that is
# not APPEND (eventmail.imap.wire.Limits.max_literal, 64 KiB), so that a larger value up to that
# limit gets the RFC's `NO [METADATA MAXSIZE n]` rather than the wire's BAD [TOOBIG]. The whole
# account holds at most 1000 entries and 1 MiB of names and values (Mox's limits): annotations
# are notes, not storage.
MAX_VALUE = 32 * 1024
MAX_ENTRIES = 1000
MAX_TOTAL = 1024 * 1024
# An entry name: octets, and slash-separated components (RFC 5464 §3.2 sets no bound).
MAX_NAME = 1024
MAX_COMPONENTS = 32

SCHEMA = """
CREATE TABLE metadata(mailbox_id INTEGER NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL,
  PRIMARY KEY(mailbox_id, name)) WITHOUT ROWID;
"""


class MetadataError(ValueError):
    """SETMETADATA refused as a whole (RFC 5464 §4.3): `code` is the METADATA response code's
    argument ("TOOMANY", "MAXSIZE"), `size` the largest value accepted with MAXSIZE; None for
    a plain NO (a read-only entry)."""

    def __init__(self, text: str, code: str | None = None, size: int | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.size = size


@dataclass(frozen=True, slots=True)
class MetadataUpdated(Change):
    """Entries of a mailbox (or of the server, mailbox id 0) were set or removed."""

    mailbox_id: int
    names: tuple[str, ...]


def check_entry_name(name: str) -> str | None:
    """Why `name` is not an entry name, or None (RFC 5464 §3.2, §5): "/private/..." or
    "/shared/..." with at least two components, no empty component, no `*` or `%`, printable
    ASCII; vendor entries (/private/vendor/<token>/...) have at least four components."""
    if len(name) > MAX_NAME:
        return "entry name too long"
    if not name.isascii() or any(ch < " " or ch == "\x7f" for ch in name):
        return "entry names are printable ASCII"
    if "*" in name or "%" in name:
        return "entry names may not contain * or %"
    parts = name.split("/")
    if parts[0] != "" or len(parts) < 3 or any(p == "" for p in parts[1:]):
        return "an entry name is /private/... or /shared/..., without empty components"
    if parts[1].lower() not in ("private", "shared"):
        return "entry names start with /private or /shared"
    if len(parts) - 1 > MAX_COMPONENTS:
        return "entry name has too many components"
    if parts[2].lower() == "vendor" and len(parts) < 5:
        return "vendor entry names have at least four components"
    return None


def entry_key(name: str) -> str:
    """Entry names are case-insensitive (RFC 5464 §5: all alphabetic characters are): kept
    lower-cased."""
    return name.lower()


# ------------------------------------------------------------------------------ the projection


def _metadata_changed(db: sqlite3.Connection, e: pb.Event) -> list[Change]:
    m = e.metadata_changed
    if m.mailbox_id != SERVER and db.execute("SELECT 1 FROM mailbox WHERE id=?", (m.mailbox_id,)).fetchone() is None:
        return []  # the mailbox was deleted before this event: nothing to annotate
    changed: list[str] = []
    for entry in m.entries:
        if entry.remove:
            cur = db.execute("DELETE FROM metadata WHERE mailbox_id=? AND name=?", (m.mailbox_id, entry.name))
            if cur.rowcount:
                changed.append(entry.name)
        else:
            db.execute("INSERT OR REPLACE INTO metadata VALUES (?,?,?)", (m.mailbox_id, entry.name, entry.value))
            changed.append(entry.name)
    return [MetadataUpdated(m.mailbox_id, tuple(changed))] if changed else []


class _Projection:
    """The registered projection (eventmail.opening): pure, as every projection."""

    name = "metadata-1"
    schema = SCHEMA

    def apply(self, db: sqlite3.Connection, seq: int, event: pb.Event) -> Sequence[Change]:
        kind = event.WhichOneof("kind")
        if kind == "metadata_changed":
            return _metadata_changed(db, event)
        if kind == "mailbox_deleted":
            # RFC 5464 §4.1: a deleted mailbox's entries go with it
            mid = event.mailbox_deleted.mailbox_id
            names = [r[0] for r in db.execute("SELECT name FROM metadata WHERE mailbox_id=? ORDER BY name", (mid,))]
            if names:
                db.execute("DELETE FROM metadata WHERE mailbox_id=?", (mid,))
                return [MetadataUpdated(mid, tuple(names))]
        return []


    def apply_run(self, db: sqlite3.Connection, run: Sequence[Delivery]) -> Sequence[Sequence[Change]]:
        return [()] * len(run)  # deliveries annotate nothing


METADATA_PROJECTION = _Projection()


# ------------------------------------------------------------------------------ reads


def entries(view: MailboxView, mailbox_id: int) -> dict[str, bytes]:
    """Every entry of a mailbox (or of the server), by name."""
    rows = view.db.execute("SELECT name, value FROM metadata WHERE mailbox_id=? ORDER BY name", (mailbox_id,))
    return {r[0]: bytes(r[1]) for r in rows}


def lookup(view: MailboxView, mailbox_id: int, names: Iterable[str], depth: int | None) -> list[tuple[str, bytes]]:
    """GETMETADATA (RFC 5464 §4.2.2): each named entry that exists, and with `depth` 1 its
    children, with None (infinity) all its descendants; in name order, each entry once."""
    have = entries(view, mailbox_id)
    out: dict[str, bytes] = {}
    for name in names:
        key = entry_key(name)
        if key in have:
            out[key] = have[key]
        if depth == 0:
            continue
        prefix = key.rstrip("/") + "/"
        for other, value in have.items():
            if other.startswith(prefix) and (depth is None or "/" not in other[len(prefix):]):
                out[other] = value
    return sorted(out.items())


def usage(view: MailboxView) -> tuple[int, int]:
    """(entries, octets of names and values) of the whole account."""
    row = view.db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(name) + LENGTH(value)), 0) FROM metadata").fetchone()
    return int(row[0]), int(row[1])


# ------------------------------------------------------------------------------ writes


# Server entries the server sets and clients may not (RFC 5464 §3.2.1.1: /shared/admin is
# always read-only).
READ_ONLY = frozenset({"/shared/admin"})


# One SETMETADATA of an account at a time: the limits are checked against the entries as they
# are, and no other SETMETADATA may add to them between the check and the commit.
_LOCKS: weakref.WeakKeyDictionary[Account, asyncio.Lock] = weakref.WeakKeyDictionary()


async def set_entries(acct: Account, mailbox_id: int, changes: Sequence[tuple[str, bytes | None]]) -> None:
    """SETMETADATA: set each (name, value), remove each (name, None); all or nothing. Raises
    MetadataError when a limit refuses the command (RFC 5464 §4.3)."""
    lock = _LOCKS.setdefault(acct, asyncio.Lock())
    async with lock:
        await _set_entries(acct, mailbox_id, changes)


async def _set_entries(acct: Account, mailbox_id: int, changes: Sequence[tuple[str, bytes | None]]) -> None:
    current = entries(acct.view, mailbox_id)
    count, total = usage(acct.view)
    before = total
    out: dict[str, pb.MetadataEntry] = {}
    for name, value in changes:
        key = entry_key(name)
        if mailbox_id == SERVER and key in READ_ONLY:
            raise MetadataError(f"{key} is read-only")
        if value is not None and len(value) > MAX_VALUE:
            raise MetadataError("entry value too large", "MAXSIZE", MAX_VALUE)
        out[key] = pb.MetadataEntry(name=key, value=value or b"", remove=value is None)
    for key, entry in out.items():
        old = current.get(key)
        if old is not None:
            count -= 1
            total -= len(key) + len(old)
        if not entry.remove:
            count += 1
            total += len(key) + len(entry.value)
    added = any(not e.remove and k not in current for k, e in out.items())
    if added and count > MAX_ENTRIES:
        raise MetadataError(f"at most {MAX_ENTRIES} entries per account", "TOOMANY")
    if total > MAX_TOTAL and total > before:  # a command that frees space always may
        raise MetadataError(f"at most {MAX_TOTAL} octets of entries per account", "TOOMANY")
    if not any(not e.remove or k in current for k, e in out.items()):
        return  # only removals of entries that do not exist: nothing to record
    await acct.append([pb.Event(metadata_changed=pb.MetadataChanged(mailbox_id=mailbox_id, entries=list(out.values())))])


def inbox_rename_events(view: MailboxView, inbox_id: int, target_id: int) -> list[pb.Event]:
    """RFC 5464 §4.1: renaming INBOX copies its entries to the new mailbox (INBOX keeps them)."""
    have = entries(view, inbox_id)
    if not have:
        return []
    copied = [pb.MetadataEntry(name=k, value=v) for k, v in have.items()]
    return [pb.Event(metadata_changed=pb.MetadataChanged(mailbox_id=target_id, entries=copied))]


__all__ = [
    "MAX_COMPONENTS", "MAX_ENTRIES", "MAX_NAME", "MAX_TOTAL", "MAX_VALUE", "METADATA_PROJECTION", "READ_ONLY",
    "SERVER", "MetadataError", "MetadataUpdated", "check_entry_name", "entries", "entry_key",
    "inbox_rename_events", "lookup", "set_entries", "usage",
]
