"""The mailbox view of an account: a pure projection of its events into an in-memory SQLite database."""

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..proto import events_pb2 as pb
from .registration import Change, MessageRow, Projection, Registration

BLOB_INDEX = "CREATE INDEX message_blob ON message(mailbox_id, blob_id)"
SCHEMA = f"""
CREATE TABLE mailbox(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, uidvalidity INTEGER NOT NULL,
  uidnext INTEGER NOT NULL, special_use INTEGER NOT NULL, highest_modseq INTEGER NOT NULL);
CREATE TABLE subscription(name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE message(
  mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, blob_id BLOB NOT NULL, size INTEGER NOT NULL,
  internal_date INTEGER NOT NULL, internal_date_tz INTEGER NOT NULL, flags TEXT NOT NULL,
  modseq INTEGER NOT NULL, structure BLOB NOT NULL, added_seq INTEGER NOT NULL,
  email_id INTEGER NOT NULL, thread_id INTEGER NOT NULL, saved_us INTEGER NOT NULL,
  PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;
{BLOB_INDEX};
CREATE TABLE expunged(mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, modseq INTEGER NOT NULL,
  PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;
CREATE TABLE delivery_key(hash BLOB PRIMARY KEY, mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE setting(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('seq', 0), ('time_us', 0), ('next_mailbox_id', 1), ('view', 2), ('storage', 0);
"""
# The version of SCHEMA above, kept in meta: a checkpoint of another version is not restored (the
# view is rebuilt from the log). 2: email_id, thread_id and saved_us of each message (RFC 8474,
# RFC 8514), and the storage the account's messages take (RFC 9208 STORAGE, in meta).
VIEW_VERSION = 2


@dataclass(frozen=True, slots=True)
class Mailbox:
    id: int
    name: str
    uidvalidity: int
    uidnext: int
    special_use: int
    highest_modseq: int


@dataclass(frozen=True, slots=True)
class Message:
    mailbox_id: int
    uid: int
    blob_id: bytes
    size: int
    internal_date: int
    internal_date_tz: int
    flags: tuple[str, ...]
    modseq: int
    # RFC 8474 §5.1 EMAILID: the sequence number of the event that first added the message
    # (kept by copies and moves, and by a restore); RFC 8474 §5.2 THREADID: the email id of
    # the first message of its thread, as recorded when it entered the account.
    email_id: int = 0
    thread_id: int = 0
    saved_us: int = 0  # RFC 8514 save date: when the event that put it in this mailbox was recorded


@dataclass(frozen=True, slots=True)
class MailboxChanged(Change):
    """A mailbox was created, renamed, deleted or given another special use."""

    mailbox_id: int


@dataclass(frozen=True, slots=True)
class SubscriptionChanged(Change):
    name: str
    subscribed: bool


@dataclass(frozen=True, slots=True)
class MessagesChanged(Change):
    """Messages of one mailbox that arrived, changed flags, or left (RFC 9051 §7.4: EXISTS,
    FETCH FLAGS, EXPUNGE)."""

    mailbox_id: int
    added: tuple[int, ...] = ()
    flags: tuple[int, ...] = ()
    expunged: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class SettingChanged(Change):
    key: str


Changes = list[Change]


def _marker(p: Projection) -> str:
    return f"projection:{p.name}"


def connect(registered: Sequence[Projection] = ()) -> sqlite3.Connection:
    """A fresh, empty projection. Temporary tables stay in memory: nothing readable on disk."""
    db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA temp_store=MEMORY")
    db.executescript(SCHEMA)
    for p in registered:
        db.executescript(p.schema)
        db.execute("INSERT INTO meta VALUES (?, 1)", (_marker(p),))
    return db


