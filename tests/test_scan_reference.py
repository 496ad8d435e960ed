"""Segment scanning with its inline checks and chain hash gives, for damaged and intact segments alike, what each record's `_check` and `chain_value` give."""

import struct
import zlib
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.store.crypto import HASH_BYTES, NONCE_BYTES
from eventmail.store.records import (
    GENESIS_CHAIN,
    HEAD_FIELDS,
    RECORD_HEAD,
    SEGMENT_HEADER,
    Record,
    ScanEnd,
    _check,
    chain_value,
    scan,
    segment_header,
)


def reference(data: bytes, first_seq: int, prev_chain: bytes, start: int) -> Iterator[Record | ScanEnd]:
    """The scan as it was before the inline checks: `_check`, then `chain_value`, per record."""
    off, expected_seq, chain, n = start, first_seq, prev_chain, len(data)
    while off < n:
        problem = _check(data, off, n, expected_seq)
        if problem is not None:
            reason, torn_if_last = problem
            torn = torn_if_last or not any(data[off:])
            yield ScanEnd(off, torn, None if torn else reason, expected_seq)
            return
        body_len, seq, time_us, key_id, _ = RECORD_HEAD.unpack_from(data, off)
        end = off + 4 + body_len
        p = off + RECORD_HEAD.size
        nonce, ct, stored = data[p : p + NONCE_BYTES], data[p + NONCE_BYTES : end - HASH_BYTES], data[end - HASH_BYTES : end]
        if chain_value(chain, seq, time_us, key_id, nonce, ct) != stored:
            torn = end == n and not any(stored)
            yield ScanEnd(off, torn, None if torn else "chain mismatch (the record was altered)", seq)
            return
        yield Record(seq, time_us, key_id, nonce, ct, stored, end)
        chain, expected_seq, off = stored, expected_seq + 1, end
    yield ScanEnd(off, False, None, expected_seq)


def segment(n: int) -> tuple[bytes, list[int]]:
    out, starts, chain, size = [segment_header(1, GENESIS_CHAIN)], [], GENESIS_CHAIN, SEGMENT_HEADER.size
    for seq in range(1, n + 1):
        ct, nonce = bytes([seq]) * (16 + 7 * seq), bytes([seq]) * NONCE_BYTES
        chain = chain_value(chain, seq, 1000 * seq, seq % 3, nonce, ct)
        starts.append(size)
        out.append(Record(seq, 1000 * seq, seq % 3, nonce, ct, chain).encode())
        size += len(out[-1])
    return b"".join(out), starts


def outcome(items: Iterator[Record | ScanEnd]) -> list[object]:
    try:
        return list(items)
    except Exception as e:  # the reference's own failure (a key id a writer cannot pack)
        return [type(e)]


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 5), st.sampled_from(["length", "seq", "time", "key id", "byte", "cut", "zeros"]),
       st.integers(0, 1 << 32), st.integers(0, 400))
def test_scan_equals_the_per_record_reference(which: int, field: str, value: int, pos: int) -> None:
    seg, starts = segment(6)
    data = bytearray(seg)
    off = starts[which]
    if field in ("length", "seq", "time", "key id"):
        # A header field changed and its CRC made to match: only the checks after the CRC see it.
        fields = list(HEAD_FIELDS.unpack_from(data, off))
        i = ["length", "seq", "time", "key id"].index(field)
        fields[i] = value % (1 << 32) if i in (0, 3) else value
        packed = HEAD_FIELDS.pack(*fields)
        data[off : off + HEAD_FIELDS.size] = packed
        data[off + HEAD_FIELDS.size : off + RECORD_HEAD.size] = struct.pack(">I", zlib.crc32(packed))
    elif field == "byte":
        data[(off + pos) % len(data)] ^= 1 + value % 255
    elif field == "cut":
        del data[len(data) - 1 - pos % (len(data) - off) :]
    else:
        data[len(data) - 1 - pos % (len(data) - off) :] = bytes(1 + pos % (len(data) - off))
    raw = bytes(data)
    assert outcome(scan(raw, 1, GENESIS_CHAIN)) == outcome(reference(raw, 1, GENESIS_CHAIN, SEGMENT_HEADER.size))


def test_an_intact_segment_scans_to_its_records() -> None:
    seg, starts = segment(6)
    items = list(scan(seg, 1, GENESIS_CHAIN))
    assert [i.seq for i in items if isinstance(i, Record)] == [1, 2, 3, 4, 5, 6]
    assert items == list(reference(seg, 1, GENESIS_CHAIN, SEGMENT_HEADER.size))
    # From a position inside (as a read from the log's index does), the data starting there.
    rec = items[2]
    assert isinstance(rec, Record)
    tail = list(scan(seg[starts[3]:], 4, rec.chain, start=0))
    assert [i.seq for i in tail if isinstance(i, Record)] == [4, 5, 6]
