"""Blob packs (replicated catch-up batches): read like blob files, collected, backed up, restored and shredded."""

import asyncio
from pathlib import Path

import pytest

from eventmail.opening import open_store
from eventmail.store import (
    DamagedBlob,
    MasterKeySource,
    create_backup,
    init_directory,
    load_master_key,
    restore_backup,
)
from eventmail.store.packs import PACK_DIR, read_index

COUNT = 30


def message(i: int) -> bytes:
    return f"From: s@example.test\r\nSubject: packed {i}\r\nMessage-ID: <p{i}@x>\r\n\r\nbody {i}\r\n".encode()


def packed_ids(blob_dir: Path) -> set[bytes]:
    out: set[bytes] = set()
    for p in (blob_dir / PACK_DIR).glob("*.pack"):
        index = read_index(p)
        assert index is not None
        out |= set(index)
    return out


def test_packed_blobs_read_collect_back_up_restore_and_shred(tmp_path: Path) -> None:
    src = MasterKeySource(key_file=tmp_path / "key")
    d = tmp_path / "data"
    init_directory(d, src)
    key = load_master_key(d, src)

    async def go() -> None:
        store = await open_store(d, key)
        await store.create_account("alice", ["alice@example.test"], None)
        async with store.use_account("alice") as acct:
            for i in range(COUNT):
                await acct.add_message("INBOX", message(i))
            msgs = acct.view.messages(acct.mailbox_required("INBOX").id)
            ids = [m.blob_id for m in msgs]
            blob_dir = acct.blobs.path
            # As a follower catching up stores them: the files go, one pack holds them.
            files = [(b, acct.blobs.raw_file(b)) for b in ids]
            for b in ids:
                acct.blobs._file(b).unlink()
            acct.blobs.cache.drop(acct.stream_id, ids)  # type: ignore[union-attr]
            assert await store.replication.put_blob_files(acct.stream_id, files) == COUNT
            assert packed_ids(blob_dir) == set(ids)
            assert not any(acct.blobs._file(b).exists() for b in ids)
            assert await acct.read_messages(ids) == [message(i) for i in range(COUNT)]
            # A crash while a pack was written leaves a temporary (never read); a pack that
            # is not whole is not used.
            (blob_dir / PACK_DIR / "leftover.pack.tmp").write_bytes(b"garbage")
            whole = next((blob_dir / PACK_DIR).glob("*.pack")).read_bytes()
            (blob_dir / PACK_DIR / "torn.pack").write_bytes(whole[: len(whole) // 2])
            acct.blobs.packs.refresh()
            assert acct.blobs.get(ids[0]) == message(0)
        assert all(r.error is None for r in store.verify())
        await store.close()

        # A backup copies the pack like a blob file; the restored directory reads from it.
        (blob_dir / PACK_DIR / "torn.pack").unlink()
        create_backup(d, tmp_path / "repo")
        restored = tmp_path / "restored"
        restore_backup(tmp_path / "repo", restored)
        store = await open_store(restored, key)
        assert all(r.error is None and r.blobs >= COUNT for r in store.verify() if r.stream == "account/alice")
        async with store.use_account("alice") as acct:
            assert await acct.read_messages(ids) == [message(i) for i in range(COUNT)]
        await store.close()

        # The retention collector's removal takes blobs out of the pack (rewritten without them).
        store = await open_store(d, key)
        async with store.use_account("alice") as acct:
            gone = ids[:10]
            await acct.collect_blobs(0, gone)
            assert packed_ids(blob_dir) == set(ids[10:])
            for b in gone:
                acct.blobs.cache.drop(acct.stream_id, [b])  # type: ignore[union-attr]
                with pytest.raises(DamagedBlob):
                    acct.blobs.get(b)
            assert await acct.read_messages(ids[10:]) == [message(i) for i in range(10, COUNT)]
            await acct.collect_blobs(0, ids[10:])
            assert not list((blob_dir / PACK_DIR).glob("*.pack"))
        await store.close()

        # Shredding deletes the packs with the rest of the account's blobs.
        store = await open_store(restored, key)
        await store.delete_account("alice")
        assert not (restored / "blobs" / blob_dir.name).exists()
        await store.close()

    asyncio.run(go())