def from_bytes(data: bytes, registered: Sequence[Projection] = ()) -> sqlite3.Connection | None:
    """A projection restored from a checkpoint's serialized database; None when the checkpoint
    lacks a registered projection (it is then rebuilt from the log).

    The image is copied page by page into a plain in-memory database and then dropped: a
    deserialized database keeps the whole image in one buffer *and* every page it touches in the
    page cache, and the buffer grows by reallocation, so it held two to three times the data
    (measured: 29.5 MB of SQLite memory for a 14 MB projection after 1,000 deliveries)."""
    image = sqlite3.connect(":memory:", isolation_level=None)
    image.deserialize(data)
    db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
    image.backup(db)
    image.close()
    db.execute("PRAGMA temp_store=MEMORY")
    version = db.execute("SELECT value FROM meta WHERE key='view'").fetchone()
    if version is None or version[0] != VIEW_VERSION:
        return None
    for p in registered:
        if db.execute("SELECT 1 FROM meta WHERE key=?", (_marker(p),)).fetchone() is None:
            return None
    return db


def _flags(text: str) -> list[str]:
    return text.split(" ") if text else []


def _flag_text(flags: Sequence[str]) -> str:
    if not flags:  # most deliveries: a replay folds 100,000 of them
        return ""
    if len(flags) == 1:  # most others (\\Seen): no set, no sort
        return flags[0]
    return " ".join(sorted(set(flags)))


def _meta(db: sqlite3.Connection, key: str) -> int:
    row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return int(row[0])


def _set_meta(db: sqlite3.Connection, key: str, value: int) -> None:
    db.execute("UPDATE meta SET value=? WHERE key=?", (value, key))


def _touch(db: sqlite3.Connection, mailbox_id: int, seq: int) -> None:
    db.execute("UPDATE mailbox SET highest_modseq=? WHERE id=?", (seq, mailbox_id))


# A MessageAdded event made ready to fold (`prepare_added`): (seq, time in µs, the message
# table's row if the view takes the message in, the delivery key or b"", each registered
# projection's `prepare` of the event in registration order), computed from the event alone. A
# long replay's reading child process makes these (store.reader), so the folding process runs
# little more than SQLite for a delivery. A plain tuple, five long (an event to fold is three):
# a pickled tuple subclass cost 2.5 µs more a delivery to send through the pipe and rebuild.
Added = tuple[int, int, MessageRow, bytes, tuple[object, ...]]
# An event to fold: (seq, time in µs, event), or a delivery made ready (Added).
Item = tuple[int, int, pb.Event] | Added


# Each registered projection's `prepare` (None: it has none), in registration order.
Preparers = tuple[Callable[[pb.MessageAdded], object] | None, ...]


def preparers(registered: Sequence[Projection]) -> Preparers:
    """The registered projections' `prepare` functions: looked up once per fold, not per delivery."""
    return tuple(getattr(p, "prepare", None) for p in registered)


def prepare_added(preps: Preparers, seq: int, time_us: int, m: pb.MessageAdded) -> Added:
    """A delivery made ready to fold. Pure: everything comes from the event, its seq and time."""
    email_id = m.email_id or seq
    flags = m.flags
    # Not deterministic=True: MessageStructure has no map field, the bytes are the same and
    # upb's deterministic encoder is a quarter slower.
    row = (m.mailbox_id, m.uid, m.blob_id, m.size, m.internal_date, m.internal_date_tz,
           _flag_text(flags) if flags else "", seq, m.structure.SerializeToString(), seq, email_id,
           m.thread_id or email_id, time_us)
    # A list made into a tuple: a generator's frame per delivery cost more than the three calls.
    facts = tuple([None if prepare is None else prepare(m) for prepare in preps])
    return seq, time_us, row, m.message_id_hash, facts


def prepare_record(preps: Preparers, seq: int, time_us: int, plaintext: bytes) -> Item:
    """A record's plaintext as an item to fold: a delivery made ready, any other event parsed.
    Module-level and pure, so a replay's reading child runs it (store.reader; `preps` are
    functions, pickled by name)."""
    event = pb.Event()
    event.ParseFromString(plaintext)
    if event.WhichOneof("kind") == "message_added":
        return prepare_added(preps, seq, time_us, event.message_added)
    return seq, time_us, event


