"""Group commit for one stream: concurrent appends share one write and one fsync, then subscribers hear of them."""

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, NamedTuple, TypeVar

from ..cputime import stage
from ..proto import events_pb2 as pb
from .errors import NotWriter, StoreError
from .log import StreamLog
from .projection import Item
from .records import Record
from .registration import Change

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Commits (seal, write, fsync) run on threads of their own. In the default executor they queued
# behind blob writes, junk features and Argon2id (six threads for all of it on two cores): under
# imaptest's stress run a commit that took 4 ms waited a median 30 ms, often 90, for a thread.
# A stream commits one batch at a time, so this many streams commit at once.
COMMIT_THREADS = 4
_COMMIT_POOL = ThreadPoolExecutor(COMMIT_THREADS, thread_name_prefix="commit")
# A replicated batch's blob files written (and fsynced) beside its records' write and fsync
# (`write_raw`'s `beside`): a thread per stream writing at once, as the commit threads.
_BESIDE_POOL = ThreadPoolExecutor(COMMIT_THREADS, thread_name_prefix="beside")
# A replicated batch of this many records or more is decrypted on a commit thread, not the loop.
DECRYPT_AWAY = 64
# Batches of a stream written and waiting for the secondary's acknowledgement at once (sync mode).
PIPELINE = 8


async def _on_commit_thread(fn: Callable[..., _T], *args: object) -> _T:
    return await asyncio.get_running_loop().run_in_executor(_COMMIT_POOL, fn, *args)


class Committed(NamedTuple):
    """An event as it stands in the log: durable on disk when a caller sees it.

    A named tuple: a catch-up makes two per record (read, then with its changes), and a frozen
    dataclass's constructor costs 2 µs each."""

    stream: str
    seq: int
    time_us: int
    event: pb.Event
    # What the event changed in the stream's projections (store.projection, and those registered).
    changes: tuple[Change, ...] = ()


class SubscriptionOverflow(Exception):
    """More committed events were queued for a subscription than its limit: they were dropped."""


class Subscription:
    """Committed events of one stream, in log order, from the moment of subscribing.

    `limit`: at most this many events wait for a reader that does not take them (an IMAP session
    whose client sends no command). One more, and the queue is dropped and the subscription ends:
    `get` and `pending` raise SubscriptionOverflow, and its owner must start over from the
    projections. None (the server's own tasks, which always read): no limit."""

    def __init__(self, owner: "StreamWriter", limit: int | None = None) -> None:
        self._owner = owner
        self._limit = limit
        self.overflowed = False
        # None in the queue: it overflowed (wakes a reader waiting in get)
        self._queue: asyncio.Queue[Committed | None] = asyncio.Queue()

    def _put(self, c: Committed) -> None:
        if self._limit is not None and self._queue.qsize() >= self._limit:
            self.overflowed = True
            self.close()
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)
            return
        self._queue.put_nowait(c)

    async def get(self) -> Committed:
        c = await self._queue.get()
        if c is None:
            self._queue.put_nowait(None)  # and every later call
            raise SubscriptionOverflow(f"more than {self._limit} events were waiting")
        return c

    def pending(self) -> list[Committed]:
        """Everything queued so far, without waiting."""
        if self.overflowed:
            raise SubscriptionOverflow(f"more than {self._limit} events were waiting")
        out = []
        while not self._queue.empty():
            c = self._queue.get_nowait()
            assert c is not None
            out.append(c)
        return out

    def close(self) -> None:
        self._owner.subscribers.discard(self)

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Committed:
        return await self.get()


# What makes a replicated batch's deliveries ready to fold: their (seq, time in µs, plaintext) in,
# store.projection.Added out in the same order, or None (not made: the fold parses them).
PrepareRaw = Callable[[list[tuple[int, int, bytes]]], Awaitable["list[Item] | None"]]

Batch = list[tuple[list[pb.Event], "asyncio.Future[list[Committed]]"]]


