"""The selected mailbox of one session: its sequence numbers, and how the log's changes reach the client."""

# A session sees its mailbox as a list of UIDs in sequence-number order (RFC 9051 §2.3.1.2).
# Changes committed by anyone (this session, another session, SMTP delivery) arrive from the
# account's subscription in log order; apply() folds them into that list and returns the
# untagged responses that tell the client, in the same order. An expunge is told at once when
# the running command allows it and is otherwise held (the UID stays in the list, marked
# gone) until one does: RFC 9051 §7.5.1 forbids EXPUNGE while no command is in progress and
# during FETCH, STORE and SEARCH (the UID forms allow it), so sequence numbers never shift
# under the client's feet.

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from eventmail.imap import responses as r
from eventmail.imap.commands import SeqRange, SequenceSet
from eventmail.imap.context import Live, removal
from eventmail.imap.errors import MailboxGone, bad
from eventmail.imap.recent import RecentMarks
from eventmail.store import Committed, Mailbox, MailboxView, Message, keywords_at_cap

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def uid_set(uids: Iterable[int]) -> SequenceSet:
    """Sorted numbers as a compact set: 1,2,3,7 → `1:3,7`."""
    ranges: list[SeqRange] = []
    start = prev = -1
    for u in sorted(set(uids)):
        if u == prev + 1 and start >= 0:
            prev = u
            continue
        if start >= 0:
            ranges.append(SeqRange(start, prev))
        start = prev = u
    if start >= 0:
        ranges.append(SeqRange(start, prev))
    return SequenceSet(tuple(ranges))


def flag_atoms(flags: Iterable[str], recent: bool = False) -> tuple[r.Value, ...]:
    if isinstance(flags, tuple):
        return _flag_atoms(flags, recent)  # a message's flags: few combinations in a mailbox
    return _flag_atoms(tuple(flags), recent)


@functools.lru_cache(maxsize=1024)
def _flag_atoms(flags: tuple[str, ...], recent: bool) -> tuple[r.Value, ...]:
    atoms: list[r.Value] = [r.Atom(f) for f in flags]
    if recent:
        atoms.append(r.Atom("\\Recent"))
    return tuple(atoms)


@dataclass(frozen=True)
class Notify:
    """How the running command lets changes be told (see the module comment)."""

    expunge_ok: bool
    condstore: bool = False
    qresync: bool = False
    # log seqs of this session's own writes whose FETCH responses the command sends itself
    suppress: frozenset[int] = frozenset()