def _fold(
    db: sqlite3.Connection, seq: int, time_us: int, event: pb.Event, registered: Sequence[Projection]
) -> tuple[Change, ...]:
    """Fold one event other than a MessageAdded (those fold in runs, `_fold_added`) into the
    mailbox view, then into each registered projection; what changed. Pure: everything it needs
    is in the event.

    Events that name something absent (a deleted mailbox, an expunged UID) change nothing, so
    any sequence of events folds without error and replay equals the incremental state."""
    _set_meta(db, "time_us", time_us)  # first: the save date of what this event adds (RFC 8514)
    handler = _HANDLERS.get(event.WhichOneof("kind") or "")
    changes: list[Change] = list(handler(db, seq, event)) if handler is not None else []
    # Registered projections (junk statistics, reputation) may read what the view now holds.
    for p in registered:
        changes.extend(p.apply(db, seq, event))
    return tuple(changes)


def apply_all(
    db: sqlite3.Connection, items: Iterable[Item], registered: Sequence[Projection] = (),
    changes: bool = True,
) -> list[tuple[Change, ...]]:
    """Fold events in one transaction: all of them, or (on an error) none.

    Runs of consecutive MessageAdded events (deliveries: a catch-up, a cold replay, a commit of
    one or several messages) are folded together, a few statements for the whole run
    (`_fold_added`); every other event one by one. Both leave the state folding each event
    alone leaves (tests/test_projection_batch.py). A delivery comes as its event or made ready
    (`Added`, from a replay's reading child); both fold the same (`prepare_added` is the one
    place that reads the event).

    The seq is written once at the end: nothing inside the transaction reads it, and a replay of
    100,000 events saves a statement per event. The time is set before each single event's fold
    (it is the save date of what the event adds, RFC 8514), and once after a run, whose rows
    carry their own.

    Without `changes` (a replay: nobody is told of them) the mailbox view's change objects of
    runs are not made and an empty list is returned; the state is the same."""
    out: list[tuple[Change, ...]] = []
    last: int | None = None
    run: list[Added] = []
    preps = preparers(registered)
    db.execute("BEGIN")
    try:
        for item in items:
            if len(item) == 5:  # a delivery made ready (Added)
                run.append(item)
            else:
                seq, time_us, event = item
                if event.WhichOneof("kind") == "message_added":
                    run.append(prepare_added(preps, seq, time_us, event.message_added))
                else:
                    if run:
                        out += _fold_run(db, run, registered, changes)
                        run = []
                    folded = _fold(db, seq, time_us, event, registered)
                    if changes:
                        out.append(folded)
            if len(run) >= RUN_MAX:
                out += _fold_run(db, run, registered, changes)
                run = []
            last = item[0]
        if run:
            out += _fold_run(db, run, registered, changes)
        if last is not None:
            _set_meta(db, "seq", last)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return out


# Deliveries folded together at most: bounds the rows held in memory during a replay.
RUN_MAX = 2000


def _fold_run(
    db: sqlite3.Connection, run: list[Added], registered: Sequence[Projection], want: bool = True,
) -> list[tuple[Change, ...]]:
    changes, rows = _fold_added(db, run, want)
    for i, p in enumerate(registered):
        theirs = p.apply_run(db, list(zip(rows, [a[4][i] for a in run], strict=True)))
        if want:
            for mine, t in zip(changes, theirs, strict=True):
                mine.extend(t)
    return [tuple(c) for c in changes]


