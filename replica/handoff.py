"""Backup-MX hand-off: a non-primary records accepted mail in its own stream; the primary delivers it once."""

import asyncio
import logging
import secrets
import time
from collections import Counter

from eventmail import metrics
from eventmail.junk.training import REJECTS
from eventmail.mail import ingest, rejects
from eventmail.mime.headers import first_value
from eventmail.proto import events_pb2 as pb
from eventmail.store import Committed, NotFound, StoreError, handoff_stream

from .node import ReplicaNode

log = logging.getLogger(__name__)

TAIL_BATCH = 1024


def refused(mailbox: str, origin: pb.Origin) -> bool:
    """Whether the entry is the Rejects copy of a message the backup MX's junk filter refused
    (filed in Rejects, with the refusing verdict; the verdict's mailbox is the one it was meant
    for). Mail that DMARC quarantined is filed in Junk even when the filter said no."""
    return mailbox == REJECTS and origin.HasField("junk") and not origin.junk.accept


class HandoffRecorder:
    """Installed in the MX's delivery: on a node that is not the primary, mail for an account is
    recorded in this node's hand-off stream instead of the account's stream (which only the
    primary writes: a secondary never allocates UIDs)."""

    def __init__(self, node: ReplicaNode) -> None:
        self.node = node

    async def __call__(self, account: str, mailbox: str, final: bytes, original: bytes, origin: pb.Origin) -> bool:
        node, store = self.node, self.node.store
        if node.is_primary:
            return False
        stream = handoff_stream(node.node)
        if not store.replication.has_stream(stream):
            raise StoreError(f"{stream} has no keys yet (the primary's keyring has not arrived)")
        key = b""
        if not refused(mailbox, origin):  # a Rejects copy is no delivery: a retry the primary accepts must not look like one
            async with store.use_account(account) as acct:
                key = await asyncio.to_thread(
                    lambda: acct.delivery_key(first_value(original, b"message-id") or b"", original))
        blob_id = await store.stream(stream).put_blob(final)
        entry = pb.HandoffQueued(
            id=secrets.token_hex(12), account=account, mailbox=mailbox, blob_id=blob_id, size=len(final),
            origin=origin, delivery_key=key, internal_date=int(time.time()),
        )
        await store.stream(stream).append([pb.Event(handoff_queued=entry)])
        log.info("hand-off %s: %s for %s as backup MX (primary is %s)", entry.id,
                 "refused, its Rejects copy" if refused(mailbox, origin) else "accepted", account, node.epoch.primary)
        return True


class HandoffDeliverer:
    """On the primary: follows the peer's hand-off stream and delivers every entry exactly once.
    The entry's delivery key is recorded with the delivery in the account's log, so an entry
    seen again (after a restart of either node) is recognised and not delivered twice."""

    def __init__(self, node: ReplicaNode) -> None:
        self.node = node
        self.store = node.store

    async def run(self) -> None:
        while True:
            if not self.node.is_primary:
                self.node.role_changed.clear()
                await self.node.role_changed.wait()
                continue
            try:
                await self._follow()
            except StoreError as e:
                log.warning("hand-off delivery paused: %s", e)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        # The peer's hand-off stream, and our own: entries this node accepted while it was not
        # the primary and that the former primary had not delivered yet are ours to deliver now.
        streams = [handoff_stream(self.node.peer_node), handoff_stream(self.node.node)]
        if not all(self.store.replication.has_stream(s) for s in streams):
            await asyncio.sleep(1.0)
            return
        sub = self.store.stream(streams[0]).subscribe()
        try:
            done = dict.fromkeys(streams, 0)
            while self.node.is_primary:
                delivered = 0
                for stream in streams:
                    for c in await self.store.replication.read_events(stream, done[stream]):
                        await self.deliver(stream, c)
                        done[stream] = c.seq
                        delivered += 1
                if delivered:
                    continue
                try:
                    await asyncio.wait_for(sub.get(), 1.0)
                except TimeoutError:
                    pass
                sub.pending()
        finally:
            sub.close()

    async def deliver(self, stream: str, c: Committed) -> None:
        if c.event.WhichOneof("kind") != "handoff_queued":
            return
        h = c.event.handoff_queued
        if h.account not in self.store.system.accounts:
            log.warning("hand-off %s: account %s no longer exists; dropped", h.id, h.account)
            return
        data = await self.store.stream(stream).read_blob(h.blob_id)
        origin = pb.Origin()
        origin.CopyFrom(h.origin)
        origin.handoff_id = h.id
        if refused(h.mailbox, origin):
            async with self.store.use_account(h.account) as acct:
                kept = await rejects.keep_handed_over(acct, data, origin, origin.junk.mailbox,
                                                      h.internal_date or int(time.time()))
            log.info("hand-off %s: %s", h.id, f"kept in {h.account}'s Rejects" if kept else
                     f"{h.account}'s Rejects holds this message already")
            return
        async with self.store.use_account(h.account) as acct:
            mailbox = h.mailbox if acct.view.mailbox(h.mailbox) is not None else "INBOX"
            added = await ingest.hand_off(self.store, acct, mailbox, data, h.flags, h.internal_date or None, origin,
                                          h.delivery_key)
        if added is not None:
            metrics.REPLICA_HANDOFFS.inc()
            log.info("hand-off %s: delivered to %s (%s uid %d)", h.id, h.account, mailbox,
                     added.event.message_added.uid)


async def hand_over_tail(node: ReplicaNode, stream: str, common: int) -> None:
    """A former primary's records after `common` never reached the new primary: accepted mail in
    them is recorded in our hand-off stream (so the new primary delivers it, once), then the
    stream is cut back to the common point. Everything else in the tail is dropped and counted."""
    store = node.store
    tail: list[Committed] = []
    while True:
        more = await store.replication.read_events(stream, tail[-1].seq if tail else common, TAIL_BATCH)
        if not more:
            break
        tail.extend(more)
    entries: list[pb.Event] = []
    dropped: Counter[str] = Counter()
    if stream.startswith("account/") and tail:
        name = stream.split("/", 1)[1]
        own = handoff_stream(node.node)
        try:
            async with store.use_account(name) as acct:
                for c in tail:
                    kind = c.event.WhichOneof("kind") or "?"
                    if kind != "message_added":
                        dropped[kind] += 1
                        continue
                    m = c.event.message_added
                    mb = acct.view.mailbox_by_id(m.mailbox_id)
                    data = await acct.read_message(m.blob_id)
                    key = m.message_id_hash or acct.delivery_key(first_value(data, b"message-id") or b"", data)
                    blob_id = await store.stream(own).put_blob(data)
                    entries.append(pb.Event(handoff_queued=pb.HandoffQueued(
                        id=f"tail-{key.hex()[:24]}", account=name, mailbox=mb.name if mb else "INBOX",
                        blob_id=blob_id, size=len(data), origin=m.origin, delivery_key=key,
                        internal_date=m.internal_date, flags=list(m.flags),
                    )))
        except NotFound:
            dropped["message_added (account unknown)"] += len(tail)
    else:
        for c in tail:
            dropped[c.event.WhichOneof("kind") or "?"] += 1
    if entries:
        await store.stream(handoff_stream(node.node)).append(entries)
    await store.replication.truncate_stream(stream, common)
    log.warning(
        "replication: %s: divergent tail of %d records after seq %d: %d messages handed over to %s, dropped %s",
        stream, len(tail), common, len(entries), node.epoch.primary, dict(dropped) or "nothing",
    )
