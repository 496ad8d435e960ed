"""The junk statistics and the sender reputation index: pure projections of an account's events.

They live in the same in-memory SQLite database as the mailbox view (so they are checkpointed
with it, sealed, and nothing of them is readable at rest) and are folded right after the
mailbox view has taken each event: a message's classification is read from the flags the
mailbox view now holds (`$Junk` wins over `$NotJunk`), so whatever path changed them (STORE,
a move that set flags, import) trains the filter the same way.

- Word statistics: per word, the number of ham and spam messages containing it, from its
  first sighting, so un-training a message removes its words again and the statistics always
  equal a rebuild from the log. (Mox, and this projection until junk-3, counted a word only
  from its second sighting; with the 50-100 messages of a class a new account has, that threw
  away much of what a class's words say -- on the tuning part of the shared corpus, cut to the
  held-back part's size, at a 50% spam share, 1.81% of ham was rejected with it and 1.08%
  without -- while Robinson's smoothing in bayes.py already makes a word seen once weak
  evidence.)
- Reputation index: per message its class, the mailbox it was meant for (a Rejects copy is
  meant for INBOX), its date, and its verified sender identities (From address, domain and
  organizational domain when DMARC passed, DKIM domains, the SPF domain, IP subnets).
- The addresses the user wrote to (Sent copies), with the time of the last one.
- The Rejects copies by their dedup key (Message-ID, or content hash).
- The newest expunged messages (by blob) with the mailbox they left, so that an offline move
  (upload to the new mailbox, expunge from the old, in either order) trains as a MOVE.

No I/O, no clock, no randomness: everything needed is in the events (JunkFeatures).
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from ..proto import events_pb2 as pb
from ..store import Change, Delivery
from . import wordrows

if TYPE_CHECKING:  # a type only: the replay's reading child, which imports this module, needs no Account
    from ..store import Account

JUNK, NOT_JUNK = "$Junk", "$NotJunk"
HAM, SPAM = 1, 2

SCHEMA = """
CREATE TABLE junk_word(word TEXT PRIMARY KEY, ham INTEGER NOT NULL, spam INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE junk_content(blob_id BLOB PRIMARY KEY, words BLOB NOT NULL, refs INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE junk_msg(
  mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, blob_id BLOB NOT NULL, class INTEGER NOT NULL,
  destined INTEGER NOT NULL, received INTEGER NOT NULL,
  PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;
CREATE TABLE junk_key(kind TEXT NOT NULL, value TEXT NOT NULL, classified INTEGER NOT NULL, received INTEGER NOT NULL,
  mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL,
  PRIMARY KEY(kind, value, classified, received, mailbox_id, uid)) WITHOUT ROWID;
CREATE INDEX junk_key_msg ON junk_key(mailbox_id, uid);
CREATE TABLE junk_sent(address TEXT PRIMARY KEY, last INTEGER NOT NULL, count INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE junk_reject(mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL, key BLOB NOT NULL,
  received INTEGER NOT NULL, PRIMARY KEY(mailbox_id, uid)) WITHOUT ROWID;
CREATE INDEX junk_reject_key ON junk_reject(key);
CREATE TABLE junk_expunged(blob_id BLOB PRIMARY KEY, mailbox_id INTEGER NOT NULL, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX junk_expunged_seq ON junk_expunged(seq);
CREATE TABLE junk_meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO junk_meta VALUES ('hams', 0), ('spams', 0);
"""

@dataclass(frozen=True, slots=True)
class Trained(Change):
    """A message's trained class changed (0 none, HAM, SPAM): the statistics moved with it."""

    mailbox_id: int
    uid: int
    cls: int


TABLES = ("junk_word", "junk_content", "junk_msg", "junk_key", "junk_sent", "junk_reject", "junk_expunged", "junk_meta")
# The newest this many expunged messages are remembered with the mailbox they left (an offline
# move uploads the message to its new mailbox after it expunged it from the old one: mbsync
# syncs INBOX before Junk).
EXPUNGED_KEPT = 1000
_CHUNK = 500  # SQLite's default limit on host parameters is 32,766; small chunks stay fast


def _class(flags: str) -> int:
    if "Junk" not in flags:  # most messages (a replay asks for each one with flags): no set made
        return 0
    names = set(flags.split(" "))
    if JUNK in names:
        return SPAM
    if NOT_JUNK in names:
        return HAM
    return 0


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _known(db: sqlite3.Connection, words: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for chunk in _chunks(words):
        q = f"SELECT word FROM junk_word WHERE word IN ({','.join('?' * len(chunk))})"
        out.update(r[0] for r in db.execute(q, chunk))
    return out


def _bump_meta(db: sqlite3.Connection, cls: int, delta: int) -> None:
    db.execute("UPDATE junk_meta SET value=value+? WHERE key=?", (delta, "hams" if cls == HAM else "spams"))


def _train(db: sqlite3.Connection, words: Sequence[str], cls: int) -> None:
    """Count a message's (distinct) words for `cls`."""
    known = _known(db, words)
    col = "ham" if cls == HAM else "spam"
    db.executemany("INSERT INTO junk_word VALUES (?,0,0)", [(w,) for w in words if w not in known])
    db.executemany(f"UPDATE junk_word SET {col}={col}+1 WHERE word=?", [(w,) for w in words])
    _bump_meta(db, cls, 1)


def _untrain(db: sqlite3.Connection, words: Sequence[str], cls: int) -> None:
    col = "ham" if cls == HAM else "spam"
    db.executemany(f"UPDATE junk_word SET {col}={col}-1 WHERE word=?", [(w,) for w in words])
    _bump_meta(db, cls, -1)


def _words_of(db: sqlite3.Connection, blob_id: bytes) -> list[str]:
    row = db.execute("SELECT words FROM junk_content WHERE blob_id=?", (blob_id,)).fetchone()
    return wordrows.decode(row[0]) if row else []


def _sync_class(db: sqlite3.Connection, mailbox_id: int, uid: int) -> list[Change]:
    """Make the message's trained class equal to what its flags say now."""
    row = db.execute("SELECT flags FROM message WHERE mailbox_id=? AND uid=?", (mailbox_id, uid)).fetchone()
    jm = db.execute("SELECT blob_id, class FROM junk_msg WHERE mailbox_id=? AND uid=?", (mailbox_id, uid)).fetchone()
    if row is None or jm is None:
        return []
    new = _class(row[0])
    blob_id, old = jm
    if new == old:
        return []
    words = _words_of(db, blob_id)
    if old:
        _untrain(db, words, old)
    if new:
        _train(db, words, new)
    db.execute("UPDATE junk_msg SET class=? WHERE mailbox_id=? AND uid=?", (new, mailbox_id, uid))
    if bool(new) != bool(old):  # the reputation index holds classified sightings apart (JunkView.history)
        db.execute("UPDATE junk_key SET classified=? WHERE mailbox_id=? AND uid=?", (int(bool(new)), mailbox_id, uid))
    return [Trained(mailbox_id, uid, new)]


def _added_now(db: sqlite3.Connection, seq: int, mailbox_id: int, uid: int) -> bool:
    """Whether the mailbox view took this message in with this event (it refuses some)."""
    row = db.execute("SELECT added_seq FROM message WHERE mailbox_id=? AND uid=?", (mailbox_id, uid)).fetchone()
    return row is not None and row[0] == seq


def _identity_keys(f: pb.JunkFeatures) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    if f.from_validated and f.from_address:
        keys.append(("from", f.from_address))
        if f.from_domain:
            keys.append(("domain", f.from_domain))
        if f.from_org_domain:
            keys.append(("org", f.from_org_domain))
    keys.extend(("dkim", d) for d in f.dkim_domains if d)
    if f.spf_domain:
        keys.append(("spf", f.spf_domain))
    keys.extend(("ip", n) for n in f.ip_nets if n)
    return keys  # a repeated one is inserted once (INSERT OR IGNORE: the key is the whole row)


# What the projection needs of a delivery with junk features (`JunkProjection.prepare`): the
# mailbox it was meant for (0: the one it is in), its identity keys, the addresses it was sent to
# (each once, sorted), its reject key, and its word list as a content row keeps it.
Facts = tuple[int, list[tuple[str, str]], list[str], bytes, bytes]
_NO_WORDS = wordrows.encode([])


def _prepare(m: pb.MessageAdded) -> Facts | None:
    # A delivery without features (an import, a copy made by hand) has no words, identities,
    # recipients or reject key: reading each empty field costs a replay 3 µs per message.
    if not m.HasField("junk"):
        return None
    f = m.junk
    # A content row's bytes are eventmail.junk.wordrows' (a module of its own, so that SMTP's
    # analysis process makes them without importing the store).
    words = _READY.take(f) if _READY.rows else None
    if words is None:
        words = wordrows.content_row(f.words)
    return (f.destined_mailbox_id, _identity_keys(f), sorted(set(f.sent_to)), f.reject_key, words)


class _ReadyRows:
    """Content rows made where a message's words were found (SMTP's analysis process: its
    `wordrows.content_row`), waiting for the commit of the delivery that records those features.

    Making a row on the event loop was a tenth of its samples under load (2,000 words read out
    of the event one by one, made distinct, joined and compressed: about 0.6 ms a message); the
    analysis process already holds the words as strings. A row is found by the serialized
    features it belongs to (the whole JunkFeatures of the delivery event: a byte string compared
    in C, 30 µs), so it is used only for an event recording exactly those features, and then it
    is the same bytes `_prepare` would make: the fold, a replay and a checkpoint are unchanged
    (tests/test_junk_projection.py). Rows are offered only while their delivery is being
    committed (`offered`), so few are ever held; the bound is a safety net."""

    KEPT = 64

    def __init__(self) -> None:
        self.rows: dict[bytes, bytes] = {}
        self._lock = threading.Lock()  # offered from the mail layer's threads, taken on the loop

    def offer(self, features: pb.JunkFeatures, row: bytes) -> bytes:
        key = features.SerializeToString()
        with self._lock:
            if len(self.rows) >= self.KEPT:
                del self.rows[next(iter(self.rows))]
            self.rows[key] = row
        return key

    def withdraw(self, key: bytes) -> None:
        with self._lock:
            self.rows.pop(key, None)

    def take(self, features: pb.JunkFeatures) -> bytes | None:
        with self._lock:
            return self.rows.pop(features.SerializeToString(), None)


_READY = _ReadyRows()


@contextlib.contextmanager
def offered(features: pb.JunkFeatures, row: bytes | None) -> Iterator[None]:
    """While the `with` body runs, a delivery recording `features` (exactly) takes `row` as its
    content row, and `_prepare` does not make it again. The caller vouches that `row` is
    `wordrows.content_row(features.words)`, made where the words were found; None: nothing offered."""
    key = _READY.offer(features, row) if row is not None else b""
    try:
        yield
    finally:
        if key:
            _READY.withdraw(key)


def _messages_added(db: sqlite3.Connection, run: Sequence[Delivery]) -> list[list[Change]]:
    """Fold the deliveries of a run with one statement per table: the messages the view took in
    are indexed, their content counted once per blob (its words kept from its first message, as
    one by one), then the classified ones trained, in log order."""
    msgs = []
    keys: list[tuple[str, str, int, int, int]] = []
    sent: list[tuple[str, int]] = []
    rejects = []
    refs: dict[bytes, int] = {}
    first: dict[bytes, bytes] = {}
    classified = []
    # Per mailbox, the UIDs [first, last] of its deliveries without features, which the view has
    # just taken in, unless a delivery with features was taken in that mailbox too (`mixed`).
    plain: dict[int, list[int]] = {}
    mixed: set[int] = set()
    out: list[list[Change]] = [[] for _ in run]
    for i, (row, facts) in enumerate(run):
        if row is None:
            continue
        mailbox_id, uid, blob_id, received = row[0], row[1], row[2], row[4]
        if facts is None:
            words = _NO_WORDS
            if mailbox_id in mixed:
                msgs.append((mailbox_id, uid, blob_id, mailbox_id, received))
            elif (span := plain.get(mailbox_id)) is None:
                plain[mailbox_id] = [uid, uid]
            else:
                span[1] = uid  # UIDs of a mailbox grow along the run
        else:
            destined_id, identities, sent_to, reject_key, words = cast(Facts, facts)
            keys.extend((k, v, received, mailbox_id, uid) for k, v in identities)
            sent.extend((address, received) for address in sent_to)
            if reject_key:
                rejects.append((mailbox_id, uid, reject_key, received))
            msgs.append((mailbox_id, uid, blob_id, destined_id or mailbox_id, received))
            if plain.pop(mailbox_id, None) is not None:
                # Its deliveries without features so far go in one by one, as later ones will.
                msgs += [(r[0], r[1], r[2], r[0], r[4]) for r, f in run[:i] if r is not None and f is None
                         and r[0] == mailbox_id]
            mixed.add(mailbox_id)
        if blob_id not in first:
            first[blob_id] = words
        refs[blob_id] = refs.get(blob_id, 0) + 1
        if row[6] and _class(row[6]):
            classified.append((i, mailbox_id, uid))
    db.executemany("INSERT INTO junk_msg VALUES (?,?,?,0,?,?)", msgs)
    # A mailbox's deliveries without features (the message meant for the mailbox it is in, no
    # class yet, received at its internal date) are the message rows the view just wrote for them:
    # the rows of that mailbox from the first UID to the last (UIDs only grow, so no row of the
    # mailbox lies between them but these), copied in one statement. Binding each row's five
    # values from Python cost more than the insert (issue 14, eleventh pass).
    db.executemany(
        "INSERT INTO junk_msg SELECT mailbox_id, uid, blob_id, 0, mailbox_id, internal_date FROM message "
        "WHERE mailbox_id=? AND uid BETWEEN ? AND ?",
        [(mailbox_id, first_uid, last_uid) for mailbox_id, (first_uid, last_uid) in plain.items()])
    known: set[bytes] = set()
    blob_ids = list(refs)
    for i in range(0, len(blob_ids), _CHUNK):
        chunk = blob_ids[i : i + _CHUNK]
        q = f"SELECT blob_id FROM junk_content WHERE blob_id IN ({','.join('?' * len(chunk))})"
        known.update(r[0] for r in db.execute(q, chunk))
    db.executemany("UPDATE junk_content SET refs=refs+? WHERE blob_id=?", [(n, b) for b, n in refs.items() if b in known])
    db.executemany("INSERT INTO junk_content VALUES (?,?,?)", [(b, first[b], n) for b, n in refs.items() if b not in known])
    db.executemany("INSERT OR IGNORE INTO junk_key VALUES (?,?,0,?,?,?)", keys)
    db.executemany(
        "INSERT INTO junk_sent VALUES (?,?,1) ON CONFLICT(address) DO UPDATE SET last=max(last, excluded.last), "
        "count=count+1", sent)
    db.executemany("INSERT INTO junk_reject VALUES (?,?,?,?)", rejects)
    for i, mailbox_id, uid in classified:
        out[i] = _sync_class(db, mailbox_id, uid)
    return out


def _remove(db: sqlite3.Connection, mailbox_id: int, uid: int) -> list[Change]:
    jm = db.execute("SELECT blob_id, class FROM junk_msg WHERE mailbox_id=? AND uid=?", (mailbox_id, uid)).fetchone()
    if jm is None:
        return []
    blob_id, cls = jm
    if cls:
        _untrain(db, _words_of(db, blob_id), cls)
    db.execute("DELETE FROM junk_msg WHERE mailbox_id=? AND uid=?", (mailbox_id, uid))
    db.execute("DELETE FROM junk_key WHERE mailbox_id=? AND uid=?", (mailbox_id, uid))
    db.execute("DELETE FROM junk_reject WHERE mailbox_id=? AND uid=?", (mailbox_id, uid))
    db.execute("UPDATE junk_content SET refs=refs-1 WHERE blob_id=?", (blob_id,))
    db.execute("DELETE FROM junk_content WHERE blob_id=? AND refs<=0", (blob_id,))
    return [Trained(mailbox_id, uid, 0)] if cls else []


def _remove_gone(db: sqlite3.Connection, mailbox_id: int, uids: Iterable[int]) -> list[Change]:
    out: list[Change] = []
    for uid in uids:
        if db.execute("SELECT 1 FROM message WHERE mailbox_id=? AND uid=?", (mailbox_id, uid)).fetchone() is None:
            out += _remove(db, mailbox_id, uid)
    return out


def _flags_changed(db: sqlite3.Connection, seq: int, e: pb.Event) -> list[Change]:
    f = e.flags_changed
    out: list[Change] = []
    for uid in sorted(set(f.uids)):
        out += _sync_class(db, f.mailbox_id, uid)
    return out


def _messages_copied(db: sqlite3.Connection, seq: int, e: pb.Event) -> list[Change]:
    c = e.messages_copied
    out: list[Change] = []
    for src, dst in zip(c.source_uids, c.dest_uids, strict=False):
        if not _added_now(db, seq, c.dest_mailbox_id, dst):
            continue
        jm = db.execute(
            "SELECT blob_id, destined, received FROM junk_msg WHERE mailbox_id=? AND uid=?", (c.source_mailbox_id, src)
        ).fetchone()
        if jm is None:
            continue
        blob_id, destined, received = jm
        db.execute("UPDATE junk_content SET refs=refs+1 WHERE blob_id=?", (blob_id,))
        db.execute("INSERT INTO junk_msg VALUES (?,?,?,0,?,?)", (c.dest_mailbox_id, dst, blob_id, destined, received))
        db.execute(
            "INSERT OR IGNORE INTO junk_key SELECT kind, value, 0, received, ?, ? FROM junk_key WHERE mailbox_id=? AND uid=?",
            (c.dest_mailbox_id, dst, c.source_mailbox_id, src),
        )
        out += _sync_class(db, c.dest_mailbox_id, dst)
    if c.move:
        out += _remove_gone(db, c.source_mailbox_id, c.source_uids)
    return out


def _messages_expunged(db: sqlite3.Connection, seq: int, e: pb.Event) -> list[Change]:
    x = e.messages_expunged
    for uid in sorted(set(x.uids)):
        row = db.execute("SELECT blob_id FROM junk_msg WHERE mailbox_id=? AND uid=?", (x.mailbox_id, uid)).fetchone()
        gone = db.execute("SELECT 1 FROM message WHERE mailbox_id=? AND uid=?", (x.mailbox_id, uid)).fetchone() is None
        if row is not None and gone:
            db.execute("INSERT OR REPLACE INTO junk_expunged VALUES (?,?,?)", (row[0], x.mailbox_id, seq))
    db.execute("DELETE FROM junk_expunged WHERE blob_id IN (SELECT blob_id FROM junk_expunged "
               "ORDER BY seq DESC, blob_id LIMIT -1 OFFSET ?)", (EXPUNGED_KEPT,))
    return _remove_gone(db, x.mailbox_id, x.uids)


def _mailbox_deleted(db: sqlite3.Connection, seq: int, e: pb.Event) -> list[Change]:
    mid = e.mailbox_deleted.mailbox_id
    if db.execute("SELECT 1 FROM mailbox WHERE id=?", (mid,)).fetchone() is not None:
        return []
    out: list[Change] = []
    for (uid,) in db.execute("SELECT uid FROM junk_msg WHERE mailbox_id=? ORDER BY uid", (mid,)).fetchall():
        out += _remove(db, mid, uid)
    return out


_HANDLERS: dict[str, Callable[[sqlite3.Connection, int, pb.Event], list[Change]]] = {
    "flags_changed": _flags_changed,
    "messages_copied": _messages_copied,
    "messages_expunged": _messages_expunged,
    "mailbox_deleted": _mailbox_deleted,
}


class JunkProjection:
    """The junk statistics and reputation index as a projection registered with the store
    (eventmail.opening registers it wherever the store is opened)."""

    # The name marks the schema in checkpoints: "junk-2" since junk_key holds `classified` and
    # `received`, "junk-3" since words count from their first sighting, "junk-4" since word
    # lists are kept in their order, joined, short ones uncompressed (a tag byte first), "junk-5"
    # since long ones are compressed with Zstandard (wordrows), so a checkpoint of an older
    # schema is not restored but rebuilt from the log.
    name = "junk-5"
    schema = SCHEMA

    def apply(self, db: sqlite3.Connection, seq: int, event: pb.Event) -> Sequence[Change]:
        """Fold one event, after the mailbox view has folded it. Pure."""
        handler = _HANDLERS.get(event.WhichOneof("kind") or "")
        return handler(db, seq, event) if handler is not None else ()


    @staticmethod
    def prepare(added: pb.MessageAdded) -> Facts | None:
        """What `apply_run` needs of a delivery, from its event alone (a cold replay computes it
        in its reading child process, store.reader)."""
        return _prepare(added)

    def apply_run(self, db: sqlite3.Connection, run: Sequence[Delivery]) -> Sequence[Sequence[Change]]:
        """Fold a run of deliveries (every MessageAdded folds so), after the mailbox view has
        folded the run. Pure."""
        return _messages_added(db, run)


JUNK_PROJECTION = JunkProjection()


_HISTORY_ARM = (
    "SELECT * FROM (SELECT m.mailbox_id, m.uid, m.class, m.received FROM junk_key k "
    "JOIN junk_msg m ON m.mailbox_id=k.mailbox_id AND m.uid=k.uid "
    "WHERE k.kind=? AND k.value=? AND k.classified=1 AND k.received>=? AND m.destined=? AND m.class!=0 "
    "ORDER BY k.received DESC, k.mailbox_id, k.uid LIMIT ?)"
)


@functools.lru_cache(maxsize=32)
def _history_query(identities: int) -> str:
    """JunkView.history's statement for this many identities (SQLite caches it prepared by its text)."""
    return " UNION ALL ".join([_HISTORY_ARM] * identities)


def junk_view(acct: Account) -> JunkView:
    """The junk statistics and reputation index of an open account."""
    return JunkView(acct.db)


# ---------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True)
class Sighting:
    """One classified message of a sender's history."""

    spam: bool
    received: int


class JunkView:
    """Read access to the junk statistics and the reputation index of an account."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def totals(self) -> tuple[int, int]:
        """(ham messages, spam messages) trained."""
        rows = dict(self.db.execute("SELECT key, value FROM junk_meta"))
        return int(rows.get("hams", 0)), int(rows.get("spams", 0))

    def word_counts(self, words: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(ham, spam) counts of the words that have been counted at least once."""
        out: dict[str, tuple[int, int]] = {}
        words = sorted(set(words))
        for chunk in _chunks(words):
            q = f"SELECT word, ham, spam FROM junk_word WHERE word IN ({','.join('?' * len(chunk))}) AND ham+spam>0"
            for w, h, s in self.db.execute(q, chunk):
                out[w] = (int(h), int(s))
        return out

    def history(self, keys: Sequence[tuple[str, str]], destined: int, since: int, limit: int) -> list[Sighting]:
        """The newest classified messages meant for `destined` having any of the (kind, value)
        identities, received since `since`, newest first."""
        if not keys:
            return []
        # junk_key's key is (identity, classified, received, ...): each identity's newest
        # classified sightings are read in index order and its scan stops after `limit` of them,
        # so the cost does not grow with how much a sender has sent before (it did when every
        # message of the identity, classified or not, was joined and sorted). All identities in
        # one statement (a compound SELECT, each arm with its own LIMIT): a sender without
        # history has up to nine, and nine statements cost the event loop more than their scans.
        params: list[object] = []
        for kind, value in keys:
            params += (kind, value, since, destined, limit)
        found: dict[tuple[int, int], tuple[int, int]] = {}
        for mailbox_id, uid, cls, received in self.db.execute(_history_query(len(keys)), params):
            found[(mailbox_id, uid)] = (cls, received)
        newest = sorted(found.items(), key=lambda x: (-x[1][1], x[0]))[:limit]
        return [Sighting(cls == SPAM, int(received)) for _k, (cls, received) in newest]

    def expunged_from(self, blob_ids: Iterable[bytes]) -> int | None:
        """The mailbox the newest of these messages was expunged from, among the newest
        EXPUNGED_KEPT expunged; None when none of them was."""
        best: tuple[int, int] | None = None
        for b in blob_ids:
            row = self.db.execute("SELECT seq, mailbox_id FROM junk_expunged WHERE blob_id=?", (b,)).fetchone()
            if row is not None and (best is None or row[0] > best[0]):
                best = (int(row[0]), int(row[1]))
        return best[1] if best else None

    def wrote_to(self, address: str, since: int) -> bool:
        """Whether the user sent mail to `address` since `since`."""
        r = self.db.execute("SELECT 1 FROM junk_sent WHERE address=? AND last>=?", (address, since)).fetchone()
        return r is not None

    def rejects(self, key: bytes) -> list[tuple[int, int]]:
        """The Rejects copies with this dedup key, as (mailbox id, uid)."""
        return [(int(a), int(b)) for a, b in self.db.execute(
            "SELECT mailbox_id, uid FROM junk_reject WHERE key=? ORDER BY mailbox_id, uid", (key,))]

    def reject_copies(self, mailbox_id: int) -> list[tuple[int, int]]:
        """(uid, received) of the Rejects copies in a mailbox, oldest first."""
        return [(int(a), int(b)) for a, b in self.db.execute(
            "SELECT uid, received FROM junk_reject WHERE mailbox_id=? ORDER BY received, uid", (mailbox_id,))]

    def message_words(self, mailbox_id: int, uid: int) -> list[str]:
        r = self.db.execute("SELECT blob_id FROM junk_msg WHERE mailbox_id=? AND uid=?", (mailbox_id, uid)).fetchone()
        return _words_of(self.db, r[0]) if r else []

    def dump(self) -> list[tuple[object, ...]]:
        """Every row of every junk table, in a canonical order: two equal states dump equal."""
        out: list[tuple[object, ...]] = []
        for table in TABLES:
            rows = self.db.execute(f"SELECT * FROM {table}").fetchall()
            out.extend((table, *r) for r in sorted(rows, key=repr))
        return out
