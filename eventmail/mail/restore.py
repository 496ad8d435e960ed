"""Point-in-time restore: an account, or one mailbox tree, brought back to how it was at a moment —
as new events, so clients see it at once and the restore can be undone — and its undo.

What "as it was" means here: every mailbox that existed at the moment exists again (recreated when
it was deleted since); every message it held is in it again (messages expunged since come back
with new UIDs, RFC 9051 §2.3.1.1 — UIDs only grow); and every message still there has the flags it
had then. Mail that arrived after the moment stays: a restore gives back, it never takes away. The
message bytes are never copied — a restored message points at the blob it always had.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..proto import events_pb2 as pb
from ..store import Account, MailboxView, Message, NotFound, Projector, Store
from .admin import AdminError, _arg, _progress, check_account_name

# How many restored messages go in one commit: the IDLE-ing client sees them arrive in steps, the
# progress bar moves, and one commit stays a few hundred kilobytes of events.
BATCH = 500
# \Recent is a session's, never stored (RFC 3501 §2.3.2); nothing else is left out.
SESSION_FLAGS = frozenset({"\\Recent"})
RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_moment(text: str, now: float | None = None) -> int:
    """A moment in microseconds since the epoch from an ISO 8601 time (local time when it has no
    offset), seconds since the epoch, or a relative form back from now (`90m`, `2h`, `3d`, `1w`)."""
    now = time.time() if now is None else now
    text = text.strip()
    rel = RELATIVE.fullmatch(text)
    if rel:
        return int((now - int(rel.group(1)) * UNIT_SECONDS[rel.group(2)]) * 1_000_000)
    try:
        return int(float(text) * 1_000_000)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise AdminError(f"time {text!r}: expected ISO 8601 (2026-12-01T09:30), seconds since the epoch, "
                         "or a relative time such as 2h or 3d") from None
    if dt.tzinfo is None:
        return int(time.mktime(dt.timetuple()) * 1_000_000 + dt.microsecond)
    return int(dt.timestamp() * 1_000_000)


def show_moment(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / 1e6, UTC).isoformat(timespec="seconds")


def in_tree(name: str, tree: str) -> bool:
    return not tree or name == tree or name.startswith(tree + "/")


@dataclass
class MailboxPlan:
    """What a restore does to one mailbox (by name, as the user knows it)."""

    name: str
    special_use: int
    recreate: bool
    back: list[pb.MessageAdded] = field(default_factory=list)
    # (uid now, flags now, flags then)
    flags: list[tuple[int, tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.recreate or self.back or self.flags)


@dataclass
class Plan:
    at_us: int
    tree: str
    mailboxes: list[MailboxPlan]

    @property
    def messages_back(self) -> int:
        return sum(len(m.back) for m in self.mailboxes)

    def lines(self) -> list[str]:
        changes = [m for m in self.mailboxes if not m.empty()]
        what = f"mailbox {self.tree}" if self.tree else "the account"
        if not changes:
            return [f"{what} at {show_moment(self.at_us)} equals it now: nothing to restore"]
        out = [f"{what} as at {show_moment(self.at_us)}:"]
        for m in changes:
            parts = [f"{len(m.back)} messages back"]
            if m.flags:
                parts.append(f"flags changed on {len(m.flags)}")
            if m.recreate:
                parts.append("mailbox recreated")
            out.append(f"  {m.name}: {', '.join(parts)}")
        return out


def _account_start(account: Account) -> int | None:
    for c in account.events():
        return c.time_us
    return None


def check_moment(account: Account, at_us: int, now_us: int) -> None:
    from .retention import collected_before

    if at_us > now_us:
        raise AdminError(f"{show_moment(at_us)} is in the future")
    window = collected_before(account)
    if at_us < window:
        raise AdminError(f"{show_moment(at_us)} is older than the retention window: messages expunged before "
                         f"{show_moment(window)} were removed (the account's retention.days setting)")
    start = _account_start(account)
    if start is None or at_us < start:
        since = show_moment(start) if start is not None else "now"
        raise AdminError(f"{show_moment(at_us)} is before account {account.name} existed (its first event: {since})")


async def plan(account: Account, at_us: int, tree: str = "", into: MailboxView | None = None) -> Plan:
    """Compare the account at `at_us` with now (or with the account `into`, restoring into
    another); nothing is written. The past is the log replayed to then, in a thread (CPU and disk
    bound); the comparison reads the live view, so it runs on the event loop, between commits."""
    past = (await asyncio.to_thread(account.projector_at, at_us)).view
    plans = compare(past, account.view if into is None else into, tree)
    if tree and not plans:
        raise AdminError(f"there was no mailbox {tree} at {show_moment(at_us)}")
    await asyncio.to_thread(_fill_from_log, account, plans)
    return Plan(at_us, tree, plans)


def compare(past: MailboxView, now: MailboxView, tree: str) -> list[MailboxPlan]:
    """Per mailbox of the past (within `tree`): what must come back, and flags to set back."""
    plans: list[MailboxPlan] = []
    for mb in past.mailboxes():
        if not in_tree(mb.name, tree):
            continue
        current = now.mailbox(mb.name)
        mp = MailboxPlan(mb.name, mb.special_use, recreate=current is None)
        have: dict[bytes, list[Message]] = defaultdict(list)
        if current is not None:
            for m in now.messages(current.id):
                have[m.blob_id].append(m)
        for m in past.messages(mb.id):
            flags = tuple(sorted(set(m.flags) - SESSION_FLAGS))
            copies = have.get(m.blob_id)
            if copies:
                there = copies.pop(0)
                if tuple(sorted(set(there.flags) - SESSION_FLAGS)) != flags:
                    mp.flags.append((there.uid, there.flags, flags))
                continue
            mp.back.append(_template(past, m, flags))
        plans.append(mp)
    return plans


def _template(view: MailboxView, m: Message, flags: tuple[str, ...]) -> pb.MessageAdded:
    # Back in the same account under the EMAILID and THREADID it had (RFC 8474 §5.1: an object id
    # names the same message for as long as it exists); a restore into another account
    # (apply_into) adds it anew there.
    added = pb.MessageAdded(blob_id=m.blob_id, size=m.size, internal_date=m.internal_date,
                            internal_date_tz=m.internal_date_tz, flags=list(flags), email_id=m.email_id,
                            thread_id=m.thread_id)
    structure = view.structure(m.mailbox_id, m.uid)
    if structure is not None:
        added.structure.CopyFrom(structure)
    return added


def _fill_from_log(account: Account, plans: list[MailboxPlan]) -> None:
    """What the view does not keep but a restored message needs, from the message's first
    MessageAdded: its junk features (so training on it later works as on the original) and whether
    it came from a bare-LF file (export gives it back that way)."""
    wanted = {t.blob_id for p in plans for t in p.back}
    found: dict[bytes, pb.MessageAdded] = {}
    if not wanted:
        return
    for c in account.events():
        if c.event.WhichOneof("kind") != "message_added":
            continue
        added = c.event.message_added
        if added.blob_id in wanted and added.blob_id not in found:
            found[added.blob_id] = added
            if len(found) == len(wanted):
                break
    for p in plans:
        for t in p.back:
            original = found.get(t.blob_id)
            if original is not None:
                t.junk.CopyFrom(original.junk)
                t.origin.source_lf = original.origin.source_lf


def _by_flags(items: Iterable[tuple[int, tuple[str, ...]]]) -> dict[tuple[str, ...], list[int]]:
    """uid -> flags pairs grouped by the flag set: one FlagsChanged (replace) event per set."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for uid, flags in items:
        groups[tuple(sorted(flags))].append(uid)
    return groups


