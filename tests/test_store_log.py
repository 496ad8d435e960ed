"""The log: appends, reopening, torn tails, damage naming stream and seq, keys, rotation, shredding."""

import asyncio
import os
import zlib
from pathlib import Path

import pytest

from eventmail.proto import events_pb2 as pb
from eventmail.store import DamagedLog, Store, StoreError, StreamShredded, WrongKey, checkpoint, crypto
from eventmail.store.keyring import StreamKeys
from eventmail.store.log import INDEX_EVERY, StreamLog
from eventmail.store.records import SEGMENT_HEADER, Record, scan

from .conftest import open_store, run

Keyed = tuple[Path, bytes]


def setting(i: int) -> pb.Event:
    return pb.Event(account_setting=pb.AccountSetting(key=f"k{i}", value=f"v{i}"))


async def make_account(keyed: Keyed, name: str = "alice", n: int = 0) -> Store:
    store = await open_store(keyed)
    await store.create_account(name, [f"{name}@example.test"], None)
    async with store.use_account(name) as a:
        for i in range(n):
            await a.append([setting(i)])
    return store


def segment_files(keyed: Keyed, store: Store, stream: str) -> list[Path]:
    d = keyed[0] / "streams" / store.keyring.streams[stream].dir_name
    return sorted(d.glob("*.seg"))


def test_appends_survive_reopen_and_checkpoint(keyed_dir: Keyed) -> None:
    async def go() -> None:
        store = await make_account(keyed_dir, n=30)
        async with store.use_account("alice") as a:
            head = a.head_seq
            before = a.view.dump()
        await store.close()  # writes a checkpoint
        store = await open_store(keyed_dir)
        async with store.use_account("alice") as a:
            assert a.head_seq == head
            assert a.view.dump() == before
            assert a.view.setting("k29") == "v29"
        await store.close()

    run(go())


def test_checkpoint_that_does_not_match_the_log_is_ignored(keyed_dir: Keyed) -> None:
    async def go() -> None:
        store = await make_account(keyed_dir, n=5)
        await store.close()
        cp = next((keyed_dir[0] / "checkpoints").iterdir())
        data = bytearray(cp.read_bytes())
        data[-5] ^= 0xFF  # the sealed state no longer opens
        cp.write_bytes(bytes(data))
        store = await open_store(keyed_dir)
        async with store.use_account("alice") as a:
            assert a.view.setting("k4") == "v4"
        await store.close()

    run(go())


def test_checkpoints_are_written_with_zstandard_and_old_zlib_ones_still_read(keyed_dir: Keyed) -> None:
    async def go() -> None:
        store = await make_account(keyed_dir, n=5)
        keys = store.keyring.streams["account/alice"]
        await store.close()
        (path,) = (keyed_dir[0] / "checkpoints").iterdir()
        assert path.read_bytes().startswith(checkpoint.CHECKPOINT_MAGIC)
        current = checkpoint.read(path, "account/alice", keys)
        assert current is not None
        # The same state sealed as EMCKPT01 (zlib) files were before: read back to the same bytes.
        key_id, key = keys.current_key()
        aad = checkpoint._aad(checkpoint.ZLIB_MAGIC, "account/alice", current.seq, current.chain)
        nonce, ct = crypto.seal(key, zlib.compress(current.state, 1), aad)
        head = checkpoint.CHECKPOINT_HEAD.pack(checkpoint.ZLIB_MAGIC, current.seq, current.chain, key_id)
        path.write_bytes(head + nonce + ct)
        assert checkpoint.read(path, "account/alice", keys) == current
        store = await open_store(keyed_dir)
        async with store.use_account("alice") as a:
            assert a.view.setting("k4") == "v4"
        await store.close()

    run(go())


