"""A replicating node: its epoch and role, fencing, the synchronous-mode gate, and its status."""

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field

from eventmail import metrics
from eventmail.config import ReplicationSettings
from eventmail.store import ReplicationTimeout, Store, handoff_stream

log = logging.getLogger(__name__)

# While a promoted primary runs without a secondary, it says so at most once a minute (on writes).
NO_PEER_REMINDER = 60.0
# A node that starts believing it is the primary has not yet heard whether the peer was promoted
# meanwhile; work with effects outside the store (the outbound queue) waits for that word, or for
# this long without any contact (a peer that is down cannot have been promoted... unless the link
# alone is cut: docs/replication.md says what that costs).
CONFIRM_GRACE_SECONDS = 30.0
# Positions that became durable kept per followed stream for `status(recent=True)`.
DURABLE_RECENT = 256


@dataclass(frozen=True, order=True)
class Epoch:
    """A term of writing. Ordered by (number, primary): two nodes that promote themselves at
    the same time get different epochs, so one stream never has two writers in one epoch."""

    number: int
    primary: str

    def __str__(self) -> str:
        return f"{self.number}/{self.primary}"


@dataclass
class FollowState:
    """One stream this node follows: where its copy ends and where the leader's ends."""

    local_seq: int = 0
    local_time_us: int = 0
    leader_seq: int = 0
    leader_time_us: int = 0
    # When (Unix time, this node's clock) local_seq became durable here: 0.0 until it does in
    # this process (bench/replica.py measures the lag from the client's 250 to this).
    durable_at: float = 0.0
    # The last DURABLE_RECENT positions that became durable here, with when (as durable_at):
    # an observer that asks now and then (bench/replica.py) still learns when each record did.
    recent: collections.deque[tuple[int, float]] = field(
        default_factory=lambda: collections.deque(maxlen=DURABLE_RECENT))

    def durable(self, seq: int, time_us: int) -> None:
        """Our copy became durable up to `seq` (the record's time `time_us`) just now."""
        self.local_seq = seq
        self.local_time_us = time_us
        self.durable_at = time.time()
        self.leader_seq = max(self.leader_seq, seq)
        self.recent.append((seq, self.durable_at))

    @property
    def lag_records(self) -> int:
        return max(0, self.leader_seq - self.local_seq)

    @property
    def lag_seconds(self) -> float:
        if self.lag_records == 0 or not self.leader_time_us:
            return 0.0
        return max(0.0, (self.leader_time_us - self.local_time_us) / 1e6)


