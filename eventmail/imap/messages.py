"""The message commands: APPEND, REPLACE, FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE (RFC 9051 §6.3.12, §6.4; RFC 8508)."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING

from eventmail.imap import commands as c
from eventmail.imap import context
from eventmail.imap import responses as r
from eventmail.imap.errors import bad, no
from eventmail.imap.fetch import MessageData, make_plan, render
from eventmail.imap.mailboxes import existing_mailbox
from eventmail.imap.search import Candidate, SearchContext, matches, needs_text, uses_modseq
from eventmail.imap.selected import SYSTEM_FLAGS, Selected, flag_atoms, uid_set
from eventmail.imap.urls import fetch_url
from eventmail.mail import ingest, moves
from eventmail.mime import MimeTooDeep
from eventmail.proto import events_pb2 as pb
from eventmail.store import Account, MailboxView, Message, normalize_address

if TYPE_CHECKING:
    from eventmail.imap.session import Session

_SYSTEM = {f.upper(): f for f in SYSTEM_FLAGS}
# Past this many messages one query for the whole mailbox beats one query per message.
_BULK = 64
# Yield to other connections after this many messages of one long FETCH or SEARCH.
_SLICE = 100
# Messages whose bytes are read in one trip off the event loop (Account.read_messages), at most
# this many and this many octets together: few thread hops, little held in memory at once.
_READ_COUNT = 64
_READ_OCTETS = 8 * 1024 * 1024


def _chunks(msgs: list[Message], reads_bytes: bool) -> Iterator[list[Message]]:
    """The messages in slices: _SLICE at a time, or read-sized ones when their bytes are read."""
    chunk: list[Message] = []
    octets = 0
    for msg in msgs:
        chunk.append(msg)
        octets += msg.size
        if len(chunk) >= (_READ_COUNT if reads_bytes else _SLICE) or (reads_bytes and octets >= _READ_OCTETS):
            yield chunk
            chunk, octets = [], 0
    if chunk:
        yield chunk

def check_flags(flags: Iterable[str]) -> list[str]:
    """Flags a client may set: the system flags but \\Recent (RFC 9051 §2.3.2: the server sets it,
    and IMAP4rev2 has none), and keywords. Another `\\word` is not a flag we know: BAD."""
    out: list[str] = []
    for f in flags:
        if f.startswith("\\"):
            known = _SYSTEM.get(f.upper())
            if known is None:
                if f.upper() == "\\RECENT":
                    continue
                raise bad(f"unknown system flag {f}")
            out.append(known)
        else:
            out.append(f)
    return out


def _lookup(view: MailboxView, mailbox_id: int, uids: list[int], exists: int) -> dict[int, Message]:
    """The messages of these UIDs, by UID. Reading the whole mailbox makes a Message of every
    message in it: worth it only when most of them are asked for (`exists`: how many the
    session sees), not for imaptest's FETCH of 100 out of several hundred."""
    if len(uids) > _BULK and 2 * len(uids) > exists:
        wanted = set(uids)
        return {m.uid: m for m in view.messages(mailbox_id) if m.uid in wanted}
    return view.messages_of(mailbox_id, uids)


# ---------------------------------------------------------------------- APPEND


async def append(s: Session, cmd: c.Append) -> AsyncIterator[r.Response]:
    acct = s.need_acct()
    mb = existing_mailbox(acct.view, cmd.mailbox, "TRYCREATE")
    # Every message is put together and checked before any is stored: one bad URL fails the
    # whole APPEND (RFC 4469 §5), as a MULTIAPPEND is all or nothing (RFC 3502 §3)
    ready: list[tuple[c.AppendMessage, bytes]] = []
    for m in cmd.messages:
        ready.append((m, await _message_bytes(s, acct, m, "APPEND")))
    uids: list[int] = []
    for m, data in ready:
        uids.append(await _store(s, acct, mb.id, m, data))
    # RFC 4315 §3 APPENDUID (a set for MULTIAPPEND, RFC 3502)
    yield r.ok(cmd.tag, "APPEND completed", r.ResponseCode("APPENDUID", (mb.uidvalidity, uid_set(uids))))


