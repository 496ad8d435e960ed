"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267): PARTIAL result windows and live (UPDATE) results."""

# A SEARCH or SORT with RETURN (UPDATE) stays live for as long as its mailbox is selected: the
# session keeps its key and its current result (as UIDs, in result order), and after every change
# tells the client what entered the result (ADDTO) and what left it (REMOVEFROM), in ESEARCH
# responses carrying the search's tag (RFC 5267 §4.3). A message expunged from a live result
# leaves it just before its EXPUNGE is told (selected.py), numbered as the client still numbers
# it; every other change (new mail, flags) is found by running the search again once the
# change has been told (session.py). Unsorted results give position 0 (RFC 5267 §4.3: an
# unsorted result has no positions); sorted ones the 1-based position of each message, each
# pair to be applied in the order sent.

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eventmail.imap import commands as c
from eventmail.imap import responses as r

# Live results one session may hold at once (RFC 5267 §4.2 lets a server decline more with
# NOUPDATE). Each costs one search per change of the mailbox, so the bound keeps a client from
# making every change cost a hundred searches. Listed in docs/security.md.
MAX_LIVE = 16


@dataclass
class Live:
    """One live result: `criteria` is SORT's (None for SEARCH), `uids` the result in its order."""

    tag: str
    key: c.SearchKey
    uid: bool
    criteria: tuple[tuple[str, bool], ...] | None
    uids: list[int]


def partial(numbers: Sequence[int], window: tuple[int, int], as_set: Callable[[list[int]], c.SequenceSet]
            ) -> tuple[str, r.Value]:
    """RFC 5267 §4.4: `PARTIAL (lo:hi set)` for the results at positions lo..hi, NIL when none."""
    lo, hi = window
    picked = list(numbers[lo - 1 : hi])
    rng = r.Raw(f"{lo}:{hi}".encode("ascii"))
    return "PARTIAL", (rng, as_set(picked) if picked else None)


def _set(numbers: list[int]) -> c.SequenceSet:
    from eventmail.imap.selected import uid_set  # selected imports this module
    return uid_set(numbers)


def removal(live: Live, removed: set[int], number: Callable[[int], int]) -> r.Response | None:
    """REMOVEFROM for the messages (UIDs) `removed` from `live`, which is updated; `number` gives
    the number the client knows a message by (its UID or sequence number)."""
    gone = [u for u in live.uids if u in removed]
    if not gone:
        return None
    pairs: list[r.Value] = []
    if live.criteria is None:
        pairs = [0, _set([number(u) for u in gone])]
    else:
        left = list(live.uids)
        for u in gone:
            pairs += [left.index(u) + 1, number(u)]
            left.remove(u)
    live.uids = [u for u in live.uids if u not in removed]
    return r.esearch_response(live.tag, live.uid, [("REMOVEFROM", tuple(pairs))])


def addition(live: Live, new_order: list[int], number: Callable[[int], int]) -> r.Response | None:
    """ADDTO for what `new_order` (the result run again, without removed messages) has that
    `live` had not; `live` takes the new order."""
    had = set(live.uids)
    added = [u for u in new_order if u not in had]
    live.uids = list(new_order)
    if not added:
        return None
    pairs: list[r.Value] = []
    if live.criteria is None:
        pairs = [0, _set([number(u) for u in added])]
    else:
        for i, u in enumerate(new_order):
            if u not in had:
                pairs += [i + 1, number(u)]
    return r.esearch_response(live.tag, live.uid, [("ADDTO", tuple(pairs))])


__all__ = ["MAX_LIVE", "Live", "addition", "partial", "removal"]