@pytest.mark.parametrize("cut", ["partial-header", "partial-record", "zero-filled", "zero-chain"])
def test_torn_tail_is_cut_back_to_the_last_whole_record(keyed_dir: Keyed, cut: str) -> None:
    async def go() -> None:
        store = await make_account(keyed_dir, n=10)
        seg = segment_files(keyed_dir, store, "account/alice")[-1]
        await store.close()
        data = seg.read_bytes()
        whole = len(data)
        if cut == "partial-header":
            torn = data + data[SEGMENT_HEADER.size : SEGMENT_HEADER.size + 7]
        elif cut == "partial-record":
            torn = data + data[SEGMENT_HEADER.size : SEGMENT_HEADER.size + 60]
        elif cut == "zero-filled":
            torn = data + bytes(300)
        else:
            # A whole record whose last bytes (the chain value) never reached the disk.
            torn = data[:-32] + bytes(32)
            whole = len(data) - len(_last_record(data))
        seg.write_bytes(torn)
        store = await open_store(keyed_dir)
        async with store.use_account("alice") as a:
            expected_head = 16 if cut != "zero-chain" else 15  # 6 mailboxes + 10 settings
            assert a.head_seq == expected_head
            await a.append([setting(99)])
        await store.close()
        assert seg.stat().st_size > whole
        store = await open_store(keyed_dir)
        assert all(r.error is None for r in store.verify())
        await store.close()

    run(go())


def _last_record(data: bytes) -> bytes:
    _, first, prev = SEGMENT_HEADER.unpack_from(data)
    last = b""
    for item in scan(data, first, prev):
        if isinstance(item, Record):
            last = item.encode()
    return last


def test_damage_in_the_middle_is_an_error_naming_stream_and_seq(keyed_dir: Keyed) -> None:
    async def go() -> None:
        store = await make_account(keyed_dir, n=10)
        seg = segment_files(keyed_dir, store, "account/alice")[-1]
        await store.close()
        data = bytearray(seg.read_bytes())
        data[SEGMENT_HEADER.size + 100] ^= 0x01  # inside the first record's ciphertext
        seg.write_bytes(bytes(data))
        store = await open_store(keyed_dir)
        with pytest.raises(DamagedLog) as info:
            await store.account("alice")
        assert info.value.stream == "account/alice"
        assert info.value.seq == 1
        # Nothing was cut: the damaged file is left as it was for the operator.
        assert seg.read_bytes() == bytes(data)
        await store.close()

    run(go())


def test_every_flipped_byte_of_a_segment_is_reported_by_verify(keyed_dir: Keyed) -> None:
    async def go() -> tuple[Path, bytes]:
        store = await make_account(keyed_dir, n=3)
        seg = segment_files(keyed_dir, store, "account/alice")[-1]
        await store.close()
        return seg, seg.read_bytes()

    seg, original = run(go())

    async def verify() -> list[str | None]:
        store = await open_store(keyed_dir, writable=False)
        try:
            return [r.error for r in store.verify() if r.stream == "account/alice"]
        finally:
            await store.close()

    for pos in range(len(original)):
        damaged = bytearray(original)
        damaged[pos] ^= 0x40
        seg.write_bytes(bytes(damaged))
        errors = run(verify())
        assert errors[0] is not None, f"flip at byte {pos} of {len(original)} went unnoticed"
    seg.write_bytes(original)
    assert run(verify()) == [None]


def test_flipped_byte_in_a_blob_is_reported_by_verify(keyed_dir: Keyed) -> None:
    async def go() -> None:
        store = await make_account(keyed_dir)
        async with store.use_account("alice") as a:
            await a.add_message("INBOX", b"Subject: x\r\n\r\nhello\r\n", structure=pb.MessageStructure())
        await store.close()
        blob = next(p for p in (keyed_dir[0] / "blobs").rglob("*") if p.is_file())
        original = blob.read_bytes()
        for pos in range(0, len(original), 7):
            damaged = bytearray(original)
            damaged[pos] ^= 0x01
            blob.write_bytes(bytes(damaged))
            store = await open_store(keyed_dir, writable=False)
            errors = [r.error for r in store.verify() if r.stream == "account/alice"]
            await store.close()
            assert errors[0] is not None and "blob" in errors[0], pos
        blob.unlink()
        store = await open_store(keyed_dir, writable=False)
        assert "missing" in str([r.error for r in store.verify()])
        await store.close()

    run(go())


def test_wrong_master_key_opens_nothing(keyed_dir: Keyed) -> None:
    with pytest.raises(WrongKey):
        run(open_store((keyed_dir[0], os.urandom(32))))


def test_rotation_keeps_old_records_readable(keyed_dir: Keyed) -> None:
    async def go() -> None:
        store = await make_account(keyed_dir, n=3)
        store.keyring.rotate()
        await store.close()
        store = await open_store(keyed_dir)
        async with store.use_account("alice") as a:
            await a.append([setting(100)])
            key_ids = {r.key_id for r in a._log.records()}
        assert key_ids == {1, 2}
        await store.close()
        store = await open_store(keyed_dir)
        (cp,) = (keyed_dir[0] / "checkpoints").iterdir()
        cp.unlink()  # force a full replay across both keys
        async with store.use_account("alice") as a:
            assert a.view.setting("k2") == "v2" and a.view.setting("k100") == "v100"
        assert all(r.error is None for r in store.verify())
        await store.close()

    run(go())