async def replace(s: Session, cmd: c.Replace) -> AsyncIterator[r.Response]:
    """RFC 8508: APPEND the new message, then expunge the one it replaces from the selected
    mailbox. Everything that can fail (the target mailbox, the message, the original) is checked
    before anything is stored: a failed REPLACE leaves the original as it was (§3.3)."""
    sel = s.need_selected()
    acct = s.need_acct()
    if sel.readonly:
        raise no("the mailbox is read-only (EXAMINE)", "READ-ONLY")
    if cmd.uid:
        if cmd.number not in sel.uids or cmd.number in sel.gone:
            raise no(f"no message with UID {cmd.number}", "NONEXISTENT")
        original = cmd.number
    else:
        original = sel.resolve(c.SequenceSet.of(cmd.number), uid=False)[0]  # BAD past the end
        if original in sel.gone:
            raise no("that message was expunged", "EXPUNGEISSUED")
    if acct.view.message(sel.mailbox_id, original) is None:
        raise no("that message was expunged", "EXPUNGEISSUED")
    mb = existing_mailbox(acct.view, cmd.mailbox, "TRYCREATE")
    m = cmd.message
    uid = await _store(s, acct, mb.id, m, await _message_bytes(s, acct, m, "REPLACE"))
    # RFC 8508 §3.3: the original goes as UID EXPUNGE would take it; its EXPUNGE (or VANISHED)
    # reaches the client with this command's answer
    await moves.expunge(acct, sel.mailbox_id, [original])
    yield r.ok(cmd.tag, "REPLACE completed", r.ResponseCode("APPENDUID", (mb.uidvalidity, uid)))


async def _message_bytes(s: Session, acct: Account, m: c.AppendMessage, command: str) -> bytes:
    """The bytes an APPEND or REPLACE message stands for (CATENATE put together, RFC 4469), checked
    before anything is stored: UTF8 literal allowed, not empty, flags within the limits."""
    if m.utf8 and not s.utf8:
        raise bad(f"{command} UTF8 needs ENABLE UTF8=ACCEPT")  # RFC 6855 §4
    data = m.data if m.parts is None else await _catenate(s, acct, m.parts)
    if not data:
        raise no("empty message")
    check_flags(m.flags)
    return data


async def _store(s: Session, acct: Account, mailbox_id: int, m: c.AppendMessage, data: bytes) -> int:
    """One message of an APPEND or REPLACE stored (parsed, fsynced, its event committed); its UID."""
    flags = check_flags(m.flags)
    when = m.internal_date
    if when is None:
        stamp, tz = time.time(), 0
    else:
        offset = when.utcoffset() or datetime.timedelta(0)
        stamp, tz = when.timestamp(), int(offset.total_seconds()) // 60
    try:
        structure, content = await ingest.analyze_append(data, s.opts.analyze)
    except MimeTooDeep as e:
        raise no(f"message refused: {e}", "LIMIT") from e  # RFC 5530 §3 LIMIT
    existing = await ingest.sent_copy_of(acct, mailbox_id, structure, flags)
    if existing is not None:
        return existing  # the server filed this message here as it was sent: no second copy
    origin = pb.Origin(kind="imap-append", remote_ip=s.peer)
    committed = await ingest.append(acct, mailbox_id, data, structure, flags, stamp, tz, origin, content)
    return committed.event.message_added.uid


async def _catenate(s: Session, acct: Account, parts: tuple[c.CatenatePart, ...]) -> bytes:
    """RFC 4469 §3: the message CATENATE describes, its TEXT and the parts its URLs name in order."""
    system = s.opts.store.system

    def mine(user: str) -> bool:
        return user == acct.name or system.addresses.get(normalize_address(user)) == acct.name

    out: list[bytes] = []
    size = 0
    for part in parts:
        data = part.data if part.url is None else await fetch_url(acct, part.url, mine)
        size += len(data)
        if size > s.opts.limits.max_append:
            raise no(f"message over the APPENDLIMIT of {s.opts.limits.max_append} octets", "TOOBIG")
        out.append(data)
    return b"".join(out)