async def apply(account: Account, p: Plan, restore_id: str) -> pb.RestoreRecorded:
    """Carry out a plan as new events, then record the restore (what its undo needs)."""
    record = pb.RestoreRecorded(restore_id=restore_id, at_us=p.at_us, mailbox=p.tree)
    used = {mb.special_use for mb in account.view.mailboxes()}
    total, done = p.messages_back, 0
    _progress(0, total)
    for mp in p.mailboxes:
        if mp.empty():
            continue
        if mp.recreate:
            # A special use another mailbox took over since stays with it (RFC 6154 §2: one per use).
            use = mp.special_use if mp.special_use not in used else pb.SPECIAL_USE_NONE
            created = await account.create_mailbox(mp.name, use)
            record.created_mailbox_ids.append(created.id)
        mailbox = account.mailbox_required(mp.name)
        for t in mp.back:
            t.origin.kind, t.origin.source = "restore", restore_id
        for i in range(0, len(mp.back), BATCH):
            batch = mp.back[i:i + BATCH]
            await account.add_existing(mailbox.id, batch)
            done += len(batch)
            _progress(done, total)
        for (uid, before, _) in mp.flags:
            record.flags_before.append(pb.RestoredFlags(mailbox_id=mailbox.id, uid=uid, flags=list(before)))
        for flags, uids in _by_flags((uid, then) for uid, _, then in mp.flags).items():
            await account.change_flags(mailbox.id, uids, add=flags, replace=True)
    record.messages_back = total
    await account.append([pb.Event(restore_recorded=record)])
    return record


