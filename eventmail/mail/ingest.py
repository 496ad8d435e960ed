"""Ingest: every way a message enters an account (SMTP delivery, submission's Sent copy, APPEND, import, hand-off) or the outbound queue.

Callers parse the message once, off the event loop, and decide everything first (mail
authentication, the junk plan, the target mailbox); an operation here only writes what was
decided. Each one stores the message bytes (fsynced), then appends one event through the
account's writer, and returns only when that event is committed: written in a group commit,
fsynced, folded into the projections, and, in sync replication, acknowledged by the secondary.
An operation that finds the message there already (a retried delivery, a duplicate import)
appends nothing and returns None. Errors are the store's (StoreFull, StoreError, NotFound,
Conflict): the protocol turns them into its replies.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable

from ..junk.features import analyze_message, stored_features
from ..junk.projection import junk_view, offered
from ..mime.headers import first_value, without_fields
from ..mime.parsed import ParsedMessage
from ..proto import events_pb2 as pb
from ..store import QUEUE, Account, Committed, Mailbox, Store
from . import moves, webhooks

# The Sent copy, once. Submission files a copy of every message it accepts into the sender's Sent
# mailbox (so that a client that does not save one, a phone's or a script's, still leaves a
# trace), and most mail clients APPEND their own copy there as well (mutt's Fcc, Thunderbird,
# Apple Mail, K-9). As Gmail does, the client's APPEND of a message the server filed a moment ago
# (same Message-ID and author, same mailbox) adds nothing: the APPEND answers with the UID of
# the server's copy, which takes the client's flags. A later APPEND of the same message (a user
# restoring an old copy) is stored as any other. docs/architecture.md "The Sent copy, once".
SENT_DEDUP_SECONDS = 10 * 60
_SPACE = re.compile(rb"\s+")


def _message_id(message: bytes) -> bytes:
    return first_value(message, b"message-id") or b""


def _sent_key(acct: Account, structure: pb.MessageStructure) -> bytes | None:
    """The key that ties a Sent copy to the client's APPEND of the same message: its Message-ID
    (folding whitespace dropped) and its first author address (lower case); None without either."""
    env = structure.envelope
    message_id = _SPACE.sub(b"", env.message_id)
    authors = [a for a in getattr(env, "from") if a.mailbox and a.host]
    if not env.has_message_id or not message_id or not authors:
        return None
    author = (authors[0].mailbox + b"@" + authors[0].host).lower()
    return acct.sent_key(message_id, author)


async def deliver(
    store: Store, acct: Account, mailbox: str, parsed: ParsedMessage, prefix: bytes, *, key_basis: bytes,
    origin: pb.Origin, features: pb.JunkFeatures | None = None, row: bytes | None = None,
) -> Committed | None:
    """Deliver `prefix + parsed.raw` into `mailbox` (SMTP: the MX, and submission to local accounts).

    `prefix` is this account's whole header fields (Received, Authentication-Results, the junk
    verdict, a DKIM-Signature); the structure is the one parse moved past it, not a new parse.
    `features` are the junk plan's (None: those of a message filed into that mailbox); `row`, with
    them, the junk projection's content row of their words, made where they were found
    (`junk.wordrows.content_row`, in SMTP's analysis process), so that the fold does not make it
    again on the event loop (`junk.projection.offered`).

    Deliveries are deduplicated by a keyed hash of `key_basis` (the message as the sender gave
    it) and its Message-ID: a retried transaction adds nothing and returns None, but only once
    the first copy is acknowledged too (sync replication), so its 250 promises what the first did.
    """
    final = prefix + parsed.raw
    given, special_use = features, acct.mailbox_required(mailbox).special_use if features is None else 0

    def prepare() -> tuple[pb.JunkFeatures, bytes, bytes]:
        found = given if given is not None else stored_features(final, origin, special_use)
        return found, acct.delivery_key(_message_id(key_basis), key_basis), acct.blobs.put(final)

    # CPU and the fsynced blob write in one trip off the loop (Account.add_message `blob_id`)
    junk, key, blob_id = await asyncio.to_thread(prepare)
    with offered(junk, row if given is not None else None):
        added = await acct.add_message(mailbox, final, origin=origin, delivery_key=key, junk=junk,
                                       structure=parsed.structure_with_prefix(len(prefix)), blob_id=blob_id)
    if added is None:
        await store.stream(acct.stream_id).replicated()
    else:
        await webhooks.queue_incoming(store, acct, added, final)
    return added


async def file_sent(
    acct: Account, sent: str, parsed: ParsedMessage, prefix: bytes, origin: pb.Origin,
) -> Committed | None:
    """File a submitted message, as signed (`prefix` is its DKIM-Signature fields), into the
    account's Sent mailbox (found by role: eventmail.mail.roles), \\Seen. Recorded with its
    Sent key (see SENT_DEDUP_SECONDS); None when a copy with that key was filed before (the same
    message submitted again: a client retrying after a lost reply)."""
    final = prefix + parsed.raw
    structure = parsed.structure_with_prefix(len(prefix))
    features, blob_id = await asyncio.to_thread(
        lambda: (stored_features(final, origin, pb.SPECIAL_USE_SENT), acct.blobs.put(final)))
    return await acct.add_message(sent, final, flags=["\\Seen"], origin=origin, structure=structure,
                                  junk=features, delivery_key=_sent_key(acct, structure) or b"", blob_id=blob_id)


async def sent_copy_of(acct: Account, mailbox_id: int, structure: pb.MessageStructure, flags: Iterable[str]) -> int | None:
    """For an APPEND: the UID of the server's Sent copy of this same message, filed into this
    mailbox within SENT_DEDUP_SECONDS and still there, given the client's `flags` too; None when
    there is none and the message is to be stored."""
    key = _sent_key(acct, structure)
    where = acct.view.delivered_to(key) if key is not None else None
    if where is None or where[0] != mailbox_id:
        return None
    msg = acct.view.message(*where)
    if msg is None or time.time() - msg.internal_date > SENT_DEDUP_SECONDS:
        return None
    missing = sorted(set(flags) - set(msg.flags))
    if missing:
        await moves.set_flags(acct, mailbox_id, [msg.uid], missing)
    return msg.uid


# The message parsed once and its content features, computed where the server does that CPU work:
# eventmail.smtp.analysis's worker processes when `analysis_workers` is set (the second core),
# else a thread. serve.py hands its analyser to the IMAP listeners.
Analyze = Callable[[bytes], Awaitable[tuple[ParsedMessage, pb.JunkFeatures]]]


async def analyze_append(raw: bytes, analyze: Analyze | None = None) -> tuple[pb.MessageStructure, pb.JunkFeatures]:
    """An APPENDed message's structure and content features, in one trip off the event loop
    (through `analyze`, or a thread without one). Raises MimeTooDeep (mime.parse_message)."""
    parsed, content = await (analyze(raw) if analyze is not None else asyncio.to_thread(analyze_message, raw))
    return parsed.structure, content


async def append(
    acct: Account, mailbox_id: int, raw: bytes, structure: pb.MessageStructure, flags: Iterable[str],
    internal_date: float, internal_date_tz: int, origin: pb.Origin, content: pb.JunkFeatures | None = None,
) -> Committed:
    """IMAP APPEND: add the message as the client gave it, with its flags and internal date
    (`internal_date_tz`: the date's zone, in minutes east of UTC). Never deduplicated (the
    caller asks `sent_copy_of` first).

    A message the account already holds in another mailbox is an offline move (mbsync and
    offlineimap move a message between folders by uploading it to the new one and deleting it
    from the old): it gets the junk-training flags a MOVE between the two would (into Junk:
    $Junk), from the store's copy hook, so it trains as a MOVE does.

    `content`: the message's content features from `analyze_append`; the features stored are
    then those `stored_features` gives (an APPEND has no verified sender: only a Sent copy adds
    whom it went to), without tokenizing the message a second time."""
    mb = acct.view.mailbox_by_id(mailbox_id)
    special_use = mb.special_use if mb is not None else pb.SPECIAL_USE_NONE
    hook = acct.registration.copy_flags

    def prepare() -> tuple[Mailbox | None, pb.JunkFeatures, bytes]:
        source = _held_elsewhere(acct, mailbox_id, raw) if mb is not None and hook is not None else None
        return source, stored_features(raw, origin, special_use, content), acct.blobs.put(raw)

    # CPU and the fsynced blob write in one trip off the loop (Account.add_message `blob_id`)
    source, features, blob_id = await asyncio.to_thread(prepare)
    if source is not None and mb is not None and hook is not None:
        add, remove = hook(source, mb, True)
        flags = sorted((set(flags) - set(remove)) | set(add))
    added = await acct.add_message(mailbox_id, raw, flags, internal_date, internal_date_tz, origin=origin,
                                   structure=structure, junk=features, blob_id=blob_id)
    assert added is not None  # no dedup asked for
    return added


def _held_elsewhere(acct: Account, mailbox_id: int, raw: bytes) -> Mailbox | None:
    """The mailbox other than `mailbox_id` that holds this message (the oldest such), or that it
    was expunged from lately (mbsync expunges the old copy before it uploads the new one when
    the old mailbox comes first in its list), the bytes compared without the X-TUID field
    mbsync adds to what it uploads (its sync marker)."""
    candidates = sorted({acct.blobs.blob_id(raw), acct.blobs.blob_id(without_fields(raw, lambda f: f.name == b"x-tuid"))})
    holder = acct.view.mailbox_holding(candidates, mailbox_id)
    if holder is not None:
        return acct.view.mailbox_by_id(holder)
    left = junk_view(acct).expunged_from(candidates)
    return acct.view.mailbox_by_id(left) if left is not None and left != mailbox_id else None


async def import_message(
    acct: Account, mailbox: str, raw: bytes, flags: Iterable[str], internal_date: float | None, origin: pb.Origin,
) -> Committed | None:
    """Import one message from a mailbox file into `mailbox` (which must exist); None when the
    same bytes are in that mailbox already. The structure and features are computed by the
    store's registered hook, off the event loop."""
    return await acct.add_message(mailbox, raw, flags, internal_date, origin=origin, skip_duplicate=True)


async def hand_off(
    store: Store, acct: Account, mailbox: str, raw: bytes, flags: Iterable[str], internal_date: float | None,
    origin: pb.Origin, delivery_key: bytes,
) -> Committed | None:
    """Deliver a message a backup MX accepted (replica.handoff), with the delivery key it
    computed: None when the same delivery reached the account before."""
    # The backup MX answered 250 for it: it is delivered even over the quota, never lost.
    added = await acct.add_message(mailbox, raw, flags=list(flags), internal_date=internal_date, origin=origin,
                                   delivery_key=delivery_key, enforce_quota=False)
    if added is not None:
        await webhooks.queue_incoming(store, acct, added, raw)
    return added


async def queue_outbound(
    store: Store, transaction_id: str, account: str, mail_from: str, rcpt_to: list[str], message: bytes,
    requiretls: bool,
) -> Committed:
    """Queue a submitted message for remote recipients: its bytes (fsynced), then its
    OutboundQueued event in the queue stream, committed as above."""
    blob_id = await store.stream(QUEUE).put_blob(message)
    (committed,) = await store.stream(QUEUE).append([pb.Event(outbound_queued=pb.OutboundQueued(
        id=transaction_id, account=account, mail_from=mail_from, rcpt_to=rcpt_to, blob_id=blob_id,
        size=len(message), requiretls=requiretls,
    ))])
    return committed


__all__ = ["SENT_DEDUP_SECONDS", "Analyze", "analyze_append", "append", "deliver", "file_sent", "hand_off", "import_message", "queue_outbound",
           "sent_copy_of"]
