"""Mailbox names and listings: name rules, LIST/LSUB matching and attributes, STATUS items."""

# RFC 9051 §5.1 names, §6.3.9 LIST (with RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS, RFC 6154
# SPECIAL-USE), RFC 3501 §6.3.9 LSUB, RFC 9051 §6.3.11 STATUS. The hierarchy separator is "/".

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eventmail.imap import metadata as imap_metadata
from eventmail.imap import responses as r
from eventmail.imap.commands import (
    Create,
    Delete,
    List,
    Lsub,
    Rename,
    Status,
    Subscribe,
    UndecodableName,
    Unsubscribe,
)
from eventmail.imap.errors import no
from eventmail.imap.recent import marks as recent_marks
from eventmail.mail import mailboxes as mail_mailboxes
from eventmail.proto import events_pb2 as pb
from eventmail.store import Account, Mailbox, MailboxView

if TYPE_CHECKING:
    from eventmail.imap.session import Session

SEP = "/"
# RFC 6154 §2 attribute ↔ the store's SpecialUse
USE_ATTRS: dict[int, str] = {
    pb.SPECIAL_USE_SENT: "\\Sent", pb.SPECIAL_USE_ARCHIVE: "\\Archive", pb.SPECIAL_USE_TRASH: "\\Trash",
    pb.SPECIAL_USE_DRAFTS: "\\Drafts", pb.SPECIAL_USE_JUNK: "\\Junk", pb.SPECIAL_USE_ALL: "\\All",
    pb.SPECIAL_USE_FLAGGED: "\\Flagged",
}
# CREATE-SPECIAL-USE (RFC 6154 §3) for the uses that name a real mailbox; \All and \Flagged are
# virtual views this server does not have, so asking for them gets NO [USEATTR].
CREATABLE_USES: dict[str, int] = {
    v: k for k, v in USE_ATTRS.items() if k not in (pb.SPECIAL_USE_ALL, pb.SPECIAL_USE_FLAGGED)}
MAX_NAME = 1000  # octets of UTF-8: Dovecot's limit is 255 per level; long enough for any client


def check_name(name: str) -> str:
    """A mailbox name fit to create: no wildcards, no empty levels; a trailing separator is
    dropped (RFC 9051 §6.3.4: it only says the name will hold children)."""
    if isinstance(name, UndecodableName):
        raise no(f"invalid mailbox name: {name.reason}", "CANNOT")
    if name.upper() == "INBOX":
        return "INBOX"
    if name.endswith(SEP):
        name = name[:-1]
    if not name or name.startswith(SEP) or SEP + SEP in name:
        raise no("invalid mailbox name: empty hierarchy level", "CANNOT")
    if "*" in name or "%" in name:
        raise no("mailbox names may not contain * or %", "CANNOT")
    if len(name.encode("utf-8")) > MAX_NAME:
        raise no("mailbox name too long", "LIMIT")
    if name.split(SEP, 1)[0].upper() == "INBOX" and not name.startswith("INBOX"):
        name = "INBOX" + name[5:]  # INBOX/child is under the one INBOX, whatever its case
    return name


def pattern_regex(reference: str, pattern: str) -> re.Pattern[str]:
    """RFC 9051 §6.3.9: `*` matches anything, `%` anything but the separator; the reference is
    prefixed to the pattern."""
    full = reference + pattern
    out = []
    for ch in full:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.S)


def name_matches(regexes: Iterable[re.Pattern[str]], name: str) -> bool:
    for rx in regexes:
        if rx.fullmatch(name):
            return True
        # INBOX is case-insensitive (RFC 9051 §5.1), also as the first level of its children
        if (name == "INBOX" or name.startswith("INBOX/")) and rx.flags & re.I == 0:
            if re.compile(rx.pattern, re.S | re.I).fullmatch(name):
                return True
    return False


def _ancestors(name: str) -> list[str]:
    parts = name.split(SEP)
    return [SEP.join(parts[:i]) for i in range(1, len(parts))]


@dataclass
class Entry:
    name: str
    attrs: list[str]
    extended: list[tuple[str, r.Value]]
    selectable: bool