async def apply_into(source: Account, target: Account, p: Plan, restore_id: str) -> None:
    """Carry out a plan made against another account: it has its own log and keys, so each
    message's bytes are read from the source and stored again under the target's keys."""
    used = {mb.special_use for mb in target.view.mailboxes()}
    total, done = p.messages_back, 0
    _progress(0, total)
    for mp in p.mailboxes:
        if mp.recreate:
            use = mp.special_use if mp.special_use not in used else pb.SPECIAL_USE_NONE
            await target.create_mailbox(mp.name, use)
        for t in mp.back:
            raw = await source.read_message(t.blob_id)
            origin = pb.Origin(kind="restore", source=restore_id, source_lf=t.origin.source_lf)
            await target.add_message(mp.name, raw, flags=t.flags, internal_date=t.internal_date,
                                     internal_date_tz=t.internal_date_tz, origin=origin, structure=t.structure,
                                     junk=t.junk)
            done += 1
            _progress(done, total)
        for uid, _, then in mp.flags:  # a default mailbox's messages: none in a new account
            await target.change_flags(target.mailbox_required(mp.name).id, [uid], add=then, replace=True)


def _restores(account: Account) -> tuple[dict[str, pb.RestoreRecorded], set[str]]:
    """The account's recorded restores by id, and the ids already undone."""
    done: dict[str, pb.RestoreRecorded] = {}
    undone: set[str] = set()
    for c in account.events():
        if c.event.WhichOneof("kind") == "restore_recorded":
            r = c.event.restore_recorded
            done[r.restore_id] = r
            if r.undoes:
                undone.add(r.undoes)
    return done, undone


def _added_by(account: Account, restore_id: str) -> dict[int, list[int]]:
    """mailbox id -> the UIDs a restore added that are still there."""
    out: dict[int, list[int]] = defaultdict(list)
    for c in account.events():
        if c.event.WhichOneof("kind") != "message_added":
            continue
        a = c.event.message_added
        if a.origin.kind == "restore" and a.origin.source == restore_id and account.view.message(a.mailbox_id, a.uid):
            out[a.mailbox_id].append(a.uid)
    return out


async def undo(account: Account, restore_id: str, undo_id: str) -> list[str]:
    """Take a restore back: its messages still where it put them are expunged, the flags it
    changed are set back, and the mailboxes it recreated are deleted when empty again."""
    restores, undone = await asyncio.to_thread(_restores, account)
    r = restores.get(restore_id)
    if r is None or r.undoes:
        raise AdminError(f"account {account.name} has no restore {restore_id}")
    if restore_id in undone:
        raise AdminError(f"restore {restore_id} was undone already")
    added = await asyncio.to_thread(_added_by, account, restore_id)
    removed = 0
    for mailbox_id, uids in sorted(added.items()):
        for i in range(0, len(uids), BATCH):
            await account.expunge(mailbox_id, uids[i:i + BATCH])
        removed += len(uids)
    before: dict[int, list[tuple[int, tuple[str, ...]]]] = defaultdict(list)
    for f in r.flags_before:
        if account.view.message(f.mailbox_id, f.uid) is not None:
            before[f.mailbox_id].append((f.uid, tuple(f.flags)))
    for mailbox_id, items in sorted(before.items()):
        for flags, uids in _by_flags(items).items():
            await account.change_flags(mailbox_id, uids, add=flags, replace=True)
    deleted = []
    for mailbox_id in r.created_mailbox_ids:
        mb = account.view.mailbox_by_id(mailbox_id)
        if mb is not None and account.view.count(mailbox_id) == 0:
            await account.delete_mailbox(mb.name)
            deleted.append(mb.name)
    await account.append([pb.Event(restore_recorded=pb.RestoreRecorded(restore_id=undo_id, undoes=restore_id))])
    lines = [f"restore {restore_id} undone: {removed} messages removed, "
             f"flags set back on {sum(len(v) for v in before.values())}"]
    if deleted:
        lines.append(f"mailboxes deleted again: {', '.join(deleted)}")
    return lines


def new_restore_id() -> str:
    """Short enough to type, random enough never to repeat within an account."""
    return "r" + secrets.token_hex(5)


