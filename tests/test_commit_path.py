"""The commit path (issue 11 item 4): every waiter of a failed batch gets the error and the store is consistent
after reopening; checkpoints are written off the loop; sync replication shows an event only once acknowledged.

Faults are injected by monkeypatching the log writer's system calls (os.write, os.fsync), its sealing and the
projection fold, each failing once: what a fault-injecting filesystem would do at those steps, without root.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import imaplib
import os
import smtplib
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from eventmail.opening import REGISTRATION
from eventmail.proto import events_pb2 as pb
from eventmail.store import (
    Account,
    NotWriter,
    Projector,
    ReplicationTimeout,
    SettingChanged,
    Store,
    StoreError,
)
from eventmail.store import account as account_mod
from eventmail.store import log as log_mod
from eventmail.store.log import StreamLog

from .conftest import open_store, run
from .mailserver import free_port
from .replica_pair import caught_up, close_pair, make_pair, wait_until
from .test_replica import send

Keyed = tuple[Path, bytes]
WAITERS = 8  # concurrent appends that share one group commit


@contextmanager
def fails_once(target: Any, name: str, error: BaseException) -> Iterator[list[int]]:
    """`target.name` raises `error` on its first call, then behaves; yields [calls that failed]."""
    original = getattr(target, name)
    failed: list[int] = []

    def wrapper(*args: Any, **kw: Any) -> Any:
        if not failed:
            failed.append(1)
            raise error
        return original(*args, **kw)

    setattr(target, name, wrapper)
    try:
        yield failed
    finally:
        setattr(target, name, original)


def setting(key: str) -> pb.Event:
    return pb.Event(account_setting=pb.AccountSetting(key=key, value="v"))


async def one_batch(acct: Account, tag: str) -> list[Any]:
    """WAITERS appends submitted together (one group commit); each one's result or exception. No
    waiter may wait forever: the whole batch must resolve within seconds."""
    batches = acct._writer.batches
    results = await asyncio.wait_for(
        asyncio.gather(*(acct.append([setting(f"{tag}{i}")]) for i in range(WAITERS)), return_exceptions=True), 10)
    assert acct._writer.batches - batches <= 1  # one batch: at most one fsync for all of them
    return list(results)


def rebuilt(acct: Account) -> list[tuple[object, ...]]:
    projector = Projector(REGISTRATION)
    projector.apply((c.seq, c.time_us, c.event) for c in acct.events())
    return projector.view.dump()


async def check_consistent(keyed: Keyed, tag: str, landed: bool) -> None:
    """Reopened: every stream verifies, the projection equals a rebuild from the log, the failed
    batch is all there (`landed`) or not at all, and the account takes appends again."""
    store = await open_store(keyed)
    try:
        assert all(r.error is None for r in store.verify())
        async with store.use_account("alice") as acct:
            assert acct.view.dump() == rebuilt(acct)
            present = [acct.view.setting(f"{tag}{i}") is not None for i in range(WAITERS)]
            assert present == [landed] * WAITERS
            await acct.append([setting("after-reopen")])
            assert acct.view.setting("after-reopen") == "v"
    finally:
        await store.close()


async def new_account(keyed: Keyed) -> Store:
    store = await open_store(keyed)
    await store.create_account("alice", ["alice@example.test"], None)
    return store


@pytest.mark.parametrize("step", ["seal", "write", "fsync"])
def test_a_failed_seal_write_or_fsync_fails_every_waiter_and_leaves_nothing(keyed_dir: Keyed, step: str) -> None:
    error: BaseException = {"seal": RuntimeError("sealing failed"), "write": OSError(errno.ENOSPC, "disk full"),
                            "fsync": OSError(errno.EIO, "fsync failed")}[step]
    target, name = {"seal": (StreamLog, "encrypt"), "write": (log_mod.os, "write"),
                    "fsync": (log_mod.os, "fsync")}[step]

    async def main() -> None:
        store = await new_account(keyed_dir)
        try:
            async with store.use_account("alice") as acct:
                head = acct.head_seq
                with fails_once(target, name, error) as failed:
                    results = await one_batch(acct, "lost")
                assert failed == [1]
                assert all(isinstance(r, (StoreError, RuntimeError)) for r in results), results
                assert acct.head_seq == head and not acct.broken
                # The writer goes on: the next batch commits.
                assert all(isinstance(r, list) for r in await one_batch(acct, "next"))
        finally:
            await store.close()
        await check_consistent(keyed_dir, "lost", landed=False)

    run(main())


def test_a_failed_projection_update_fails_every_waiter_and_the_reopened_account_has_the_batch(keyed_dir: Keyed) -> None:
    async def main() -> None:
        store = await new_account(keyed_dir)
        try:
            acct = await store.account("alice")
            sub = acct.subscribe()
            head = acct.head_seq
            with fails_once(Projector, "apply", RuntimeError("projection failed")) as failed:
                results = await one_batch(acct, "durable")
            assert failed == [1]
            assert all(isinstance(r, RuntimeError) for r in results), results
            # The log has the batch, the projection does not: the account takes no more appends...
            assert acct.head_seq == head + WAITERS and acct.broken
            with pytest.raises(StoreError):
                await asyncio.wait_for(acct.append([setting("refused")]), 10)
            assert sub.pending() == []  # nobody was told of what the projection does not hold
            # ...until the store reopens it, from checkpoint and log: consistent again.
            again = await store.account("alice")
            assert again is not acct and not again.broken
            assert all(again.view.setting(f"durable{i}") == "v" for i in range(WAITERS))
            assert again.view.dump() == rebuilt(again)
        finally:
            await store.close()
        await check_consistent(keyed_dir, "durable", landed=True)

    run(main())


def test_a_failed_replication_gate_fails_every_waiter_and_the_event_stays(keyed_dir: Keyed) -> None:
    async def refuse(stream: str, seq: int) -> None:
        raise ReplicationTimeout("the secondary did not acknowledge")

    async def main() -> None:
        store = await new_account(keyed_dir)
        try:
            async with store.use_account("alice") as acct:
                store.replication.set_replication(refuse, lambda stream: None)
                results = await one_batch(acct, "unacked")
                assert all(isinstance(r, ReplicationTimeout) for r in results), results
                store.replication.set_replication(None, lambda stream: None)
                assert not acct.broken  # durable here: the projection has it, as docs/replication.md says
                assert all(isinstance(r, list) for r in await one_batch(acct, "next"))
        finally:
            await store.close()
        await check_consistent(keyed_dir, "unacked", landed=True)

    run(main())


def test_a_cancelled_commit_fails_every_waiter(keyed_dir: Keyed) -> None:
    release = asyncio.Event()

    async def stuck(stream: str, seq: int) -> None:
        await release.wait()

    async def main() -> None:
        store = await new_account(keyed_dir)
        try:
            acct = await store.account("alice")
            store.replication.set_replication(stuck, lambda stream: None)
            waiters = [asyncio.ensure_future(acct.append([setting(f"c{i}")])) for i in range(WAITERS)]
            await asyncio.sleep(0.2)
            task = acct._writer._task
            assert task is not None and not task.done()
            task.cancel()  # what closing the loop does to a commit in flight
            done, pending = await asyncio.wait(waiters, timeout=10)
            assert not pending and all(isinstance(w.exception(), StoreError) for w in done)
            store.replication.set_replication(None, lambda stream: None)
            again = await store.account("alice")  # reopened: its projection from the log
            assert again is not acct and again.view.dump() == rebuilt(again)
        finally:
            await store.close()

    run(main())


def test_a_checkpoint_does_not_stall_the_loop_nor_appends(keyed_dir: Keyed, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        store = await new_account(keyed_dir)
        try:
            async with store.use_account("alice") as acct:
                # ~24 MB of incompressible settings: a projection whose checkpoint takes a while.
                for i in range(24):
                    value = base64.b64encode(os.urandom(750_000)).decode()
                    await acct.append([pb.Event(account_setting=pb.AccountSetting(key=f"big{i}", value=value))])
                started = time.perf_counter()
                acct.write_checkpoint()  # what ran on the loop every CHECKPOINT_EVERY events before
                on_loop = time.perf_counter() - started

                gaps: list[float] = []
                stop = asyncio.Event()

                async def ticker() -> None:
                    last = time.perf_counter()
                    while not stop.is_set():
                        await asyncio.sleep(0.001)
                        now = time.perf_counter()
                        gaps.append(now - last)
                        last = now

                tick = asyncio.ensure_future(ticker())
                await asyncio.sleep(0.05)
                monkeypatch.setattr(account_mod, "CHECKPOINT_EVERY", 1)
                await acct.append([setting("starts-a-checkpoint")])
                checkpointing = acct._checkpointing
                assert checkpointing is not None
                # Appends go on while the checkpoint is sealed and written.
                await acct.append([setting("during")])
                assert not checkpointing.done()
                await asyncio.wait_for(checkpointing, 60)
                stop.set()
                await tick
        finally:
            await store.close()
        assert on_loop > 0.05, on_loop  # the measurement means something
        assert max(gaps) < on_loop / 2, (max(gaps), on_loop)

    run(main())


def test_sync_mode_shows_an_event_to_other_sessions_only_after_the_secondary_has_it(keyed_dir: Keyed) -> None:
    acked = asyncio.Event()

    async def gate(stream: str, seq: int) -> None:
        await acked.wait()  # the secondary's durable acknowledgement (replica.node.ReplicaNode.gate)

    async def main() -> None:
        store = await new_account(keyed_dir)
        try:
            async with store.use_account("alice") as acct:
                other = acct.subscribe()  # another session (IMAP IDLE)
                store.replication.set_replication(gate, lambda stream: None)
                head = acct.head_seq
                appending = asyncio.ensure_future(acct.append([setting("replicated")]))
                await asyncio.sleep(0.2)
                assert acct.head_seq == head + 1  # durable in the local log...
                assert not appending.done()
                assert acct.view.setting("replicated") is None and other.pending() == []  # ...but not shown
                acked.set()
                committed = await asyncio.wait_for(appending, 10)
                assert acct.view.setting("replicated") == "v"
                seen = other.pending()
                assert [c.seq for c in seen] == [committed[0].seq]
                assert seen[0].changes == (SettingChanged("replicated"),)  # the typed changes travel with it
        finally:
            await store.close()

    run(main())


def test_sync_mode_writes_the_next_batch_while_one_waits_for_the_secondary_and_shows_them_in_order(
        keyed_dir: Keyed) -> None:
    """Pipelined sync commits: a batch is written (and can be shipped) while the one before it
    waits for the secondary's acknowledgement; each is shown only after the one before it, even
    when its own acknowledgement comes first; a secondary that stays away costs every batch in
    flight one wait, not one each after the other."""
    acks: dict[int, asyncio.Event] = {}
    waited: list[int] = []

    async def gate(stream: str, seq: int) -> None:
        waited.append(seq)
        await acks.setdefault(seq, asyncio.Event()).wait()

    async def main() -> None:
        store = await new_account(keyed_dir)
        try:
            async with store.use_account("alice") as acct:
                other = acct.subscribe()
                store.replication.set_replication(gate, lambda stream: None)
                head = acct.head_seq
                first = asyncio.ensure_future(acct.append([setting("first")]))
                await wait_for_head(acct, head + 1)
                second = asyncio.ensure_future(acct.append([setting("second")]))
                # Written while the first waits: without the pipeline it waited for the first's ack.
                await wait_for_head(acct, head + 2)
                assert waited == [head + 1, head + 2]  # both wait for the secondary at once
                acks.setdefault(head + 2, asyncio.Event()).set()  # the later one is acknowledged first
                await asyncio.sleep(0.1)
                assert not second.done() and acct.view.setting("second") is None and other.pending() == []
                acks.setdefault(head + 1, asyncio.Event()).set()
                await asyncio.wait_for(asyncio.gather(first, second), 10)
                assert [c.seq for c in other.pending()] == [head + 1, head + 2]
                assert acct.view.setting("first") == acct.view.setting("second") == "v"
        finally:
            for seq in waited:  # nothing left waiting, whatever failed
                acks.setdefault(seq, asyncio.Event()).set()
            store.replication.set_replication(None, lambda stream: None)
            await store.close()

    run(main())


async def wait_for_head(acct: Account, seq: int) -> None:
    for _ in range(1000):
        if acct.head_seq >= seq:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the log did not reach seq {seq} (head {acct.head_seq})")


def _imap(port: int, password: str) -> imaplib.IMAP4_SSL:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=30)
    m.login("alice", password)
    return m


def _messages(m: imaplib.IMAP4_SSL) -> int:
    typ, data = m.status("INBOX", "(MESSAGES)")
    assert typ == "OK"
    raw = data[0]
    assert isinstance(raw, bytes)
    return int(raw.split(b"MESSAGES ")[1].rstrip(b")"))


@pytest.mark.slow
def test_sync_pair_an_imap_session_sees_a_delivery_only_after_the_secondary_acknowledged_it(tmp_path: Path) -> None:
    """Over a real pair in sync mode (tempfail): with the secondary gone, a delivery waits for its
    acknowledgement; meanwhile another session (IMAP STATUS) does not see the message."""
    a, b = make_pair(tmp_path, mode="sync", on_timeout="tempfail", sync_timeout=3.0)
    a.extra_config = f'[[listener]]\nkind = "imaps"\naddress = "127.0.0.1"\nport = {free_port()}\n'
    a.start()
    b.start()
    try:
        send(a.ports["smtp"], "acked")
        wait_until(lambda: caught_up(b, a), what="catch-up")
        other = _imap(a.ports["imaps"], "pw-alice-123")
        before = _messages(other)
        b.stop()
        outcome: list[int] = []

        def deliver() -> None:
            try:
                send(a.ports["smtp"], "unacked")
                outcome.append(250)
            except smtplib.SMTPDataError as e:
                outcome.append(e.smtp_code)

        sender = threading.Thread(target=deliver)
        sender.start()
        seen: list[int] = []
        while sender.is_alive():
            seen.append(_messages(other))
            time.sleep(0.1)
        sender.join()
        assert outcome == [451]  # tempfail: not acknowledged by the secondary within sync_timeout
        assert len(seen) >= 10  # the session was served all along (about 3 s of polling)
        assert set(seen[:-3]) == {before}  # and never saw the unacknowledged message
        other.logout()
    finally:
        close_pair(a, b)


def test_commits_and_password_checks_do_not_wait_for_the_default_executor(keyed_dir: Keyed) -> None:
    """Commits and Argon2id have threads of their own: with every default-executor thread busy
    (blob writes, message reads, junk features of other connections), an append still commits
    and a login is still checked. In the shared executor they queued behind all of that."""
    from eventmail.sasl import credentials

    async def main() -> None:
        store = await new_account(keyed_dir)
        release = threading.Event()
        loop = asyncio.get_running_loop()
        # more jobs than the default executor has threads (at most 32): every one of them blocks
        busy = [loop.run_in_executor(None, release.wait) for _ in range(40)]
        try:
            async with store.use_account("alice") as acct:
                await asyncio.wait_for(acct.append([setting("while-busy")]), 10)
                assert acct.view.setting("while-busy") == "v"
            ps = credentials.make_password_set("alice", "pw", cost=credentials.HashCost(
                argon2_opslimit=3, argon2_memlimit=8192, scram_iterations=4096))
            assert await asyncio.wait_for(credentials.verify_password_async(ps, "pw"), 10)
        finally:
            release.set()
            await asyncio.gather(*busy)
            await store.close()

    run(main())


def test_a_replicated_batch_is_acknowledged_once_fsynced_before_the_projections_take_it(keyed_dir: Keyed) -> None:
    """A follower acknowledges at `on_durable`: the records are in the log (fsynced) and the
    projections do not have them yet, so the leader's sync wait does not include the fold."""

    async def go() -> None:
        store = await open_store(keyed_dir)
        await store.create_account("alice", ["alice@example.test"], None)
        async with store.use_account("alice") as a:
            for i in range(3):
                await a.append([pb.Event(account_setting=pb.AccountSetting(key=f"k{i}", value="v"))])
            records = list(a._log.records())
        # The same records arrive again as another node's, after the stream was cut back.
        await store.replication.truncate_stream("account/alice", 0)
        seen: list[tuple[int, int, str | None]] = []

        def on_durable() -> None:
            acct = store._accounts["alice"]
            seen.append((acct._log.head.seq, acct.view.seq, acct.view.setting("k2")))

        await store.replication.append_raw("account/alice", records, on_durable)
        async with store.use_account("alice") as a:
            assert a.view.setting("k2") == "v"
        await store.close()
        assert seen == [(records[-1].seq, 0, None)]
        # What was acknowledged is what a reopened log holds.
        assert StreamLog("account/alice", _stream_dir(keyed_dir, store), None, writable=False).head.seq == seen[0][0]

    run(go())