class Tree:
    """The account's mailbox names at one moment, with the hierarchy they imply."""

    def __init__(self, view: MailboxView) -> None:
        self.mailboxes: dict[str, Mailbox] = {m.name: m for m in view.mailboxes()}
        self.subscribed: set[str] = set(view.subscriptions())
        self.implied: set[str] = set()
        for name in self.mailboxes:
            self.implied.update(a for a in _ancestors(name) if a not in self.mailboxes)
        names = sorted(set(self.mailboxes) | self.implied | self.subscribed)
        self.with_children: set[str] = set()
        for name in set(self.mailboxes) | self.implied:
            self.with_children.update(_ancestors(name))
        self._all = names

    def children_attr(self, name: str) -> str:
        return "\\HasChildren" if name in self.with_children else "\\HasNoChildren"

    def listing(self, cmd: List, rev2: bool) -> list[Entry]:
        """The entries of a LIST, basic or extended (RFC 5258 §3)."""
        if cmd.reference == "" and cmd.patterns == ("",) and not cmd.select_options:
            return [Entry("", ["\\Noselect"], [], False)]  # RFC 9051 §6.3.9: the separator query
        regexes = [pattern_regex(cmd.reference, p) for p in cmd.patterns if p or cmd.reference]
        sel = set(cmd.select_options)
        want_sub = "SUBSCRIBED" in sel or "SUBSCRIBED" in cmd.return_options
        extended = cmd.extended or rev2
        out: list[Entry] = []
        if "SUBSCRIBED" in sel:
            candidates = sorted(self.subscribed)
            if "RECURSIVEMATCH" in sel:
                # RFC 5258 §3.5: a name that matches and has a subscribed descendant that does
                # not (one that matches is listed itself and needs no CHILDINFO on its parent)
                parents = {a for s in self.subscribed if not name_matches(regexes, s) for a in _ancestors(s)}
                candidates = sorted(set(candidates) | parents)
        else:
            candidates = sorted(set(self.mailboxes) | self.implied)
        for name in _inbox_first(candidates):
            if not name_matches(regexes, name):
                continue
            mb = self.mailboxes.get(name)
            if "SPECIAL-USE" in sel and (mb is None or mb.special_use not in USE_ATTRS):
                continue
            attrs: list[str] = []
            ext: list[tuple[str, r.Value]] = []
            if mb is None:
                attrs.append("\\NonExistent" if extended else "\\Noselect")
            attrs.append(self.children_attr(name))
            if mb is not None and mb.special_use in USE_ATTRS:
                attrs.append(USE_ATTRS[mb.special_use])
            subscribed = name in self.subscribed
            if want_sub and subscribed:
                attrs.append("\\Subscribed")
            if "SUBSCRIBED" in sel and not subscribed:
                if "RECURSIVEMATCH" not in sel:
                    continue
                ext.append(("CHILDINFO", (b"SUBSCRIBED",)))
            out.append(Entry(name, attrs, ext, mb is not None))
        return out

    def lsub(self, reference: str, pattern: str) -> list[Entry]:
        """RFC 3501 §6.3.9: subscribed names; a parent `%` stops at is sent as \\Noselect."""
        rx = [pattern_regex(reference, pattern)]
        out: dict[str, Entry] = {}
        for name in sorted(self.subscribed):
            if name_matches(rx, name):
                attrs = [] if name in self.mailboxes else ["\\Noselect"]
                out[name] = Entry(name, attrs, [], name in self.mailboxes)
                continue
            for parent in _ancestors(name):
                if parent not in out and parent not in self.subscribed and name_matches(rx, parent):
                    out[parent] = Entry(parent, ["\\Noselect"], [], False)
        return [out[n] for n in _inbox_first(sorted(out))]


def _inbox_first(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (n != "INBOX", n))