class RestoreOps:
    """`eventmail restore ...` on an open, writable store (the CLI's or a running server's)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def commands(self) -> dict[str, Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]]:
        return {"restore": self.restore, "restore.undo": self.undo}

    def _account(self, args: Mapping[str, Any]) -> str:
        name = _arg(args, "name")
        if name not in self.store.system.accounts:
            raise AdminError(f"no account {name}")
        return name

    async def _undelete(self, name: str) -> list[str]:
        free, taken = await self.store.undelete_account(name)
        lines = [f"account {name} brought back" + (f" with {', '.join(free)}" if free else " (no address)")]
        if taken:
            lines.append(f"taken by other accounts meanwhile, not given back: {', '.join(taken)}")
        return lines

    async def restore(self, args: Mapping[str, Any]) -> dict[str, Any]:
        name = _arg(args, "name")
        at_text = str(args.get("at") or "")
        deleted = name in self.store.system.deleted and name not in self.store.system.accounts
        if not deleted:
            self._account(args)
            if not at_text:
                raise AdminError("give --at TIME (or --undo ID); without it, restore brings back a deleted account")
        at_us = parse_moment(at_text, self.clock()) if at_text else None
        tree = str(args.get("mailbox") or "")
        dry_run = bool(args.get("dry_run"))
        into = str(args.get("into") or "")
        if into:
            if deleted or at_us is None:
                raise AdminError("--into restores an existing account's past: give --at TIME (bring a deleted "
                                 "account back first with `restore NAME`)")
            return await self._restore_into(name, into, at_us, tree, dry_run)
        before: list[str] = []
        if deleted:
            if dry_run:
                return {"message": f"account {name} is deleted: restore would bring it back (dry run: nothing changed)"}
            before = await self._undelete(name)
            if at_us is None:
                return {"message": "\n".join(before)}
        assert at_us is not None
        async with self.store.use_account(name) as acct:
            check_moment(acct, at_us, int(self.clock() * 1_000_000))
            p = await plan(acct, at_us, tree)
            lines = [*before, *p.lines()]
            if dry_run:
                return {"message": "\n".join([*lines, "(dry run: nothing changed)"])}
            if all(m.empty() for m in p.mailboxes):
                return {"message": "\n".join(lines)}
            restore_id = new_restore_id()
            try:
                await apply(acct, p, restore_id)
            except NotFound as e:
                raise AdminError(f"restore stopped: {e}") from None
        return {"message": "\n".join([*lines, f"undo with: eventmail restore {name} --undo {restore_id}",
                                      restore_id]), "restore_id": restore_id}

    async def _restore_into(self, name: str, into: str, at_us: int, tree: str, dry_run: bool) -> dict[str, Any]:
        """The past of `name` as a new account `into` (its own log and keys), without addresses or
        password: the operator gives it those, or exports it."""
        check_account_name(into)
        if into in self.store.system.accounts or into in self.store.system.deleted:
            raise AdminError(f"account {into} exists: --into makes a new account")
        async with self.store.use_account(name) as src:
            check_moment(src, at_us, int(self.clock() * 1_000_000))
            if dry_run:
                p = await plan(src, at_us, tree, into=Projector(src.registration).view)
                return {"message": "\n".join([*p.lines(), f"into a new account {into}", "(dry run: nothing changed)"])}
            await self.store.create_account(into, [], None)
            async with self.store.use_account(into) as target:
                p = await plan(src, at_us, tree, into=target.view)
                restore_id = new_restore_id()
                await apply_into(src, target, p, restore_id)
        return {"message": "\n".join([*p.lines(), f"into the new account {into} (no address, no password: "
                                       f"`account set-password {into}`, `account add-address {into} ...`; "
                                       f"to take it back, `account delete {into} --shred`)", restore_id]),
                "restore_id": restore_id}

    async def undo(self, args: Mapping[str, Any]) -> dict[str, Any]:
        name = self._account(args)
        restore_id = _arg(args, "id")
        async with self.store.use_account(name) as acct:
            undo_id = new_restore_id()
            lines = await undo(acct, restore_id, undo_id)
        return {"message": "\n".join(lines)}


def tally(plan_: Plan) -> Counter[str]:
    """Totals of a plan, for tests and the bench."""
    c: Counter[str] = Counter()
    for m in plan_.mailboxes:
        c["back"] += len(m.back)
        c["flags"] += len(m.flags)
        c["recreated"] += m.recreate
    return c
