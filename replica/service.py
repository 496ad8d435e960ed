"""Starting and stopping a node's replication: bootstrap, gRPC leader, follower, hand-off, control commands."""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import generate_latest

from eventmail import control as control_socket
from eventmail import metrics as server_metrics
from eventmail.config import Config, ReplicationSettings
from eventmail.proto import replication_pb2 as rpb
from eventmail.proto import replication_pb2_grpc as rpc
from eventmail.store import MasterKeySource, Store, StoreError, load_master_key

from . import tlsauth
from .follower import Follower
from .handoff import HandoffDeliverer, HandoffRecorder
from .leader import ReplicationService
from .node import ReplicaNode

log = logging.getLogger(__name__)

async def bootstrap(cfg: Config, master: bytes | None = None) -> None:
    """A new secondary's data directory is made from the primary's keyring (same master key file),
    so both nodes name and encrypt every stream alike. Waits until the primary answers."""
    s = cfg.replication
    assert s is not None
    if (cfg.data_dir / "keyring").exists():
        return
    if cfg.key_file is None:
        raise SystemExit("replication: a new secondary needs key_file (the primary's master key file)")
    if master is None:  # else read already (as root, before dropping it: eventmail.privileges)
        source = MasterKeySource(key_file=cfg.key_file, allow_loose_mode=cfg.allow_key_file_mode)
        master = load_master_key(cfg.data_dir, source)
    creds = tlsauth.channel_credentials(s.cert, s.key, s.peer_cert)
    while True:
        try:
            async with grpc.aio.secure_channel(s.peer, creds, options=tlsauth.client_options(s.peer_node)) as ch:
                stub = rpc.ReplicationStub(ch)  # type: ignore[no-untyped-call]
                reply = await stub.GetKeyring(rpb.KeyringRequest(node=s.node), timeout=10)
            Store.initialize_replica(cfg.data_dir, reply.data, master)
            log.info("replication: data directory %s created from %s's keyring", cfg.data_dir, s.peer_node)
            return
        except grpc.aio.AioRpcError as e:
            log.info("replication: waiting for the primary %s to hand out its keyring: %s", s.peer_node, e.code().name)
            await asyncio.sleep(1.0)


@dataclass
class RunningReplica:
    node: ReplicaNode
    server: grpc.aio.Server
    tasks: list["asyncio.Task[None]"] = field(default_factory=list)

    async def while_primary(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work` while this node is the primary, and only once that is confirmed (a node that
        restarts as the primary of an old epoch must not send mail a promoted peer sends too);
        cancel it when the node is fenced."""
        while True:
            while not self.node.primary_confirmed():
                self.node.role_changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.node.role_changed.wait(), 1.0)
            task = asyncio.get_running_loop().create_task(work())
            try:
                while self.node.is_primary and not task.done():
                    self.node.role_changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.node.role_changed.wait(), 1.0)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if task.done() and self.node.is_primary:
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.server.stop(1.0)

    def control_commands(self) -> dict[str, control_socket.Handler]:
        """`eventmail replica status|promote` and the metrics, for the server's control socket
        (eventmail.control, which also listens on `replication.control`)."""
        node = self.node

        async def status(args: Mapping[str, Any]) -> dict[str, Any]:
            since = args.get("recent_since")
            return dict(await node.status(recent_since=None if since is None else int(since)))

        async def promote(args: Mapping[str, Any]) -> dict[str, Any]:
            before = str(node.epoch)
            return {"epoch": str(node.promote()), "before": before, "takeover_seconds": node.last_takeover_seconds}

        async def metrics(args: Mapping[str, Any]) -> dict[str, Any]:
            registry = server_metrics.REGISTRY.restricted_registry(server_metrics.REPLICA_METRIC_NAMES)
            return {"metrics": generate_latest(registry).decode()}

        return {"replica.status": status, "replica.promote": promote, "replica.metrics": metrics}


async def start(store: Store, settings: ReplicationSettings) -> tuple[RunningReplica, HandoffRecorder]:
    """Run replication for an open store; returns the runner and the MX's hand-off hook."""
    for stream in store.replication.stream_names():
        # Before anything opens the accounts (the leader's service, the follower, sessions):
        # records a crash left durable without their blobs (written beside them, never
        # acknowledged) go, and the leader sends them again.
        try:
            await store.replication.cut_blobless_tail(stream)
        except StoreError as e:  # a damaged log: opening the account says so again, where it is used
            log.error("replication: could not look at the tail of %s: %s", stream, e)
    node = ReplicaNode(store, settings)
    server = grpc.aio.server(options=tlsauth.SERVER_OPTIONS)
    rpc.add_ReplicationServicer_to_server(ReplicationService(node), server)  # type: ignore[no-untyped-call]
    creds = tlsauth.server_credentials(settings.cert, settings.key, settings.peer_cert)
    if server.add_secure_port(settings.listen, creds) == 0:
        raise OSError(f"replication: cannot listen on {settings.listen}")
    await server.start()
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(Follower(node).run()), loop.create_task(HandoffDeliverer(node).run())]
    log.info("replication: node %s, epoch %s (%s), mode %s, listening on %s, peer %s at %s",
             node.node, node.epoch, "primary" if node.is_primary else "secondary", node.mode_name(),
             settings.listen, settings.peer_node, settings.peer)
    return RunningReplica(node, server, tasks), HandoffRecorder(node)


def control_request(path: Path, command: str, timeout: float = 30.0) -> dict[str, object]:
    """The CLI's side: `command` (status, promote, metrics) to the control socket at `path`."""
    reply = control_socket.request(path, "replica." + command, {}, timeout)
    if reply is None:
        raise ConnectionRefusedError(f"no server listens on {path}")
    return dict(reply)