def status_values(
    view: MailboxView, mb: Mailbox, items: Iterable[str], *, appendlimit: int, recent: int = 0
) -> list[r.Value]:
    """The flat (name value ...) list of a STATUS response (RFC 9051 §7.2.4; RFC 7162 §3.1.6
    HIGHESTMODSEQ; RFC 7889 APPENDLIMIT; RFC 8474 MAILBOXID)."""
    items = list(items)
    messages, unseen, deleted, octets, deleted_octets = view.tally(mb.id)
    out: list[r.Value] = []
    for item in items:
        value: r.Value
        if item == "MESSAGES":
            value = messages
        elif item == "UIDNEXT":
            value = mb.uidnext
        elif item == "UIDVALIDITY":
            value = mb.uidvalidity
        elif item == "UNSEEN":
            value = unseen
        elif item == "DELETED":
            value = deleted
        elif item == "SIZE":
            value = octets
        elif item == "RECENT":
            value = recent
        elif item == "HIGHESTMODSEQ":
            value = mb.highest_modseq
        elif item == "APPENDLIMIT":
            value = appendlimit
        elif item == "DELETED-STORAGE":  # RFC 9208: what EXPUNGE would free, in units of 1024 octets
            value = (deleted_octets + 1023) // 1024
        else:  # MAILBOXID: the mailbox id is never reused within the account
            value = (r.Atom(mailbox_object_id(mb)),)
        out.extend((r.Atom(item), value))
    return out


def existing_mailbox(view: MailboxView, name: str, code: str = "NONEXISTENT") -> Mailbox:
    """The named mailbox, or NO with `code`: NONEXISTENT (RFC 5530 §3), or TRYCREATE where a
    client may create it and retry (APPEND, COPY and MOVE; RFC 9051 §6.3.12, §6.4.7)."""
    mb = view.mailbox(name)
    if mb is None:
        raise no(f"no mailbox {name}", code)
    return mb


def mailbox_object_id(mb: Mailbox) -> str:
    return f"M{mb.id}x{mb.uidvalidity}"


def status_response(name: str, values: list[r.Value]) -> r.Untagged:
    return r.Untagged((r.Atom("STATUS"), r.Mailbox(name), tuple(values)))


# ---------------------------------------------------------------------- the commands


def _recent(s: Session, mb: Mailbox, items: Iterable[str]) -> int:
    """STATUS RECENT: this session's recent messages if it has the mailbox selected, else the
    ones no session has claimed yet (RFC 3501 §6.3.10; eventmail/imap/recent.py)."""
    if "RECENT" not in items:
        return 0
    sel = s.selected
    if sel is not None and sel.mailbox_id == mb.id:
        return len(sel.recent)
    acct = s.need_acct()
    return len(recent_marks(s.opts.store, acct.name).unclaimed(mb.id, acct.view.uids(mb.id)))


async def list_(s: Session, cmd: List) -> AsyncIterator[r.Response]:
    acct = s.need_acct()
    tree = Tree(acct.view)
    if "HIGHESTMODSEQ" in cmd.status_items:
        s.condstore = True  # RFC 7162 §3.1: a CONDSTORE-enabling command
    for e in tree.listing(cmd, s.rev2):
        yield r.list_response(e.attrs, SEP, e.name, e.extended)
        if cmd.status_items and e.selectable:
            # RFC 5819 §2: a STATUS response after each selectable mailbox's LIST response
            mb = tree.mailboxes[e.name]
            values = status_values(acct.view, mb, cmd.status_items, appendlimit=s.opts.limits.max_append,
                                   recent=_recent(s, mb, cmd.status_items))
            yield status_response(e.name, values)
        if cmd.metadata and e.selectable:
            for resp in imap_metadata.list_metadata(s, cmd, tree.mailboxes[e.name].id, e.name):  # RFC 9590
                yield resp
    yield r.ok(cmd.tag, "LIST completed")


async def lsub(s: Session, cmd: Lsub) -> AsyncIterator[r.Response]:
    acct = s.need_acct()
    for e in Tree(acct.view).lsub(cmd.reference, cmd.pattern):
        yield r.list_response(e.attrs, SEP, e.name, command="LSUB")
    yield r.ok(cmd.tag, "LSUB completed")


