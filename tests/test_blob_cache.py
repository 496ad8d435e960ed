"""The decrypted-blob cache: bounded in octets, least recently used out first, checked plaintexts only, dropped with a stream; and a FETCH of many slices read ahead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eventmail.store import crypto
from eventmail.store.blobs import CACHE_MAX_BLOB, BlobCache, BlobStore
from eventmail.store.errors import DamagedBlob
from eventmail.store.keyring import StreamKeys
from tests.imap_harness import ImapServer, simple_message


def _store(tmp_path: Path, cache: BlobCache | None, stream: str = "account/a") -> BlobStore:
    keys = StreamKeys("d", {1: crypto.new_key()}, 1, crypto.new_key())
    return BlobStore(stream, tmp_path / stream.replace("/", "-"), keys, cache)


def _file(blobs: BlobStore, blob_id: bytes) -> Path:
    h = blob_id.hex()
    return blobs.path / h[:2] / h[2:]


def test_a_read_blob_is_served_from_memory(tmp_path: Path) -> None:
    blobs = _store(tmp_path, BlobCache())
    blob_id = blobs.put(b"Subject: one\r\n\r\nbody\r\n")
    assert blobs.get(blob_id) == b"Subject: one\r\n\r\nbody\r\n"
    _file(blobs, blob_id).unlink()  # the second read does not touch the file
    assert blobs.get(blob_id) == b"Subject: one\r\n\r\nbody\r\n"
    uncached = _store(tmp_path, None)
    other = uncached.put(b"x")
    _file(uncached, other).unlink()
    with pytest.raises(DamagedBlob):
        uncached.get(other)


def test_an_altered_blob_is_not_cached(tmp_path: Path) -> None:
    cache = BlobCache()
    blobs = _store(tmp_path, cache)
    blob_id = blobs.put(b"precious")
    f = _file(blobs, blob_id)
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 1
    f.write_bytes(bytes(raw))
    for _ in range(2):
        with pytest.raises(DamagedBlob):
            blobs.get(blob_id)
    assert cache.size == 0


def test_bounded_in_octets_least_recently_used_out(tmp_path: Path) -> None:
    cache = BlobCache(capacity=3000)
    blobs = _store(tmp_path, cache)
    ids = [blobs.put(bytes([i]) * 1000) for i in range(3)]
    for b in ids:
        blobs.get(b)
    blobs.get(ids[0])  # now the most recent
    four = blobs.put(b"\x03" * 1000)
    blobs.get(four)
    assert cache.size <= 3000
    assert cache.get(blobs.stream, ids[1]) is None  # the least recently used went
    assert cache.get(blobs.stream, ids[0]) is not None and cache.get(blobs.stream, four) is not None


def test_large_blobs_are_not_cached(tmp_path: Path) -> None:
    cache = BlobCache(capacity=10 * CACHE_MAX_BLOB)
    blobs = _store(tmp_path, cache)
    big = blobs.put(os.urandom(CACHE_MAX_BLOB + 1))
    blobs.get(big)
    assert cache.size == 0 and cache.get(blobs.stream, big) is None


def test_removed_and_shredded_blobs_leave_the_cache(tmp_path: Path) -> None:
    cache = BlobCache()
    a = _store(tmp_path, cache, "account/a")
    b = _store(tmp_path, cache, "account/b")
    a1, a2, b1 = a.put(b"a1"), a.put(b"a2"), b.put(b"b1")
    for store, blob_id in ((a, a1), (a, a2), (b, b1)):
        store.get(blob_id)
    a.remove([a1])  # the retention collector deleted it: not served from memory either
    assert cache.get("account/a", a1) is None and cache.get("account/a", a2) == b"a2"
    cache.drop_stream("account/a")  # as the store does when it shreds the account
    assert cache.get("account/a", a2) is None and cache.get("account/b", b1) == b"b1"
    assert cache.size == 2


def test_fetch_of_many_slices_returns_every_body_in_order(tmp_path: Path) -> None:
    """BODY[] of more messages than one read slice (64): each slice is read while the previous
    one is written; every message comes back whole, in sequence order."""
    with ImapServer(tmp_path) as srv:
        bodies = [simple_message(f"message {i}", body=f"body number {i} " + "x" * (i * 37)) for i in range(150)]
        for raw in bodies:
            srv.deliver(raw)
        m = srv.imap()
        m.select("INBOX", readonly=True)
        typ, data = m.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        got = [d for d in data if isinstance(d, tuple)]
        assert [int(d[0].split(b" ", 1)[0]) for d in got] == list(range(1, 151))
        assert [d[1] for d in got] == bodies
        m.logout()


def test_reads_mixing_cached_and_uncached_keep_their_order(tmp_path: Path) -> None:
    """Account.read_messages takes what the cache holds on the loop and reads the rest in one
    worker trip; the answer is in the order asked, whatever came from where."""
    with ImapServer(tmp_path) as srv:
        raws = [simple_message(f"m{i}") for i in range(5)]
        for raw in raws:
            srv.deliver(raw)

        async def go() -> tuple[list[bytes], list[bytes]]:
            async with srv.store.use_account("alice") as acct:
                inbox = acct.view.mailbox("INBOX")
                assert inbox is not None
                ids = [m.blob_id for m in acct.view.messages(inbox.id)]
                srv.store.blob_cache.drop_stream(acct.stream_id)
                await acct.read_message(ids[1])
                await acct.read_message(ids[3])
                mixed = await acct.read_messages(ids)
                return mixed, await acct.read_messages(ids)  # now all cached

        mixed, cached = srv.call(go())
        assert mixed == raws and cached == raws
