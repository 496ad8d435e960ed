"""An open account: its log, blobs and mailbox view, and the writer-side decisions (UIDs, mailbox ids)."""

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..proto import events_pb2 as pb
from . import checkpoint, reader
from .blobs import BlobStore
from .errors import Conflict, NotFound, OverQuota, StoreError
from .keyring import StreamKeys
from .keywords import check_keywords
from .log import StreamLog
from .projection import Item, Mailbox, MailboxView, Projector, prepare_record, preparers
from .registration import Registration
from .stream import Committed, StreamWriter, Subscription

log = logging.getLogger(__name__)

# A checkpoint after this many events bounds the replay on the next open to a few seconds.
CHECKPOINT_EVERY = 20_000

# The mailboxes of a new account (RFC 6154 special-use attributes), as issue and talk expect.
DEFAULT_MAILBOXES: tuple[tuple[str, int], ...] = (
    ("INBOX", pb.SPECIAL_USE_NONE),
    ("Sent", pb.SPECIAL_USE_SENT),
    ("Archive", pb.SPECIAL_USE_ARCHIVE),
    ("Trash", pb.SPECIAL_USE_TRASH),
    ("Drafts", pb.SPECIAL_USE_DRAFTS),
    ("Junk", pb.SPECIAL_USE_JUNK),
)

# The account setting that limits the bytes of its messages (RFC 9208 STORAGE); "0" or absent: none.
# Set by the administrator (eventmail/mail/admin.py), enforced here at every add and copy.
QUOTA_SETTING = "quota_bytes"


def new_uidvalidity(seq: int) -> int:
    """UIDVALIDITY for a new mailbox: strictly increasing per account (RFC 9051 §2.3.1.1)."""
    return (int(time.time()) + seq) & 0xFFFFFFFF or 1


