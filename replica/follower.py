"""The follower side: receives the peer's streams, verifies and stores them verbatim, acknowledges."""

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable

import grpc

from eventmail import metrics
from eventmail.proto import replication_pb2 as rpb
from eventmail.proto import replication_pb2_grpc as rpc
from eventmail.store import DamagedLog, Record, StoreError

from . import handoff, tlsauth
from .leader import epoch_msg
from .node import Epoch, FollowState, ReplicaNode

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0
RETRY_MAX_SECONDS = 8.0
DOWN_REMINDER = 60.0
PROGRESS_EVERY = 5.0
# A catch-up of at least this many records (or one that logged progress) says when it is done.
CATCHUP_REPORTED = 1000
# Messages read ahead of the one being applied (each up to a batch of 512 records and 8 MiB of
# blobs), and the most records written as one (the batches that arrived meanwhile, merged).
INBOX_MESSAGES = 4
MERGE_RECORDS = 2048


class Diverged(Exception):
    """Our copy disagrees with the leader's and we were never its writer: an operator must look."""


def from_wire(r: rpb.RawRecord) -> Record:
    return Record(r.seq, r.time_us, r.key_id, r.nonce, r.ciphertext, r.chain)


async def _receive(call: AsyncIterator[rpb.FollowMessage],
                   inbox: asyncio.Queue[rpb.FollowMessage | BaseException | None]) -> None:
    """Everything the leader sends, in order, then None at its end (or what ended the call)."""
    try:
        async for msg in call:
            await inbox.put(msg)
    except BaseException as e:  # the call failed: the session raises it where it reads
        task = asyncio.current_task()
        if isinstance(e, asyncio.CancelledError) and task is not None and task.cancelling():
            raise  # the session is over and stops us
        await inbox.put(e)
        return
    await inbox.put(None)


def _take_waiting(stream: str, wire: list[rpb.RawRecord], blobs: dict[str, list[tuple[bytes, bytes]]],
                  inbox: asyncio.Queue[rpb.FollowMessage | BaseException | None],
                  pending: collections.deque[rpb.FollowMessage | BaseException | None]) -> None:
    """Group commit on the follower: add to `wire` (and `blobs`) the record batches of the same
    stream, and the blobs that precede them, that have arrived already, up to MERGE_RECORDS.

    In the steady state a batch is one commit, and its write waits for three fsyncs (the blob
    file, its directory, the log): on a disk shared with busy neighbours those took up to 100 ms,
    and each commit that arrived meanwhile then paid its own three after it (docs/replication.md,
    "Where a replicated commit's time goes"). Written together they share them. The first other
    message (a heartbeat, a keyring, another stream) ends the run and is handled next, in order."""
    while len(wire) < MERGE_RECORDS:
        if pending:
            nxt = pending.popleft()
        elif not inbox.empty():
            nxt = inbox.get_nowait()
        else:
            return
        if not isinstance(nxt, rpb.FollowMessage):  # the end of the call: after this write
            pending.appendleft(nxt)
            return
        kind = nxt.WhichOneof("kind")
        if kind == "blob" and nxt.blob.stream == stream:
            blobs.setdefault(stream, []).append((nxt.blob.blob_id, nxt.blob.data))
        elif kind == "records" and nxt.records.stream == stream:
            wire.extend(nxt.records.records)
            for b in nxt.records.blobs:
                blobs.setdefault(b.stream, []).append((b.blob_id, b.data))
        else:
            pending.appendleft(nxt)
            return


def _fold_ended(fold: "asyncio.Future[None]") -> None:
    if not fold.cancelled() and fold.exception() is not None:
        log.error("replication: folding replicated records failed: %s", fold.exception())