def test_deleting_an_account_shreds_its_keys_and_files(keyed_dir: Keyed) -> None:
    async def go() -> None:
        store = await make_account(keyed_dir, n=3)
        stream_dir = keyed_dir[0] / "streams" / store.keyring.streams["account/alice"].dir_name
        copy = {p.name: p.read_bytes() for p in stream_dir.iterdir()}
        await store.delete_account("alice")
        assert not stream_dir.exists()
        await store.close()
        # A copy of the log (a backup, a replica) is now unreadable: no key opens it.
        stream_dir.mkdir()
        for name, data in copy.items():
            (stream_dir / name).write_bytes(data)
        store = await open_store(keyed_dir)
        with pytest.raises(StreamShredded):
            list(store.stream("account/alice").events())
        await store.close()

    run(go())


def test_group_commit_shares_fsyncs_between_concurrent_appends(keyed_dir: Keyed) -> None:
    async def go() -> None:
        store = await make_account(keyed_dir)
        async with store.use_account("alice") as a:
            batches = a._writer.batches
            results = await asyncio.gather(*(a.append([setting(i)]) for i in range(50)))
            used = a._writer.batches - batches
            seqs = [r[0].seq for r in results]
        assert seqs == sorted(seqs) and len(set(seqs)) == 50  # order of calls is log order
        assert used < 50
        await store.close()

    run(go())


def test_subscribers_hear_committed_events_in_order(keyed_dir: Keyed) -> None:
    async def go() -> None:
        store = await make_account(keyed_dir)
        async with store.use_account("alice") as a:
            sub = a.subscribe()
            await asyncio.gather(*(a.append([setting(i)]) for i in range(20)))
            got = [(await sub.get()).seq for _ in range(20)]
            assert got == sorted(got)
            assert got[-1] == a.head_seq
            sub.close()
        await store.close()

    run(go())


def test_idle_accounts_close_and_reopen_on_demand(keyed_dir: Keyed) -> None:
    async def go() -> None:
        store = await make_account(keyed_dir, n=2)
        store.idle_seconds = 0
        assert store.open_accounts() == ["alice"]
        async with store.use_account("alice"):
            assert await store.close_idle() == []  # held: stays open
        assert await store.close_idle() == ["alice"]
        assert store.open_accounts() == []
        async with store.use_account("alice") as a:
            assert a.view.setting("k1") == "v1"
        await store.close()

    run(go())


@pytest.mark.parametrize("name", ["alice\n", "Alice", "a/b", "", "-x", "a" * 65])
def test_an_account_name_outside_the_pattern_is_refused(keyed_dir: tuple[Path, bytes], name: str) -> None:
    """The whole name must match (a regex `$` alone would let "alice\n" through into stream paths)."""

    async def go() -> None:
        store = await open_store(keyed_dir)
        try:
            with pytest.raises(StoreError, match="account name"):
                await store.create_account(name, [], None)
            assert name not in store.system.accounts
        finally:
            await store.close()

    run(go())


def _open_counting(monkeypatch: pytest.MonkeyPatch, seg: Path, stream: str) -> tuple[int, int]:
    """Open a stream's log as the store does; (its head seq, records scanned while opening)."""
    from eventmail.store import log as log_module

    scanned = 0
    real_scan = log_module.scan

    def counting(*args: object, **kw: object):  # type: ignore[no-untyped-def]
        nonlocal scanned
        for item in real_scan(*args, **kw):  # type: ignore[arg-type]
            scanned += isinstance(item, Record)
            yield item

    monkeypatch.setattr(log_module, "scan", counting)
    slog = log_module.StreamLog(stream, seg.parent, None, writable=False)
    monkeypatch.setattr(log_module, "scan", real_scan)
    return slog.head.seq, scanned


