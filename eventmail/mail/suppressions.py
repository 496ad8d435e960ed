"""An account's suppression list as the webapi shows it (Mox's Suppression records), folded from the queue stream; adds and removes go through mail.queue.

OutboundPolicy (mail.queue) keeps only what submission needs to refuse a recipient. Mox's
webapi also shows when an entry was made, whether by hand, and an id: those are in the
Suppressed events, so they are read from the stream here rather than kept in the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..store import QUEUE, Store, normalize_address
from .queue import suppress, unsuppress


@dataclass(frozen=True)
class Suppression:
    id: int  # the seq of the Suppressed event in the queue stream
    created_us: int
    account: str
    address: str  # normalized (mail.queue's form), what is compared
    manual: bool
    reason: str


def suppressions(store: Store, account: str) -> list[Suppression]:
    """The account's current suppressions, oldest first."""
    current: dict[str, Suppression] = {}
    for c in store.stream(QUEUE).events():
        kind = c.event.WhichOneof("kind")
        if kind == "suppressed" and c.event.suppressed.account == account:
            s = c.event.suppressed
            current[s.address] = Suppression(c.seq, c.time_us, account, s.address, s.manual, s.reason)
        elif kind == "unsuppressed" and c.event.unsuppressed.account == account:
            current.pop(c.event.unsuppressed.address, None)
    return sorted(current.values(), key=lambda s: s.id)


def present(store: Store, account: str, address: str) -> bool:
    addr = normalize_address(address)
    return any(s.address == addr for s in suppressions(store, account))


async def add(store: Store, account: str, address: str, reason: str, manual: bool) -> None:
    await suppress(store, account, address, reason, manual)


async def remove(store: Store, account: str, address: str) -> bool:
    """Take `address` off the list; False when it was not on it (nothing written)."""
    if not present(store, account, address):
        return False
    await unsuppress(store, account, address)
    return True


__all__ = ["Suppression", "add", "present", "remove", "suppressions"]
