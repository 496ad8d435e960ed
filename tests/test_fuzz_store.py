"""Fuzzing the store's parsers: segment scanning, mbox reading, keyring and checkpoint files."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail import mailfiles
from eventmail.store import StoreError, checkpoint
from eventmail.store.keyring import KEYRING_MAGIC, Keyring, StreamKeys
from eventmail.store.records import GENESIS_CHAIN, SEGMENT_HEADER, Record, ScanEnd, scan, segment_header


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_scan_of_random_bytes_ends_cleanly(data: bytes) -> None:
    items = list(scan(segment_header(1, GENESIS_CHAIN) + data, 1, GENESIS_CHAIN))
    assert isinstance(items[-1], ScanEnd)
    assert all(isinstance(i, Record) for i in items[:-1])


def _valid_segment(n: int) -> bytes:
    from eventmail.store.records import chain_value

    out = [segment_header(1, GENESIS_CHAIN)]
    chain = GENESIS_CHAIN
    for seq in range(1, n + 1):
        ct = bytes([seq]) * (20 + seq)
        nonce = bytes(24)
        chain = chain_value(chain, seq, seq, 1, nonce, ct)
        out.append(Record(seq, seq, 1, nonce, ct, chain).encode())
    return b"".join(out)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 255), st.integers(0, 200))
def test_any_mutation_of_a_valid_segment_is_caught_or_is_a_clean_prefix(pos: int, xor: int, cut: int) -> None:
    seg = _valid_segment(5)
    pos %= len(seg)
    mutated = bytearray(seg)
    mutated[pos] ^= xor
    mutated = mutated[: len(mutated) - cut] if cut else mutated
    items = list(scan(bytes(mutated), 1, GENESIS_CHAIN, start=SEGMENT_HEADER.size))
    end = items[-1]
    assert isinstance(end, ScanEnd)
    records = [i for i in items if isinstance(i, Record)]
    if pos >= SEGMENT_HEADER.size and pos < len(mutated):
        # The flipped byte is in the scanned area: it is reported, or it was in the cut-off tail.
        assert end.damage is not None or end.torn
    for r in records:  # every record returned is one of the originals
        assert r.encode() in seg


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_mbox_reader_never_raises(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    f = tmp_path_factory.mktemp("mbox") / "x.mbox"
    f.write_bytes(b"From a@b Thu Aug 22 12:36:23 2002\n" + data)
    for m in mailfiles.read_mbox(f, "INBOX"):
        assert m.problem is not None or m.raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500))
def test_damaged_keyring_files_raise_store_errors(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    f = tmp_path_factory.mktemp("kr") / "keyring"
    for content in (data, KEYRING_MAGIC + data, KEYRING_MAGIC + json.dumps({"kdf": "none"}).encode() + b"\n" + data):
        f.write_bytes(content)
        with pytest.raises(StoreError):
            Keyring.load(f, bytes(32))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500))
def test_damaged_checkpoints_are_ignored(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    f: Path = tmp_path_factory.mktemp("cp") / "c"
    f.write_bytes(checkpoint.CHECKPOINT_MAGIC + data)
    keys = StreamKeys("d", {1: bytes(32)}, 1, bytes(32))
    assert checkpoint.read(f, "account/a", keys) is None
