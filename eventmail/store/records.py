"""The on-disk record and segment formats, and scanning a segment back into records."""

import hashlib
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from .crypto import HASH_BYTES, NONCE_BYTES

SEGMENT_MAGIC = b"EMSEG001"
# magic, first seq, chain value before the segment's first record
SEGMENT_HEADER = struct.Struct(f">8sQ{HASH_BYTES}s")
# body length (everything after this field), seq, time in microseconds, key id, and a CRC-32 of
# those four: a damaged length is then told apart from a write cut short by a crash.
RECORD_HEAD = struct.Struct(">IQqII")
HEAD_FIELDS = struct.Struct(">IQqI")
RECORD_FIXED = RECORD_HEAD.size + NONCE_BYTES + HASH_BYTES
GENESIS_CHAIN = bytes(HASH_BYTES)
# A record's ciphertext is bounded so that a damaged length field cannot make a reader allocate
# gigabytes; events are small (message bytes live in blobs), 16 MiB leaves plenty of room.
MAX_CIPHERTEXT = 16 << 20


class Record(NamedTuple):
    """One log record: `(seq, time, key id, nonce, ciphertext, chain)`.

    A named tuple: a replay, a verify and a follower make one per record, and a frozen
    dataclass's constructor cost 2-3 µs of the ~12 µs reading and decrypting a record takes."""

    seq: int
    time_us: int
    key_id: int
    nonce: bytes
    ciphertext: bytes
    chain: bytes
    end: int = 0  # where the record ends in its segment file (0 when not read from one)

    def encode(self) -> bytes:
        body_len = RECORD_FIXED - 4 + len(self.ciphertext)
        fields = HEAD_FIELDS.pack(body_len, self.seq, self.time_us, self.key_id)
        return (
            fields
            + struct.pack(">I", zlib.crc32(fields))
            + self.nonce
            + self.ciphertext
            + self.chain
        )


def chain_value(prev_chain: bytes, seq: int, time_us: int, key_id: int, nonce: bytes, ciphertext: bytes) -> bytes:
    """BLAKE2b over the previous chain value and this record: verifiable without any key."""
    h = hashlib.blake2b(prev_chain, digest_size=HASH_BYTES, person=b"em-chain")
    h.update(struct.pack(">Qqi", seq, time_us, key_id))
    h.update(nonce)
    h.update(ciphertext)
    return h.digest()


def associated_data(stream: str, seq: int, prev_chain: bytes) -> bytes:
    """AEAD associated data: a record decrypts only in its own stream, position and history."""
    return stream.encode() + b"\x00" + struct.pack(">Q", seq) + prev_chain


def segment_header(first_seq: int, prev_chain: bytes) -> bytes:
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, first_seq, prev_chain)


@dataclass(frozen=True, slots=True)
class ScanEnd:
    """Where a scan of a segment stopped and why."""

    offset: int  # end of the last whole, valid record
    torn: bool  # trailing bytes that are an interrupted write (incomplete or zero-filled)
    damage: str | None  # anything else: a reason naming what is wrong
    damage_seq: int  # seq the damage was found at


# chain_value's hash before anything is fed to it: each record's hash is a copy of it (cheaper
# than a new object with its parameters).
_CHAIN_START = hashlib.blake2b(digest_size=HASH_BYTES, person=b"em-chain")
# The record header's seq, time and key id as chain_value packs them (">Qqi") are the header's own
# bytes when the key id is below 2**31 (the only ones a writer packs).
_KEY_ID_LIMIT = 1 << 31


def scan(data: bytes, first_seq: int, prev_chain: bytes, start: int = SEGMENT_HEADER.size) -> Iterator[Record | ScanEnd]:
    """Yield each record of a segment in order, then one ScanEnd.

    A tail that is incomplete (the file ends inside a record) or all zero bytes (a crash after the
    file grew but before the data reached the disk) is `torn`; any other mismatch is damage.

    Every record passes `_check`'s checks and its chain value is `chain_value`'s; the common case
    is checked inline, with the chain hashed from the record's own bytes, because a replay, a
    verify and a follower run this for every record (issue 14, eleventh pass).
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    off = start
    expected_seq = first_seq
    chain = prev_chain
    n = len(data)
    unpack, crc32, copy = RECORD_HEAD.unpack_from, zlib.crc32, _CHAIN_START.copy
    head_size, fields_size, fixed = RECORD_HEAD.size, HEAD_FIELDS.size, RECORD_FIXED - 4
    longest = fixed + MAX_CIPHERTEXT
    new = tuple.__new__
    while off < n:
        if n - off >= head_size:
            body_len, seq, time_us, key_id, crc = unpack(data, off)
            end = off + 4 + body_len
            usual = (crc32(data[off : off + fields_size]) == crc and fixed <= body_len <= longest and end <= n
                     and seq == expected_seq and key_id < _KEY_ID_LIMIT)
        else:
            usual = False
        if not usual:
            problem = _check(data, off, n, expected_seq)
            if problem is not None:
                reason, torn_if_last = problem
                if torn_if_last or not any(data[off:]):
                    yield ScanEnd(off, True, None, expected_seq)
                else:
                    yield ScanEnd(off, False, reason, expected_seq)
                return
        p = off + head_size
        stored_chain = data[end - HASH_BYTES : end]
        if usual:
            h = copy()
            h.update(chain)
            h.update(data[off + 4 : off + fields_size])  # seq, time, key id
            h.update(data[p : end - HASH_BYTES])  # the nonce and the ciphertext, adjacent
            computed = h.digest()
        else:  # passes the checks, but not as a writer makes it: computed as written
            computed = chain_value(chain, seq, time_us, key_id, data[p : p + NONCE_BYTES], data[p + NONCE_BYTES : end - HASH_BYTES])
        if computed != stored_chain:
            # The chain is the last field written: all zeros at the very end of the file is a
            # record whose final page never reached the disk, not an alteration.
            if end == n and not any(stored_chain):
                yield ScanEnd(off, True, None, seq)
            else:
                yield ScanEnd(off, False, "chain mismatch (the record was altered)", seq)
            return
        # tuple.__new__: a named tuple's own constructor is a Python function, a frame a record.
        yield new(Record, (seq, time_us, key_id, data[p : p + NONCE_BYTES], data[p + NONCE_BYTES : end - HASH_BYTES],
                           stored_chain, end))
        chain = stored_chain
        expected_seq += 1
        off = end
    yield ScanEnd(off, False, None, expected_seq)


def _check(data: bytes, off: int, n: int, expected_seq: int) -> tuple[str, bool] | None:
    """Why the record at `off` cannot be read, and whether that is an incomplete write."""
    if n - off < RECORD_HEAD.size:
        return "incomplete record header", True
    body_len, seq, _, _, crc = RECORD_HEAD.unpack_from(data, off)
    if zlib.crc32(data[off : off + HEAD_FIELDS.size]) != crc:
        return "record header checksum mismatch", False
    ct_len = body_len - (RECORD_FIXED - 4)
    if ct_len < 0 or ct_len > MAX_CIPHERTEXT:
        return f"bad record length {body_len}", False
    if off + 4 + body_len > n:
        return "incomplete record", True
    if seq != expected_seq:
        return f"sequence number {seq} where {expected_seq} was expected", False
    return None
