"""Retention: an expunged message's bytes are kept for the account's retention window (so a restore
can bring them back), then collected; a restore to a moment before the window is refused clearly.

The collector's rule: a blob may go when no state of the account from the start of the window on
refers to it. Those states are the state at the window's start and every state after it, so the
blobs to keep are those of the mailbox view at the window's start plus those of every message
added since (a message present at some moment after the start was either there at the start or
added after it). The decision is recorded (BlobsCollected, with the ids) before any file goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..store import Account, Store, StoreError

log = logging.getLogger(__name__)

SETTING_RETENTION = "retention.days"
# RFC-free: long enough to notice a mass deletion after a holiday, short enough that "deleted" means
# gone within a month. Per account with `eventmail account set NAME retention.days N`.
DEFAULT_RETENTION_DAYS = 30.0
# How often a server collects (each account in turn, on the primary of a pair).
COLLECT_EVERY_SECONDS = 6 * 3600.0


def retention_days(account: Account) -> float:
    value = account.view.setting(SETTING_RETENTION)
    return float(value) if value else DEFAULT_RETENTION_DAYS


def collected_before(account: Account) -> int:
    """The start of the window at the latest collection (0: never collected): restores to a moment
    before it would miss messages, so they are refused."""
    latest = 0
    for c in account.events():
        if c.event.WhichOneof("kind") == "blobs_collected":
            latest = max(latest, c.event.blobs_collected.before_us)
    return latest


def _unreferenced(account: Account, before_us: int) -> list[bytes]:
    """Blobs of the account that no state from `before_us` on refers to. Reads the log and a
    projection of the past: run it in a thread."""
    keep = set(account.projector_at(before_us).view.blob_ids())
    every: set[bytes] = set()
    collected: set[bytes] = set()
    for c in account.events():
        kind = c.event.WhichOneof("kind")
        if kind == "message_added":
            blob_id = c.event.message_added.blob_id
            every.add(blob_id)
            if c.time_us > before_us:
                keep.add(blob_id)
        elif kind == "blobs_collected":
            collected.update(c.event.blobs_collected.blob_ids)
    return sorted(every - keep - collected)


async def collect(account: Account, now: float) -> tuple[int, int]:
    """Collect what fell out of the account's window; returns (blobs removed, window start in µs)."""
    before_us = int((now - retention_days(account) * 86400) * 1_000_000)
    gone = await asyncio.to_thread(_unreferenced, account, before_us)
    # The current view is read on the event loop, between commits: nothing it holds may go, even
    # if it arrived between the scan and now.
    present = account.view.blob_ids()
    gone = [b for b in gone if b not in present]
    if gone:
        await account.collect_blobs(before_us, gone)
    return len(gone), before_us


async def collect_all(store: Store, now: float) -> dict[str, int]:
    out = {}
    for name in sorted(store.system.accounts):
        async with store.use_account(name) as acct:
            removed, _ = await collect(acct, now)
        if removed:
            log.info("account %s: %d expunged messages past their retention window removed", name, removed)
        out[name] = removed
    return out


async def collect_when_due(store: Store, clock: Callable[[], float] = time.time,
                           every: float = COLLECT_EVERY_SECONDS) -> None:
    """A server's task (on the primary of a pair)."""
    while True:
        await asyncio.sleep(every)
        try:
            await collect_all(store, clock())
        except StoreError as e:
            log.warning("retention: %s (tried again in %.0f s)", e, every)