class StreamWriter:
    """Serialises appends to a stream's log and batches them into group commits.

    The error boundary: whatever fails in a commit (sealing, writing, fsync, the replication gate,
    the projections), every caller of that batch gets the exception; nobody waits forever. When
    the log has the batch but the projections could not take it, the projections are behind the
    log: the writer is `broken`, every later append fails, and the owner reopens the stream
    (projections rebuilt from checkpoint and log: consistent again).
    """

    def __init__(self, log_: StreamLog, on_commit: Callable[[list[Committed]], list[Committed]]) -> None:
        self.log = log_
        self.on_commit = on_commit
        self.subscribers: set[Subscription] = set()
        self._pending: Batch = []
        self._task: asyncio.Task[None] | None = None
        # Written batches waiting for the gate, oldest first (sync mode), and what wakes _run.
        self._showing: collections.deque[asyncio.Future[None]] = collections.deque()
        self._kick: asyncio.Future[None] | None = None
        self.batches = 0  # fsyncs done, for metrics and the group-commit benchmark
        # Set by the store: awaited after the local fsync and before the commit is visible
        # (synchronous replication waits there for the secondary's acknowledgement).
        self.gate: Callable[[str, int], Awaitable[None]] | None = None
        # Set by the store when this node is not the stream's writer (a follower, or fenced).
        self.fenced: str | None = None
        self.broken: BaseException | None = None
        # Replicated appends in progress (append_raw): their records may be in the log while the
        # projections do not have them yet.
        self._applying = 0
        # The last replicated batch's fold (write_raw), which the next one's waits for.
        self._folding: asyncio.Future[list[Committed]] | None = None
        self.notify: Callable[[], None] = lambda: None

    def submit(self, events: Sequence[pb.Event]) -> "asyncio.Future[list[Committed]]":
        """Queue events for the next commit. Synchronous, so the log order is the order of calls."""
        if self.fenced is not None:
            raise NotWriter(f"stream {self.log.stream}: {self.fenced}")
        if self.broken is not None:
            raise StoreError(f"stream {self.log.stream}: a commit failed after its write ({self.broken}); reopen it")
        if self._applying:
            # A node promoted while it was still applying its former leader's records: what the
            # caller decided (a UID, from the projections) may not count those records yet.
            raise NotWriter(f"stream {self.log.stream}: still applying replicated records; try again")
        fut: asyncio.Future[list[Committed]] = asyncio.get_running_loop().create_future()
        self._pending.append((list(events), fut))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        else:
            self._wake()
        return fut

    async def append(self, events: Sequence[pb.Event]) -> list[Committed]:
        return await self.submit(events)

    async def _run(self) -> None:
        """Write the queued batches one after another. In sync mode a batch written here waits
        for the secondary (the gate) in a task of its own, and the next batch is written
        meanwhile: up to PIPELINE batches are in flight, each shown (published, answered) only
        after the one before it. Without that, each batch's local fsync waited for the previous
        batch's round trip to the secondary and its fsyncs (docs/replication.md, "Pipelined sync
        commits"); now they overlap, and the secondary writes the batches that arrive together
        with one set of fsyncs."""
        batch: Batch = []
        try:
            while True:
                while self._pending and len(self._showing) < PIPELINE:
                    batch, self._pending = self._pending, []
                    await self._commit(batch)
                    batch = []
                while self._showing and self._showing[0].done():
                    self._showing.popleft()
                if not self._showing:
                    if not self._pending:
                        return
                    continue
                # Wait for a new batch (submit) or the oldest shown batch, whichever comes first.
                self._kick = asyncio.get_running_loop().create_future()
                self._showing[0].add_done_callback(self._wake)
                try:
                    await self._kick
                finally:
                    self._showing[0].remove_done_callback(self._wake)
                    self._kick = None
        except BaseException as e:
            # Cancelled (the loop is closing) or a bug: this batch and everything queued behind
            # it fail rather than wait forever.
            error = e if isinstance(e, Exception) else StoreError(f"stream {self.log.stream}: commit interrupted")
            pending, self._pending = self._pending, []
            # The interrupted write may still land in the log: the projections cannot be trusted.
            self.broken = self.broken or error
            _fail(batch + pending, error)
            for showing in self._showing:
                showing.cancel()  # each fails its own batch
            self._showing.clear()
            raise

    def _wake(self, _: object = None) -> None:
        if self._kick is not None and not self._kick.done():
            self._kick.set_result(None)

    async def _commit(self, batch: Batch) -> None:
        if self.broken is not None:
            _fail(batch, StoreError(f"stream {self.log.stream}: a commit failed after its write; reopen it"))
            return
        flat = [e for events, _ in batch for e in events]
        try:
            with stage("append"):
                plaintexts = [e.SerializeToString(deterministic=True) for e in flat]
            records = await _on_commit_thread(self._seal_and_write, plaintexts)
        except Exception as e:
            # Nothing of the batch is in the log (StreamLog.write is all or nothing).
            _fail(batch, e)
            return
        self.batches += 1
        # Durable here: replication may ship it now (the gate below waits for exactly that).
        self.notify()
        committed = [Committed(self.log.stream, r.seq, r.time_us, ev) for r, ev in zip(records, flat, strict=True)]
        if self.gate is None and not self._showing:
            self._show(batch, committed, None)
            return
        # Synchronous replication: the commit becomes visible to other sessions (projection,
        # subscribers) only once the secondary has it, or the gate gave up (docs/replication.md).
        gate = None if self.gate is None else asyncio.ensure_future(self.gate(self.log.stream, records[-1].seq))
        before = self._showing[-1] if self._showing else None
        self._showing.append(asyncio.ensure_future(self._show_after(batch, committed, gate, before)))

    async def _show_after(self, batch: Batch, committed: list[Committed], gate: "asyncio.Future[None] | None",
                          before: "asyncio.Future[None] | None") -> None:
        """Publish a written batch once the batch before it is shown and its own gate is passed.
        Its gate is awaited from the start, beside the earlier ones': a secondary that is gone
        costs every batch in flight one timeout, not one each after the other."""
        try:
            if before is not None:
                await asyncio.wait([before])
            error: Exception | None = None
            if gate is not None:
                try:
                    await gate
                except Exception as e:
                    error = e
        except BaseException:
            if gate is not None:
                gate.cancel()
            _fail(batch, StoreError(f"stream {self.log.stream}: commit interrupted"))
            raise
        self._show(batch, committed, error)

    def _show(self, batch: Batch, committed: list[Committed], error: Exception | None) -> None:
        if self.broken is not None:
            # An earlier batch's projections failed: this one is in the log but not shown; the
            # reopened stream (projections rebuilt from the log) has it.
            _fail(batch, StoreError(f"stream {self.log.stream}: a commit failed after its write; reopen it"))
            return
        try:
            committed = self._publish(committed)
        except Exception as e:
            # The log has the batch, the projections do not: stop writing until reopened.
            log.error("stream %s: projections failed at seq %d: %s; the stream must be reopened",
                      self.log.stream, committed[0].seq, e)
            self.broken = e
            _fail(batch, e)
            return
        i = 0
        for events, fut in batch:
            if not fut.done():
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(committed[i : i + len(events)])
            i += len(events)

    def _publish(self, committed: list[Committed], ready: "list[Item] | None" = None) -> list[Committed]:
        with stage("projections"):
            # `ready`: the same events, deliveries made ready to fold (write_raw); only an
            # account's on_commit takes them.
            committed = self.on_commit(committed) if ready is None else self.on_commit(committed, ready)  # type: ignore[call-arg]
        for sub in list(self.subscribers):
            for c in committed:
                sub._put(c)
        return committed

    async def append_raw(self, records: list[Record], on_durable: Callable[[], None] | None = None,
                         before: Callable[[], object] | None = None, prepare: PrepareRaw | None = None,
                         beside: Callable[[], object] | None = None) -> list[Committed]:
        """Append records made by another node, verbatim (their chain checked), then publish them
        (`write_raw`, then its fold)."""
        return await (await self.write_raw(records, on_durable, before, prepare, beside))

    async def write_raw(self, records: list[Record], on_durable: Callable[[], None] | None = None,
                        before: Callable[[], object] | None = None, prepare: PrepareRaw | None = None,
                        beside: Callable[[], object] | None = None) -> "asyncio.Future[list[Committed]]":
        """Write records made by another node, verbatim (their chain checked), and fsync them;
        returns their fold into the projections (and their publication), under way in a task.

        `before` runs first on the same commit thread (a follower stores the batch's blobs
        there: one hop to a thread rather than two). `beside` runs on a thread of its own while
        the records are written and fsynced (a follower's few blob files of a steady-state
        batch: their fsyncs and the log's overlap instead of following one another);
        `on_durable` is called once both are done, before the projections take the records (a
        follower acknowledges there: the acknowledgement promises durability, and a projection
        is rebuilt from the log after any failure). When `beside` fails after the records were
        written, they are cut back out of the log before the error is raised: no record stays
        whose blob is not stored. (A crash between the two can still leave such a tail, never
        acknowledged: the store cuts it on the next start, ReplicationPort.cut_blobless_tail.)

        The fold runs after every earlier replicated batch's fold, so a follower writes its next
        batch while this one folds (a catch-up's batch folds for as long as the next one takes to
        arrive, be written and be fsynced; before, one waited for the other). With `prepare`,
        the MessageAdded records' (seq, time, plaintext) are made ready to fold by it (a worker
        process: store.reader.Worker) while the batch before folds; None from it means "not
        made": the fold parses them as always. The fence stays up until the fold is done: no
        local append while any replicated record is in the log and not in the projections
        (`_applying`)."""
        self._applying += 1
        early: asyncio.Future[tuple[list[Committed], list[Item] | None]] | None = None
        try:
            await self._drain_local()
            prev = self.log.head.chain
            if len(records) >= DECRYPT_AWAY:
                # A catch-up's batch is decrypted, parsed and made ready (the worker) while it is
                # written and fsynced, not after: its fold then waits for the write and the
                # batch before, not for those and then its own preparing too.
                early = asyncio.ensure_future(self._ready_raw(records, prev, prepare))

            def write() -> None:
                if before is not None:
                    before()
                if beside is None:
                    self.log.write_verbatim(records)
                    return
                side = _BESIDE_POOL.submit(beside)
                try:
                    written = self.log.write_verbatim(records)
                except BaseException:
                    wait([side])  # neither outlives the call; the blobs alone harm nothing
                    raise
                try:
                    side.result()
                except BaseException:
                    # The records are in the log and their blobs are not: out with the records
                    # (never acknowledged). If even that fails, the stream takes nothing more
                    # and a restart cuts them.
                    try:
                        self.log.truncate(written.seq - len(records))
                    except BaseException as e:
                        self.broken = self.broken or StoreError(
                            f"stream {self.log.stream}: records without their blobs could not be cut ({e})")
                    raise

            await _on_commit_thread(write)
            self.notify()
            if on_durable is not None:
                on_durable()
        except BaseException:
            self._applying -= 1
            if early is not None:
                early.add_done_callback(_ignore_outcome)  # the write failed: nobody folds it
                early.cancel()
            raise
        previous, fold = self._folding, None
        if previous is not None and previous.done():
            previous = None
        try:
            fold = asyncio.ensure_future(self._fold_raw(records, prev, previous, prepare, early))
        finally:
            if fold is None:
                self._applying -= 1
        self._folding = fold
        return fold

    async def _ready_raw(self, records: list[Record], prev: bytes,
                         prepare: PrepareRaw | None) -> tuple[list[Committed], "list[Item] | None"]:
        """Replicated records decrypted and parsed and, with `prepare`, their deliveries made
        ready to fold (None: the fold parses them)."""
        committed = []
        added: list[tuple[int, int, bytes]] = []
        if self.log.keys is not None:
            if len(records) >= DECRYPT_AWAY:
                # libsodium runs without the GIL: on a thread, beside the fold of the batch before.
                plaintexts = await _on_commit_thread(self._decrypt_all, records, prev)
            else:
                plaintexts = self._decrypt_all(records, prev)
            for r, plaintext in zip(records, plaintexts, strict=True):
                event = pb.Event()
                event.ParseFromString(plaintext)
                committed.append(Committed(self.log.stream, r.seq, r.time_us, event))
                if prepare is not None and event.WhichOneof("kind") == "message_added":
                    added.append((r.seq, r.time_us, plaintext))
        made = await prepare(added) if added and prepare is not None else None
        if made is None or len(made) != len(added):
            return committed, None
        by_seq = iter(made)
        return committed, [next(by_seq) if c.event.WhichOneof("kind") == "message_added" else (c.seq, c.time_us, c.event)
                           for c in committed]

    async def _fold_raw(self, records: list[Record], prev: bytes, previous: "asyncio.Future[list[Committed]] | None",
                        prepare: PrepareRaw | None,
                        early: "asyncio.Future[tuple[list[Committed], list[Item] | None]] | None") -> list[Committed]:
        """Fold written replicated records (made ready by `early`, or here) after `previous`."""
        try:
            committed, ready = await (early if early is not None else self._ready_raw(records, prev, prepare))
            if previous is not None:
                await asyncio.wait([previous])  # in log order; its own caller hears of its failure
            if self.broken is not None:
                raise StoreError(f"stream {self.log.stream}: a commit failed after its write; reopen it")
            return self._publish(committed, ready)
        except BaseException as e:
            # In the log and not in the projections (a failed fold, or the loop closing): the
            # stream must be reopened, its projections rebuilt from the log.
            self.broken = self.broken or (e if isinstance(e, Exception) else StoreError("replicated fold interrupted"))
            raise
        finally:
            self._applying -= 1

    def _decrypt_all(self, records: list[Record], prev: bytes) -> list[bytes]:
        out = []
        for r in records:
            out.append(self.log.decrypt(r, prev))
            prev = r.chain
        return out

    def _seal_and_write(self, plaintexts: list[bytes]) -> list[Record]:
        with stage("append"):
            records = self.log.encrypt(plaintexts)
            self.log.write(records)
        return records

    def subscribe(self, limit: int | None = None) -> Subscription:
        sub = Subscription(self, limit)
        self.subscribers.add(sub)
        return sub

    async def drain(self) -> None:
        """Wait until every queued append has been committed or failed, and every written
        replicated batch folded (or failed): an account closed then checkpoints what its log has."""
        await self._drain_local()
        while self._folding is not None and not self._folding.done():
            await asyncio.wait([self._folding])

    async def _drain_local(self) -> None:
        while self._task is not None and not self._task.done():
            # asyncio.wait: neither raises what ended the task (its waiters got that) nor cancels it.
            await asyncio.wait([self._task])


def _ignore_outcome(fut: "asyncio.Future[Any]") -> None:
    """Retrieve a future's exception nobody waits for (a batch's early preparing whose write failed)."""
    if not fut.cancelled():
        fut.exception()


def _fail(batch: Batch, error: BaseException) -> None:
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(error)