def test_a_closed_log_reopens_from_its_tail_hint(keyed_dir: Keyed, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> tuple[Path, int]:
        store = await make_account(keyed_dir, n=600)
        seg = segment_files(keyed_dir, store, "account/alice")[-1]
        async with store.use_account("alice") as a:
            head = a.head_seq
        await store.close()
        return seg, head

    seg, head = run(go())
    assert (seg.parent / "tail.hint").exists()
    assert _open_counting(monkeypatch, seg, "account/alice") == (head, 0)

    async def reads() -> None:
        # Reads from the middle start at the hint's positions index and decrypt.
        store = await open_store(keyed_dir)
        async with store.use_account("alice") as a:
            seqs = [c.seq for c in a.events(since=300)]
            assert seqs == list(range(301, head + 1))
            assert a.view.setting("k599") == "v599"
        await store.close()
        assert all(r.error is None for r in (await open_store(keyed_dir, writable=False)).verify())

    run(reads())


def test_a_stale_or_damaged_tail_hint_is_not_trusted(keyed_dir: Keyed, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> tuple[Path, bytes, int]:
        store = await make_account(keyed_dir, n=300)
        seg = segment_files(keyed_dir, store, "account/alice")[-1]
        await store.close()
        old_hint = (seg.parent / "tail.hint").read_bytes()
        store = await open_store(keyed_dir)
        async with store.use_account("alice") as a:
            for i in range(5):
                await a.append([setting(1000 + i)])
            head = a.head_seq
        await store.close()
        return seg, old_hint, head

    seg, old_hint, head = run(go())
    hint = seg.parent / "tail.hint"
    # An older hint (a crash after appends): only what follows its tail is scanned.
    hint.write_bytes(old_hint)
    assert _open_counting(monkeypatch, seg, "account/alice") == (head, 5)
    # A damaged hint: the whole segment is scanned.
    hint.write_bytes(old_hint[:-6] + bytes([old_hint[-6] ^ 1]) + old_hint[-5:])
    assert _open_counting(monkeypatch, seg, "account/alice") == (head, head)
    # A log cut back below the hint's tail (and rewritten): the hint's chain is not there.
    hint.write_bytes(old_hint)
    data = seg.read_bytes()
    cut = len(data) - sum(len(_record_bytes(data)[-k]) for k in range(1, 8))
    seg.write_bytes(data[:cut])
    assert _open_counting(monkeypatch, seg, "account/alice") == (head - 7, head - 7)


def _record_bytes(data: bytes) -> list[bytes]:
    _, first, prev = SEGMENT_HEADER.unpack_from(data)
    return [item.encode() for item in scan(data, first, prev) if isinstance(item, Record)]


def _written_log(path: Path, texts: list[str]) -> StreamLog:
    keys = StreamKeys("d", {1: crypto.new_key()}, 1, crypto.new_key())
    slog = StreamLog("account/t", path, keys, writable=True)
    for text in texts:
        slog.write(slog.encrypt([text.encode()]))
    return slog


def test_a_read_of_the_newest_records_starts_where_they_start(tmp_path: Path) -> None:
    # A replication leader reads what was just appended, to ship it: the read starts at the
    # record's own position (RECENT_POSITIONS), not at the last INDEX_EVERY position with the
    # chain of each record in between hashed again. Damage in between, which only a read from
    # the index position passes through, shows where the read started.
    n = INDEX_EVERY + 40
    slog = _written_log(tmp_path / "log", [f"event {i}" for i in range(1, n + 1)])
    try:
        every = list(slog.records(0))
        start_of = {r.seq + 1: r.end for r in every}
        with open(slog.path / f"{1:020d}.seg", "r+b") as f:
            f.seek(start_of[n - 10] + 20)  # inside record n-10
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x01]))
        got = list(slog.records(n - 1))
        assert [(r.seq, r.chain) for r in got] == [(n, every[-1].chain)]
        assert slog.decrypt(got[0], every[-2].chain) == f"event {n}".encode()
        with pytest.raises(DamagedLog):
            list(slog.records(n - 12))  # a read through the damaged record still finds it
    finally:
        slog.close()


def test_a_read_after_a_truncation_does_not_start_at_a_cut_record(tmp_path: Path) -> None:
    slog = _written_log(tmp_path / "log", [f"event {i}" for i in range(1, 11)])
    try:
        slog.truncate(5)
        for i in range(6, 11):  # the same lengths: the cut records' positions would fit
            slog.write(slog.encrypt([f"other {i}".encode()]))
        got = list(slog.records(7))
        assert [r.seq for r in got] == [8, 9, 10]
        assert slog.decrypt(got[0], slog.chain_before(8)) == b"other 8"
    finally:
        slog.close()
