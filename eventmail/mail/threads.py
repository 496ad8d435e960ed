"""Threading: which thread a message joins when it enters an account (RFC 8474 THREADID), decided once and recorded.

The decision (`thread_of`) is made by the store's add under the account's write lock, through
the registration (eventmail.opening), and goes into MessageAdded.thread_id; replay never
re-threads. It reads an index of what came before (THREAD_INDEX, a pure projection of the
MessageAdded events). The rules, after Mox's (store/threads.go):

1. A message whose Message-ID an earlier message had joins that message's thread (the Sent copy
   and the list's copy of one message, a message imported twice).
2. Else the messages it references (References, or In-Reply-To when there is none, RFC 5256 §3),
   nearest first: the first known one with the same base subject (RFC 5256 §2.1) gives the
   thread. A reference to a known message under another subject does not join: a reply that
   changed the subject starts a new conversation. A delivery status notification
   (multipart/report, RFC 6522) joins whatever it references.
3. A message with references of which none is known starts a thread: a reply to mail this
   account never saw is not joined to another conversation by its subject.
4. A message without references whose subject is a reply or forward ("Re:", "Fwd:", RFC 5256
   §2.1) joins the newest thread with that base subject in the same mailbox within the last
   four weeks.
5. Anything else starts a thread (recorded as 0: the thread id is then its own email id).

The index keeps messages after they are expunged: a reply to a deleted message still joins its
conversation. Messages added in the same group commit as the message they answer are not yet in
the index and start a thread of their own (a reply arrives seconds after its parent, a commit
takes milliseconds). Events from before threading hold no thread id: each of those messages is
the first of its own thread (store.projection: thread id 0 reads as the email id), and later
replies join those threads by the rules above.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import cast

from ..mime.headers import message_ids, references
from ..mime.subject import base_subject_reply
from ..proto import events_pb2 as pb
from ..store import Change, Delivery, Mailbox

# Rule 4's window (Mox's): a "Re: lunch" a month later is another lunch.
SUBJECT_WINDOW_US = 4 * 7 * 24 * 3600 * 1_000_000
# References looked at, nearest first: a long References chain is mostly ancestors that lead to
# the same thread.
MAX_REFERENCES = 50

_SCHEMA = """
CREATE TABLE thread_msgid(message_id BLOB PRIMARY KEY, thread_id INTEGER NOT NULL, subject TEXT NOT NULL)
  WITHOUT ROWID;
CREATE TABLE thread_subject(mailbox_id INTEGER NOT NULL, subject TEXT NOT NULL, saved_us INTEGER NOT NULL,
  thread_id INTEGER NOT NULL, PRIMARY KEY(mailbox_id, subject)) WITHOUT ROWID;
