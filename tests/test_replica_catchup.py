"""A secondary SIGKILLed in the middle of a catch-up keeps everything it acknowledged and shows nothing half-written."""

import asyncio
import os
from pathlib import Path

import pytest

from eventmail.opening import open_store
from eventmail.store import MasterKeySource, load_master_key
from eventmail.store.packs import PACK_DIR, read_index

from .replica_pair import Node, caught_up, close_pair, make_pair, wait_until

BACKLOG = 3000
STREAM = "account/alice"


def message(i: int) -> bytes:
    return (f"From: s@example.test\r\nTo: alice@mail.test\r\nSubject: backlog {i}\r\n"
            f"Message-ID: <backlog-{i}@example.test>\r\n\r\n" + "body line\r\n" * 20).encode()


async def backlog(node: Node, n: int) -> None:
    """Deliveries appended to the stopped primary's store directly (group-committed, 100 at a time)."""
    store = await open_store(node.directory, load_master_key(node.directory, MasterKeySource(key_file=node.key_file)))
    try:
        async with store.use_account("alice") as acct:
            for i in range(0, n, 100):
                await asyncio.gather(*(acct.add_message("INBOX", message(j)) for j in range(i, min(n, i + 100))))
    finally:
        await store.close()


def acked(primary: Node) -> int:
    try:
        rows = primary.status()["streams"]
    except OSError:
        return 0
    return next((int(r["peer_position"]) for r in rows if r["stream"] == STREAM), 0)


def blob_files(node: Node) -> dict[str, bytes]:
    """Every blob file by its name, and every blob of every pack as the file of its name would be."""
    root = node.directory / "blobs"
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            if name.endswith(".pack"):
                index = read_index(p)
                assert index is not None, f"{p} is not a whole pack"
                data = p.read_bytes()
                for blob_id, (offset, length) in index.items():
                    h = blob_id.hex()
                    out[str(p.parent.parent.relative_to(root) / h[:2] / h[2:])] = data[offset : offset + length]
            elif not name.endswith(".tmp"):
                out[str(p.relative_to(root))] = p.read_bytes()
    return out


@pytest.mark.peers
def test_a_secondary_killed_mid_catch_up_keeps_what_it_acknowledged(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    a.start()
    b.start()
    try:
        wait_until(lambda: caught_up(b, a), what="initial catch-up")
        before = b.positions()[STREAM]
        b.stop()
        a.stop()
        asyncio.run(backlog(a, BACKLOG))
        a.ports.clear()
        b.ports.clear()
        a.start()
        b.start()
        # Kill the secondary as soon as the primary holds an acknowledgement for part of the backlog.
        wait_until(lambda: acked(a) > before, timeout=120, what="a first acknowledged batch")
        promised = acked(a)
        b.kill()
        b.ports.clear()

        # After the crash, with the secondary stopped: every record it acknowledged is there, every
        # chain and every blob its log names checks (`eventmail verify`), and every blob file under
        # a blob's name is whole: byte for byte the primary's file (half-written ones would differ).
        assert b.heads()[STREAM][0] >= promised
        theirs = blob_files(a)
        mine = blob_files(b)
        assert mine and all(theirs.get(name) == data for name, data in mine.items())

        b.start()
        wait_until(lambda: caught_up(b, a), timeout=300, what="the rest of the catch-up")
        assert b.positions()[STREAM] == before + BACKLOG
        b.stop()
        b.ports.clear()
        assert b.heads() == {s: h for s, h in a.heads().items() if s in b.heads()}
    finally:
        close_pair(a, b)


@pytest.mark.parametrize("count", [3, 40])
def test_replicated_blobs_small_batches_as_files_large_batches_as_one_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    """A steady-state batch (a few blobs) is stored file by file, as the primary stores them; a
    catch-up batch goes into one pack with one fsync (and one of its directory) for all of it.
    Either way every blob is checked against its name, reads back, ships back byte for byte as
    the primary's file, and nothing is left under .tmp."""
    from eventmail.store import blobs as blobs_mod
    from eventmail.store import packs as packs_mod
    from eventmail.store.keys import MasterKeySource as Source
    from eventmail.store.keys import init_directory

    directory = tmp_path / "data"
    init_directory(directory, Source(key_file=tmp_path / "key"))

    async def files() -> tuple[list[tuple[bytes, bytes]], Path, object]:
        store = await open_store(directory, load_master_key(directory, Source(key_file=tmp_path / "key")))
        await store.create_account("alice", ["alice@example.test"], None)
        async with store.use_account("alice") as acct:
            ids = [acct.blobs.put(message(i)) for i in range(count)]
            out = [(b, acct.blobs.raw_file(b)) for b in ids]
            for b in ids:
                acct.blobs._file(b).unlink()  # as a follower that has not got them yet
            blob_dir, keys = acct.blobs.path, acct.blobs.keys
        await store.close()
        return out, blob_dir, keys

    wanted, blob_dir, keys = asyncio.run(files())
    (blob_dir / PACK_DIR).mkdir(parents=True, exist_ok=True)  # there since the first pack
    fsyncs: list[int] = []
    real = os.fsync
    monkeypatch.setattr(packs_mod.os, "fsync", lambda fd: (fsyncs.append(fd), real(fd)))
    store = blobs_mod.BlobStore(STREAM, blob_dir, keys)  # type: ignore[arg-type]
    assert store.put_raw_files(wanted) == count
    packs = sorted((blob_dir / PACK_DIR).glob("*.pack"))
    if count <= blobs_mod.SMALL_BATCH_FILES:
        assert not packs
        assert all(store._file(b).read_bytes() == data for b, data in wanted)
    else:
        assert len(packs) == 1 and len(fsyncs) == 2  # the pack, then its directory
        assert not any(store._file(b).exists() for b, _ in wanted)
    fresh = blobs_mod.BlobStore(STREAM, blob_dir, keys)  # type: ignore[arg-type]
    for i, (blob_id, data) in enumerate(wanted):
        assert fresh.exists(blob_id)
        assert fresh.raw_file(blob_id) == data
        assert fresh.get(blob_id) == message(i)
    assert store.put_raw_files(wanted) == 0  # present already: nothing written again
    assert not list(blob_dir.rglob("*.tmp"))
