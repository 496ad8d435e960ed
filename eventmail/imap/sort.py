"""SORT and ESORT (RFC 5256, RFC 5957 DISPLAYFROM/DISPLAYTO, RFC 5267 §3): the matches of a SEARCH in the order asked."""

# The keys are read from what delivery recorded (the envelope of eventmail/mime, the size and the
# internal date), so sorting never re-parses a message; only the search part may read bodies.
# Comparisons: i;ascii-casemap for SUBJECT and the address keys (RFC 5256 §3), i;unicode-casemap
# approximated by Unicode case folding for DISPLAYFROM / DISPLAYTO (RFC 5957 §3); ties, and the
# end of every comparison, go by sequence number (RFC 5256 §3).

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from eventmail.imap import commands as c
from eventmail.imap import context
from eventmail.imap import responses as r
from eventmail.imap.fetch import MessageData
from eventmail.imap.messages import matching, start_live
from eventmail.mime.addresses import addr_spec
from eventmail.mime.subject import base_subject, base_subject_reply
from eventmail.mime.words import decode_words
from eventmail.proto import events_pb2 as pb

if TYPE_CHECKING:
    from eventmail.imap.session import Session

def ascii_upper(text: str) -> str:
    """i;ascii-casemap (RFC 4790 §9.2): only a-z are mapped."""
    return text.translate(_UPPER)


_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def _first(addresses: Sequence[pb.Address]) -> pb.Address | None:
    """The first address as ENVELOPE lists it; a group's start counts, its name the mailbox (as Dovecot)."""
    for a in addresses:
        if not a.group_end:
            return a
    return None


def _address_key(addresses: Sequence[pb.Address]) -> str:
    """RFC 5256 §3: the addr-mailbox (local part) of the first address."""
    a = _first(addresses)
    return "" if a is None else ascii_upper(a.mailbox.decode("utf-8", "replace"))


def _display_key(addresses: Sequence[pb.Address]) -> str:
    """RFC 5957 §3: the first address's display name, or its addr-spec when it has none."""
    a = _first(addresses)
    if a is None:
        return ""
    name = decode_words(a.name).strip() if a.name else ""
    return (name or addr_spec(a)).casefold()


def sent_date(data: MessageData) -> int:
    """RFC 5256 §3 DATE: the Date header in UTC; the internal date when it cannot be read."""
    env = data.structure().envelope
    if env.has_date:
        parsed = email.utils.parsedate_tz(env.date.decode("latin-1"))
        if parsed is not None:
            try:
                return int(email.utils.mktime_tz(parsed))
            except (OverflowError, ValueError):
                pass
    return data.msg.internal_date


def sort_value(key: str, data: MessageData) -> str | int:
    env = data.structure().envelope
    if key == "ARRIVAL":
        return data.msg.internal_date
    if key == "DATE":
        return sent_date(data)
    if key == "SIZE":
        return data.msg.size
    if key == "SUBJECT":
        return ascii_upper(base_subject(env.subject))
    if key in ("FROM", "TO", "CC"):
        return _address_key(getattr(env, {"FROM": "from", "TO": "to", "CC": "cc"}[key]))
    if key == "DISPLAYFROM":
        return _display_key(getattr(env, "from"))
    if key == "DISPLAYTO":
        return _display_key(env.to)
    raise AssertionError(key)  # pragma: no cover (the parser admits only SORT_KEYS)


class _Desc:
    """A sort value with its order turned round (REVERSE)."""

    __slots__ = ("v",)

    def __init__(self, v: str | int) -> None:
        self.v = v

    def __lt__(self, other: _Desc) -> bool:
        return other.v < self.v  # type: ignore[operator]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.v == other.v

    __hash__ = None  # type: ignore[assignment]


def sorted_matches(criteria: Sequence[tuple[str, bool]], found: list[tuple[int, MessageData]]) -> list[int]:
    """Sequence numbers of `found` in the criteria's order, sequence number last (RFC 5256 §3)."""

    def key(item: tuple[int, MessageData]) -> tuple[object, ...]:
        seq, data = item
        parts: list[object] = []
        for name, reverse in criteria:
            v = sort_value(name, data)
            parts.append(_Desc(v) if reverse else v)
        parts.append(seq)
        return tuple(parts)

    return [seq for seq, _d in sorted(found, key=key)]


def _ordered_set(numbers: list[int]) -> c.SequenceSet:
    """RFC 5267 §3.2 ALL in sort order: ascending runs as ranges, the order otherwise kept."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and runs[-1][1] == n - 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return c.SequenceSet(tuple(c.SeqRange(a, b) for a, b in runs))


async def sort(s: Session, cmd: c.Sort) -> AsyncIterator[r.Response]:
    sel = s.need_selected()
    found = await matching(s, cmd.key)
    order = sorted_matches(cmd.criteria, found)
    numbers = [sel.uids[seq - 1] for seq in order] if cmd.uid else order
    if cmd.return_options is None:
        yield r.Untagged((r.Atom("SORT"), *numbers))  # RFC 5256 §4
    else:
        # RFC 5267 §3.2: ESEARCH with MIN / MAX the first and last in sort order
        opts = set(cmd.return_options) or {"ALL"}
        opts.discard("CONTEXT")  # RFC 5267 §4.1: a hint
        if "UPDATE" in opts:
            uids = [sel.uids[seq - 1] for seq in order]
            for resp in start_live(sel, cmd.tag, cmd.key, cmd.uid, cmd.criteria, uids, cmd.partial):
                yield resp
        results: list[tuple[str, r.Value]] = []
        if numbers and "MIN" in opts:
            results.append(("MIN", numbers[0]))
        if numbers and "MAX" in opts:
            results.append(("MAX", numbers[-1]))
        if "COUNT" in opts:
            results.append(("COUNT", len(numbers)))
        if numbers and "ALL" in opts:
            results.append(("ALL", _ordered_set(numbers)))
        if cmd.partial is not None:
            results.append(context.partial(numbers, cmd.partial, _ordered_set))  # RFC 5267 §4.4
        yield r.esearch_response(cmd.tag, cmd.uid, results)
    yield r.ok(cmd.tag, "SORT completed")


__all__ = ["ascii_upper", "base_subject", "base_subject_reply", "sent_date", "sort", "sorted_matches"]