# ---------------------------------------------------------------------- FETCH


async def _loaded(acct: Account, msgs: list[Message]) -> list[MessageData]:
    datas = [MessageData(acct, msg) for msg in msgs]
    await MessageData.load_all(datas)
    return datas


async def fetch(s: Session, cmd: c.Fetch) -> AsyncIterator[r.Response]:
    sel = s.need_selected()
    acct = s.need_acct()
    view = acct.view
    if cmd.changedsince is not None or any(i.name == "MODSEQ" for i in cmd.items):
        s.condstore = True  # RFC 7162 §3.1: CONDSTORE-enabling
    if cmd.vanished and not s.qresync:
        raise bad("VANISHED needs ENABLE QRESYNC")  # RFC 7162 §3.2.6
    plan = make_plan(cmd, s.condstore)
    uids = sel.resolve(cmd.sequence_set, cmd.uid)
    if cmd.vanished and cmd.changedsince is not None:
        # RFC 7162 §3.2.6: UIDs in the set expunged since the given mod-sequence
        largest = max(sel.uids[-1] if sel.uids else 0, 1)
        gone = [u for u in view.expunged_since(sel.mailbox_id, cmd.changedsince)
                if cmd.sequence_set.contains(u, largest)]
        if gone:
            yield r.vanished(uid_set(gone), earlier=True)
    found = _lookup(view, sel.mailbox_id, uids, sel.exists)
    seen_now: set[int] = set()
    if plan.sets_seen and not sel.readonly:
        unseen = [u for u in uids if u in found and "\\Seen" not in found[u].flags]
        if unseen:
            committed = await moves.set_flags(acct, sel.mailbox_id, unseen, ["\\Seen"])
            s.suppressed.add(committed.seq)  # the FETCH responses below carry the new flags
            seen_now = set(unseen)
            found.update(_lookup(view, sel.mailbox_id, unseen, sel.exists))
    missing = False
    todo: list[Message] = []
    for uid in uids:
        msg = found.get(uid)
        if msg is None:
            missing = True  # expunged by another session, not yet told (RFC 2180 §4.1.2)
            continue
        if cmd.changedsince is not None and msg.modseq <= cmd.changedsince:
            continue
        todo.append(msg)
    chunks = list(_chunks(todo, plan.reads_bytes))
    # With bytes to read, the next slice is read (in a worker thread) while this one is
    # rendered and written: file reads and decryption overlap the encoding.
    ahead: asyncio.Future[list[MessageData]] | None = None
    try:
        for i, chunk in enumerate(chunks):
            if plan.reads_bytes:
                datas = await (ahead or _loaded(acct, chunk))
                ahead = asyncio.ensure_future(_loaded(acct, chunks[i + 1])) if i + 1 < len(chunks) else None
            else:
                datas = [MessageData(acct, msg) for msg in chunk]
            for msg, data in zip(chunk, datas, strict=True):
                seq = sel.seq(msg.uid)
                assert seq is not None
                yield render(plan, seq, msg, data, recent=msg.uid in sel.recent, rev2=s.rev2,
                             seen_now=msg.uid in seen_now)
            await asyncio.sleep(0)  # other connections get their turn between slices
    finally:
        if ahead is not None and not ahead.done():
            ahead.cancel()  # the client went away mid-FETCH
    if missing:
        raise no("some of the messages no longer exist", "EXPUNGEISSUED")  # RFC 5530 §3
    yield r.ok(cmd.tag, "FETCH completed")


# ---------------------------------------------------------------------- STORE


def _new_flags(old: Iterable[str], mode: c.StoreMode, flags: list[str]) -> set[str]:
    if mode is c.StoreMode.REPLACE:
        return set(flags)
    if mode is c.StoreMode.ADD:
        return set(old) | set(flags)
    return set(old) - set(flags)


