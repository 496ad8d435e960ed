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
from typing import TYPE_CHECKING, Protocol

from ..proto import events_pb2 as pb

if TYPE_CHECKING:
    from .projection import Mailbox


@dataclass(frozen=True, slots=True)
class Change:
    """What folding one event changed in one projection, published with the commit that made it.

    Subclasses are the typed changes of each projection (store.projection: the mailbox view's;
    junk.projection: the filter's training)."""


# The message table's row of a delivery, as the mailbox view writes it (store.projection.SCHEMA):
# mailbox_id, uid, blob_id, size, internal_date, internal_date_tz, flags (space-separated), modseq,
# structure (serialized), added_seq, email_id, thread_id (RFC 8474), saved_us (RFC 8514).
MessageRow = tuple[int, int, bytes, int, int, int, str, int, bytes, int, int, int, int]


# One MessageAdded event of a run, as the mailbox view took it in (`Projection.apply_run`): the
# row the view wrote (None when it refused the message: a UID below UIDNEXT, a missing mailbox;
# a refused one changes nothing), and what this projection's `prepare` made of the event (None
# for a projection without one). A plain tuple: a replay makes one per delivery and projection.
Delivery = tuple[MessageRow | None, object]


class Projection(Protocol):
    """A view of an account's log that the store keeps beside its mailbox view.

    Its tables (`schema`) live in the account's in-memory database, so they are checkpointed and
    sealed with it; `apply` folds one event right after the mailbox view folded it, inside the
    commit's transaction, and must be pure (DESIGN.md "Events are facts and decisions": a
    projection never decides; STYLE.md §3).

    `apply_run` folds a run of consecutive MessageAdded events at once, right after the mailbox
    view folded the whole run (a catch-up, a cold replay, a commit of one or several deliveries:
    every MessageAdded is folded so, `apply` never sees one), each as the view took it in
    (`Delivery`); it returns the changes of each and must leave the state that folding each
    delivery alone leaves (a later delivery of the run changes nothing an earlier one's fold reads).

    A projection may also have `prepare(added: pb.MessageAdded) -> object`: what its `apply_run`
    needs of a delivery's event, computed from the event alone (pure, and picklable: a long replay
    runs it in the reading child process, store.reader, on the other core, and passes the result
    through a pipe). Its result is the `facts` of the delivery; without `prepare` they are None.
    It cannot be in the Protocol (an optional method); store.projection looks it up.
    """

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
# the thread it belongs to (RFC 8474 THREADID; 0: it starts one) and the two keys it was decided
# by (own Message-ID or None, base subject): a decision of the layer above, made under the
# account's write lock and recorded, keys and all, in the MessageAdded event.
ThreadOf = Callable[[sqlite3.Connection, bytes, pb.MessageStructure, "Mailbox", int], tuple[int, bytes | None, str]]


@dataclass(frozen=True)
class Registration:
    """Everything the layers above register with the store; passed to `Store.open`."""

    projections: tuple[Projection, ...] = ()
    message_facts: MessageFacts | None = None
    copy_flags: CopyFlags | None = None
    thread_of: ThreadOf | None = None