class Selected:
    """One session's view of its selected mailbox."""

    def __init__(self, mailbox: Mailbox, readonly: bool, messages: Sequence[Message], marks: RecentMarks) -> None:
        self.mailbox_id = mailbox.id
        self.name = mailbox.name
        self.uidvalidity = mailbox.uidvalidity
        self.readonly = readonly
        self.uids: list[int] = [m.uid for m in messages]
        self.gone: set[int] = set()
        # RFC 3501 §2.3.2 \Recent: the messages this session claimed (eventmail/imap/recent.py);
        # EXAMINE sees the unclaimed ones without claiming them. IMAP4rev2 drops the flag (RFC
        # 9051 Appendix E).
        self.marks = marks
        self.tell_recent = True  # `* n RECENT` after EXISTS: not under IMAP4rev2
        if readonly:
            self.recent: set[int] = set(marks.unclaimed(mailbox.id, self.uids))
        else:
            self.recent = marks.claim_all(mailbox.id, self.uids, mailbox.uidnext - 1)
        self.keywords: set[str] = {f for m in messages for f in m.flags if not f.startswith("\\")}
        # RFC 5182 SEARCHRES: the result saved by SEARCH RETURN (SAVE), as UIDs
        self.saved: list[int] = []
        # RFC 5267 live results (SEARCH / SORT RETURN (UPDATE)) by tag, and whether the mailbox
        # changed since they were last brought up to date (eventmail/imap/context.py)
        self.live: dict[str, Live] = {}
        self.live_dirty = False

    # ------------------------------------------------------------------ numbers

    @property
    def exists(self) -> int:
        return len(self.uids)

    def flag_names(self) -> list[str]:
        return [*SYSTEM_FLAGS, *sorted(self.keywords)]

    def seq(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def numbering(self, uid: bool) -> Callable[[int], int]:
        """How the client numbers a message of the list (expunges not yet told included)."""
        if uid:
            return lambda u: u
        return lambda u: bisect.bisect_left(self.uids, u) + 1

    def resolve(self, seqset: SequenceSet, uid: bool) -> list[int]:
        """The UIDs a set names, ascending. Sequence numbers past the end are a BAD (RFC 9051
        §9: seq-number is a message that exists); UIDs that match nothing are ignored, and `n:*`
        always includes the last message (RFC 9051 §6.4.8)."""
        if seqset.saved:
            keep = set(self.uids)
            return sorted(u for u in set(self.saved) if u in keep)
        uids = self.uids
        n = len(uids)
        if uid:
            largest = uids[-1] if uids else 0
            out: set[int] = set()
            for lo, hi in seqset.iter_bounds(largest):
                a = bisect.bisect_left(uids, lo)
                b = bisect.bisect_right(uids, hi)
                out.update(uids[a:b])
            return sorted(out)
        picked: list[int] = []
        for lo, hi in seqset.iter_bounds(n):
            if lo < 1 or hi > n:
                raise bad("invalid message sequence number")
            picked.extend(uids[lo - 1 : hi])
        if len(seqset.ranges) == 1:
            return picked
        return sorted(set(picked))

    # ------------------------------------------------------------------ changes from the log

    def apply(self, events: Iterable[Committed], view: MailboxView, notify: Notify) -> list[r.Response]:
        """Fold committed events (in log order) into the list; return what to tell the client."""
        out: list[r.Response] = []
        told: set[int] = set()  # one FETCH per message per batch: it carries the latest flags
        mid = self.mailbox_id
        events = list(events)
        # The view's rows of every message these events add to or change in this mailbox, in
        # one query: the view is already past all of them (each session folds every change of
        # its mailbox, so a statement per event per session added up under imaptest's stress).
        found = view.messages_of(mid, _touched(events, mid, notify.suppress))
        for c in events:
            e = c.event
            kind = e.WhichOneof("kind")
            if kind == "message_added":
                if e.message_added.mailbox_id == mid:
                    self._added([e.message_added.uid], found, out)
            elif kind == "messages_copied":
                m = e.messages_copied
                # a MOVE within one mailbox: the EXPUNGE first, then the new EXISTS (as Dovecot;
                # RFC 6851 §4.3 has the expunges of the source, the EXISTS is just a new arrival)
                if m.move and m.source_mailbox_id == mid:
                    self._expunged(m.source_uids, notify, out)
                if m.dest_mailbox_id == mid:
                    self._added(list(m.dest_uids), found, out)
            elif kind == "messages_expunged":
                if e.messages_expunged.mailbox_id == mid:
                    self._expunged(e.messages_expunged.uids, notify, out)
            elif kind == "flags_changed":
                f = e.flags_changed
                if f.mailbox_id == mid:
                    self.live_dirty = True
                if f.mailbox_id == mid and c.seq not in notify.suppress:
                    self._flags_changed(f.uids, found, notify, told, out)
            elif kind == "mailbox_deleted":
                if e.mailbox_deleted.mailbox_id == mid:
                    raise MailboxGone(self.name)
            elif kind == "mailbox_renamed" and e.mailbox_renamed.mailbox_id == mid:
                self.name = e.mailbox_renamed.name
        if notify.expunge_ok:
            out.extend(self.flush_expunges(notify.qresync))
        return out

    def _added(self, uids: list[int], found: dict[int, Message], out: list[r.Response]) -> None:
        added = False
        for uid in uids:
            # The view may already be ahead of this event: a message expunged since was never
            # told, so it is not told now either (its later expunge event then matches nothing).
            msg = found.get(uid)
            if msg is None or self.seq(uid) is not None:
                continue
            if not self.uids or uid > self.uids[-1]:
                self.uids.append(uid)
            else:
                bisect.insort(self.uids, uid)
            if self.marks.unclaimed(self.mailbox_id, [uid]) if self.readonly else self.marks.claim(self.mailbox_id, uid):
                self.recent.add(uid)
            self.learn_keywords(msg.flags, out)
            added = True
        if added:
            self.live_dirty = True
            while out and isinstance(out[-1], r.Untagged) and out[-1].values[1:] in (
                    (r.Atom("EXISTS"),), (r.Atom("RECENT"),)):
                out.pop()  # one EXISTS (and RECENT) for a run of arrivals
            out.append(r.exists(len(self.uids)))
            if self.tell_recent:
                out.append(r.Untagged((len(self.recent), r.Atom("RECENT"))))  # RFC 3501 §7.3.2

    def _expunged(self, uids: Iterable[int], notify: Notify, out: list[r.Response]) -> None:
        for uid in uids:
            if self.seq(uid) is not None:
                self.gone.add(uid)
        if notify.expunge_ok:
            out.extend(self.flush_expunges(notify.qresync))

    def _flags_changed(
        self, uids: Iterable[int], found: dict[int, Message], notify: Notify, told: set[int], out: list[r.Response]
    ) -> None:
        shown = [(uid, seq) for uid in dict.fromkeys(uids)
                 if uid not in told and uid not in self.gone and (seq := self.seq(uid)) is not None]
        for uid, seq in shown:
            msg = found.get(uid)
            if msg is None:
                continue  # expunged by a later event, which will be told
            self.learn_keywords(msg.flags, out)
            told.add(uid)
            out.append(self.flags_fetch(seq, msg, notify.condstore))

    def flags_fetch(self, seq: int, msg: Message, modseq: bool) -> r.FetchResponse:
        """An unsolicited FETCH of a message's flags; the UID always goes with it (RFC 7162 §3.2.4
        requires it once QRESYNC is on, and it costs nothing otherwise)."""
        items: list[tuple[str, r.Value]] = [
            ("UID", msg.uid), ("FLAGS", flag_atoms(msg.flags, msg.uid in self.recent))]
        if modseq:
            items.append(("MODSEQ", (msg.modseq,)))  # RFC 7162 §3.1.4.1
        return r.FetchResponse(seq, tuple(items))

    def permanent_flags(self) -> r.Response:
        """`OK [PERMANENTFLAGS]`: `\\*` (new keywords may be created) only while the mailbox is
        under its cap (RFC 9051 §7.1); nothing is permanent in a read-only mailbox."""
        new_ok = () if keywords_at_cap(self.keywords) else (r.Atom("\\*"),)
        permanent: tuple[r.Value, ...] = () if self.readonly else (*flag_atoms(self.flag_names()), *new_ok)
        return r.ok(None, "flags permitted", r.ResponseCode("PERMANENTFLAGS", (permanent,)))

    def learn_keywords(self, flags: Iterable[str], out: list[r.Response]) -> None:
        new = {f for f in flags if not f.startswith("\\")} - self.keywords
        if new:
            # RFC 9051 §7.3.5: FLAGS again when the set of defined flags grows, and the
            # PERMANENTFLAGS that go with it (as Dovecot; imaptest checks every keyword it sees)
            self.keywords |= new
            out.append(r.flags(self.flag_names()))
            if not self.readonly:
                out.append(self.permanent_flags())

    def flush_expunges(self, qresync: bool) -> list[r.Response]:
        """Tell the held expunges: VANISHED once QRESYNC is on (RFC 7162 §3.2.10), else one
        EXPUNGE per message, highest sequence number first so none needs renumbering."""
        if not self.gone:
            return []
        gone = self.gone
        out: list[r.Response] = []
        for live in self.live.values():
            # RFC 5267 §4.3: the message leaves a live result before its EXPUNGE, numbered as
            # the client still numbers it
            told = removal(live, gone, self.numbering(live.uid))
            if told is not None:
                out.append(told)
        if qresync:
            out.append(r.vanished(uid_set(gone)))
        else:
            positions = sorted(bisect.bisect_left(self.uids, u) + 1 for u in gone)
            out.extend(r.expunge(p) for p in reversed(positions))
        self.uids = [u for u in self.uids if u not in gone]
        self.recent -= gone
        self.gone = set()
        return out


def _touched(events: list[Committed], mailbox_id: int, suppress: frozenset[int]) -> set[int]:
    """The UIDs that events add to mailbox `mailbox_id` or change the flags of (but for the
    flag changes of `suppress`, which the running command tells itself)."""
    out: set[int] = set()
    for c in events:
        e = c.event
        kind = e.WhichOneof("kind")
        if kind == "message_added":
            if e.message_added.mailbox_id == mailbox_id:
                out.add(e.message_added.uid)
        elif kind == "messages_copied":
            if e.messages_copied.dest_mailbox_id == mailbox_id:
                out.update(e.messages_copied.dest_uids)
        elif kind == "flags_changed" and e.flags_changed.mailbox_id == mailbox_id and c.seq not in suppress:
            out.update(e.flags_changed.uids)
    return out


__all__ = ["SYSTEM_FLAGS", "Notify", "Selected", "flag_atoms", "uid_set"]