def _stream_dir(keyed: Keyed, store: Store) -> Path:
    return keyed[0] / "streams" / store.keyring.streams["account/alice"].dir_name


def test_no_write_is_taken_while_replicated_records_are_applied_a_promotion_in_that_window_waits(
        keyed_dir: Keyed) -> None:
    """A node promoted while it still applies its former leader's records: between their write and
    their fold the projections lack them, and a write decided from the projections (a UID) could
    take one of theirs. Appends are refused (NotWriter: a temporary failure for the client) until
    the replicated batch is folded, then taken."""

    async def go() -> None:
        store = await open_store(keyed_dir)
        await store.create_account("alice", ["alice@example.test"], None)
        async with store.use_account("alice") as a:
            for i in range(3):
                await a.append([setting(f"k{i}")])
            records = list(a._log.records())
        await store.replication.truncate_stream("account/alice", 0)
        writing, release = threading.Event(), threading.Event()

        def before() -> None:  # the blob files of the batch, on the commit thread
            writing.set()
            release.wait(10)

        acct = await store.account("alice")
        writer = acct._writer
        applying = asyncio.ensure_future(writer.append_raw(records, None, before))
        await asyncio.to_thread(writing.wait, 10)
        # This node writes the stream now (not fenced: a promotion cleared that), but the batch
        # is not in its projections yet.
        assert writer.fenced is None and acct.view.setting("k2") is None
        with pytest.raises(NotWriter):
            await acct.append([setting("during")])
        release.set()
        await asyncio.wait_for(applying, 10)
        await acct.append([setting("after")])
        assert acct.view.setting("k2") == acct.view.setting("after") == "v"
        assert acct.view.setting("during") is None
        await store.close()

    run(go())