class ReplicaNode:
    """What one node knows and decides about replication; the leader, follower and hand-off
    tasks share it. State that must survive a crash (the epoch) goes through the store."""

    def __init__(self, store: Store, settings: ReplicationSettings) -> None:
        self.store = store
        self.settings = settings
        self.node = settings.node
        self.peer_node = settings.peer_node
        state = store.replication.read_node_state()
        if state is None:
            first = self.node if settings.initial_role == "primary" else self.peer_node
            self.epoch = Epoch(1, first)
            self.rejoin = False
            self.no_peer = False
            self._save()
        else:
            self.epoch = Epoch(int(str(state["epoch"])), str(state["primary"]))
            self.rejoin = bool(state.get("rejoin", False))
            self.no_peer = bool(state.get("no_peer", False))
        self.mode = settings.mode
        self.degraded = False
        self.acked: dict[str, int] = {}
        self.shipped: dict[str, int] = {}
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self.follower_connected = False
        self.following: dict[str, FollowState] = {}
        self.leader_connected = False
        self.role_changed = asyncio.Event()
        metrics.REPLICA_EPOCH.set(self.epoch.number)
        metrics.REPLICA_NO_PEER.set(int(self.no_peer))
        metrics.REPLICA_DEGRADED.set(0)
        metrics.watch_replica(lambda: "primary" if self.is_primary else "secondary",
                              lambda: {"peer_follows_us": self.follower_connected,
                                       "we_follow_peer": self.leader_connected})
        self._no_peer_said = 0.0
        self.last_takeover_seconds: float | None = None
        # Whether the peer has told us no newer epoch exists (or we made ours by promoting).
        self.confirmed = False
        self._started = time.monotonic()
        self.apply_fencing()

    # ------------------------------------------------------------ roles

    @property
    def is_primary(self) -> bool:
        return self.epoch.primary == self.node

    def primary_confirmed(self) -> bool:
        """Primary, and either the peer said no newer epoch exists, or we promoted ourselves, or
        no word came for CONFIRM_GRACE_SECONDS since the start (a peer that is down)."""
        return self.is_primary and (self.confirmed or time.monotonic() - self._started >= CONFIRM_GRACE_SECONDS)

    def writes(self, stream: str) -> bool:
        """Whether this node is the writer of `stream` in its current epoch."""
        if stream.startswith("handoff/"):
            return stream == handoff_stream(self.node)
        return self.is_primary

    def fenced(self, stream: str) -> str | None:
        if self.writes(stream):
            return None
        return f"node {self.node} is not the writer in epoch {self.epoch} (the primary is {self.epoch.primary})"

    def apply_fencing(self) -> None:
        self.store.replication.set_replication(self.gate, self.fenced)
        if self.is_primary:
            # The primary owns the keyring: it makes the keys of both hand-off streams, so that
            # each node can read the other's.
            for n in (self.node, self.peer_node):
                self.store.replication.ensure_stream_keys(handoff_stream(n))

    def _save(self) -> None:
        self.store.replication.write_node_state(
            {"epoch": self.epoch.number, "primary": self.epoch.primary, "rejoin": self.rejoin, "no_peer": self.no_peer})

    def observe(self, other: Epoch) -> bool:
        """A peer's epoch: adopt it when newer. Returns True when this node's role changed."""
        if other <= self.epoch:
            if not self.confirmed:
                self.confirmed = True
                self.role_changed.set()
            return False
        was_primary = self.is_primary
        log.warning("replication: epoch %s is newer than ours (%s): following %s", other, self.epoch, other.primary)
        self.epoch = other
        if was_primary:
            # Our log may hold records the new primary never received: hand them over and
            # truncate when following resumes.
            self.rejoin = True
        self._save()
        metrics.REPLICA_EPOCH.set(self.epoch.number)
        self.apply_fencing()
        self._wake_waiters_on_role_change()
        self.role_changed.set()
        return was_primary != self.is_primary

    def promote(self) -> Epoch:
        """Become the writer of every stream in a new, higher epoch (`eventmail replica promote`)."""
        started = time.monotonic()
        if self.is_primary:
            return self.epoch
        self.epoch = Epoch(self.epoch.number + 1, self.node)
        self.confirmed = True  # our own, new epoch: no one has a newer one
        # A takeover happens because the other node is gone: waiting for its acknowledgement
        # (sync mode) would refuse every write. Until a secondary follows again, this node
        # acknowledges after its own fsync, and says so (docs/replication.md, "No peer").
        self.no_peer = self.mode == "sync"
        self._save()
        metrics.REPLICA_EPOCH.set(self.epoch.number)
        metrics.REPLICA_NO_PEER.set(int(self.no_peer))
        self.apply_fencing()
        self.role_changed.set()
        self.last_takeover_seconds = time.monotonic() - started
        log.warning("replication: promoted to primary in epoch %s%s", self.epoch,
                    "; NO PEER: acknowledging after our own fsync until a secondary follows" if self.no_peer else "")
        self._no_peer_said = time.monotonic()
        return self.epoch

    def rejoined(self) -> None:
        """The divergent tail (if any) is handed over and the copy follows the leader again."""
        if self.rejoin:
            self.rejoin = False
            self._save()
            log.info("replication: rejoined as follower of %s", self.epoch.primary)

    # ------------------------------------------------------------ synchronous mode

    async def gate(self, stream: str, seq: int) -> None:
        """Awaited after each local commit: in sync mode, until the follower has `seq` durably."""
        if self.mode != "sync" or stream.startswith("handoff/") or not self.writes(stream) or self.degraded:
            return
        if self.no_peer:
            now = time.monotonic()
            if now - self._no_peer_said >= NO_PEER_REMINDER:
                self._no_peer_said = now
                log.warning("replication: NO PEER: writes are acknowledged after our own fsync only, "
                            "until %s (or a new secondary) follows", self.peer_node)
            return
        if self.acked.get(stream, 0) >= seq:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(stream, [])
        waiters.append((seq, fut))
        try:
            await asyncio.wait_for(fut, self.settings.sync_timeout)
            return
        except TimeoutError:
            pass
        finally:
            if (seq, fut) in waiters:
                waiters.remove((seq, fut))
        metrics.REPLICA_SYNC_TIMEOUTS.inc()
        if self.settings.on_timeout == "degrade":
            if not self.degraded:
                log.warning(
                    "replication: DEGRADED to async: %s seq %d not acknowledged by %s within %.1f s; "
                    "acknowledging without the secondary until it has caught up",
                    stream, seq, self.peer_node, self.settings.sync_timeout,
                )
            self.degraded = True
            metrics.REPLICA_DEGRADED.set(1)
            return
        log.warning("replication: %s seq %d not acknowledged within %.1f s: answering a temporary failure",
                    stream, seq, self.settings.sync_timeout)
        raise ReplicationTimeout(f"the secondary did not acknowledge {stream} seq {seq} in time")

    def _wake_waiters_on_role_change(self) -> None:
        for waiters in self._waiters.values():
            for _, fut in waiters:
                if not fut.done():
                    fut.set_exception(ReplicationTimeout("this node stopped being the primary"))
        self._waiters.clear()

    def on_ack(self, stream: str, seq: int) -> None:
        if seq > self.acked.get(stream, 0):
            self.acked[stream] = seq
        waiters = self._waiters.get(stream)
        if waiters:
            for s, fut in list(waiters):
                if s <= seq and not fut.done():
                    fut.set_result(None)
                    waiters.remove((s, fut))

    def caught_up(self) -> None:
        """The leader shipped everything and the follower acknowledged it all."""
        if self.no_peer and all(self.acked.get(s, 0) >= seq for s, seq in self.shipped.items()):
            self.no_peer = False
            self._save()
            metrics.REPLICA_NO_PEER.set(0)
            log.warning("replication: secondary %s follows and has caught up: back to %s", self.peer_node,
                        self.mode_name())
        if self.degraded and all(self.acked.get(s, 0) >= seq for s, seq in self.shipped.items()):
            self.degraded = False
            metrics.REPLICA_DEGRADED.set(0)
            log.warning("replication: secondary %s has caught up: back to sync mode", self.peer_node)

    # ------------------------------------------------------------ status

    def mode_name(self) -> str:
        if self.mode == "sync" and self.no_peer and self.is_primary:
            return "sync(no peer)"
        if self.mode == "sync" and self.degraded:
            return "sync(degraded)"
        if self.mode == "sync":
            return f"sync({self.settings.on_timeout})"
        return "async"

    def update_lag_metrics(self) -> None:
        metrics.REPLICA_LAG_RECORDS.set(sum(f.lag_records for f in self.following.values()))
        metrics.REPLICA_LAG_SECONDS.set(max((f.lag_seconds for f in self.following.values()), default=0.0))

    async def status(self, recent_since: int | None = None) -> dict[str, object]:
        """Role, epoch and, per stream, positions and lag; with `recent_since`, a followed
        stream's positions past it, of the last DURABLE_RECENT that became durable here, and
        when ([seq, Unix time], oldest first)."""
        streams = []
        for stream in sorted(set(self.store.replication.stream_names())):
            if self.writes(stream):
                try:
                    head = (await self.store.replication.head(stream)).seq
                except Exception:  # a stream without an open writer here (e.g. deleted account)
                    continue
                acked = self.acked.get(stream, 0)
                streams.append({"stream": stream, "role": "writer", "position": head, "peer_position": acked,
                                "lag_records": max(0, head - acked), "lag_seconds": None})
            else:
                f = self.following.get(stream)
                if f is None:
                    try:
                        seq = (await self.store.replication.head(stream)).seq
                    except Exception:
                        continue
                    f = FollowState(local_seq=seq, leader_seq=seq)
                row = {"stream": stream, "role": "follower", "position": f.local_seq,
                       "peer_position": f.leader_seq, "lag_records": f.lag_records,
                       "lag_seconds": round(f.lag_seconds, 3), "durable_at": f.durable_at or None}
                if recent_since is not None:
                    row["durable_recent"] = [list(p) for p in f.recent if p[0] > recent_since]
                streams.append(row)
        return {
            "node": self.node, "peer": self.peer_node, "epoch": str(self.epoch), "primary": self.epoch.primary,
            "role": "primary" if self.is_primary else "secondary", "mode": self.mode_name(),
            "peer_follows_us": self.follower_connected, "we_follow_peer": self.leader_connected,
            "rejoining": self.rejoin, "streams": streams,
        }