"""


# The common form of a Message-ID field, one "<id>" with no white space (bytes.split's set: \s).
_ONE_ID = re.compile(rb"<([^<>\s]+)>")


def _own_id(structure: pb.MessageStructure) -> bytes | None:
    return _own_id_of(structure.envelope.message_id)


def _own_id_of(value: bytes) -> bytes | None:
    # The common form: the msg-id message_ids would find, without its unfolding and scanning (a
    # replay takes every delivery's).
    if (m := _ONE_ID.fullmatch(value)) is not None:
        return m.group(1)
    ids = message_ids(value)
    return ids[0] if ids else None


class ThreadIndex:
    """The projection `thread_of` reads: Message-ID -> thread, and (mailbox, base subject) ->
    newest thread. Pure: everything comes from the MessageAdded event and the row the mailbox
    view made of it."""

    name = "threads-1"
    schema = _SCHEMA

    def apply(self, db: sqlite3.Connection, seq: int, event: pb.Event) -> Sequence[Change]:
        return ()  # only deliveries are indexed, and those fold in runs (apply_run)

    @staticmethod
    def prepare(added: pb.MessageAdded) -> tuple[bytes | None, str]:
        """The index's keys of a delivery: its own Message-ID and its base subject (RFC 5256
        §2.1), as `thread_of` recorded them in the event; computed from the envelope, as
        `thread_of` does, for an event without them. A cold replay does this in its reading
        child process (store.reader)."""
        if added.HasField("thread_subject"):
            # Recorded: 28,900 instructions of parsing the envelope saved a delivery (issue 14).
            return added.thread_message_id or None, added.thread_subject
        envelope = added.structure.envelope  # each access of a nested field makes a new wrapper
        return _own_id_of(envelope.message_id), base_subject_reply(envelope.subject)[0]

    def apply_run(self, db: sqlite3.Connection, run: Sequence[Delivery]) -> Sequence[Sequence[Change]]:
        """Index the messages of a run the view took in (each with the thread id and save date
        it gave them), in log order."""
        ids: dict[bytes, tuple[bytes, int, str]] = {}
        subjects: dict[tuple[int, str], tuple[int, str, int, int]] = {}
        for row, facts in run:
            if row is None:
                continue
            own, subject = cast(tuple[bytes | None, str], facts)  # this projection's prepare()
            if own is not None and own not in ids:
                # The first message with a Message-ID keeps it: later ones joined its thread (rule 1).
                ids[own] = (own, row[11], subject)
            if subject:
                subjects[row[0], subject] = (row[0], subject, row[12], row[11])  # the newest
        # The two tables are independent, and each row is what the last statement of the log
        # order would leave: the first of a Message-ID (or the one already indexed), the newest
        # of a subject in a mailbox.
        db.executemany("INSERT OR IGNORE INTO thread_msgid VALUES (?,?,?)", ids.values())
        db.executemany("INSERT OR REPLACE INTO thread_subject VALUES (?,?,?,?)", subjects.values())
        return [()] * len(run)


THREAD_INDEX = ThreadIndex()


def thread_of(
    db: sqlite3.Connection, raw: bytes, structure: pb.MessageStructure, mailbox: Mailbox, now_us: int
) -> tuple[int, bytes | None, str]:
    """The thread a message entering `mailbox` joins, by the rules above (0: it starts one), and
    the index's keys it was decided by (its own Message-ID, its base subject): the store records
    all three in the MessageAdded event, and the index takes the keys from there."""
    own = _own_id(structure)
    subject, reply = base_subject_reply(structure.envelope.subject)
    return _decide(db, raw, structure, mailbox, now_us, own, subject, reply), own, subject


def thread_keys(structure: pb.MessageStructure) -> tuple[bytes | None, str]:
    """The keys `thread_of` decides by and records (own Message-ID, base subject), alone."""
    return _own_id(structure), base_subject_reply(structure.envelope.subject)[0]


def _decide(
    db: sqlite3.Connection, raw: bytes, structure: pb.MessageStructure, mailbox: Mailbox, now_us: int,
    own: bytes | None, subject: str, reply: bool,
) -> int:
    if own is not None:
        row = db.execute("SELECT thread_id FROM thread_msgid WHERE message_id=?", (own,)).fetchone()
        if row is not None:
            return int(row[0])  # rule 1
    body = structure.body
    refs = [r for r in references(raw, body.header_start, body.body_start) if r != own]
    is_report = body.type == b"multipart" and body.subtype == b"report"
    for ref in reversed(refs[-MAX_REFERENCES:]):  # rule 2: nearest first
        row = db.execute("SELECT thread_id, subject FROM thread_msgid WHERE message_id=?", (ref,)).fetchone()
        if row is not None and (is_report or row[1] == subject):
            return int(row[0])
    if refs or not reply or not subject:
        return 0  # rules 3 and 5
    row = db.execute("SELECT thread_id FROM thread_subject WHERE mailbox_id=? AND subject=? AND saved_us>?",
                     (mailbox.id, subject, now_us - SUBJECT_WINDOW_US)).fetchone()
    return int(row[0]) if row is not None else 0  # rule 4


__all__ = ["THREAD_INDEX", "ThreadIndex", "thread_keys", "thread_of"]