async def status(s: Session, cmd: Status) -> AsyncIterator[r.Response]:
    acct = s.need_acct()
    mb = existing_mailbox(acct.view, cmd.mailbox)
    if "HIGHESTMODSEQ" in cmd.items:
        s.condstore = True  # RFC 7162 §3.1
    values = status_values(acct.view, mb, cmd.items, appendlimit=s.opts.limits.max_append, recent=_recent(s, mb, cmd.items))
    yield status_response(mb.name, values)
    yield r.ok(cmd.tag, "STATUS completed")


async def _create_parents(acct: Account, name: str) -> None:
    """RFC 9051 §6.3.4: the superior names a new name needs are created with it."""
    for parent in _ancestors(name):
        if acct.view.mailbox(parent) is None:
            await mail_mailboxes.create(acct, parent, subscribed=False)


async def create(s: Session, cmd: Create) -> AsyncIterator[r.Response]:
    acct = s.need_acct()
    name = check_name(cmd.mailbox)
    if name == "INBOX" or acct.view.mailbox(name) is not None:
        raise no(f"mailbox {name} exists", "ALREADYEXISTS")
    use: int = pb.SPECIAL_USE_NONE
    if cmd.special_use:
        # RFC 6154 §3: a use that cannot be given means no mailbox at all
        if len(cmd.special_use) > 1 or cmd.special_use[0] not in CREATABLE_USES:
            raise no("unsupported special-use attribute", "USEATTR")
        use = CREATABLE_USES[cmd.special_use[0]]
    await _create_parents(acct, name)
    mb = await mail_mailboxes.create(acct, name, use, subscribed=False)
    # RFC 8474 §4.1: the new mailbox's MAILBOXID in the tagged OK
    yield r.ok(cmd.tag, "CREATE completed", r.ResponseCode("MAILBOXID", ((r.Atom(mailbox_object_id(mb)),),)))


async def delete(s: Session, cmd: Delete) -> AsyncIterator[r.Response]:
    acct = s.need_acct()
    if cmd.mailbox.upper() == "INBOX":
        raise no("INBOX cannot be deleted", "CANNOT")  # RFC 9051 §6.3.5
    mb = existing_mailbox(acct.view, cmd.mailbox)
    if s.selected is not None and s.selected.mailbox_id == mb.id:
        s.unselect()
    await mail_mailboxes.delete(acct, mb.name)
    yield r.ok(cmd.tag, "DELETE completed")


async def rename(s: Session, cmd: Rename) -> AsyncIterator[r.Response]:
    acct = s.need_acct()
    old = existing_mailbox(acct.view, cmd.mailbox)
    new = check_name(cmd.new_name)
    if new == "INBOX" or acct.view.mailbox(new) is not None:
        raise no(f"mailbox {new} exists", "ALREADYEXISTS")
    if new.startswith(old.name + SEP):
        raise no("a mailbox cannot be moved under itself", "CANNOT")
    await _create_parents(acct, new)
    # RFC 9051 §6.3.6: renaming INBOX moves its messages to the new name; INBOX stays, empty
    await mail_mailboxes.rename(acct, old, new)
    yield r.ok(cmd.tag, "RENAME completed")


async def subscribe(s: Session, cmd: Subscribe | Unsubscribe) -> AsyncIterator[r.Response]:
    acct = s.need_acct()
    name = "INBOX" if cmd.mailbox.upper() == "INBOX" else cmd.mailbox
    if isinstance(name, UndecodableName) and isinstance(cmd, Subscribe):
        raise no(f"invalid mailbox name: {name.reason}", "CANNOT")  # LSUB could not say it back
    # RFC 9051 §6.3.7: names need not exist (a server MAY check; we do not)
    await mail_mailboxes.set_subscription(acct, name, isinstance(cmd, Subscribe))
    yield r.ok(cmd.tag, f"{type(cmd).__name__.upper()} completed")


__all__ = [
    "CREATABLE_USES", "SEP", "USE_ATTRS", "Entry", "Tree", "check_name", "create", "delete", "list_", "lsub",
    "mailbox_object_id", "name_matches", "pattern_regex", "rename", "status", "status_response", "status_values",
    "subscribe",
]
