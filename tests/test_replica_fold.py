"""A follower's replicated batches: written while the one before folds, deliveries made ready by a worker process, the same state as a cold replay."""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable
from typing import Any

import pytest

from eventmail.proto import events_pb2 as pb
from eventmail.store import NotWriter, Record, Store, StoreError, reader
from tests.test_store_reader import Keyed, drop_checkpoints, filled, replayed_dump, tables

STREAM = "account/alice"


async def records_cut_back(store: Store) -> list[Record]:
    """Every record of alice's stream, after which the stream is cut back to nothing: the same
    records can then arrive again as another node's (as in tests/test_commit_path.py)."""
    async with store.use_account("alice") as a:
        records = list(a._log.records())
    await store.replication.truncate_stream(STREAM, 0)
    return records


async def ready_worker(store: Store) -> reader.Worker:
    """The store's worker process, started and answering."""
    worker = store.replication._worker()
    probe = [(1, 1, pb.Event(account_setting=pb.AccountSetting(key="k", value="v")).SerializeToString())]
    for _ in range(300):
        if await asyncio.to_thread(worker.run, probe) is not None:
            return worker
        await asyncio.sleep(0.1)
    raise AssertionError("the worker process did not answer")


async def filled_then_cut_back(keyed: Keyed, n: int) -> tuple[Store, dict[str, Any], list[Record], reader.Worker]:
    """A store whose alice got `n` deliveries (her tables as the primary's own commits left them),
    her records, her stream cut back to nothing, and the store's worker answering."""
    store = await filled(keyed, n)
    async with store.use_account("alice") as a:
        live = tables(a.db)
    records = await records_cut_back(store)
    return store, live, records, await ready_worker(store)


async def catch_up(store: Store, records: list[Record], size: int) -> None:
    """Write the records in batches as the follower does: each batch written (and durable) while
    the batch before it folds, that fold awaited after the write."""
    folding: Awaitable[None] | None = None
    for i in range(0, len(records), size):
        fold = asyncio.ensure_future(await store.replication.write_raw(STREAM, records[i : i + size]))
        if folding is not None:
            await folding
        folding = fold
    if folding is not None:
        await folding