async def store(s: Session, cmd: c.Store) -> AsyncIterator[r.Response]:
    sel = s.need_selected()
    acct = s.need_acct()
    if sel.readonly:
        raise no("the mailbox is read-only (EXAMINE)", "READ-ONLY")
    flags = check_flags(cmd.flags)
    if cmd.unchangedsince is not None:
        s.condstore = True  # RFC 7162 §3.1
    uids = sel.resolve(cmd.sequence_set, cmd.uid)
    found = _lookup(acct.view, sel.mailbox_id, uids, sel.exists)
    live = [u for u in uids if u in found]
    modified: list[int] = []
    if cmd.unchangedsince is not None:
        # RFC 7162 §3.1.3: messages changed after the client's mod-sequence are left alone
        modified = [u for u in live if found[u].modseq > cmd.unchangedsince]
        live = [u for u in live if found[u].modseq <= cmd.unchangedsince]
    changing = [u for u in live if _new_flags(found[u].flags, cmd.mode, flags) != set(found[u].flags)]
    if changing:
        if cmd.mode is c.StoreMode.REPLACE:
            committed = await moves.set_flags(acct, sel.mailbox_id, changing, flags, mode="replace")
        elif cmd.mode is c.StoreMode.ADD:
            committed = await moves.set_flags(acct, sel.mailbox_id, changing, flags, mode="add")
        else:
            committed = await moves.set_flags(acct, sel.mailbox_id, changing, flags, mode="remove")
        s.suppressed.add(committed.seq)
    if not cmd.silent or s.condstore:
        # RFC 9051 §6.4.6: FETCH with the new flags; RFC 7162 §3.1.3: with MODSEQ, even .SILENT
        fresh = _lookup(acct.view, sel.mailbox_id, live, sel.exists)
        told: list[r.Response] = []
        sel.learn_keywords((f for m in fresh.values() for f in m.flags), told)
        for resp in told:
            yield resp  # a new keyword is in FLAGS before any FETCH shows it
        for uid in live:
            msg = fresh.get(uid)
            seq = sel.seq(uid)
            if msg is None or seq is None:
                continue
            items: list[tuple[str, r.Value]] = []
            if cmd.uid or s.condstore:
                items.append(("UID", uid))
            if not cmd.silent:
                items.append(("FLAGS", flag_atoms(msg.flags, uid in sel.recent)))
            if s.condstore:
                items.append(("MODSEQ", (msg.modseq,)))
            yield r.FetchResponse(seq, tuple(items))
    code = None
    if modified:
        numbers = modified if cmd.uid else [sel.seq(u) or 0 for u in modified]
        code = r.ResponseCode("MODIFIED", (uid_set(numbers),))
    yield r.ok(cmd.tag, "STORE completed" if code is None else "conditional STORE failed for some", code)


# ---------------------------------------------------------------------- SEARCH


# RFC 9585 INPROGRESS: a SEARCH that reads message text tells its progress this often (Mox's
# period): a client sees it is being worked on rather than hung. A module constant, not a limit.
INPROGRESS_SECONDS = 10.0


async def matching(s: Session, key: c.SearchKey) -> list[tuple[int, MessageData]]:
    """The selected mailbox's messages that match `key`, in sequence order (SEARCH, SORT)."""
    found: list[tuple[int, MessageData]] = []
    async for part, _done, _total in _matching_slices(s, key):
        found.extend(part)
    return found


async def _matching_slices(s: Session, key: c.SearchKey) -> AsyncIterator[tuple[list[tuple[int, MessageData]], int, int]]:
    """`matching` a slice at a time: (the matches of the slice, messages looked at so far, all)."""
    sel = s.need_selected()
    acct = s.need_acct()
    by_uid = {m.uid: m for m in acct.view.messages(sel.mailbox_id)}

    def resolve(seqset: c.SequenceSet, uid: bool) -> set[int]:
        return set(_resolve_lenient(sel, seqset, uid))

    ctx = SearchContext(resolve, time.time())
    slow = needs_text(key)
    candidates = [msg for uid in sel.uids if (msg := by_uid.get(uid)) is not None and uid not in sel.gone]
    done = 0
    for chunk in _chunks(candidates, slow):
        found: list[tuple[int, MessageData]] = []
        datas = [MessageData(acct, msg) for msg in chunk]
        if slow:
            await MessageData.load_all(datas)  # text search reads and decrypts messages
        for msg, data in zip(chunk, datas, strict=True):
            seq = sel.seq(msg.uid)
            assert seq is not None
            if matches(key, Candidate(msg, seq, msg.uid in sel.recent, data), ctx):
                found.append((seq, data))
        done += len(chunk)
        yield found, done, len(candidates)
        if slow:
            await asyncio.sleep(0)  # let other connections run between slices


