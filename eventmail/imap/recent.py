"""Which session a message is \\Recent for (RFC 3501 §2.3.2): a per-mailbox claim mark shared by the sessions of one store."""

# RFC 3501 §2.3.2: a message is \Recent in the first session to have the mailbox selected since
# it arrived, and in no other. The mark is session state, not mail state, so it is kept in
# memory beside the store and not written as an event: every message with a UID above a
# mailbox's mark is unclaimed. SELECT claims all of them (EXAMINE sees them without claiming,
# as Dovecot does); a message arriving while sessions have the mailbox selected goes to the
# first of them to be told. After a restart the marks start at 0, so every message is recent
# once more to the first session: the RFC's "first session to be notified" with nothing
# remembered, which is what a server without a persistent recent record can honestly say.

from __future__ import annotations

import weakref
from collections.abc import Iterable

from eventmail.store import Store


class RecentMarks:
    """Per mailbox id: the highest UID some session has claimed."""

    def __init__(self) -> None:
        self._mark: dict[int, int] = {}

    def unclaimed(self, mailbox_id: int, uids: Iterable[int]) -> list[int]:
        mark = self._mark.get(mailbox_id, 0)
        return [u for u in uids if u > mark]

    def claim_all(self, mailbox_id: int, uids: Iterable[int], upto: int) -> set[int]:
        """SELECT: the unclaimed ones among `uids` become this session's; the mark moves to `upto`."""
        mine = set(self.unclaimed(mailbox_id, uids))
        self._mark[mailbox_id] = max(self._mark.get(mailbox_id, 0), upto)
        return mine

    def claim(self, mailbox_id: int, uid: int) -> bool:
        """A new arrival told to a session that has the mailbox selected: its if nobody has it yet."""
        if uid <= self._mark.get(mailbox_id, 0):
            return False
        self._mark[mailbox_id] = uid
        return True


_MARKS: weakref.WeakKeyDictionary[Store, dict[str, RecentMarks]] = weakref.WeakKeyDictionary()


def marks(store: Store, account: str) -> RecentMarks:
    """The marks of one account of a store (shared by all the store's listeners)."""
    per_store = _MARKS.setdefault(store, {})
    m = per_store.get(account)
    if m is None:
        m = per_store[account] = RecentMarks()
    return m


__all__ = ["RecentMarks", "marks"]
