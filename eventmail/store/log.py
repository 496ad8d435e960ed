"""One stream's log: segment files, recovery on open, encrypted appends with fsync, reads by seq."""

import logging
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import crypto
from .errors import DamagedLog, StoreError, StreamShredded
from .fsutil import fsync_dir, make_dirs, raise_store_error, write_atomic
from .keyring import StreamKeys
from .records import (
    GENESIS_CHAIN,
    SEGMENT_HEADER,
    SEGMENT_MAGIC,
    Record,
    ScanEnd,
    associated_data,
    chain_value,
    scan,
    segment_header,
)

log = logging.getLogger(__name__)

# One position in 256 of the last segment is remembered, so reading from a seq near the head
# (a checkpoint's tail, a follower's position) does not rescan the whole segment.
INDEX_EVERY = 256
# Where each of the last records appended by this process starts (`StreamLog._recent`): a
# replication leader reads the newest records again to ship them, and from the nearest
# INDEX_EVERY position that read had to hash the chain of up to 255 records first (2.4 ms of CPU
# per shipped commit on the test machine).
RECENT_POSITIONS = 64

# The tail hint (`TAIL_HINT` in the stream's directory), written when a log is closed: the last
# segment's positions index and where its last record ends, so the next open scans only what was
# appended after it instead of the whole segment (64 MiB, ~100,000 records: over a second).
# Magic, the segment's first seq, the number of (seq, offset, chain before) entries; a CRC-32
# of everything before it ends the file. The last entry is the tail.
TAIL_HINT = "tail.hint"
HINT_HEAD = struct.Struct(">8sQI")
HINT_ENTRY = struct.Struct(f">QQ{32}s")
HINT_MAGIC = b"EMTAIL01"

# Segments roll over at 64 MiB: small enough to scan the last one quickly on open, large
# enough that a busy account has few files.
SEGMENT_MAX_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class Head:
    """A stream's position: the last record's seq and chain value (0 and zeros when empty)."""

    seq: int
    chain: bytes


@dataclass(frozen=True, slots=True)
class Segment:
    path: Path
    first_seq: int