async def search(s: Session, cmd: c.Search) -> AsyncIterator[r.Response]:
    sel = s.need_selected()
    with_modseq = uses_modseq(cmd.key)
    if with_modseq:
        s.condstore = True  # RFC 7162 §3.1
    found: list[tuple[int, Message]] = []
    last = time.monotonic()
    async for part, done, total in _matching_slices(s, cmd.key):
        found.extend((seq, data.msg) for seq, data in part)
        if done < total and time.monotonic() - last >= INPROGRESS_SECONDS:
            # RFC 9585 §3: untagged OK [INPROGRESS (tag done total)] while the command runs
            last = time.monotonic()
            yield r.ok(None, "still searching", r.ResponseCode("INPROGRESS", ((cmd.tag, done, total),)))
    numbers = [m.uid if cmd.uid else seq for seq, m in found]
    highest = max((m.modseq for _s, m in found), default=None) if with_modseq else None
    returns = cmd.return_options
    if returns is None and not s.rev2:
        yield r.search_response(numbers, highest)  # RFC 3501 §7.2.5; RFC 7162 §3.1.5 (MODSEQ n)
    else:
        # RFC 4731 ESEARCH; RFC 9051 §6.4.4 answers every SEARCH so. RETURN () means ALL.
        opts = set(returns) if returns else {"ALL"}
        opts.discard("CONTEXT")  # RFC 5267 §4.1: a hint that UPDATE or PARTIAL may follow
        if "SAVE" in opts:
            _save(sel, opts, [m.uid for _s, m in found])
            opts.discard("SAVE")
        if "UPDATE" in opts:
            for resp in start_live(sel, cmd.tag, cmd.key, cmd.uid, None, [m.uid for _s, m in found], cmd.partial):
                yield resp
        if opts:
            results: list[tuple[str, r.Value]] = []
            if numbers and "MIN" in opts:
                results.append(("MIN", min(numbers)))
            if numbers and "MAX" in opts:
                results.append(("MAX", max(numbers)))
            if "COUNT" in opts:
                results.append(("COUNT", len(numbers)))
            if numbers and "ALL" in opts:
                results.append(("ALL", uid_set(numbers)))
            if cmd.partial is not None:
                results.append(context.partial(numbers, cmd.partial, uid_set))
            if highest is not None and numbers:
                results.append(("MODSEQ", _esearch_modseq(opts, found, cmd.uid)))
            yield r.esearch_response(cmd.tag, cmd.uid, results)
    yield r.ok(cmd.tag, "SEARCH completed")


def start_live(sel: Selected, tag: str, key: c.SearchKey, uid: bool, criteria: tuple[tuple[str, bool], ...] | None,
               uids: list[int], window: tuple[int, int] | None) -> list[r.Response]:
    """RETURN (UPDATE) (RFC 5267 §4.2): keep the result live; an untagged NO [NOUPDATE] when
    this session already holds its share of live results."""
    if window is not None:
        # RFC 5267 §4.4 allows a live window; this server keeps whole results only
        raise no("UPDATE with PARTIAL is not supported; ask for UPDATE on the whole result")
    if tag not in sel.live and len(sel.live) >= context.MAX_LIVE:
        return [r.StatusResponse("NO", f"at most {context.MAX_LIVE} live results; this one is not kept", None,
                                 r.ResponseCode("NOUPDATE", (tag.encode("ascii", "replace"),)))]
    sel.live[tag] = context.Live(tag, key, uid, criteria, uids)
    return []