class Follower:
    """Keeps one call open to the peer's leader service and applies what arrives."""

    def __init__(self, node: ReplicaNode) -> None:
        self.node = node
        self.store = node.store
        s = node.settings
        self.credentials = tlsauth.channel_credentials(s.cert, s.key, s.peer_cert)
        self.options = tlsauth.client_options(s.peer_node)
        self._applied_since_report = 0
        self._last_report = time.monotonic()
        # The catch-up under way: when its first batch arrived, the records applied since, and
        # whether progress was logged (a catch-up ends at the leader's next heartbeat with heads:
        # it sends one only when it has nothing left to ship).
        self._catchup_started: float | None = None
        self._catchup_records = 0
        self._catchup_logged = False
        # The last written batch's fold into the projections, under way while the next batch
        # is received and written (docs/replication.md, "The secondary folds on the second core").
        self._folding: asyncio.Future[None] | None = None
        self._folding_stream = ""

    async def run(self) -> None:
        if not self.node.is_primary:
            # Started with the secondary, not when its leader first answers: the child's start
            # (~0.35 CPU s of imports) is then over before a catch-up's first batches arrive.
            self.store.replication.start_worker()
        try:
            await self._run()
        finally:
            self.store.replication.close()

    async def _settle(self) -> None:
        """Wait for the fold under way (raising what failed it)."""
        folding, self._folding = self._folding, None
        if folding is not None:
            await folding

    async def _run(self) -> None:
        delay = RETRY_SECONDS
        down_since: float | None = None
        said = 0.0
        while True:
            try:
                await self._session()
            except grpc.aio.AioRpcError as e:
                # A peer that is down is an expected condition: said when it starts, then once a
                # minute, with the retry backing off (1 s doubling to RETRY_MAX_SECONDS).
                now = time.monotonic()
                if self.node.leader_connected or down_since is None:
                    down_since, said, delay = now, now, RETRY_SECONDS
                    log.info("replication: link to %s: %s %s", self.node.peer_node, e.code().name, e.details())
                elif now - said >= DOWN_REMINDER:
                    said = now
                    log.info("replication: link to %s still down after %.0f s: %s", self.node.peer_node,
                             now - down_since, e.code().name)
                else:
                    delay = min(delay * 2, RETRY_MAX_SECONDS)
            except (StoreError, Diverged) as e:
                log.error("replication: following %s stopped: %s", self.node.peer_node, e)
                await asyncio.sleep(5 * RETRY_SECONDS)
            finally:
                if self.node.leader_connected:  # it was up: the next failure starts a new outage
                    delay = RETRY_SECONDS
                self.node.leader_connected = False
            await asyncio.sleep(delay)

    async def _points(self) -> list[rpb.StreamPoints]:
        out = []
        for stream in self.store.replication.stream_names():
            if self.node.writes(stream):
                continue
            try:
                head = await self.store.replication.head(stream)
            except StoreError:
                continue
            seqs, seq, step = [], head.seq, 1
            while seq > 0:
                seqs.append(seq)
                seq -= step
                step *= 2
            seqs.append(0)
            chains = [await self.store.replication.chain_at(stream, s) or b"" for s in seqs]
            out.append(rpb.StreamPoints(stream=stream, seqs=seqs, chains=chains))
        return out

    async def _session(self) -> None:
        s = self.node.settings
        outbox: asyncio.Queue[rpb.FollowRequest] = asyncio.Queue()
        hello = rpb.Hello(node=self.node.node, epoch=epoch_msg(self.node.epoch), points=await self._points())
        outbox.put_nowait(rpb.FollowRequest(hello=hello))

        async def requests() -> AsyncIterator[rpb.FollowRequest]:
            while True:
                yield await outbox.get()

        async with grpc.aio.secure_channel(s.peer, self.credentials, options=self.options) as channel:
            stub = rpc.ReplicationStub(channel)  # type: ignore[no-untyped-call]
            call = stub.Follow(requests())
            # Messages are read by a task of their own, a few ahead of what is being applied, so
            # that record batches which arrived while a write was waiting for its fsyncs can be
            # written together (below). The bound keeps gRPC's flow control in charge.
            inbox: asyncio.Queue[rpb.FollowMessage | BaseException | None] = asyncio.Queue(INBOX_MESSAGES)
            reader = asyncio.get_running_loop().create_task(_receive(call, inbox))
            pending: collections.deque[rpb.FollowMessage | BaseException | None] = collections.deque()
            blobs: dict[str, list[tuple[bytes, bytes]]] = {}
            first = True
            try:
                while True:
                    msg = pending.popleft() if pending else await inbox.get()
                    if msg is None:
                        return
                    if isinstance(msg, BaseException):
                        raise msg
                    kind = msg.WhichOneof("kind")
                    if first and not self.node.is_primary:
                        # The leader answers: a secondary may be about to catch up.
                        self.store.replication.start_worker()
                    first = False
                    if kind not in ("records", "blob"):
                        # Everything else (heads, divergence, a new epoch, a keyring) is handled
                        # with the projections up to date with the log.
                        await self._settle()
                    if kind == "heartbeat":
                        if not await self._heartbeat(msg.heartbeat):
                            call.cancel()
                            return
                    elif kind == "keyring":
                        await self.store.replication.install_keyring(msg.keyring.data)
                    elif kind == "blob":
                        # A blob too large for the batch's message: kept until the batch's records
                        # arrive (right after it), then written with the others and one sync.
                        blobs.setdefault(msg.blob.stream, []).append((msg.blob.blob_id, msg.blob.data))
                    elif kind == "records":
                        stream = msg.records.stream
                        wire = list(msg.records.records)
                        for b in msg.records.blobs:
                            blobs.setdefault(b.stream, []).append((b.blob_id, b.data))
                        _take_waiting(stream, wire, blobs, inbox, pending)
                        files = blobs.pop(stream, [])
                        for other, more in blobs.items():  # the leader sends only the batch's own
                            await self.store.replication.put_blob_files(other, more)
                        blobs.clear()

                        def ack(seq: int, stream: str = stream) -> None:
                            outbox.put_nowait(rpb.FollowRequest(ack=rpb.Ack(stream=stream, seq=seq)))

                        await self._apply(stream, wire, files, ack)
                    elif kind == "refused":
                        log.warning("replication: %s refused us: %s", self.node.peer_node, msg.refused.reason)
                        return
            finally:
                reader.cancel()
                folding, self._folding = self._folding, None
                if folding is not None:
                    # It goes on by itself (the log has its records): its failure is logged there.
                    folding.add_done_callback(_fold_ended)

    async def _heartbeat(self, hb: rpb.Heartbeat) -> bool:
        leader = Epoch(hb.epoch.number, hb.epoch.primary)
        if leader < self.node.epoch:
            # A stale leader: it learns our epoch from our Hello on the next connection.
            log.warning("replication: %s is at epoch %s, older than ours (%s); not following it",
                        self.node.peer_node, leader, self.node.epoch)
            return False
        if self.node.observe(leader):
            # Our role changed: say hello again, with the positions of every stream we now follow.
            return False
        if not self.node.leader_connected:
            self.node.leader_connected = True
            log.info("replication: following %s (epoch %s)", self.node.peer_node, self.node.epoch)
        caught_up = True
        for h in hb.heads:
            if self.node.writes(h.stream) or not self.store.replication.has_stream(h.stream):
                continue
            local = await self.store.replication.head(h.stream)
            if local.seq > h.seq:
                # Everything up to the leader's head has been compared record by record: what we
                # hold beyond it is a divergent tail from our time as primary.
                await self._diverged(h.stream, h.seq)
                local = await self.store.replication.head(h.stream)
            f = self.node.following.setdefault(h.stream, FollowState())
            f.local_seq = local.seq
            f.leader_seq = max(h.seq, f.leader_seq)
            if h.time_us:
                f.leader_time_us = h.time_us
            if f.lag_records:
                caught_up = False
        if caught_up and hb.heads:
            self.node.rejoined()
            self._caught_up()
        self.node.update_lag_metrics()
        return True

    async def _diverged(self, stream: str, common: int) -> None:
        if not self.node.rejoin:
            raise Diverged(f"{stream}: our copy differs from {self.node.peer_node}'s after seq {common}, "
                           "and this node was not its writer")
        await handoff.hand_over_tail(self.node, stream, common)

    async def _apply(self, stream: str, wire: list[rpb.RawRecord], blobs: list[tuple[bytes, bytes]],
                     ack: Callable[[int], None]) -> None:
        """Append records of `stream` with the blob files they refer to (stored durably before
        the records; what we hold already is compared, not written) and acknowledge them as
        soon as they are fsynced here, before our projections take them: the acknowledgement is
        the promise of durability the leader's sync mode waits for."""
        if self.node.writes(stream):
            log.error("replication: %s sent records of %s, which we write; ignored", self.node.peer_node, stream)
            return
        if not wire:
            return
        if not self.store.replication.has_stream(stream):
            raise StoreError(f"records of {stream} arrived before its keys")
        if self._folding_stream != stream:
            # Another stream's fold may be what this one needs first (the system stream's names
            # a new account before the account's records can be written).
            await self._settle()
        records = [from_wire(r) for r in wire]
        head = await self.store.replication.head(stream)
        # Records we hold already (the leader starts at a common point that may lie below our
        # head) are compared; the first that differs marks the start of our divergent tail.
        while records and records[0].seq <= head.seq:
            mine = await self.store.replication.chain_at(stream, records[0].seq)
            if mine != records[0].chain:
                await self._settle()
                await self._diverged(stream, records[0].seq - 1)
                head = await self.store.replication.head(stream)
                break
            records.pop(0)
        last = wire[-1]

        def durable() -> None:
            # Our position (status, lag metrics) and the acknowledgement: both mean "fsynced here".
            self.node.following.setdefault(stream, FollowState()).durable(last.seq, last.time_us)
            ack(last.seq)

        if records:
            if records[0].seq != head.seq + 1:
                raise DamagedLog(stream, records[0].seq, f"replicated records skip ahead of our head {head.seq}")
            fold = asyncio.ensure_future(await self.store.replication.write_raw(stream, records, durable, blobs))
            # At most one batch folds while the next is written: wait for the one before (and
            # hear of its failure) now that this one is durable and acknowledged.
            await self._settle()
            self._folding, self._folding_stream = fold, stream
            metrics.REPLICA_APPLIED.inc(len(records))
            self._applied_since_report += len(records)
            if self._catchup_started is None:
                self._catchup_started = time.monotonic()
            self._catchup_records += len(records)
        else:
            durable()
        self._report_progress()

    def _report_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_report < PROGRESS_EVERY:
            return
        rate = self._applied_since_report / (now - self._last_report)
        behind = sum(f.lag_records for f in self.node.following.values())
        started = self._catchup_started
        # A catch-up under way for a while (in the steady state each batch is one: the leader's
        # heartbeat after it ends it), or records known to be behind.
        if self._applied_since_report and (behind or (started is not None and now - started >= PROGRESS_EVERY)):
            # The leader's head is known from its heartbeats only once it has shipped everything:
            # during an initial sync what is behind is unknown and said as such.
            log.info("replication: catching up with %s: %d records in %.0f s so far, %.0f records/s, %s",
                     self.node.peer_node, self._catchup_records, now - (self._catchup_started or now), rate,
                     f"{behind} records behind" if behind else "the leader's head not known yet")
            self._catchup_logged = True
        self._applied_since_report = 0
        self._last_report = now
        self.node.update_lag_metrics()

    def _caught_up(self) -> None:
        """The leader had nothing more to ship: a catch-up worth a line says how it went."""
        if self._catchup_started is not None and (self._catchup_logged or self._catchup_records >= CATCHUP_REPORTED):
            took = max(time.monotonic() - self._catchup_started, 1e-3)
            log.info("replication: caught up with %s: %d records in %.1f s, %.0f records/s", self.node.peer_node,
                     self._catchup_records, took, self._catchup_records / took)
        self._catchup_started = None
        self._catchup_records = 0
        self._catchup_logged = False
