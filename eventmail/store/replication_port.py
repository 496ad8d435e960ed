"""What replication needs of the store and nothing else uses: verbatim records, blobs and the
keyring, heads and chains, truncation, node state and the gate of synchronous mode."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..proto import events_pb2 as pb
from . import reader
from .blobs import SMALL_BATCH_FILES
from .errors import StoreError
from .fsutil import write_atomic
from .keyring import Keyring
from .log import Head, StreamLog
from .names import NODE_STATE, QUEUE, SYSTEM
from .projection import prepare_record, preparers
from .records import GENESIS_CHAIN, Record
from .stream import Committed
from .system import SystemView

if TYPE_CHECKING:
    from .store import Store

_log = logging.getLogger(__name__)

# Records after the follower's position few enough to read for shipping on the event loop.
SHIP_INLINE_RECORDS = 4
# An account's replicated batch of at most this many records (and at most
# blobs.SMALL_BATCH_FILES blob files: the steady state's one delivery or few) has its blob files
# written beside its records (StreamWriter.write_raw's `beside`), not before them. So the
# records of at most this many can be durable without their blobs after a crash: the tail that
# cut_blobless_tail looks at on the next start.
BESIDE_RECORDS = 32


def named_blob(event: pb.Event) -> bytes | None:
    """The blob an event refers to (a delivery, a queued or handed-over message), if any."""
    kind = event.WhichOneof("kind")
    if kind == "message_added":
        return event.message_added.blob_id
    if kind == "outbound_queued":
        return event.outbound_queued.blob_id
    if kind == "handoff_queued":
        return event.handoff_queued.blob_id
    return None


class ReplicationPort:
    """`store.replication`: the replica package's one way into a store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._prepare_worker: reader.Worker | None = None

    def set_replication(
        self, gate: Callable[[str, int], Awaitable[None]] | None, fenced: Callable[[str], str | None]
    ) -> None:
        """How appends relate to replication: `gate` is awaited after each local commit (sync
        mode); `fenced(stream)` says why this node may not write a stream, or None."""
        self._store._gate = gate
        self._store._fenced = fenced
        for w in self._store._writers():
            self._store._attach(w)

    async def wait_commit(self, timeout: float) -> None:
        """Return after the next commit to any stream, or after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._store._commit_signal.wait(), timeout)
        except TimeoutError:
            pass
        self._store._commit_signal.clear()

    def stream_names(self) -> list[str]:
        """Every stream this data directory holds keys for."""
        return sorted(self._store.keyring.streams)


    async def head(self, stream: str) -> Head:
        return (await self._store._writer_for(stream)).log.head

    async def raw_records(self, stream: str, since: int, limit: int = 512) -> list[Record]:
        """Up to `limit` records after `since`, verbatim (for shipping to a follower)."""
        log_ = (await self._store._writer_for(stream)).log

        def read() -> list[Record]:
            out = []
            for r in log_.records(since):
                out.append(r)
                if len(out) >= limit:
                    break
            return out

        return await asyncio.to_thread(read)

    async def read_events(self, stream: str, since: int, limit: int = 512) -> list[Committed]:
        """Up to `limit` decrypted events after `since`, read through the stream's writer (so a
        stream another task appends to is read only up to what is committed)."""
        log_ = (await self._store._writer_for(stream)).log

        def read() -> list[Committed]:
            out: list[Committed] = []
            prev = log_.chain_before(since + 1)
            for r in log_.records(since):
                e = pb.Event()
                e.ParseFromString(log_.decrypt(r, prev))
                prev = r.chain
                out.append(Committed(stream, r.seq, r.time_us, e))
                if len(out) >= limit:
                    break
            return out

        return await asyncio.to_thread(read)

    async def chain_at(self, stream: str, seq: int) -> bytes | None:
        """The chain value at `seq` (None when this log is shorter)."""
        if seq == 0:
            return bytes(32)
        records = await self.raw_records(stream, seq - 1, limit=1)
        return records[0].chain if records else None

    async def shipment(
        self, stream: str, since: int, limit: int, sent: set[bytes]
    ) -> tuple[list[Record], list[tuple[bytes, bytes]]]:
        """Up to `limit` records after `since`, verbatim, and the blob files (id, file as on disk)
        their events refer to, but not those in `sent` (the ones read are added to it).

        A catch-up's batch is read in one hop to a thread. The steady state's few records (at
        most SHIP_INLINE_RECORDS), committed a moment ago and so in the page cache with their
        blobs, are read on the event loop: about 0.3 ms of CPU, where the hop to a thread and
        back cost a median 3-6 ms and up to 120 ms on a busy machine, every hop a wait for a
        CPU (docs/replication.md, "Where a replicated commit's time goes")."""
        log_ = (await self._store._writer_for(stream)).log
        blobs = self._store._blob_store(stream) if stream in self._store.keyring.streams else None

        def read() -> tuple[list[Record], list[tuple[bytes, bytes]]]:
            records: list[Record] = []
            # From the record at `since` on: its chain is what the next one is decrypted with.
            prev = GENESIS_CHAIN
            for r in log_.records(max(0, since - 1)):
                if r.seq <= since:
                    prev = r.chain
                    continue
                records.append(r)
                if len(records) >= limit:
                    break
            files: list[tuple[bytes, bytes]] = []
            if blobs is None or not records:
                return records, files
            for r in records:
                e = pb.Event()
                e.ParseFromString(log_.decrypt(r, prev))
                prev = r.chain
                blob_id = named_blob(e)
                if blob_id is not None and blob_id not in sent:
                    sent.add(blob_id)
                    files.append((blob_id, blobs.raw_file(blob_id)))
            return records, files

        if log_.head.seq - since <= SHIP_INLINE_RECORDS:
            return read()
        return await asyncio.to_thread(read)

    async def append_raw(
        self, stream: str, records: list[Record], on_durable: Callable[[], None] | None = None,
        blobs: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Append another node's records verbatim (chain verified), fsynced (then `on_durable` is
        called), then published: `write_raw` and its fold."""
        await (await self.write_raw(stream, records, on_durable, blobs))

    async def write_raw(
        self, stream: str, records: list[Record], on_durable: Callable[[], None] | None = None,
        blobs: list[tuple[bytes, bytes]] | None = None,
    ) -> Awaitable[None]:
        """Write another node's records verbatim (chain verified) and fsync them (then
        `on_durable` is called); returns their fold into the projections, under way (each
        stream's batches fold in order, the next batch may be written meanwhile; until a fold is
        done, the stream takes no local append: StreamWriter.write_raw). `blobs` (id, file), the
        files the records refer to, are stored durably first, on the same thread hop
        (put_blob_files). An account's deliveries are made ready to fold by the worker process
        (store.reader.Worker) when a batch has many."""
        if stream not in self._store.keyring.streams:
            raise StoreError(f"no keys for stream {stream} (the keyring must arrive first)")
        before = beside = None
        if blobs:
            store = self._store._blob_store(stream)
            small = (stream.startswith("account/") and len(records) <= BESIDE_RECORDS
                     and len(blobs) <= SMALL_BATCH_FILES)
            todo: list[tuple[bytes, bytes]] = []

            def before() -> None:
                # Checked before anything is written (a damaged file writes nothing); then a
                # steady-state batch's few files are written beside its records, on a thread of
                # their own, so that the two sets of fsyncs overlap (docs/replication.md,
                # "Blobs beside their records"); a larger batch's pack first, as always.
                todo.extend(store.check_raw_files(blobs))
                if not small:
                    store.write_raw_files(todo)

            if small:
                def beside() -> None:
                    store.write_raw_files(todo)

        prepare = self._worker() if stream.startswith("account/") and len(records) >= reader.WORKER_MIN else None
        writer = await self._store._writer_for(stream)
        fold = await writer.write_raw(records, on_durable, before, prepare, beside)

        async def folded() -> None:
            committed = await fold
            collected = [b for c in committed if c.event.WhichOneof("kind") == "blobs_collected"
                         for b in c.event.blobs_collected.blob_ids]
            if collected:
                # As the primary did (Account.collect_blobs): the collection is recorded, then the
                # files go. Else a backup keeps, for ever, mail its user deleted.
                await asyncio.to_thread(self._store._blob_store(stream).remove, collected)

        return folded()

    def _worker(self) -> reader.Worker:
        if self._prepare_worker is None:
            preps = preparers(self._store.registration.projections)
            self._prepare_worker = reader.Worker(functools.partial(prepare_record, preps))
        return self._prepare_worker

    def start_worker(self) -> None:
        """Start the worker process that makes an account's replicated deliveries ready to fold
        (store.reader.Worker), unless it runs: a secondary that connects to its leader may be
        about to catch up, and the child's start (~0.35 CPU s of imports) then overlaps it."""
        self._worker().start()

    def close(self) -> None:
        """End the worker process, if one runs (the store's close; it also ends when we exit)."""
        if self._prepare_worker is not None:
            self._prepare_worker.close()
            self._prepare_worker = None

    async def cut_blobless_tail(self, stream: str) -> int:
        """Cut from an account's log a tail of replicated records whose blobs are not here; the
        number of records cut (0 mostly). Run before the account is opened (replica.service).

        A steady-state batch's blob files are written beside its records (write_raw), so a crash
        can leave the records durable and a blob not: a batch never acknowledged (the leader
        still has it, and sends it again from our head). Only the last BESIDE_RECORDS records can
        be such a tail. A blob that a later record of the tail collected (retention) is absent
        on purpose. The log is the truth: the account's projections are rebuilt from it when it
        opens next."""
        if not stream.startswith("account/") or stream not in self._store.keyring.streams:
            return 0
        keys = self._store.keyring.streams[stream]
        blobs = self._store._blob_store(stream)
        path = self._store._stream_path(keys.dir_name)

        def find() -> tuple[int, int] | None:
            slog = StreamLog(stream, path, keys, False)
            try:
                named: list[tuple[int, bytes]] = []
                collected: set[bytes] = set()
                for r, plaintext in slog.plaintexts(max(0, slog.head.seq - BESIDE_RECORDS)):
                    e = pb.Event()
                    e.ParseFromString(plaintext)
                    blob_id = named_blob(e)
                    if blob_id is not None:
                        named.append((r.seq, blob_id))
                    elif e.WhichOneof("kind") == "blobs_collected":
                        collected.update(e.blobs_collected.blob_ids)
                for seq, blob_id in named:
                    if blob_id not in collected and not blobs.exists(blob_id):
                        return seq - 1, slog.head.seq
                return None
            finally:
                slog.close()

        found = await asyncio.to_thread(find)
        if found is None:
            return 0
        cut, head = found
        _log.warning("stream %s: cutting %d replicated records (seq %d to %d) whose blobs are missing: written "
                     "beside them when the node stopped, never acknowledged; the leader sends them again",
                     stream, head - cut, cut + 1, head)
        await self.truncate_stream(stream, cut)
        return head - cut

    async def put_blob_files(self, stream: str, files: list[tuple[bytes, bytes]]) -> int:
        """A batch of replicated blob files (id, file), checked, then made durable together."""
        return await asyncio.to_thread(self._store._blob_store(stream).put_raw_files, files)

    def has_blob(self, stream: str, blob_id: bytes) -> bool:
        return self._store._blob_store(stream).exists(blob_id)

    def keyring_file(self) -> bytes:
        return self._store.keyring.path.read_bytes()

    @property
    def keyring_version(self) -> int:
        """Changes whenever the keyring is saved (new stream, rotation, shredding, adoption)."""
        return self._store.keyring.version

    async def install_keyring(self, data: bytes) -> None:
        """Adopt the leader's keyring (sealed with the master key both nodes hold)."""
        other = Keyring.from_bytes(self._store.keyring.path, data, self._store.keyring.master)
        await asyncio.to_thread(self._store.keyring.adopt, other)

    def ensure_stream_keys(self, stream: str) -> None:
        """Create keys for a stream another node will write (a backup MX's hand-off stream)."""
        self._store.keyring.stream(stream, create=True)

    def has_stream(self, stream: str) -> bool:
        return stream in self._store.keyring.streams

    async def truncate_stream(self, stream: str, seq: int) -> None:
        """Cut a stream back to `seq` (a former primary dropping its divergent tail) and rebuild
        what was projected from the tail. The caller hands the tail over first."""
        if stream == SYSTEM or stream == QUEUE:
            w = self._store._system() if stream == SYSTEM else self._store._queue_writer
            assert w is not None
            await w.drain()
            await asyncio.to_thread(w.log.truncate, seq)
            if stream == SYSTEM:
                self._store.system = SystemView()
                for c in self._store._events(SYSTEM):
                    self._store.system.apply(c.seq, c.event)
            return
        if stream.startswith("account/"):
            name = stream.split("/", 1)[1]
            await self._store._close_account(name, checkpoint=False)
            keys = self._store.keyring.streams[stream]
            slog = StreamLog(stream, self._store._stream_path(keys.dir_name), keys, True)
            try:
                await asyncio.to_thread(slog.truncate, seq)
            finally:
                slog.close()
            return
        w = await self._store._writer_for(stream)
        await w.drain()
        await asyncio.to_thread(w.log.truncate, seq)

    def read_node_state(self) -> dict[str, object] | None:
        """The replication state of this node (epoch and primary), None before the first write."""
        try:
            return dict(json.loads((self._store.directory / NODE_STATE).read_text()))
        except FileNotFoundError:
            return None

    def write_node_state(self, state: dict[str, object]) -> None:
        """Replace the node state durably (promotion and fencing depend on it surviving a crash)."""
        write_atomic(self._store.directory / NODE_STATE, json.dumps(state, sort_keys=True).encode())

