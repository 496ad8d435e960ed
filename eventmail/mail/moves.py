"""Changes to messages already stored: flags, copy and move (with the junk-training flags), expunge.

Each operation appends one event through the account's writer and returns only when it is
committed: written in a group commit, fsynced, folded into the projections (so the caller's
next read of the view sees it) and, in sync replication, acknowledged by the secondary. The
returned Committed's seq lets an IMAP session tell its own change from another session's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from ..store import Account, Committed


async def set_flags(
    acct: Account, mailbox_id: int, uids: Sequence[int], flags: Iterable[str], *,
    mode: Literal["add", "remove", "replace"] = "add",
) -> Committed:
    """Add (`mode` "add"), remove ("remove") or replace ("replace") the flags of `uids`.

    Keywords are checked against the per-mailbox and per-message caps first (LimitExceeded)."""
    if mode == "add":
        return await acct.change_flags(mailbox_id, uids, add=flags)
    if mode == "remove":
        return await acct.change_flags(mailbox_id, uids, remove=flags)
    if mode == "replace":
        return await acct.change_flags(mailbox_id, uids, add=flags, replace=True)
    raise ValueError(f"unknown flag change {mode!r}")


async def copy(
    acct: Account, source_id: int, uids: Sequence[int], dest_id: int, *, move: bool = False,
) -> tuple[list[int], list[int], Committed]:
    """Copy (or move) messages into another mailbox of the account, in one event; returns (the
    source uids still present, their new uids in dest, the event).

    The copies get the junk-training flags the move means (into Junk: $Junk; out of Junk or
    Rejects into a mailbox of the user's: $NotJunk; eventmail.junk.training), decided by the
    store's registered copy hook under the same lock that allocates the new uids."""
    return await acct.copy(source_id, uids, dest_id, move=move)


async def move_all(acct: Account, source_id: int, dest_id: int) -> list[int]:
    """Move every message of a mailbox into another (RENAME of INBOX, RFC 9051 §6.3.6); the new uids."""
    uids = [m.uid for m in acct.view.messages(source_id)]
    if not uids:
        return []
    _, new_uids, _ = await acct.copy(source_id, uids, dest_id, move=True)
    return new_uids


async def expunge(acct: Account, mailbox_id: int, uids: Sequence[int]) -> Committed:
    """Remove messages from a mailbox for good (RFC 9051 §6.4.3: the caller chose which)."""
    return await acct.expunge(mailbox_id, uids)


__all__ = ["copy", "expunge", "move_all", "set_flags"]