def _fold_added(
    db: sqlite3.Connection, run: list[Added], want: bool = True
) -> tuple[list[Changes], list[MessageRow | None]]:
    """Fold a run of deliveries (one, for a single delivery) into the mailbox view, one after
    the other, on the mailboxes' UIDNEXT read once; the rows written with one statement per
    table. Returns the changes of each delivery (without `want`, none: an empty list) and the
    row the view wrote for each (None: refused), for the registered projections."""
    ids = {a[2][0] for a in run}
    uidnext: dict[int, int] = dict(db.execute(
        f"SELECT id, uidnext FROM mailbox WHERE id IN ({','.join('?' * len(ids))})", tuple(ids)).fetchall())
    touched: dict[int, tuple[int, int]] = {}
    rows: list[MessageRow] = []
    keys = []
    size = 0
    out: list[Changes] = []
    taken: list[MessageRow | None] = []
    for seq, _time_us, row, key, _facts in run:
        mid, uid = row[0], row[1]
        nxt = uidnext.get(mid)
        # As _insert_message: UIDs only grow (RFC 9051 §2.3.1.1), a missing mailbox takes nothing.
        if nxt is None or uid < 1 or nxt > uid:
            if want:
                out.append([])
            taken.append(None)
            continue
        uidnext[mid] = uid + 1
        touched[mid] = (uid + 1, seq)
        rows.append(row)
        size += row[3]
        if key:
            keys.append((key, mid, uid))
        if want:
            out.append([MessagesChanged(mid, added=(uid,))])
        taken.append(row)
    db.executemany("UPDATE mailbox SET uidnext=?, highest_modseq=? WHERE id=?",
                   [(n, seq, mid) for mid, (n, seq) in touched.items()])
    db.executemany("INSERT INTO message VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.executemany("INSERT OR IGNORE INTO delivery_key VALUES (?,?,?)", keys)
    if size:
        db.execute("UPDATE meta SET value=value+? WHERE key='storage'", (size,))
    _set_meta(db, "time_us", run[-1][1])
    return out, taken


def _mailbox_created(db: sqlite3.Connection, seq: int, e: pb.Event) -> Changes:
    m = e.mailbox_created
    if m.mailbox_id < _meta(db, "next_mailbox_id"):
        return []  # mailbox ids are allocated increasing and never reused, even after a delete
    if db.execute("SELECT 1 FROM mailbox WHERE name=?", (m.name,)).fetchone():
        return []
    db.execute("INSERT INTO mailbox VALUES (?,?,?,?,?,?)", (m.mailbox_id, m.name, m.uidvalidity, 1, m.special_use, seq))
    if m.subscribed:
        db.execute("INSERT OR IGNORE INTO subscription VALUES (?)", (m.name,))
    _set_meta(db, "next_mailbox_id", max(_meta(db, "next_mailbox_id"), m.mailbox_id + 1))
    return [MailboxChanged(m.mailbox_id)]


def _mailbox_renamed(db: sqlite3.Connection, seq: int, e: pb.Event) -> Changes:
    m = e.mailbox_renamed
    if db.execute("SELECT 1 FROM mailbox WHERE name=? AND id!=?", (m.name, m.mailbox_id)).fetchone():
        return []
    cur = db.execute(
        "UPDATE mailbox SET name=?, uidvalidity=?, highest_modseq=? WHERE id=?", (m.name, m.uidvalidity, seq, m.mailbox_id)
    )
    return [MailboxChanged(m.mailbox_id)] if cur.rowcount else []


def _mailbox_deleted(db: sqlite3.Connection, seq: int, e: pb.Event) -> Changes:
    mid = e.mailbox_deleted.mailbox_id
    (size,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM message WHERE mailbox_id=?", (mid,)).fetchone()
    _set_meta(db, "storage", _meta(db, "storage") - size)
    cur = db.execute("DELETE FROM mailbox WHERE id=?", (mid,))
    db.execute("DELETE FROM message WHERE mailbox_id=?", (mid,))
    db.execute("DELETE FROM expunged WHERE mailbox_id=?", (mid,))
    return [MailboxChanged(mid)] if cur.rowcount else []


def _mailbox_subscription(db: sqlite3.Connection, seq: int, e: pb.Event) -> Changes:
    s = e.mailbox_subscription
    if s.subscribed:
        cur = db.execute("INSERT OR IGNORE INTO subscription VALUES (?)", (s.name,))
    else:
        cur = db.execute("DELETE FROM subscription WHERE name=?", (s.name,))
    return [SubscriptionChanged(s.name, s.subscribed)] if cur.rowcount else []


def _mailbox_special_use(db: sqlite3.Connection, seq: int, e: pb.Event) -> Changes:
    s = e.mailbox_special_use
    cur = db.execute("UPDATE mailbox SET special_use=? WHERE id=?", (s.special_use, s.mailbox_id))
    return [MailboxChanged(s.mailbox_id)] if cur.rowcount else []


def _insert_message(
    db: sqlite3.Connection, seq: int, mailbox_id: int, uid: int, blob_id: bytes, size: int,
    date: int, tz: int, flags: str, structure: bytes, email_id: int, thread_id: int,
) -> bool:
    # One statement moves the mailbox's uidnext only if the UID may be taken: UIDs only grow
    # (RFC 9051 §2.3.1.1), an old UID is never reassigned, and a missing mailbox takes nothing.
    if uid < 1 or not db.execute(
        "UPDATE mailbox SET uidnext=?, highest_modseq=? WHERE id=? AND uidnext<=?", (uid + 1, seq, mailbox_id, uid)
    ).rowcount:
        return False
    db.execute(
        "INSERT INTO message VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (mailbox_id, uid, blob_id, size, date, tz, flags, seq, structure, seq, email_id, thread_id,
         _meta(db, "time_us")),
    )
    db.execute("UPDATE meta SET value=value+? WHERE key='storage'", (size,))
    return True


def _new_flags(old: str, add: Iterable[str], remove: Iterable[str], replace: bool) -> str:
    current = set() if replace else set(_flags(old))
    current |= set(add)
    current -= set(remove)
    return " ".join(sorted(current))


def _flags_changed(db: sqlite3.Connection, seq: int, e: pb.Event) -> Changes:
    f = e.flags_changed
    changed: list[int] = []
    for uid in f.uids:
        row = db.execute("SELECT flags FROM message WHERE mailbox_id=? AND uid=?", (f.mailbox_id, uid)).fetchone()
        if row is None:
            continue
        new = _new_flags(row[0], f.add, f.remove, f.replace)
        if new != row[0]:
            # RFC 7162 §3.1: the MODSEQ of a message changes when its metadata changes.
            db.execute("UPDATE message SET flags=?, modseq=? WHERE mailbox_id=? AND uid=?", (new, seq, f.mailbox_id, uid))
            changed.append(uid)
    if not changed:
        return []
    _touch(db, f.mailbox_id, seq)
    return [MessagesChanged(f.mailbox_id, flags=tuple(changed))]


def _expunge(db: sqlite3.Connection, seq: int, mailbox_id: int, uids: Iterable[int]) -> Changes:
    gone: list[int] = []
    freed = 0
    for uid in uids:
        rows = db.execute("DELETE FROM message WHERE mailbox_id=? AND uid=? RETURNING size", (mailbox_id, uid)).fetchall()
        if rows:
            freed += rows[0][0]
            # Kept for QRESYNC's VANISHED (RFC 7162 §3.2.10).
            db.execute("INSERT OR REPLACE INTO expunged VALUES (?,?,?)", (mailbox_id, uid, seq))
            gone.append(uid)
    if not gone:
        return []
    _set_meta(db, "storage", _meta(db, "storage") - freed)
    _touch(db, mailbox_id, seq)
    return [MessagesChanged(mailbox_id, expunged=tuple(gone))]


def _messages_expunged(db: sqlite3.Connection, seq: int, e: pb.Event) -> Changes:
    return _expunge(db, seq, e.messages_expunged.mailbox_id, e.messages_expunged.uids)


def _messages_copied(db: sqlite3.Connection, seq: int, e: pb.Event) -> Changes:
    c = e.messages_copied
    moved = []
    added = []
    for src_uid, dst_uid in zip(c.source_uids, c.dest_uids, strict=False):
        row = db.execute(
            "SELECT blob_id, size, internal_date, internal_date_tz, flags, structure, email_id, thread_id "
            "FROM message WHERE mailbox_id=? AND uid=?",
            (c.source_mailbox_id, src_uid),
        ).fetchone()
        if row is None:
            continue
        flags = _new_flags(row[4], c.add_flags, c.remove_flags, False)
        # RFC 8474 §5.1: a copy (and a moved message) keeps its EMAILID, hence its THREADID.
        if _insert_message(db, seq, c.dest_mailbox_id, dst_uid, row[0], row[1], row[2], row[3], flags, row[5],
                           row[6], row[7]):
            moved.append(src_uid)
            added.append(dst_uid)
    changes: Changes = [MessagesChanged(c.dest_mailbox_id, added=tuple(added))] if added else []
    if c.move:
        changes += _expunge(db, seq, c.source_mailbox_id, moved)
    return changes


def _account_setting(db: sqlite3.Connection, seq: int, e: pb.Event) -> Changes:
    db.execute("INSERT OR REPLACE INTO setting VALUES (?,?)", (e.account_setting.key, e.account_setting.value))
    return [SettingChanged(e.account_setting.key)]


_HANDLERS: dict[str, Callable[[sqlite3.Connection, int, pb.Event], Changes]] = {
    "mailbox_created": _mailbox_created,
    "mailbox_renamed": _mailbox_renamed,
    "mailbox_deleted": _mailbox_deleted,
    "mailbox_subscription": _mailbox_subscription,
    "mailbox_special_use": _mailbox_special_use,
    "flags_changed": _flags_changed,
    "messages_expunged": _messages_expunged,
    "messages_copied": _messages_copied,
    "account_setting": _account_setting,
}


# ---------------------------------------------------------------- queries


# UIDs per `IN (...)` query: well under SQLite's limit on bound parameters (999 before 3.32).
_IN_CHUNK = 500
_MESSAGE_COLUMNS = "mailbox_id, uid, blob_id, size, internal_date, internal_date_tz, flags, modseq, email_id, thread_id, saved_us"


def _message(r: tuple[int, int, bytes, int, int, int, str, int, int, int, int]) -> Message:
    return Message(r[0], r[1], r[2], r[3], r[4], r[5], tuple(_flags(r[6])), r[7], r[8], r[9], r[10])


class MailboxView:
    """Read access to an account's mailbox projection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    @property
    def seq(self) -> int:
        return _meta(self.db, "seq")

    @property
    def time_us(self) -> int:
        """The time of the last event folded in."""
        return _meta(self.db, "time_us")

    @property
    def next_mailbox_id(self) -> int:
        return _meta(self.db, "next_mailbox_id")

    @property
    def storage_used(self) -> int:
        """The bytes of every message in every mailbox, a copy counted as often as it is there
        (RFC 9208 §5.1 STORAGE; as Mox counts)."""
        return _meta(self.db, "storage")

    def mailboxes(self) -> list[Mailbox]:
        return [Mailbox(*r) for r in self.db.execute("SELECT * FROM mailbox ORDER BY name")]

    def mailbox(self, name: str) -> Mailbox | None:
        if name.upper() == "INBOX":
            name = "INBOX"  # RFC 9051 §5.1: INBOX is case-insensitive
        r = self.db.execute("SELECT * FROM mailbox WHERE name=?", (name,)).fetchone()
        return Mailbox(*r) if r else None

    def mailbox_by_id(self, mailbox_id: int) -> Mailbox | None:
        r = self.db.execute("SELECT * FROM mailbox WHERE id=?", (mailbox_id,)).fetchone()
        return Mailbox(*r) if r else None

    def subscriptions(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM subscription ORDER BY name")]

    def keywords(self, mailbox_id: int) -> set[str]:
        """Every flag some message of the mailbox has (system flags included)."""
        rows = self.db.execute("SELECT DISTINCT flags FROM message WHERE mailbox_id=?", (mailbox_id,))
        return {f for (text,) in rows for f in _flags(text)}

    def messages(self, mailbox_id: int) -> list[Message]:
        rows = self.db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM message WHERE mailbox_id=? ORDER BY uid",
            (mailbox_id,),
        )
        return [_message(r) for r in rows]

    def message(self, mailbox_id: int, uid: int) -> Message | None:
        r = self.db.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM message WHERE mailbox_id=? AND uid=?",
            (mailbox_id, uid),
        ).fetchone()
        return _message(r) if r else None

    def messages_of(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, Message]:
        """The messages of these UIDs that the mailbox holds, by UID: a query per 500 UIDs, where
        `message` per UID costs a statement each (ten sessions fold every change of a mailbox)."""
        wanted = sorted(set(uids))
        out: dict[int, Message] = {}
        for i in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[i : i + _IN_CHUNK]
            rows = self.db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM message WHERE mailbox_id=? AND uid IN ({','.join('?' * len(chunk))})",
                (mailbox_id, *chunk),
            )
            for r in rows:
                out[r[1]] = _message(r)
        return out

    def uids_flagged(self, mailbox_id: int, flag: str) -> list[int]:
        """The UIDs of the mailbox's messages that have `flag` (EXPUNGE's \\Deleted), in one
        query; flags are stored space-separated and hold no space (see `tally`)."""
        rows = self.db.execute(
            "SELECT uid FROM message WHERE mailbox_id=? AND instr(' ' || flags || ' ', ?) > 0 ORDER BY uid",
            (mailbox_id, f" {flag} "),
        )
        return [r[0] for r in rows]

    def structure(self, mailbox_id: int, uid: int) -> pb.MessageStructure | None:
        r = self.db.execute("SELECT structure FROM message WHERE mailbox_id=? AND uid=?", (mailbox_id, uid)).fetchone()
        if r is None:
            return None
        s = pb.MessageStructure()
        s.ParseFromString(r[0])
        return s

    def mailbox_holding(self, blob_ids: Sequence[bytes], other_than: int) -> int | None:
        """The lowest id of a mailbox other than `other_than` holding a message with one of
        `blob_ids`: one statement, an index lookup per mailbox (the index is by mailbox first)."""
        marks = ",".join("?" * len(blob_ids))
        r = self.db.execute(
            f"SELECT b.id FROM mailbox b WHERE b.id<>? AND EXISTS (SELECT 1 FROM message m WHERE m.mailbox_id=b.id "
            f"AND m.blob_id IN ({marks})) ORDER BY b.id LIMIT 1", (other_than, *blob_ids)).fetchone()
        return int(r[0]) if r else None

    def uid_of_blob(self, mailbox_id: int, blob_id: bytes) -> int | None:
        r = self.db.execute(
            "SELECT uid FROM message WHERE mailbox_id=? AND blob_id=? LIMIT 1", (mailbox_id, blob_id)
        ).fetchone()
        return int(r[0]) if r else None

    def count(self, mailbox_id: int) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM message WHERE mailbox_id=?", (mailbox_id,)).fetchone()[0])

    def uids(self, mailbox_id: int) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT uid FROM message WHERE mailbox_id=? ORDER BY uid", (mailbox_id,))]

    def tally(self, mailbox_id: int) -> tuple[int, int, int, int, int]:
        """(messages, unseen, deleted, octets, deleted octets) of a mailbox, counted inside SQLite:
        a STATUS of a large mailbox makes no Message of each row. Flags are stored space-separated
        and a flag holds no space (an atom), so ` \\Seen ` inside ` flags ` is an exact match."""
        r = self.db.execute(
            "SELECT COUNT(*), TOTAL(instr(' ' || flags || ' ', ' \\Seen ') = 0), "
            "TOTAL(instr(' ' || flags || ' ', ' \\Deleted ') > 0), TOTAL(size), "
            "TOTAL(CASE WHEN instr(' ' || flags || ' ', ' \\Deleted ') > 0 THEN size ELSE 0 END) "
            "FROM message WHERE mailbox_id=?",
            (mailbox_id,),
        ).fetchone()
        return int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])

    def expunged_since(self, mailbox_id: int, modseq: int) -> list[int]:
        rows = self.db.execute(
            "SELECT uid FROM expunged WHERE mailbox_id=? AND modseq>? ORDER BY uid", (mailbox_id, modseq)
        )
        return [r[0] for r in rows]

    def delivered(self, key: bytes) -> bool:
        """Whether a delivery with this key (Message-ID and content) was already made."""
        return self.db.execute("SELECT 1 FROM delivery_key WHERE hash=?", (key,)).fetchone() is not None

    def delivered_to(self, key: bytes) -> tuple[int, int] | None:
        """The (mailbox id, UID) the message added with this key got (it may be expunged since)."""
        r = self.db.execute("SELECT mailbox_id, uid FROM delivery_key WHERE hash=?", (key,)).fetchone()
        return (int(r[0]), int(r[1])) if r else None

    def setting(self, key: str) -> str | None:
        r = self.db.execute("SELECT value FROM setting WHERE key=?", (key,)).fetchone()
        return str(r[0]) if r else None

    def blob_ids(self) -> set[bytes]:
        return {r[0] for r in self.db.execute("SELECT DISTINCT blob_id FROM message")}

    def dump(self) -> list[tuple[object, ...]]:
        """Every row of every table, in a canonical order: two equal states dump equal."""
        out: list[tuple[object, ...]] = []
        for table in ("mailbox", "subscription", "message", "expunged", "delivery_key", "setting", "meta"):
            rows = self.db.execute(f"SELECT * FROM {table}").fetchall()
            out.extend((table, *r) for r in sorted(rows, key=repr))
        return out


class Projector:
    """An account's mailbox view and its registered projections, in one in-memory database.

    The account's live state is one; `export --at` and `junk play` fold events into scratch ones,
    through the same registration, never into the account's."""

    def __init__(self, registration: Registration, db: sqlite3.Connection | None = None) -> None:
        self.registration = registration
        self.db = db if db is not None else connect(registration.projections)
        self.view = MailboxView(self.db)

    @classmethod
    def restore(cls, registration: Registration, state: bytes) -> "Projector | None":
        """From a checkpoint's serialized database; None when it lacks a registered projection."""
        db = from_bytes(state, registration.projections)
        return None if db is None else cls(registration, db)

    def apply(self, items: Iterable[Item]) -> list[tuple[Change, ...]]:
        """Fold events (seq, time in µs, event) in one transaction; the changes of each."""
        return apply_all(self.db, items, self.registration.projections)

    def replay(self, items: Iterable[Item]) -> None:
        """Fold events as `apply` does, to the same state, making no change objects (nobody is
        told of a replay's changes).

        A replay into an empty view (a cold open, a rebuild) makes the messages' blob index once
        at the end: one sort costs less than 100,000 inserts at random places of a B-tree
        (measured: 3 µs a delivery). No fold reads that index."""
        fresh = self.view.seq == 0
        if fresh:
            self.db.execute("DROP INDEX message_blob")
        try:
            apply_all(self.db, items, self.registration.projections, changes=False)
        finally:
            if fresh:
                self.db.execute(BLOB_INDEX)

    def copy(self) -> "Projector":
        """A scratch copy: folding into it leaves this one as it is."""
        db = from_bytes(self.db.serialize(), self.registration.projections)
        assert db is not None
        return Projector(self.registration, db)
