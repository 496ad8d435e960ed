"""The Rejects mailbox's upkeep: keeping a rejected message, removing it when a retry is accepted, pruning.

The junk filter (eventmail.junk.delivery) decides whether a message is rejected and what its
dedup key is; these operations write what it decided, as every mail-layer write: each returns
only when its events are committed (fsynced, projected, in sync replication acknowledged).
"""

from __future__ import annotations

import asyncio

from ..junk.delivery import REJECTS_MAX, JunkFilter, Plan, reject_key, rejects_to_prune
from ..junk.features import stored_features
from ..junk.projection import junk_view
from ..junk.training import REJECTS
from ..proto import events_pb2 as pb
from ..store import Account, Conflict, Mailbox, NotFound


async def _rejects_mailbox(acct: Account) -> Mailbox:
    mb = acct.view.mailbox(REJECTS)
    if mb is not None:
        return mb
    try:
        return await acct.create_mailbox(REJECTS, subscribed=True)
    except Conflict:
        return acct.mailbox_required(REJECTS)


async def store_reject(
    junk: JunkFilter, acct: Account, final: bytes, original: bytes, plan: Plan, origin: pb.Origin,
) -> bool:
    """Keep a rejected message in Rejects (unless a copy is there already); False for a duplicate.
    Then prune Rejects (`prune`), on the filter's clock."""
    return await _keep(acct, final, plan.features, plan.mailbox.id, reject_key(acct, original), origin,
                       int(junk.clock()))


async def keep_handed_over(acct: Account, final: bytes, origin: pb.Origin, mailbox: str, when: int) -> bool:
    """Keep the Rejects copy of a message a backup MX refused (replica.handoff: its verdict, in
    `origin.junk`, was decided there and is not decided again); `mailbox` is the one it was meant
    for. The dedup key is taken from `final` (the copy as kept: its Message-ID, or those bytes)."""
    dest = acct.view.mailbox(mailbox)
    if dest is None or mailbox == REJECTS:
        dest = acct.mailbox_required("INBOX")
    features = await asyncio.to_thread(stored_features, final, origin, dest.special_use)
    return await _keep(acct, final, features, dest.id, reject_key(acct, final), origin, when)


async def _keep(
    acct: Account, final: bytes, features: pb.JunkFeatures, destined: int, key: bytes, origin: pb.Origin, now: int,
) -> bool:
    if junk_view(acct).rejects(key):
        return False
    mb = await _rejects_mailbox(acct)
    f = pb.JunkFeatures()
    f.CopyFrom(features)
    f.destined_mailbox_id = destined
    f.reject_key = key
    # \Seen, and neither $Junk nor $NotJunk: a reject is neutral, so that it does not make
    # the sender's next attempt fail on reputation (Mox does the same).
    try:
        await acct.add_message(mb.id, final, flags=["\\Seen"], origin=origin, junk=f, internal_date=now)
    except NotFound:
        mb = await _rejects_mailbox(acct)  # deleted meanwhile by a client: made again
        await acct.add_message(mb.id, final, flags=["\\Seen"], origin=origin, junk=f, internal_date=now)
    await prune(acct, now)
    return True


async def accepted(acct: Account, original: bytes) -> int:
    """A retry was accepted after all: its copies leave Rejects. Returns how many were removed."""
    copies = junk_view(acct).rejects(reject_key(acct, original))
    for mailbox_id, uid in copies:
        await acct.expunge(mailbox_id, [uid])
    return len(copies)


async def prune(acct: Account, now: int) -> list[int]:
    """Keep Rejects to the newest REJECTS_DAYS days and at most REJECTS_MAX messages; the uids removed."""
    mb = acct.view.mailbox(REJECTS)
    if mb is None:
        return []
    gone = rejects_to_prune(acct.view.messages(mb.id), now)
    if gone:
        await acct.expunge(mb.id, gone)
    return gone


__all__ = ["REJECTS_MAX", "accepted", "keep_handed_over", "prune", "store_reject"]