class Account:
    """One account, open. Reads come from the in-memory view; writes go through its stream writer."""

    def __init__(
        self, name: str, stream_id: str, log_: StreamLog, blobs: BlobStore, checkpoint_path: Path,
        registration: Registration,
    ) -> None:
        self.name = name
        self.stream_id = stream_id
        self.blobs = blobs
        self.registration = registration
        self._log = log_
        self._checkpoint_path = checkpoint_path
        self._checkpoint_seq = 0
        self._checkpointing: asyncio.Task[None] | None = None
        self.projector = self._load_projection()
        self._writer = StreamWriter(log_, self._apply_committed)
        self._lock = asyncio.Lock()
        self._uid_reserved: dict[int, int] = {}
        self._bytes_pending = 0  # bytes of messages added but not yet committed (the quota counts them)
        self._mailbox_reserved = 0
        self._uidvalidity_reserved = 0
        self._keys_pending: set[bytes] = set()
        self.refs = 0
        self.last_used = time.monotonic()

    # ---------------------------------------------------------------- projection upkeep

    @property
    def view(self) -> MailboxView:
        return self.projector.view

    @property
    def db(self) -> sqlite3.Connection:
        """The in-memory database of the mailbox view and the registered projections (read them
        through their views: MailboxView, junk.projection.JunkView)."""
        return self.projector.db

    @property
    def broken(self) -> bool:
        """A commit failed after its write: the store reopens the account (eventmail.store.stream)."""
        return self._writer.broken is not None

    def _load_projection(self) -> Projector:
        keys = self._log.keys
        cp = checkpoint.read(self._checkpoint_path, self.stream_id, keys) if keys else None
        projector = None
        if cp is not None and cp.seq <= self._log.head.seq and self._chain_at(cp.seq) == cp.chain:
            # None when the checkpoint lacks a registered projection: rebuilt from the log.
            projector = Projector.restore(self.registration, cp.state)
            self._checkpoint_seq = cp.seq
        elif cp is not None:
            log.warning("account %s: checkpoint does not match the log; rebuilding from the log", self.name)
        if projector is None:
            projector = Projector(self.registration)
        projector.replay(self._replayed(projector.view.seq))
        return projector

    def _chain_at(self, seq: int) -> bytes | None:
        if seq == 0:
            return bytes(32)
        for r in self._log.records(since=seq - 1):
            return r.chain
        return None

    def _events_since(self, since: int) -> Iterable[tuple[int, int, pb.Event]]:
        for record, plaintext in self._log.plaintexts(since):
            event = pb.Event()
            event.ParseFromString(plaintext)
            yield record.seq, record.time_us, event

    def _replayed(self, since: int) -> Iterator[Item]:
        """`_events_since` for a replay into the projections, each delivery made ready to fold
        (`Added`): a long one is read, decrypted and made ready by a child process while this
        one folds (store.reader)."""
        return reader.prepared(self._log, since, functools.partial(prepare_record, preparers(self.registration.projections)))

    def _apply_committed(self, committed: list[Committed], ready: list[Item] | None = None) -> list[Committed]:
        """Fold a commit into the projections (in the writer's error boundary); the commit with
        each event's typed changes, as subscribers get it. `ready`: the same events with the
        deliveries made ready to fold (a follower's replicated batch, StreamWriter.write_raw)."""
        items: Iterable[Item] = ready if ready is not None else ((c.seq, c.time_us, c.event) for c in committed)
        changes = self.projector.apply(items)
        if self.view.seq - self._checkpoint_seq >= CHECKPOINT_EVERY and self._checkpointing is None:
            self._start_checkpoint()
        # The constructor, not dataclasses.replace: a catch-up publishes thousands a second.
        return [Committed(c.stream, c.seq, c.time_us, c.event, ch) for c, ch in zip(committed, changes, strict=True)]

    def _start_checkpoint(self) -> None:
        """Checkpoint in the background: the in-memory database is copied here (a memcpy), then
        compressed, sealed, written and fsynced in a thread while appends go on."""
        keys = self._log.keys
        if keys is None or not self._log.writable:
            return
        cp = checkpoint.Checkpoint(self.view.seq, self._log.head.chain, self.db.serialize())
        time_us = self.view.time_us

        async def write() -> None:
            try:
                await asyncio.to_thread(self._write_checkpoint_file, keys, cp, time_us)
                self._checkpoint_seq = max(self._checkpoint_seq, cp.seq)
            except StoreError as e:
                # A checkpoint only shortens the next open's replay: losing it loses nothing.
                log.warning("account %s: no checkpoint written: %s", self.name, e)
            finally:
                self._checkpointing = None

        self._checkpointing = asyncio.get_running_loop().create_task(write())

    def rebuild_projection(self) -> None:
        """Rebuild the mailbox view and the registered projections from the log alone, and checkpoint them."""
        projector = Projector(self.registration)
        projector.replay(self._replayed(0))
        self.projector = projector
        self._checkpoint_seq = 0
        self.write_checkpoint()

    def write_checkpoint(self) -> None:
        """Seal the current projection to disk, so the next open replays only the tail."""
        keys = self._log.keys
        if keys is None or not self._log.writable or self.view.seq == self._checkpoint_seq:
            return
        state = self.db.serialize()
        cp = checkpoint.Checkpoint(self.view.seq, self._log.head.chain, state)
        self._write_checkpoint_file(keys, cp, self.view.time_us)
        self._checkpoint_seq = self.view.seq

    def _write_checkpoint_file(self, keys: StreamKeys, cp: checkpoint.Checkpoint, time_us: int) -> None:
        checkpoint.write(self._checkpoint_path, self.stream_id, keys, cp)
        try:
            checkpoint.keep_past(self._checkpoint_path, cp.seq, time_us)
        except OSError as e:
            # Past checkpoints only shorten views of the past: losing one loses nothing.
            log.warning("account %s: past checkpoint not kept: %s", self.name, e)

    async def close(self, checkpoint: bool = True) -> None:
        await self._writer.drain()
        if self._checkpointing is not None:
            await self._checkpointing
        try:
            if checkpoint and not self.broken:
                await asyncio.to_thread(self.write_checkpoint)
        except StoreError as e:
            # A checkpoint only shortens the next open's replay: losing it loses nothing.
            log.warning("account %s: no checkpoint written: %s", self.name, e)
        self._log.close()

    # ---------------------------------------------------------------- public reads

    @property
    def head_seq(self) -> int:
        return self._log.head.seq

    def subscribe(self, limit: int | None = None) -> Subscription:
        """Committed events from now on, in log order, with their typed changes (IMAP IDLE, webmail);
        at most `limit` waiting (stream.Subscription)."""
        return self._writer.subscribe(limit)

    async def read_message(self, blob_id: bytes) -> bytes:
        """A message's bytes, read and decrypted off the event loop (from memory if cached)."""
        data = self.blobs.cached(blob_id)
        return data if data is not None else await asyncio.to_thread(self.blobs.get, blob_id)

    async def read_messages(self, blob_ids: Sequence[bytes]) -> list[bytes]:
        """Several messages' bytes in one trip off the event loop (a FETCH or SEARCH of many
        messages: a thread hop per message costs more than reading a small one, and each hop
        makes the loop wait for the GIL again), and none when all are cached: on a busy machine
        each hop waits for the scheduler twice (the worker, then the loop)."""
        found = [self.blobs.cached(b) for b in blob_ids]
        missing = [b for b, data in zip(blob_ids, found, strict=True) if data is None]
        if not missing:
            return [data for data in found if data is not None]
        read = iter(await asyncio.to_thread(self.blobs.get_many, missing))
        return [data if data is not None else next(read) for data in found]

    def read_message_sync(self, blob_id: bytes) -> bytes:
        """A message's bytes, for callers already off the event loop (export, in a thread)."""
        return self.blobs.get(blob_id)

    def events(self, since: int = 0) -> Iterable[Committed]:
        """Every event after `since`, decrypted (the log command, point-in-time export)."""
        for seq, time_us, event in self._events_since(since):
            yield Committed(self.stream_id, seq, time_us, event)

    def projector_at(self, at_us: int) -> Projector:
        """A scratch projection of the account as it was after its last event stamped at or before
        `at_us` (restore, export --at, retention), through the same registration as the account's
        own: from the newest kept checkpoint before that moment whose chain matches the log, then
        the log from there."""
        projector, since = self._past_checkpoint(at_us)
        if projector is None:
            projector, since = Projector(self.registration), 0

        def upto() -> Iterable[tuple[int, int, pb.Event]]:
            for seq, time_us, event in self._events_since(since):
                if time_us > at_us:
                    return  # the log is in time order: nothing later belongs to the moment
                yield seq, time_us, event

        projector.replay(upto())
        return projector

    def _past_checkpoint(self, at_us: int) -> tuple[Projector | None, int]:
        keys = self._log.keys
        if keys is None:
            return None, 0
        for path, seq, time_us in checkpoint.past(self._checkpoint_path):
            if time_us > at_us or seq > self._log.head.seq:
                continue
            cp = checkpoint.read(path, self.stream_id, keys)
            if cp is None or cp.seq != seq or self._chain_at(seq) != cp.chain:
                continue
            projector = Projector.restore(self.registration, cp.state)
            if projector is not None:
                return projector, seq
        return None, 0

    def mailbox_required(self, name: str) -> Mailbox:
        mb = self.view.mailbox(name)
        if mb is None:
            raise NotFound(f"no mailbox {name!r}")
        return mb

    @property
    def quota_bytes(self) -> int:
        """The account's storage limit (setting `quota_bytes`, RFC 9208 STORAGE); 0: none."""
        text = self.view.setting(QUOTA_SETTING) or "0"
        return int(text) if text.isdigit() else 0

    def _check_quota(self, adding: int) -> None:
        """Raise OverQuota when `adding` bytes more would pass the quota. Called under the write
        lock, counting what is added but not yet committed, so concurrent adds cannot pass it."""
        limit = self.quota_bytes
        used = self.view.storage_used + self._bytes_pending
        if limit and adding and used + adding > limit:
            raise OverQuota(used, adding, limit)

    # ---------------------------------------------------------------- writes

    async def append(self, events: Sequence[pb.Event]) -> list[Committed]:
        """Append events as they are (callers that allocated nothing themselves)."""
        self.last_used = time.monotonic()
        return await self._writer.append(events)

    async def create_mailbox(
        self, name: str, special_use: int = pb.SPECIAL_USE_NONE, subscribed: bool = True
    ) -> Mailbox:
        async with self._lock:
            if self.view.mailbox(name) is not None:
                raise Conflict(f"mailbox {name!r} exists")
            mailbox_id = max(self.view.next_mailbox_id, self._mailbox_reserved)
            self._mailbox_reserved = mailbox_id + 1
            uidvalidity = max(new_uidvalidity(self.view.seq), self._uidvalidity_reserved)
            self._uidvalidity_reserved = uidvalidity + 1
            e = pb.Event(
                mailbox_created=pb.MailboxCreated(
                    mailbox_id=mailbox_id, name=name, uidvalidity=uidvalidity, special_use=special_use,  # type: ignore[arg-type]
                    subscribed=subscribed,
                )
            )
            await self.append([e])
        mb = self.view.mailbox_by_id(mailbox_id)
        assert mb is not None
        return mb

    async def create_default_mailboxes(self) -> None:
        for name, use in DEFAULT_MAILBOXES:
            if self.view.mailbox(name) is None:
                await self.create_mailbox(name, use)

    async def add_message(
        self,
        mailbox: str | int,
        raw: bytes,
        flags: Iterable[str] = (),
        internal_date: float | None = None,
        internal_date_tz: int = 0,
        origin: pb.Origin | None = None,
        structure: pb.MessageStructure | None = None,
        skip_duplicate: bool = False,
        delivery_key: bytes = b"",
        junk: pb.JunkFeatures | None = None,
        enforce_quota: bool = True,
        blob_id: bytes | None = None,
    ) -> Committed | None:
        """Store the message bytes (fsynced), then append its MessageAdded event (fsynced).

        With `skip_duplicate`, a message whose bytes already are in the mailbox is not added again
        and None is returned; likewise a message whose `delivery_key` was delivered before. Over the
        account's quota it raises OverQuota, unless `enforce_quota` is off (mail accepted already).
        `blob_id`: the caller stored `raw` already (what `self.blobs.put(raw)` returned, called on
        the caller's own worker thread beside its other work on the message): each hop to a thread
        and back waits its turn on a busy event loop, so a message takes as few as it can.
        """
        mb = self.view.mailbox_by_id(mailbox) if isinstance(mailbox, int) else self.mailbox_required(mailbox)
        if mb is None:
            raise NotFound(f"no mailbox id {mailbox}")
        flags = list(flags)
        check_keywords(self.view, mb.id, [flags])
        if structure is None or junk is None:
            # Callers that parsed once at ingress pass their parse. Otherwise the hook registered
            # from above computes it now (CPU-bound, linear in the message: off the event loop), so
            # replay never reads blobs.
            facts = self.registration.message_facts
            if facts is None:
                raise StoreError("add_message: no structure given and no message_facts registered")
            bound, target, given = facts, mb, blob_id

            def facts_and_blob() -> tuple[pb.MessageStructure, pb.JunkFeatures, bytes]:
                st, jf = bound(raw, origin, target)
                return st, jf, given if given is not None else self.blobs.put(raw)

            st, jf, blob_id = await asyncio.to_thread(facts_and_blob)  # one hop for both
            structure = st if structure is None else structure
            junk = jf if junk is None else junk
        if blob_id is None:
            blob_id = await asyncio.to_thread(self.blobs.put, raw)
        size = len(raw)
        async with self._lock:
            if skip_duplicate and self.view.uid_of_blob(mb.id, blob_id) is not None:
                return None
            if delivery_key and (self.view.delivered(delivery_key) or delivery_key in self._keys_pending):
                return None
            current = self.view.mailbox_by_id(mb.id)
            if current is None:
                raise NotFound(f"mailbox {mb.name!r} was deleted")
            if enforce_quota:
                self._check_quota(size)
            added = pb.MessageAdded(
                mailbox_id=mb.id, blob_id=blob_id, size=size,
                internal_date=int(time.time() if internal_date is None else internal_date),
                internal_date_tz=internal_date_tz, flags=sorted(set(flags)), structure=structure, origin=origin,
                message_id_hash=delivery_key, junk=junk,
            )
            thread_of = self.registration.thread_of
            if thread_of is not None:
                # The keys go into the event with the decision: a replay indexes by them as is.
                thread_id, own_id, subject = thread_of(self.db, raw, structure, current, time.time_ns() // 1000)
                added.thread_id, added.thread_message_id, added.thread_subject = thread_id, own_id or b"", subject
            added.uid = uid = max(current.uidnext, self._uid_reserved.get(mb.id, 0))
            self._uid_reserved[mb.id] = uid + 1
            e = pb.Event(message_added=added)
            fut = self._writer.submit([e])
            self._bytes_pending += size
            if delivery_key:
                self._keys_pending.add(delivery_key)
        self.last_used = time.monotonic()
        try:
            return (await fut)[0]
        finally:
            self._bytes_pending -= size
            self._keys_pending.discard(delivery_key)

    async def add_existing(self, mailbox_id: int, items: Sequence[pb.MessageAdded]) -> list[Committed]:
        """Messages whose bytes this account already holds (a restore) added again to a mailbox with
        new UIDs, in one commit. Each item is a MessageAdded whose mailbox_id and uid are decided
        here; its blob must still exist (checked before anything is appended)."""
        missing = [m.blob_id.hex() for m in items if not self.blobs.exists(m.blob_id)]
        if missing:
            raise NotFound(f"{len(missing)} message(s) no longer in the blob store (first: {missing[0]})")
        async with self._lock:
            mb = self.view.mailbox_by_id(mailbox_id)
            if mb is None:
                raise NotFound(f"no mailbox id {mailbox_id}")
            check_keywords(self.view, mailbox_id, [m.flags for m in items])
            first = max(mb.uidnext, self._uid_reserved.get(mailbox_id, 0))
            self._uid_reserved[mailbox_id] = first + len(items)
            events = []
            for uid, item in enumerate(items, start=first):
                added = pb.MessageAdded()
                added.CopyFrom(item)
                added.mailbox_id, added.uid = mailbox_id, uid
                events.append(pb.Event(message_added=added))
            fut = self._writer.submit(events)
        self.last_used = time.monotonic()
        return await fut

    async def collect_blobs(self, before_us: int, blob_ids: list[bytes]) -> None:
        """Record that these blobs are collected, then delete them (a crash between leaves files
        the next collection deletes; never a recorded blob that is still needed)."""
        await self.append([pb.Event(blobs_collected=pb.BlobsCollected(before_us=before_us, blob_ids=blob_ids))])
        await asyncio.to_thread(self.blobs.remove, blob_ids)

    def delivery_key(self, message_id: bytes, message: bytes) -> bytes:
        """A keyed hash of a message's Message-ID (its first field's value, as the caller read it)
        and bytes: the same retried delivery has the same key."""
        return self.blobs.blob_id(b"delivery\x00" + message_id + b"\x00" + message)

    def sent_key(self, message_id: bytes, author: bytes) -> bytes:
        """A keyed hash of a sent message's Message-ID and author address: the server's Sent copy
        and the copy the sending client APPENDs have the same key (eventmail.mail.ingest)."""
        return self.blobs.blob_id(b"sent\x00" + message_id + b"\x00" + author)

    async def change_flags(
        self, mailbox_id: int, uids: Sequence[int], add: Iterable[str] = (), remove: Iterable[str] = (),
        replace: bool = False,
    ) -> Committed:
        add = list(add)
        if any(not f.startswith("\\") for f in add):  # keywords added: check the caps
            remove = list(remove)
            check_keywords(self.view, mailbox_id, (
                set(add) if replace else (set(m.flags) | set(add)) - set(remove)
                for m in (self.view.message(mailbox_id, u) for u in uids) if m is not None))
        e = pb.Event(
            flags_changed=pb.FlagsChanged(
                mailbox_id=mailbox_id, uids=list(uids), add=sorted(set(add)), remove=sorted(set(remove)), replace=replace
            )
        )
        return (await self.append([e]))[0]

    async def expunge(self, mailbox_id: int, uids: Sequence[int]) -> Committed:
        e = pb.Event(messages_expunged=pb.MessagesExpunged(mailbox_id=mailbox_id, uids=list(uids)))
        return (await self.append([e]))[0]

    async def copy(
        self, source_id: int, uids: Sequence[int], dest_id: int, move: bool = False,
        add_flags: Iterable[str] = (), remove_flags: Iterable[str] = (),
    ) -> tuple[list[int], list[int], Committed]:
        """Copy (or move) messages; returns (source uids, their new uids in dest, the event).

        The copies also get the flags the registered copy hook decides for this pair of mailboxes
        (junk training), besides `add_flags` / `remove_flags`."""
        async with self._lock:
            dest = self.view.mailbox_by_id(dest_id)
            source = self.view.mailbox_by_id(source_id)
            if dest is None or source is None:
                raise NotFound(f"no mailbox id {dest_id if dest is None else source_id}")
            hook = self.registration.copy_flags
            hook_add, hook_remove = hook(source, dest, move) if hook is not None else ([], [])
            add_flags = set(add_flags) | set(hook_add)
            remove_flags = (set(remove_flags) | set(hook_remove)) - add_flags
            copies = [m for m in (self.view.message(source_id, u) for u in uids) if m is not None]
            if not move:  # RFC 9208: a copy takes storage (STORAGE counts each copy); a move within the account none
                self._check_quota(sum(m.size for m in copies))
            check_keywords(self.view, dest_id, ((set(m.flags) | add_flags) - remove_flags for m in copies))
            present = [m.uid for m in copies]
            first = max(dest.uidnext, self._uid_reserved.get(dest_id, 0))
            new_uids = list(range(first, first + len(present)))
            self._uid_reserved[dest_id] = first + len(present)
            e = pb.Event(
                messages_copied=pb.MessagesCopied(
                    source_mailbox_id=source_id, source_uids=present, dest_mailbox_id=dest_id, dest_uids=new_uids,
                    move=move, add_flags=sorted(set(add_flags)), remove_flags=sorted(set(remove_flags)),
                )
            )
            fut = self._writer.submit([e])
        committed = (await fut)[0]
        return present, new_uids, committed

    async def rename_mailbox(self, old: str, new: str) -> None:
        """Rename a mailbox and its children (RFC 9051 §6.3.6)."""
        async with self._lock:
            mb = self.mailbox_required(old)
            if self.view.mailbox(new) is not None:
                raise Conflict(f"mailbox {new!r} exists")
            events = []
            for child in self.view.mailboxes():
                if child.id == mb.id or child.name.startswith(mb.name + "/"):
                    name = new + child.name[len(mb.name) :]
                    events.append(pb.Event(mailbox_renamed=pb.MailboxRenamed(
                        mailbox_id=child.id, name=name, uidvalidity=child.uidvalidity)))
            await self.append(events)

    async def delete_mailbox(self, name: str) -> None:
        async with self._lock:
            mb = self.mailbox_required(name)
            await self.append([pb.Event(mailbox_deleted=pb.MailboxDeleted(mailbox_id=mb.id))])

    async def set_subscribed(self, name: str, subscribed: bool) -> None:
        await self.append([pb.Event(mailbox_subscription=pb.MailboxSubscription(name=name, subscribed=subscribed))])