def test_batches_folded_while_the_next_is_written_with_a_worker_give_the_state_of_a_cold_replay(
    keyed_dir: Keyed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker made the deliveries of every batch ready (its count), and the projections
    (every table) equal those of the primary's own commits and of a cold replay of the log."""
    monkeypatch.setattr(reader, "WORKER_MIN", 4)

    async def go() -> None:
        store, live, records, worker = await filled_then_cut_back(keyed_dir, 120)
        before = worker.batches
        await catch_up(store, records, 25)
        async with store.use_account("alice") as a:
            followed = tables(a.db)
        made = worker.batches - before
        store.replication.close()
        await store.close()
        drop_checkpoints(keyed_dir[0])
        assert made >= len(records) // 25 - 1  # every batch with 4 deliveries or more
        assert followed == live
        assert followed == await replayed_dump(keyed_dir)

    asyncio.run(go())


def test_a_worker_that_dies_leaves_the_batches_to_this_process_with_the_same_state(
    keyed_dir: Keyed, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(reader, "WORKER_MIN", 4)

    async def go() -> None:
        store, live, records, worker = await filled_then_cut_back(keyed_dir, 120)
        assert worker._child is not None
        worker._child.kill()
        worker._child.wait()
        before = worker.batches
        with caplog.at_level(logging.WARNING, "eventmail.store.reader"):
            await catch_up(store, records, 25)
        async with store.use_account("alice") as a:
            followed = tables(a.db)
        assert worker.batches == before and worker._child is None  # not started again (WORKER_RETRY)
        store.replication.close()
        await store.close()
        assert "worker failed" in caplog.text
        assert followed == live

    asyncio.run(go())


def test_no_local_append_while_a_written_batch_waits_for_its_fold(keyed_dir: Keyed) -> None:
    """A node promoted while its last replicated batch is written (acknowledged) but not yet
    folded: appends are refused (NotWriter) until the fold is done, then taken; closing the
    account waits for the fold (its checkpoint has what the log has)."""

    async def go() -> None:
        store = await filled(keyed_dir, 12)
        records = await records_cut_back(store)
        acct = await store.account("alice")
        release = asyncio.Event()

        async def prepare(items: list[tuple[int, int, bytes]]) -> Any:
            await release.wait()  # the fold waits here, as for a slow worker
            return None

        fold = await acct._writer.write_raw(records, None, None, prepare)
        assert acct._log.head.seq == records[-1].seq and acct.view.seq == 0
        with pytest.raises(NotWriter):
            await acct.append([pb.Event(account_setting=pb.AccountSetting(key="during", value="v"))])
        closing = asyncio.ensure_future(acct._writer.drain())
        await asyncio.sleep(0.05)
        assert not closing.done()
        release.set()
        await fold
        await closing
        assert acct.view.seq == records[-1].seq
        await acct.append([pb.Event(account_setting=pb.AccountSetting(key="after", value="v"))])
        assert acct.view.setting("after") == "v" and acct.view.setting("during") is None
        await store.close()

    asyncio.run(go())


def test_a_failed_fold_fails_the_batches_written_behind_it_and_the_reopened_account_has_them(
    keyed_dir: Keyed,
) -> None:
    async def go() -> None:
        store = await filled(keyed_dir, 60)
        async with store.use_account("alice") as a:
            live = tables(a.db)
        records = await records_cut_back(store)
        acct = await store.account("alice")
        half = len(records) // 2

        async def broken(items: list[tuple[int, int, bytes]]) -> Any:
            raise RuntimeError("worker gone mad")

        first = await acct._writer.write_raw(records[:half], None, None, broken)
        second = await acct._writer.write_raw(records[half:])
        with pytest.raises(RuntimeError):
            await first
        with pytest.raises(Exception, match="reopen"):
            await second
        assert acct.broken
        async with store.use_account("alice") as a:  # reopened: rebuilt from the log
            assert a is not acct
            assert tables(a.db) == live
        with contextlib.suppress(Exception):
            await store.close()

    asyncio.run(go())


def test_a_catch_up_batch_is_made_ready_while_it_is_written(keyed_dir: Keyed) -> None:
    """A batch of DECRYPT_AWAY records or more goes to `prepare` (the worker) before its write
    is done, not after: the write (here its `before`, on the commit thread) sees the call. The
    fold then takes what was made ready: the tables of the primary's own commits."""
    from eventmail.store import stream

    async def go() -> None:
        store = await filled(keyed_dir, 80)
        async with store.use_account("alice") as a:
            live = tables(a.db)
        records = await records_cut_back(store)
        assert len(records) >= stream.DECRYPT_AWAY
        acct = await store.account("alice")
        called = threading.Event()
        seen_during_write: list[bool] = []

        async def prepare(items: list[tuple[int, int, bytes]]) -> Any:
            called.set()
            return None  # not made: the fold parses them

        def before() -> None:
            seen_during_write.append(called.wait(30))

        fold = await acct._writer.write_raw(records, None, before, prepare)
        await fold
        assert seen_during_write == [True]
        assert tables(acct.db) == live
        await store.close()

    asyncio.run(go())


def test_a_catch_up_batch_whose_write_fails_is_not_folded_and_the_stream_takes_it_again(keyed_dir: Keyed) -> None:
    """Its preparing, under way while the write failed, is dropped: nothing folds, the writer is
    not broken, and the same batch then goes in whole."""

    async def go() -> None:
        store = await filled(keyed_dir, 80)
        async with store.use_account("alice") as a:
            live = tables(a.db)
        records = await records_cut_back(store)
        acct = await store.account("alice")
        prepared: list[int] = []

        async def prepare(items: list[tuple[int, int, bytes]]) -> Any:
            prepared.append(len(items))
            return None

        with pytest.raises(StoreError):
            await acct._writer.write_raw(records[1:], None, None, prepare)  # does not continue the chain
        assert acct._log.head.seq == 0 and acct.view.seq == 0
        assert acct._writer.broken is None and acct._writer._applying == 0
        await (await acct._writer.write_raw(records, None, None, prepare))
        assert tables(acct.db) == live
        await store.close()

    asyncio.run(go())
