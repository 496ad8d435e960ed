"""What the layers above register with the store: account projections, and hooks for what the store cannot know.

The store knows the log, the blobs and the mailbox view it allocates UIDs from; it knows nothing
of junk, MIME or protocols (DESIGN.md "Layout": the store imports nothing above it). What those
add is registered here, once, where the store is opened (eventmail.opening), so no opener can
forget it and `export --at` and `junk play` fold events through the same projections as the
server does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ..proto import events_pb2 as pb

if TYPE_CHECKING:
    from .projection import Mailbox


@dataclass(frozen=True, slots=True)
class Change:
    """What folding one event changed in one projection, published with the commit that made it.

    Subclasses are the typed changes of each projection (store.projection: the mailbox view's;
    junk.projection: the filter's training)."""


class Delivery(NamedTuple):
    """One MessageAdded event of a run, as the mailbox view took it in (`Projection.apply_run`).

    A named tuple, not a frozen dataclass: a replay makes one per delivery, and a frozen
    dataclass's constructor (one `object.__setattr__` per field) cost 3 µs of the ~70 µs a
    replayed delivery took."""

    seq: int
    added: pb.MessageAdded
    # Whether the view added the message (it refuses a UID below UIDNEXT, a missing mailbox):
    # a refused one changes nothing. When it did: the message's row as the view wrote it.
    taken: bool
    thread_id: int = 0  # RFC 8474 THREADID (the email id of a message that starts a thread)
    saved_us: int = 0  # RFC 8514 save date
    flags: str = ""  # the message's flags, space-separated


class Projection(Protocol):
    """A view of an account's log that the store keeps beside its mailbox view.

    Its tables (`schema`) live in the account's in-memory database, so they are checkpointed and
    sealed with it; `apply` folds one event right after the mailbox view folded it, inside the
    commit's transaction, and must be pure (DESIGN.md "Events are facts and decisions": a
    projection never decides; STYLE.md §3).

    `apply_run` folds a run of consecutive MessageAdded events at once, right after the mailbox
    view folded the whole run (a catch-up, a cold replay, a commit of several deliveries), each
    as the view took it in (`Delivery`); it returns the changes of each and must leave the state
    that `apply` of each event in turn leaves (a later delivery of the run changes nothing an
    earlier one's fold reads)."""

    @property
    def name(self) -> str: ...

    @property
    def schema(self) -> str: ...

    def apply(self, db: sqlite3.Connection, seq: int, event: pb.Event) -> Sequence[Change]: ...

    def apply_run(self, db: sqlite3.Connection, run: Sequence[Delivery]) -> Sequence[Sequence[Change]]: ...


# (message bytes, origin, the mailbox it is added to) -> its MIME structure and what the
# registered projections learn from it. Called off the event loop, only when the caller did not
# pass them (callers that parsed once at ingress pass their parse).
MessageFacts = Callable[[bytes, "pb.Origin | None", "Mailbox"], tuple[pb.MessageStructure, pb.JunkFeatures]]
# (source mailbox, destination mailbox, whether it is a move) -> (flags to add, flags to remove) on
# every copy and move: a decision of the layer above, recorded in the MessagesCopied event (junk
# training).
CopyFlags = Callable[["Mailbox", "Mailbox", bool], tuple[list[str], list[str]]]
# (the account's database, message bytes, its structure, the mailbox it is added to, now in µs) ->
# the thread it belongs to (RFC 8474 THREADID; 0: it starts one): a decision of the layer above,
# made under the account's write lock and recorded in the MessageAdded event.
ThreadOf = Callable[[sqlite3.Connection, bytes, pb.MessageStructure, "Mailbox", int], int]


@dataclass(frozen=True)
class Registration:
    """Everything the layers above register with the store; passed to `Store.open`."""

    projections: tuple[Projection, ...] = ()
    message_facts: MessageFacts | None = None
    copy_flags: CopyFlags | None = None
    thread_of: ThreadOf | None = None
