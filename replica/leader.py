"""The leader side: ships every stream this node writes, verbatim, to the follower on one gRPC call."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc

from eventmail.proto import replication_pb2 as rpb
from eventmail.proto import replication_pb2_grpc as rpc
from eventmail.store import SYSTEM, NotFound, Record, StoreError

from .node import Epoch, ReplicaNode

log = logging.getLogger(__name__)

# Records per batch: large enough to catch up at thousands of records a second, small enough
# that a batch (without blobs) stays well under a megabyte.
BATCH_RECORDS = 512
# Blob bytes carried inside a batch's message; a blob that does not fit goes alone before it
# (gRPC messages stay far below tlsauth.MAX_MESSAGE_BYTES).
BATCH_BLOB_BYTES = 8 << 20
IDLE_WAIT = 1.0


def to_wire(r: Record) -> rpb.RawRecord:
    return rpb.RawRecord(seq=r.seq, time_us=r.time_us, key_id=r.key_id, nonce=r.nonce, ciphertext=r.ciphertext,
                         chain=r.chain)


def epoch_msg(e: Epoch) -> rpb.Epoch:
    return rpb.Epoch(number=e.number, primary=e.primary)


class ReplicationService(rpc.ReplicationServicer):
    """Serves the peer's follower (one call at a time is the normal case)."""

    def __init__(self, node: ReplicaNode) -> None:
        self.node = node
        self.store = node.store

    async def GetKeyring(self, request: rpb.KeyringRequest, context: grpc.aio.ServicerContext) -> rpb.KeyringFile:
        if not self.node.is_primary:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{self.node.node} is not the primary")
        return rpb.KeyringFile(data=self.store.replication.keyring_file())

    async def Follow(
        self, request_iterator: AsyncIterator[rpb.FollowRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpb.FollowMessage]:
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("kind") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be Hello")
            return
        hello = first.hello
        if hello.node != self.node.peer_node:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"we replicate with {self.node.peer_node} only")
            return
        self.node.observe(Epoch(hello.epoch.number, hello.epoch.primary))
        positions: dict[str, tuple[int, bytes, int]] = {}
        for p in hello.points:
            positions[p.stream] = await self._common_point(p)
            if self.node.writes(p.stream):
                self.node.on_ack(p.stream, positions[p.stream][0])  # it holds that much durably
        log.info("replication: %s follows us (epoch %s, %d streams known to it)", hello.node, self.node.epoch,
                 len(positions))
        acks = asyncio.get_running_loop().create_task(self._read_acks(request_iterator))
        self.node.follower_connected = True
        try:
            # Epochs first; heads only once they mean "everything up to here was shipped".
            yield self._heartbeat({})
            keyring_sent = -1
            blobs_sent: dict[str, set[bytes]] = {}  # per stream: blob ids shipped on this call
            while not acks.done():
                if keyring_sent != self.store.replication.keyring_version:
                    keyring_sent = self.store.replication.keyring_version
                    yield rpb.FollowMessage(keyring=rpb.KeyringFile(data=self.store.replication.keyring_file()))
                progressed = False
                for stream in self._streams():
                    seq = positions.get(stream, (0, b"", 0))[0]
                    try:
                        head = await self.store.replication.head(stream)
                    except NotFound:
                        continue
                    if head.seq <= seq:
                        continue
                    records, files = await self.store.replication.shipment(
                        stream, seq, BATCH_RECORDS, blobs_sent.setdefault(stream, set()))
                    if not records:
                        continue
                    inline = []
                    budget = BATCH_BLOB_BYTES
                    for blob_id, data in files:
                        f = rpb.BlobFile(stream=stream, blob_id=blob_id, data=data)
                        if len(data) <= budget:
                            budget -= len(data)
                            inline.append(f)
                        else:
                            yield rpb.FollowMessage(blob=f)
                    yield rpb.FollowMessage(records=rpb.RecordBatch(
                        stream=stream, records=[to_wire(r) for r in records], blobs=inline))
                    last = records[-1]
                    positions[stream] = (last.seq, last.chain, last.time_us)
                    self.node.shipped[stream] = last.seq
                    progressed = True
                if not progressed:
                    yield self._heartbeat(positions)
                    self.node.caught_up()
                    await self.store.replication.wait_commit(IDLE_WAIT)
        except StoreError as e:
            log.error("replication: shipping to %s stopped: %s", hello.node, e)
            await context.abort(grpc.StatusCode.INTERNAL, str(e))
        finally:
            acks.cancel()
            self.node.follower_connected = False
            log.info("replication: %s stopped following", hello.node)

    def _streams(self) -> list[str]:
        # The system stream first: it names the accounts whose streams follow.
        names = [s for s in self.store.replication.stream_names() if self.node.writes(s)]
        return sorted(names, key=lambda s: (s != SYSTEM, s))

    def _heartbeat(self, positions: dict[str, tuple[int, bytes, int]]) -> rpb.FollowMessage:
        heads = [
            rpb.StreamHead(stream=s, seq=seq, chain=chain, time_us=t)
            for s, (seq, chain, t) in positions.items() if self.node.writes(s)
        ]
        return rpb.FollowMessage(heartbeat=rpb.Heartbeat(
            epoch=epoch_msg(self.node.epoch), time_us=time.time_ns() // 1000, heads=heads))

    async def _common_point(self, p: rpb.StreamPoints) -> tuple[int, bytes, int]:
        """The highest of the follower's points where our chain agrees (0, the genesis, always does)."""
        if not self.node.writes(p.stream) or not self.store.replication.has_stream(p.stream):
            return (0, bytes(32), 0)
        try:
            head = await self.store.replication.head(p.stream)
        except NotFound:
            return (0, bytes(32), 0)
        for seq, chain in sorted(zip(p.seqs, p.chains, strict=False), reverse=True):
            if seq > head.seq:
                continue
            if await self.store.replication.chain_at(p.stream, seq) == chain:
                return (seq, chain, 0)
        return (0, bytes(32), 0)

    async def _read_acks(self, requests: AsyncIterator[rpb.FollowRequest]) -> None:
        async for req in requests:
            if req.WhichOneof("kind") == "ack":
                self.node.on_ack(req.ack.stream, req.ack.seq)