def _esearch_modseq(opts: set[str], found: list[tuple[int, Message]], uid: bool) -> int:
    """RFC 4731 §3.2 / RFC 7162 §3.1.5: with only MIN and/or MAX asked, the highest mod-sequence
    of the messages returned (the message itself for MIN or MAX alone); otherwise of all matches."""
    if opts <= {"MIN", "MAX"}:
        ends = [found[0], found[-1]] if opts == {"MIN", "MAX"} else [found[0] if "MIN" in opts else found[-1]]
        return max(m.modseq for _s, m in ends)
    return max(m.modseq for _s, m in found)


def _save(sel: Selected, opts: set[str], uids: list[int]) -> None:
    """RFC 5182 §2.1: SAVE keeps all matches, or only MIN / MAX when those are all that is asked."""
    if uids and ("MIN" in opts or "MAX" in opts) and not ({"ALL", "COUNT"} & opts):
        keep = set()
        if "MIN" in opts:
            keep.add(min(uids))
        if "MAX" in opts:
            keep.add(max(uids))
        sel.saved = sorted(keep)
    else:
        sel.saved = sorted(uids)


def _resolve_lenient(sel: Selected, seqset: c.SequenceSet, uid: bool) -> list[int]:
    """A set inside a search key: numbers past the end match nothing rather than fail."""
    if uid or seqset.saved:
        return sel.resolve(seqset, uid)
    n = sel.exists
    out: list[int] = []
    for lo, hi in seqset.iter_bounds(n):
        lo, hi = max(lo, 1), min(hi, n)
        if lo <= hi:
            out.extend(sel.uids[lo - 1 : hi])
    return out


# ---------------------------------------------------------------------- COPY / MOVE / EXPUNGE


async def copy(s: Session, cmd: c.Copy | c.Move) -> AsyncIterator[r.Response]:
    sel = s.need_selected()
    acct = s.need_acct()
    move = isinstance(cmd, c.Move)
    if move and sel.readonly:
        raise no("the mailbox is read-only (EXAMINE)", "READ-ONLY")
    dest = existing_mailbox(acct.view, cmd.mailbox, "TRYCREATE")
    uids = sel.resolve(cmd.sequence_set, cmd.uid)
    found = _lookup(acct.view, sel.mailbox_id, uids, sel.exists)
    if any(u not in found for u in uids):
        raise no("some of the messages no longer exist", "EXPUNGEISSUED")
    name = type(cmd).__name__.upper()
    if not uids:
        yield r.ok(cmd.tag, f"{name} completed (no messages)")
        return
    # the mail layer adds the junk training flags a move into or out of Junk means
    src_uids, new_uids, _committed = await moves.copy(acct, sel.mailbox_id, uids, dest.id, move=move)
    if not src_uids:
        raise no("the messages no longer exist", "EXPUNGEISSUED")
    code = r.ResponseCode("COPYUID", (dest.uidvalidity, uid_set(src_uids), uid_set(new_uids)))  # RFC 4315 §3
    if move:
        # RFC 6851 §4.3: COPYUID goes in an untagged OK before the expunges
        yield r.ok(None, "moved", code)
        yield r.ok(cmd.tag, "MOVE completed")
    else:
        yield r.ok(cmd.tag, "COPY completed", code)


async def expunge(s: Session, cmd: c.Expunge) -> AsyncIterator[r.Response]:
    sel = s.need_selected()
    acct = s.need_acct()
    if sel.readonly:
        raise no("the mailbox is read-only (EXAMINE)", "READ-ONLY")
    candidates = sel.resolve(cmd.uids, True) if cmd.uids is not None else [u for u in sel.uids if u not in sel.gone]
    deleted = set(acct.view.uids_flagged(sel.mailbox_id, "\\Deleted"))  # one query, not one per message
    doomed = [u for u in candidates if u in deleted]
    if doomed:
        await moves.expunge(acct, sel.mailbox_id, doomed)
    code = None
    if s.condstore:
        mb = acct.view.mailbox_by_id(sel.mailbox_id)
        if mb is not None:
            code = r.ResponseCode("HIGHESTMODSEQ", (mb.highest_modseq,))  # RFC 7162 §3.1.12
    yield r.ok(cmd.tag, "EXPUNGE completed", code)


__all__ = ["append", "check_flags", "copy", "expunge", "fetch", "search", "store"]