class StreamLog:
    """The segment files of one stream. Not thread-safe: one writer at a time (the store's)."""

    def __init__(self, stream: str, path: Path, keys: StreamKeys | None, writable: bool) -> None:
        self.stream = stream
        self.path = path
        self.keys = keys
        self.writable = writable
        self.head = Head(0, GENESIS_CHAIN)
        self._segments: list[Segment] = []
        self._fd: int | None = None
        self._size = 0  # bytes in the last segment
        self.cut_bytes = 0  # torn-tail bytes removed on open
        # (seq, offset, chain before it) for positions in the last segment
        self._index: list[tuple[int, int, bytes]] = []
        # (segment's first seq, seq, offset, chain before it) of the records appended last
        self._recent: deque[tuple[int, int, int, bytes]] = deque(maxlen=RECENT_POSITIONS)
        # Told the seconds each append's fsync took (the store's `on_fsync`, for metrics); called
        # on the writing thread.
        self.on_fsync: Callable[[float], None] = _ignore
        self._open()

    # ---------------------------------------------------------------- opening and recovery

    def _list_segments(self) -> list[Segment]:
        if not self.path.exists():
            return []
        segs = []
        for p in self.path.iterdir():
            if p.suffix == ".seg":
                segs.append(Segment(p, int(p.stem)))
        return sorted(segs, key=lambda s: s.first_seq)

    def _open(self) -> None:
        self._segments = self._list_segments()
        if not self._segments:
            return
        last = self._segments[-1]
        data = last.path.read_bytes()
        if len(data) < SEGMENT_HEADER.size:
            # A segment whose header never fully reached the disk holds no record: drop it.
            if self.writable:
                log.warning("stream %s: removing segment %s with a torn header", self.stream, last.path.name)
                last.path.unlink()
                fsync_dir(self.path)
            self._segments.pop()
            if not self._segments:
                return
            last = self._segments[-1]
            data = last.path.read_bytes()
        first_seq, prev_chain = self._read_header(last, data)
        hint = self._read_hint(last, data)
        if hint is None:
            end = self._scan_to_end(data, [], (first_seq, SEGMENT_HEADER.size, prev_chain))
        else:
            end = self._scan_to_end(data, *hint)
        if end.damage is not None:
            raise DamagedLog(self.stream, end.damage_seq, end.damage)
        if end.torn:
            self.cut_bytes = len(data) - end.offset
            if self.writable:
                log.warning(
                    "stream %s: cutting a torn tail of %d bytes at seq %d", self.stream, self.cut_bytes, end.damage_seq
                )
                with open(last.path, "r+b") as f:
                    f.truncate(end.offset)
                    os.fsync(f.fileno())
        self._size = end.offset
        if self.writable:
            self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)

    def _read_header(self, seg: Segment, data: bytes) -> tuple[int, bytes]:
        magic, first_seq, prev_chain = SEGMENT_HEADER.unpack_from(data, 0)
        if magic != SEGMENT_MAGIC or first_seq != seg.first_seq:
            raise DamagedLog(self.stream, seg.first_seq, f"segment {seg.path.name} has a damaged header")
        return first_seq, prev_chain

    def _read_hint(
        self, seg: Segment, data: bytes
    ) -> tuple[list[tuple[int, int, bytes]], tuple[int, int, bytes]] | None:
        """The positions index of the segment and its tail as the last close left them, if the
        hint names this segment and the record ending at its tail carries the hint's chain
        value (a truncated or rewritten log does not; a hint is then ignored). Records before
        it were verified when written or at an earlier open; `verify` reads them all."""
        try:
            raw = (self.path / TAIL_HINT).read_bytes()
        except OSError:
            return None
        if len(raw) < HINT_HEAD.size + HINT_ENTRY.size + 4:
            return None
        body, crc = raw[:-4], int.from_bytes(raw[-4:], "big")
        magic, first_seq, n = HINT_HEAD.unpack_from(body, 0)
        if zlib.crc32(body) != crc or magic != HINT_MAGIC or first_seq != seg.first_seq or n < 1:
            return None
        if len(body) != HINT_HEAD.size + n * HINT_ENTRY.size:
            return None
        entries = [HINT_ENTRY.unpack_from(body, HINT_HEAD.size + i * HINT_ENTRY.size) for i in range(n)]
        seq, offset, chain = entries[-1]
        if entries[0][:2] != (first_seq, SEGMENT_HEADER.size) or not SEGMENT_HEADER.size <= offset <= len(data):
            return None
        if offset == SEGMENT_HEADER.size or data[offset - len(chain) : offset] != chain:
            return None
        index = [(int(a), int(b), bytes(c)) for a, b, c in entries]
        return index[:-1], index[-1]

    def _write_hint(self) -> None:
        if not self._segments or not self._index or self._index[0][0] != self._segments[-1].first_seq:
            return
        entries = [*self._index, (self.head.seq + 1, self._size, self.head.chain)]
        body = HINT_HEAD.pack(HINT_MAGIC, self._segments[-1].first_seq, len(entries)) + b"".join(
            HINT_ENTRY.pack(*e) for e in entries
        )
        try:
            write_atomic(self.path / TAIL_HINT, body + zlib.crc32(body).to_bytes(4, "big"))
        except StoreError as e:
            # A hint only shortens the next open: losing it loses nothing.
            log.warning("stream %s: no tail hint written: %s", self.stream, e)

    def _drop_hint(self) -> None:
        (self.path / TAIL_HINT).unlink(missing_ok=True)

    def _scan_to_end(
        self, data: bytes, index: list[tuple[int, int, bytes]], start: tuple[int, int, bytes]
    ) -> ScanEnd:
        """Scan the last segment from `start` (its first record, or where the tail hint says the
        last close left it) to its end, extending the positions `index` of what lies before."""
        first_seq, offset, prev_chain = start
        head = Head(first_seq - 1, prev_chain)
        self._index = index or [start]
        self._recent.clear()
        base = self._index[0][0]
        for item in scan(data, first_seq, prev_chain, start=offset):
            if isinstance(item, ScanEnd):
                self.head = head
                return item
            head = Head(item.seq, item.chain)
            if (item.seq + 1 - base) % INDEX_EVERY == 0:
                self._index.append((item.seq + 1, item.end, item.chain))
        raise AssertionError("scan ends with ScanEnd")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._write_hint()

    # ---------------------------------------------------------------- writing

    def encrypt(self, plaintexts: list[bytes], time_us: int | None = None) -> list[Record]:
        """Seal events as the next records after the head (does not write them)."""
        if self.keys is None:
            raise StreamShredded(f"stream {self.stream}: its keys were deleted")
        key_id, key = self.keys.current_key()
        now = time.time_ns() // 1000 if time_us is None else time_us
        seq, chain = self.head.seq, self.head.chain
        out = []
        for pt in plaintexts:
            seq += 1
            nonce, ct = crypto.seal(key, pt, associated_data(self.stream, seq, chain))
            chain = chain_value(chain, seq, now, key_id, nonce, ct)
            out.append(Record(seq, now, key_id, nonce, ct, chain))
        return out

    def write(self, records: list[Record]) -> Head:
        """Append records (already sealed for this head) and fsync; all or nothing."""
        if not self.writable:
            raise StoreError(f"stream {self.stream} is open read-only")
        if not records:
            return self.head
        if records[0].seq != self.head.seq + 1:
            raise StoreError(f"stream {self.stream}: append at seq {records[0].seq}, head is {self.head.seq}")
        if self._fd is None or self._size >= SEGMENT_MAX_BYTES:
            self._new_segment(records[0].seq)
        assert self._fd is not None
        encoded = [r.encode() for r in records]
        blob = b"".join(encoded)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(self._fd, view) :]
            self._fsync()
        except OSError as e:
            self._undo(e)
        offset = self._size
        first_seq = self._index[0][0]
        prev = self.head.chain
        for r, data in zip(records, encoded, strict=True):
            self._recent.append((first_seq, r.seq, offset, prev))
            prev = r.chain
            offset += len(data)
            if (r.seq + 1 - first_seq) % INDEX_EVERY == 0:
                self._index.append((r.seq + 1, offset, r.chain))
        self._size += len(blob)
        self.head = Head(records[-1].seq, records[-1].chain)
        return self.head

    def _fsync(self) -> None:
        """fsync the last segment: the moment an append becomes durable, timed for `on_fsync`."""
        assert self._fd is not None
        start = time.monotonic()
        os.fsync(self._fd)
        self.on_fsync(time.monotonic() - start)

    def _undo(self, error: OSError) -> None:
        """Cut a failed append back to the last whole record, then raise the typed error."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        except OSError:
            # The tail could not even be cut: stop writing; reopening recovers the torn tail.
            os.close(self._fd)
            self._fd = None
            self.writable = False
            log.error("stream %s: could not cut a failed append back; stream is now read-only", self.stream)
        raise_store_error(error, f"appending to stream {self.stream}")

    def _new_segment(self, first_seq: int) -> None:
        make_dirs(self.path)
        path = self.path / f"{first_seq:020d}.seg"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            try:
                os.write(fd, segment_header(first_seq, self.head.chain))
                os.fsync(fd)
                fsync_dir(self.path)
            except OSError:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise
        except OSError as e:
            raise_store_error(e, f"creating a segment of stream {self.stream}")
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._size = SEGMENT_HEADER.size
        self._segments.append(Segment(path, first_seq))
        self._index = [(first_seq, self._size, self.head.chain)]

    # ---------------------------------------------------------------- reading

    def records(self, since: int = 0, verify_all: bool = False) -> Iterator[Record]:
        """Records with seq > since, in order. Raises DamagedLog at the first damaged record.

        A writer's own reads stop at what it has committed (a batch being written in another
        thread is invisible); a read-only reader tolerates a tail that is being written.
        """
        segs = list(self._segments)
        head_size = self._size
        start = 0
        if not verify_all:
            for i, s in enumerate(segs):
                if s.first_seq <= since + 1:
                    start = i
        expected_prev: bytes | None = None
        for i in range(start, len(segs)):
            seg = segs[i]
            is_last = i == len(segs) - 1
            with open(seg.path, "rb") as f:
                header = f.read(SEGMENT_HEADER.size)
                if len(header) < SEGMENT_HEADER.size:
                    if is_last:
                        return
                    raise DamagedLog(self.stream, seg.first_seq, f"segment {seg.path.name} is truncated")
                first_seq, prev_chain = self._read_header(seg, header)
                if expected_prev is not None and prev_chain != expected_prev:
                    raise DamagedLog(self.stream, first_seq, f"segment {seg.path.name} does not continue the chain")
                expected_prev = prev_chain
                scan_seq, offset = first_seq, SEGMENT_HEADER.size
                limited = is_last and self.writable and self._fd is not None
                if not verify_all and is_last and self._index and self._index[0][0] == first_seq:
                    for seq, off, chain in list(self._index):
                        if seq <= since + 1 and not (limited and off > head_size):
                            scan_seq, offset, prev_chain = seq, off, chain
                    for seg_first, seq, off, chain in list(self._recent):
                        if (seg_first == first_seq and scan_seq < seq <= since + 1
                                and not (limited and off > head_size)):
                            scan_seq, offset, prev_chain = seq, off, chain
                f.seek(offset)
                data = f.read(max(0, head_size - offset) if limited else -1)
            last_seq = scan_seq - 1
            for item in scan(data, scan_seq, prev_chain, start=0):
                if isinstance(item, ScanEnd):
                    if item.damage is not None:
                        raise DamagedLog(self.stream, item.damage_seq, item.damage)
                    if item.torn and limited:
                        break  # the writer rolled over or wrote on meanwhile: stop at what we saw
                    if item.torn and not (is_last and not self.writable):
                        raise DamagedLog(self.stream, item.damage_seq, "torn record inside the log")
                    break
                last_seq = item.seq
                expected_prev = item.chain
                if item.seq > since:
                    yield item
            if not is_last and segs[i + 1].first_seq != last_seq + 1:
                raise DamagedLog(self.stream, last_seq + 1, "a segment is missing")

    def write_verbatim(self, records: list[Record]) -> Head:
        """Append records made elsewhere (replication): their chain must continue ours exactly."""
        chain = self.head.chain
        seq = self.head.seq
        for r in records:
            seq += 1
            if r.seq != seq:
                raise DamagedLog(self.stream, r.seq, f"replicated record out of order (expected {seq})")
            if chain_value(chain, r.seq, r.time_us, r.key_id, r.nonce, r.ciphertext) != r.chain:
                raise DamagedLog(self.stream, r.seq, "replicated record does not continue the chain")
            chain = r.chain
        return self.write(records)

    def truncate(self, seq: int) -> Head:
        """Cut the log back to end at `seq` (a follower dropping a divergent tail), fsynced."""
        if not self.writable:
            raise StoreError(f"stream {self.stream} is open read-only")
        if seq >= self.head.seq:
            return self.head
        self.close()
        self._drop_hint()
        try:
            for seg in reversed(self._segments):
                if seg.first_seq > seq:
                    seg.path.unlink()
                    continue
                data = seg.path.read_bytes()
                first_seq, prev_chain = self._read_header(seg, data)
                end = SEGMENT_HEADER.size
                for item in scan(data, first_seq, prev_chain):
                    if isinstance(item, ScanEnd) or item.seq > seq:
                        break
                    end = item.end
                with open(seg.path, "r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
                break
            fsync_dir(self.path)
        except OSError as e:
            raise_store_error(e, f"truncating stream {self.stream}")
        self.head = Head(0, GENESIS_CHAIN)
        self._size = 0
        self._index = []
        self._recent.clear()
        self._open()
        return self.head

    def decrypt(self, record: Record, prev_chain: bytes,
                unseal: Callable[[bytes, bytes, bytes, bytes], bytes] = crypto.unseal) -> bytes:
        """A record's plaintext; `unseal`: crypto.unseal, or a crypto.Opener for a run of records."""
        if self.keys is None:
            raise StreamShredded(f"stream {self.stream}: its keys were deleted")
        key = self.keys.keys.get(record.key_id)
        if key is None:
            raise DamagedLog(self.stream, record.seq, f"unknown key id {record.key_id}")
        try:
            return unseal(key, record.nonce, record.ciphertext, associated_data(self.stream, record.seq, prev_chain))
        except crypto.DecryptError:
            raise DamagedLog(self.stream, record.seq, "does not decrypt (altered, or wrong key)") from None

    def chain_before(self, seq: int) -> bytes:
        """The chain value preceding record `seq` (needed to decrypt a record read alone)."""
        if seq <= 1:
            return GENESIS_CHAIN
        for r in self.records(since=seq - 2):
            return r.chain
        raise StoreError(f"stream {self.stream}: no record {seq - 1}")

    def plaintexts(self, since: int = 0, verify_all: bool = False) -> Iterator[tuple[Record, bytes]]:
        """Decrypted records with seq > since (`verify_all`: as `records`, the chain checked from
        the first segment's header on, not from a remembered position)."""
        prev = self.chain_before(since + 1)
        opener = crypto.Opener()  # one output buffer for the whole run
        for r in self.records(since, verify_all=verify_all):
            yield r, self.decrypt(r, prev, opener)
            prev = r.chain


def _ignore(seconds: float) -> None:
    """The default `on_fsync`: nobody is told."""
