"""Fencing and the sync gate on a real store: a node that sees a newer epoch refuses to write."""

import asyncio
from pathlib import Path

import pytest

from eventmail.config import ReplicationSettings
from eventmail.proto import events_pb2 as pb
from eventmail.store import SYSTEM, NotWriter, ReplicationTimeout, handoff_stream
from replica.node import Epoch, ReplicaNode

from .conftest import open_store, run


def settings(tmp_path: Path, **kw: object) -> ReplicationSettings:
    base = dict(node="a", peer_node="b", listen="127.0.0.1:1", peer="127.0.0.1:2", cert=tmp_path / "c",
                key=tmp_path / "k", peer_cert=tmp_path / "p", control=tmp_path / "s", initial_role="primary")
    base.update(kw)
    return ReplicationSettings(**base)  # type: ignore[arg-type]


def test_old_primary_refuses_writes_after_a_newer_epoch(keyed_dir: tuple[Path, bytes], tmp_path: Path) -> None:
    async def go() -> None:
        store = await open_store(keyed_dir)
        try:
            node = ReplicaNode(store, settings(tmp_path))
            await store.create_account("alice", ["alice@mail.test"], None)
            async with store.use_account("alice") as acct:
                await acct.add_message("INBOX", b"Subject: before\r\n\r\nx\r\n")
                node.observe(Epoch(2, "b"))
                with pytest.raises(NotWriter):
                    await acct.add_message("INBOX", b"Subject: after\r\n\r\nx\r\n")
            with pytest.raises(NotWriter):
                await store.stream(SYSTEM).append([pb.Event(domain_added=pb.DomainAdded(domain="x.test"))])
            # Its own hand-off stream stays writable: that is where a backup MX puts mail.
            await store.stream(handoff_stream("a")).append([pb.Event(handoff_queued=pb.HandoffQueued(id="1"))])
            assert store.replication.read_node_state() == {"epoch": 2, "primary": "b", "rejoin": True, "no_peer": False}
        finally:
            await store.close()

    run(go())


def test_the_epoch_survives_a_restart(keyed_dir: tuple[Path, bytes], tmp_path: Path) -> None:
    async def go() -> None:
        store = await open_store(keyed_dir)
        ReplicaNode(store, settings(tmp_path)).observe(Epoch(5, "b"))
        await store.close()
        store = await open_store(keyed_dir)
        try:
            node = ReplicaNode(store, settings(tmp_path))  # the config still says primary
            assert not node.is_primary and node.epoch == Epoch(5, "b")
            with pytest.raises(NotWriter):
                await store.stream(SYSTEM).append([pb.Event(domain_added=pb.DomainAdded(domain="x.test"))])
        finally:
            await store.close()

    run(go())


def test_concurrent_promotions_give_different_epochs() -> None:
    # Both nodes promote from epoch 1 while cut off: (2, a) and (2, b) differ and are ordered.
    assert Epoch(2, "a") != Epoch(2, "b") and max(Epoch(2, "a"), Epoch(2, "b")).primary == "b"


@pytest.mark.parametrize("on_timeout", ["tempfail", "degrade"])
def test_sync_gate_without_acknowledgement(keyed_dir: tuple[Path, bytes], tmp_path: Path, on_timeout: str) -> None:
    async def go() -> None:
        store = await open_store(keyed_dir)
        try:
            node = ReplicaNode(store, settings(tmp_path, mode="sync", sync_timeout=0.2, on_timeout=on_timeout))
            event = pb.Event(domain_added=pb.DomainAdded(domain="x.test"))
            if on_timeout == "tempfail":
                with pytest.raises(ReplicationTimeout):
                    await store.stream(SYSTEM).append([event])
                assert not node.degraded
            else:
                await store.stream(SYSTEM).append([event])
                assert node.degraded
            # An acknowledgement that arrives releases the waiter at once.
            node.degraded = False
            task = asyncio.ensure_future(store.stream(SYSTEM).append([event]))
            await asyncio.sleep(0.05)
            node.on_ack("system", (await store.replication.head("system")).seq)
            await asyncio.wait_for(task, 0.15)
        finally:
            await store.close()

    run(go())


def test_queue_work_runs_only_while_primary(keyed_dir: tuple[Path, bytes], tmp_path: Path) -> None:
    from replica.service import RunningReplica

    async def go() -> None:
        store = await open_store(keyed_dir)
        try:
            node = ReplicaNode(store, settings(tmp_path))
            runner = RunningReplica(node, server=None)  # type: ignore[arg-type]
            running = asyncio.Event()
            stopped = asyncio.Event()

            async def work() -> None:
                running.set()
                try:
                    await asyncio.sleep(3600)
                finally:
                    stopped.set()

            sup = asyncio.ensure_future(runner.while_primary(work))
            # Started as the primary of epoch 1, but nobody has said that no newer epoch exists:
            # the queue (mail leaving the pair) waits for that word.
            await asyncio.sleep(1.5)
            assert not running.is_set()
            node.observe(Epoch(1, "a"))  # the peer's word: epoch 1 is the newest
            await asyncio.wait_for(running.wait(), 3)
            node.observe(Epoch(2, "b"))  # fenced: the outbound queue must stop being sent
            await asyncio.wait_for(stopped.wait(), 2)
            running.clear()
            await asyncio.sleep(0.1)
            assert not running.is_set()
            node.promote()
            await asyncio.wait_for(running.wait(), 2)
            sup.cancel()
        finally:
            await store.close()

    run(go())
