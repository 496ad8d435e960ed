"""Mailbox operations on an account: create (with its parents), rename, delete, subscribe.

As every mail-layer write, each returns only when its events are committed (fsynced, projected,
and in sync replication acknowledged). Names are checked by the protocol (IMAP's rules); the
store refuses a name that exists (Conflict) and a mailbox that does not (NotFound).
"""

from __future__ import annotations

from ..proto import events_pb2 as pb
from ..store import Account, Mailbox
from .metadata import inbox_rename_events
from .moves import move_all


async def create(acct: Account, name: str, special_use: int = pb.SPECIAL_USE_NONE, *,
                 subscribed: bool = True) -> Mailbox:
    """A new mailbox with a new UIDVALIDITY."""
    return await acct.create_mailbox(name, special_use, subscribed=subscribed)


async def rename(acct: Account, old: Mailbox, new: str) -> None:
    """Rename a mailbox and its children; INBOX instead has its messages moved into a new mailbox
    `new` and stays, empty (RFC 9051 §6.3.6), and its METADATA entries are copied to `new`
    (RFC 5464 §4.1); other mailboxes keep theirs, which belong to the mailbox id."""
    if old.name == "INBOX":
        target = await acct.create_mailbox(new, subscribed=False)
        await move_all(acct, old.id, target.id)
        copied = inbox_rename_events(acct.view, old.id, target.id)
        if copied:
            await acct.append(copied)
    else:
        await acct.rename_mailbox(old.name, new)


async def delete(acct: Account, name: str) -> None:
    """Delete a mailbox; its messages go with it."""
    await acct.delete_mailbox(name)


async def set_subscription(acct: Account, name: str, subscribed: bool) -> None:
    """Subscribe or unsubscribe a name, which need not exist (RFC 9051 §6.3.7)."""
    await acct.set_subscribed(name, subscribed)


__all__ = ["create", "delete", "rename", "set_subscription"]
