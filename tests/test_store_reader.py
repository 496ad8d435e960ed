"""A long replay read by a child process (store.reader): the same state, the same errors, and no loss when the child fails."""

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventmail.opening import open_store
from eventmail.proto import events_pb2 as pb
from eventmail.store import DamagedLog, Store, reader
from eventmail.store.records import SEGMENT_HEADER, Record, scan

Keyed = tuple[Path, bytes]


def setting(i: int) -> pb.Event:
    return pb.Event(account_setting=pb.AccountSetting(key=f"k{i % 7}", value=f"v{i}"))


async def filled(keyed: Keyed, n: int = 60) -> Store:
    """An account with `n` events of several kinds (deliveries in runs, flag changes, settings)."""
    store = await open_store(*keyed)
    await store.create_account("alice", ["alice@example.test"], None)
    async with store.use_account("alice") as a:
        for i in range(n // 6):
            await asyncio.gather(*(a.add_message("INBOX", f"Subject: m{i}-{j}\r\n\r\nbody {i} {j}\r\n".encode())
                                   for j in range(4)))
            await a.append([setting(i)])
            inbox = a.mailbox_required("INBOX").id
            await a.append([pb.Event(flags_changed=pb.FlagsChanged(mailbox_id=inbox, uids=[i + 1], add=["$Junk"]))])
    return store


def drop_checkpoints(d: Path) -> None:
    for cp in (d / "checkpoints").iterdir():
        cp.unlink()


class Spawns:
    """Records the children store.reader started (the real function runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started: list[Any] = []
        real = reader._spawn

        def spawn(*args: Any) -> Any:
            child = real(*args)
            self.started.append(child)
            return child

        monkeypatch.setattr(reader, "_spawn", spawn)


def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child for any replay of more than 20 records; this process reads the first 5 itself."""
    monkeypatch.setattr(reader, "PARALLEL_MIN", 20)
    monkeypatch.setattr(reader, "HEAD_START", 5)


def tables(db: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of the view and the registered projections, in a canonical order."""
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    return {n: sorted(db.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}


async def replayed_dump(keyed: Keyed) -> dict[str, list[tuple[object, ...]]]:
    store = await open_store(*keyed)
    async with store.use_account("alice") as a:
        dump = tables(a.db)
    await store.close()
    drop_checkpoints(keyed[0])  # the next open replays again
    return dump


def test_a_replay_read_by_a_child_gives_the_state_of_one_read_in_process(
    keyed_dir: Keyed, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        store = await filled(keyed_dir)
        async with store.use_account("alice") as a:
            live = tables(a.db)
        await store.close()
        drop_checkpoints(keyed_dir[0])
        in_process = await replayed_dump(keyed_dir)
        small_thresholds(monkeypatch)
        spawns = Spawns(monkeypatch)
        by_child = await replayed_dump(keyed_dir)
        assert spawns.started and all(c is not None and c.returncode == 0 for c in spawns.started)
        assert by_child == in_process
        assert by_child == live

    asyncio.run(go())


def test_damage_the_child_meets_is_raised_as_an_in_process_read_raises_it(
    keyed_dir: Keyed, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        store = await filled(keyed_dir)
        d = keyed_dir[0] / "streams" / store.keyring.streams["account/alice"].dir_name
        await store.close()
        drop_checkpoints(keyed_dir[0])
        (seg,) = sorted(d.glob("*.seg"))
        data = bytearray(seg.read_bytes())
        _, first, prev = SEGMENT_HEADER.unpack_from(data)
        records = [r for r in scan(bytes(data), first, prev) if isinstance(r, Record)]
        target = records[40]  # past the records this process reads itself
        data[target.end - 40] ^= 0x01  # inside its ciphertext
        seg.write_bytes(bytes(data))

        errors = []
        for child in (False, True):
            if child:
                small_thresholds(monkeypatch)
                spawns = Spawns(monkeypatch)
            store = await open_store(*keyed_dir)
            with pytest.raises(DamagedLog) as info:
                await store.account("alice")
            errors.append((info.value.stream, info.value.seq, info.value.reason))
            await store.close()
        assert spawns.started
        assert errors[0] == errors[1] and errors[0][1] == target.seq

    asyncio.run(go())


def test_a_child_that_sends_nothing_leaves_the_reading_to_this_process(
    keyed_dir: Keyed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child that dies before sending a record (here a real process that exits at once): the
    replay reads everything itself and gives the same state."""

    async def go() -> None:
        store = await filled(keyed_dir)
        await store.close()
        drop_checkpoints(keyed_dir[0])
        in_process = await replayed_dump(keyed_dir)
        small_thresholds(monkeypatch)
        started = []

        def dying(*args: Any) -> subprocess.Popen[bytes]:
            child = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
            started.append(child)
            return child

        monkeypatch.setattr(reader, "_spawn", dying)
        assert await replayed_dump(keyed_dir) == in_process
        assert started and started[0].returncode == 3

    asyncio.run(go())


def test_verify_with_a_child_reports_what_verify_in_process_reports(
    keyed_dir: Keyed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`verify` reads a long stream partly through a child: the same report (records, head,
    blobs), and for a damaged stream the same error at the same record."""

    async def reports() -> list[Any]:
        store = await open_store(*keyed_dir, writable=False)
        out = store.verify()
        await store.close()
        return out

    async def go() -> None:
        store = await filled(keyed_dir)
        d = keyed_dir[0] / "streams" / store.keyring.streams["account/alice"].dir_name
        await store.close()
        whole = await reports()
        (seg,) = sorted(d.glob("*.seg"))
        data = bytearray(seg.read_bytes())
        _, first, prev = SEGMENT_HEADER.unpack_from(data)
        target = [r for r in scan(bytes(data), first, prev) if isinstance(r, Record)][45]
        data[target.end - 40] ^= 0x01
        seg.write_bytes(bytes(data))
        damaged = await reports()
        assert [r.error for r in whole] == [None] * len(whole)
        (bad,) = [r for r in damaged if r.error]
        assert bad.records == target.seq - 1 and f"seq {target.seq}" in bad.error

        small_thresholds(monkeypatch)
        spawns = Spawns(monkeypatch)
        assert await reports() == damaged
        seg.write_bytes(bytes(data[: target.end - 40]) + bytes([data[target.end - 40] ^ 0x01]) + bytes(data[target.end - 39:]))
        assert await reports() == whole
        assert len(spawns.started) >= 2

    asyncio.run(go())


def test_verify_with_a_child_checks_the_chain_from_the_first_segment_header(
    keyed_dir: Keyed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flipped byte in the segment header's chain value (which a remembered position would
    skip) is reported with and without the child, the same way."""

    async def reports() -> list[Any]:
        store = await open_store(*keyed_dir, writable=False)
        out = [(r.records, r.error) for r in store.verify() if r.stream == "account/alice"]
        await store.close()
        return out

    async def go() -> None:
        store = await filled(keyed_dir)
        d = keyed_dir[0] / "streams" / store.keyring.streams["account/alice"].dir_name
        await store.close()
        (seg,) = sorted(d.glob("*.seg"))
        data = bytearray(seg.read_bytes())
        data[16] ^= 0x40  # the first byte of the chain value before the segment's first record
        seg.write_bytes(bytes(data))
        in_process = await reports()
        small_thresholds(monkeypatch)
        spawns = Spawns(monkeypatch)
        assert in_process[0][1] is not None and await reports() == in_process
        assert spawns.started

    asyncio.run(go())


def test_the_reading_child_imports_no_asyncio_nor_the_whole_store() -> None:
    # What the child imports at its start: its own module and the registered projections' preparers
    # (unpickled by name). The store package names its modules lazily, so none of these pulls in
    # asyncio, the account or the backup code.
    code = ("import sys, eventmail.store.reader, eventmail.store.projection, eventmail.junk.projection, "
            "eventmail.mail.threads; "
            "print(sorted(m for m in ('asyncio', 'ssl', 'eventmail.store.account', 'eventmail.store.backup', "
            "'eventmail.store.stream') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
