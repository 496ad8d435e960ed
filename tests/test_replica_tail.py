"""A replicated delivery's blob written beside its record: a blob that fails takes the record out again, and a record a crash left without its blob is cut on the next start and sent again."""

import asyncio
import shutil
import smtplib
from pathlib import Path

import pytest

from eventmail.opening import open_store
from eventmail.proto import events_pb2 as pb
from eventmail.store import Record, Store, StoreError
from eventmail.store.replication_port import named_blob
from tests.test_store_reader import Keyed, filled, tables

from .replica_pair import Node, caught_up, close_pair, make_pair, wait_until

STREAM = "account/alice"


async def with_a_last_delivery(keyed: Keyed) -> tuple[Store, dict[str, object], list[Record], bytes, bytes]:
    """A store whose alice got deliveries and other events, the last record a delivery: her
    tables, her records, the last delivery's blob id and file; her stream is then cut back to
    nothing (the records can arrive again as another node's) and that blob's file removed (as
    on a follower that has not got it yet)."""
    store = await filled(keyed, 12)
    async with store.use_account("alice") as a:
        await a.add_message("INBOX", b"Subject: the last one\r\n\r\nlast\r\n")
        live = tables(a.db)
        last_record, plaintext = list(a._log.plaintexts())[-1]
        e = pb.Event()
        e.ParseFromString(plaintext)
        blob_id = named_blob(e)
        assert blob_id is not None
        records = list(a._log.records())
        assert records[-1] == last_record
        raw = a.blobs.raw_file(blob_id)
        a.blobs._file(blob_id).unlink()
    await store.replication.truncate_stream(STREAM, 0)
    return store, live, records, blob_id, raw


def test_a_blob_that_cannot_be_written_beside_its_record_takes_the_record_out_again(keyed_dir: Keyed) -> None:
    """The blob's directory is a file (a real ENOTDIR, not a mock): the batch fails, its record
    is not left in the log without its blob; once the directory is back the same batch goes in."""

    async def go() -> None:
        store, live, records, blob_id, raw = await with_a_last_delivery(keyed_dir)
        await store.replication.append_raw(STREAM, records[:-1])
        async with store.use_account("alice") as a:
            parent = a.blobs._file(blob_id).parent
        aside = parent.with_name(parent.name + ".aside")
        parent.rename(aside)
        parent.write_bytes(b"in the way")
        acked: list[int] = []
        with pytest.raises(StoreError):
            await store.replication.append_raw(STREAM, records[-1:], lambda: acked.append(1), [(blob_id, raw)])
        assert not acked
        assert (await store.replication.head(STREAM)).seq == records[-2].seq
        parent.unlink()
        aside.rename(parent)
        await store.replication.append_raw(STREAM, records[-1:], lambda: acked.append(1), [(blob_id, raw)])
        assert acked == [1]
        assert (await store.replication.head(STREAM)).seq == records[-1].seq
        assert store.replication.has_blob(STREAM, blob_id)
        async with store.use_account("alice") as a:
            assert tables(a.db) == live
        await store.close()

    asyncio.run(go())


def test_a_record_left_without_its_blob_is_cut_at_start_and_nothing_else(keyed_dir: Keyed) -> None:
    """What a crash between the record's fsync and its blob's leaves (the record durable, the
    blob not) is cut back; a log whose blobs are all there is left alone."""

    async def go() -> None:
        store, live, records, blob_id, raw = await with_a_last_delivery(keyed_dir)
        await store.replication.append_raw(STREAM, records)  # the record, but not its blob
        await store.close()

        store = await open_store(*keyed_dir)
        assert await store.replication.cut_blobless_tail(STREAM) == 1
        assert await store.replication.cut_blobless_tail(STREAM) == 0
        assert (await store.replication.head(STREAM)).seq == records[-2].seq
        async with store.use_account("alice") as a:
            assert len(list(a._log.records())) == len(records) - 1
        # The leader sends it again, with its blob: the state of the primary's own commits.
        await store.replication.append_raw(STREAM, records[-1:], None, [(blob_id, raw)])
        async with store.use_account("alice") as a:
            assert tables(a.db) == live
        await store.close()
        store = await open_store(*keyed_dir)
        assert await store.replication.cut_blobless_tail(STREAM) == 0
        assert (await store.replication.head(STREAM)).seq == records[-1].seq
        await store.close()

    asyncio.run(go())


def deliver(node: Node, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", node.ports["smtp"], timeout=30) as s:
        s.sendmail("s@example.test", ["alice@mail.test"],
                   f"From: s@example.test\r\nSubject: {subject}\r\n\r\nbody\r\n".encode())


def blob_names(node: Node) -> set[Path]:
    root = node.directory / "blobs"
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.suffix not in (".tmp", ".pack")}


@pytest.mark.peers
def test_a_secondary_restarted_with_a_record_but_not_its_blob_gets_both_again(tmp_path: Path) -> None:
    """A real pair: the secondary's last delivery's blob file is gone when it starts (as a crash
    between the two fsyncs leaves it). It cuts the record, the primary sends it again with its
    blob, and both nodes end with the same heads and the same blob files."""
    a, b = make_pair(tmp_path)
    a.start()
    b.start()
    try:
        wait_until(lambda: caught_up(b, a), what="initial catch-up")
        deliver(a, "first")
        wait_until(lambda: caught_up(b, a), what="the first delivery")
        before = blob_names(b)
        deliver(a, "second")
        wait_until(lambda: caught_up(b, a), what="the second delivery")
        b.kill()  # no checkpoint at a close: as after a crash
        b.ports.clear()
        (new,) = blob_names(b) - before
        shutil.copyfile(b.directory / "blobs" / new, tmp_path / "kept")
        (b.directory / "blobs" / new).unlink()

        b.start()
        wait_until(lambda: caught_up(b, a), what="the secondary to follow again")
        wait_until(lambda: (b.directory / "blobs" / new).exists(), what="the blob sent again")
        assert any("whose blobs are missing" in line for line in b.log_lines)
        assert (b.directory / "blobs" / new).read_bytes() == (tmp_path / "kept").read_bytes()
        assert new in blob_names(b) <= blob_names(a)
        b.stop()
        b.ports.clear()
        assert b.heads() == {s: h for s, h in a.heads().items() if s in b.heads()}
    finally:
        close_pair(a, b)
