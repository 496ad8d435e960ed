"""The junk statistics and reputation index are pure projections: after any sequence of classification
changes they equal a rebuild from the log, and they count exactly what the classified messages hold."""

import asyncio
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.junk import projection as jp
from eventmail.junk import wordrows
from eventmail.junk.projection import JUNK_PROJECTION, junk_view
from eventmail.opening import open_store
from eventmail.proto import events_pb2 as pb
from eventmail.store import MasterKeySource, init_directory, load_master_key
from eventmail.store import projection as proj

# The junk projection, registered as eventmail.opening registers it.
REGISTERED = (JUNK_PROJECTION,)


def apply_all(db: sqlite3.Connection, items: Iterable[tuple[int, int, pb.Event]]) -> None:
    proj.apply_all(db, items, REGISTERED)


MAILBOX_IDS = st.integers(1, 3)
UIDS = st.lists(st.integers(1, 8), max_size=4)
FLAGS = st.lists(st.sampled_from(["\\Seen", "$Junk", "$NotJunk", "work"]), max_size=3)
WORDS = st.lists(st.sampled_from(["cheap", "pills", "meeting", "lunch", "viagra", "click here", "s:hello", "url:x.test"]),
                 max_size=6)

features = st.builds(
    lambda w, a, v, ip, rk: pb.JunkFeatures(
        words=w, from_address=a, from_domain=a.rpartition("@")[2], from_org_domain=a.rpartition("@")[2],
        from_validated=v, ip_nets=ip, reject_key=rk,
    ),
    WORDS, st.sampled_from(["a@x.test", "b@y.test", ""]), st.booleans(),
    st.lists(st.sampled_from(["192.0.2.1/32", "192.0.2.0/26"]), max_size=2), st.sampled_from([b"", b"k1", b"k2"]),
)

events = st.one_of(
    st.builds(
        lambda i: pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=i, name=f"m{i}", uidvalidity=i)), MAILBOX_IDS
    ),
    st.builds(lambda i: pb.Event(mailbox_deleted=pb.MailboxDeleted(mailbox_id=i)), MAILBOX_IDS),
    st.builds(
        lambda i, u, f, b, j, d: pb.Event(
            message_added=pb.MessageAdded(mailbox_id=i, uid=u, blob_id=bytes([b]) * 32, size=10, internal_date=d,
                                          flags=f, junk=j)
        ),
        MAILBOX_IDS, st.integers(1, 8), FLAGS, st.integers(0, 5), features, st.integers(1_700_000_000, 1_700_000_100),
    ),
    st.builds(
        lambda i, u, a, r, rep: pb.Event(flags_changed=pb.FlagsChanged(mailbox_id=i, uids=u, add=a, remove=r, replace=rep)),
        MAILBOX_IDS, UIDS, FLAGS, FLAGS, st.booleans(),
    ),
    st.builds(lambda i, u: pb.Event(messages_expunged=pb.MessagesExpunged(mailbox_id=i, uids=u)), MAILBOX_IDS, UIDS),
    st.builds(
        lambda s, su, d, du, mv, af, rf: pb.Event(
            messages_copied=pb.MessagesCopied(
                source_mailbox_id=s, source_uids=su, dest_mailbox_id=d, dest_uids=du, move=mv, add_flags=af,
                remove_flags=rf,
            )
        ),
        MAILBOX_IDS, UIDS, MAILBOX_IDS, UIDS, st.booleans(), FLAGS, FLAGS,
    ),
)


def recount(db: object) -> tuple[dict[str, list[int]], int, int]:
    """Word counts recomputed from the classified messages and their words."""
    import sqlite3

    assert isinstance(db, sqlite3.Connection)
    counts: dict[str, list[int]] = {}
    hams = spams = 0
    view = jp.JunkView(db)
    for mailbox_id, uid, cls in db.execute("SELECT mailbox_id, uid, class FROM junk_msg"):
        flags = db.execute("SELECT flags FROM message WHERE mailbox_id=? AND uid=?", (mailbox_id, uid)).fetchone()[0]
        expected = jp.SPAM if "$Junk" in flags.split() else jp.HAM if "$NotJunk" in flags.split() else 0
        assert cls == expected, (flags, cls)  # the trained class is what the flags say now
        if not cls:
            continue
        hams += cls == jp.HAM
        spams += cls == jp.SPAM
        for w in view.message_words(mailbox_id, uid):
            counts.setdefault(w, [0, 0])[cls - 1] += 1
    return counts, hams, spams


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=60), st.sets(st.integers(0, 60), max_size=3))
def test_statistics_equal_a_rebuild_after_any_classification_changes(evs: list[pb.Event], cps: set[int]) -> None:
    items = [(seq, 1000 * seq, e) for seq, e in enumerate(evs, 1)]
    incremental = proj.connect(REGISTERED)
    for i, item in enumerate(items):
        if i in cps:
            incremental = proj.from_bytes(incremental.serialize(), REGISTERED)  # a checkpoint round trip
        apply_all(incremental, [item])
    rebuilt = proj.connect(REGISTERED)
    apply_all(rebuilt, items)
    assert jp.JunkView(incremental).dump() == jp.JunkView(rebuilt).dump()

    counts, hams, spams = recount(rebuilt)
    view = jp.JunkView(rebuilt)
    assert view.totals() == (hams, spams)
    stored = {w: [h, s] for w, h, s in rebuilt.execute("SELECT word, ham, spam FROM junk_word") if h or s}
    assert stored == counts
    # Every junk row belongs to a message the mailbox view holds, and every message has one.
    msgs = set(rebuilt.execute("SELECT mailbox_id, uid FROM message"))
    assert set(rebuilt.execute("SELECT mailbox_id, uid FROM junk_msg")) == msgs


def test_a_word_counts_from_its_first_sighting() -> None:
    db = proj.connect(REGISTERED)
    evs = [pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=1, name="INBOX", uidvalidity=1))]
    for uid in (1, 2, 3):
        evs.append(pb.Event(message_added=pb.MessageAdded(
            mailbox_id=1, uid=uid, blob_id=bytes([uid]) * 32, flags=["$Junk"],
            junk=pb.JunkFeatures(words=["pills", f"once{uid}"]))))
    apply_all(db, [(i, i, e) for i, e in enumerate(evs, 1)])
    view = jp.JunkView(db)
    assert view.totals() == (0, 3)
    # Seen three times: counted three times; a word of one message counts once (Mox would count
    # neither the first "pills" nor any "onceN").
    assert view.word_counts(["pills", "once1", "once2"]) == {"pills": (0, 3), "once1": (0, 1), "once2": (0, 1)}
    # Un-junking the second message removes exactly what it added.
    apply_all(db, [(5, 5, pb.Event(flags_changed=pb.FlagsChanged(mailbox_id=1, uids=[2], remove=["$Junk"])))])
    assert view.word_counts(["pills", "once2"]) == {"pills": (0, 2)}
    assert view.totals() == (0, 2)


def test_short_word_lists_are_kept_plain_long_ones_compressed_and_both_train_exactly() -> None:
    """A content row keeps a short word list uncompressed (the compressor's set-up costs more than its
    fold) and a long one compressed, each word once in its order, one with a newline in a word
    too; all read back as the message's words and untrain exactly."""
    db = proj.connect(REGISTERED)
    short = ["s:hello", "lunch"]
    long = [f"w{i:05d}" for i in range(400)]
    odd = ["two\nlines", "x"]
    evs = [pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=1, name="INBOX", uidvalidity=1))]
    for uid, words in ((1, short), (2, long), (3, odd)):
        evs.append(pb.Event(message_added=pb.MessageAdded(
            mailbox_id=1, uid=uid, blob_id=bytes([uid]) * 32, junk=pb.JunkFeatures(words=words + words[:1]))))
    apply_all(db, [(i, i, e) for i, e in enumerate(evs, 1)])
    rows = dict(db.execute("SELECT blob_id, words FROM junk_content"))
    plain, packed = rows[bytes([1]) * 32], rows[bytes([2]) * 32]
    assert len(plain) < wordrows.COMPRESS_FROM and b"lunch" in plain
    assert len(packed) < len("".join(long)) // 2 and b"w00001" not in packed
    view = jp.JunkView(db)
    assert [view.message_words(1, uid) for uid in (1, 2, 3)] == [short, long, odd]
    apply_all(db, [(5, 5, pb.Event(flags_changed=pb.FlagsChanged(mailbox_id=1, uids=[1, 2, 3], add=["$Junk"])))])
    assert view.word_counts(["lunch", "w00399", "two\nlines"]) == {
        "lunch": (0, 1), "w00399": (0, 1), "two\nlines": (0, 1)}
    assert view.totals() == (0, 3)
    apply_all(db, [(6, 6, pb.Event(flags_changed=pb.FlagsChanged(mailbox_id=1, uids=[1, 2, 3], remove=["$Junk"])))])
    assert view.word_counts(short + long + odd) == {} and view.totals() == (0, 0)


def test_reputation_history_follows_moves_and_the_destined_mailbox() -> None:
    db = proj.connect(REGISTERED)
    f = pb.JunkFeatures(words=["w"], from_address="a@x.test", from_domain="x.test", from_validated=True)
    evs = [
        pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=1, name="INBOX", uidvalidity=1)),
        pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=2, name="Junk", uidvalidity=2)),
        pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=3, name="Rejects", uidvalidity=3)),
        pb.Event(message_added=pb.MessageAdded(mailbox_id=1, uid=1, blob_id=b"a" * 32, internal_date=100, junk=f)),
        pb.Event(messages_copied=pb.MessagesCopied(source_mailbox_id=1, source_uids=[1], dest_mailbox_id=2,
                                                   dest_uids=[1], move=True, add_flags=["$Junk"])),
    ]
    apply_all(db, [(i, i, e) for i, e in enumerate(evs, 1)])
    view = jp.JunkView(db)
    assert view.history([("from", "a@x.test")], 1, 0, 10) == [jp.Sighting(True, 100)]
    assert view.history([("from", "a@x.test")], 2, 0, 10) == []  # per destination mailbox
    # A Rejects copy is neutral until moved out; then it counts for the mailbox it was meant for.
    rf = pb.JunkFeatures(words=["w"], from_address="a@x.test", from_domain="x.test", from_validated=True,
                         destined_mailbox_id=1, reject_key=b"k")
    more = [
        pb.Event(message_added=pb.MessageAdded(mailbox_id=3, uid=1, blob_id=b"b" * 32, internal_date=200, junk=rf)),
    ]
    apply_all(db, [(10, 10, more[0])])
    assert view.history([("from", "a@x.test")], 1, 0, 10) == [jp.Sighting(True, 100)]
    assert view.rejects(b"k") == [(3, 1)]
    apply_all(db, [(11, 11, pb.Event(messages_copied=pb.MessagesCopied(
        source_mailbox_id=3, source_uids=[1], dest_mailbox_id=1, dest_uids=[2], move=True, add_flags=["$NotJunk"])))])
    assert view.history([("from", "a@x.test")], 1, 0, 10) == [jp.Sighting(False, 200), jp.Sighting(True, 100)]
    assert view.rejects(b"k") == []


def test_store_junk_view_equals_replay_of_its_log_and_nothing_of_it_on_disk() -> None:
    """Through the real store: statistics survive close (sealed checkpoint) and a cold rebuild alike."""

    async def go() -> None:
        with tempfile.TemporaryDirectory() as t:
            d = Path(t) / "data"
            src = MasterKeySource(key_file=Path(t) / "k")
            init_directory(d, src)
            key = load_master_key(d, src)
            store = await open_store(d, key)
            await store.create_account("a", ["a@example.test"], None)
            async with store.use_account("a") as acct:
                await acct.create_default_mailboxes()
                for i in range(6):
                    raw = (f"From: s{i}@spam.test\r\nSubject: zorblax offer {i}\r\n\r\nquixotic zorblax pills\r\n").encode()
                    await acct.add_message("Junk", raw, flags=["$Junk"])
                live = junk_view(acct).dump()
                assert junk_view(acct).word_counts(["zorblax"]) == {"zorblax": (0, 6)}
            await store.close()
            for f in d.rglob("*"):
                if f.is_file():
                    assert b"zorblax" not in f.read_bytes(), f
            store = await open_store(d, key)
            async with store.use_account("a") as acct:
                assert junk_view(acct).dump() == live  # from the sealed checkpoint
            await store.close()
            for cp in (d / "checkpoints").iterdir():
                cp.unlink()
            store = await open_store(d, key)
            async with store.use_account("a") as acct:
                assert junk_view(acct).dump() == live  # rebuilt from the log alone
            await store.close()

    asyncio.run(go())


def test_reputation_history_does_not_read_every_earlier_sighting() -> None:
    """JunkView.history reads the newest classified sightings of an identity in index order: the
    work (SQLite VM steps, counted, not timed) stays the same whether the sender sent 100 or 5,000
    unclassified messages before. It grew with them while every sighting was joined and sorted."""
    import sqlite3

    from eventmail.junk.projection import SCHEMA, JunkView

    def steps(unclassified: int) -> tuple[int, list[bool]]:
        db = sqlite3.connect(":memory:")
        db.executescript(SCHEMA)
        rows = [(1, uid, 0, uid) for uid in range(1, unclassified + 1)]
        rows += [(1, unclassified + i, 2 if i % 2 else 1, unclassified + i) for i in range(1, 4)]
        for mailbox_id, uid, cls, received in rows:
            db.execute("INSERT INTO junk_msg VALUES (?,?,?,?,?,?)", (mailbox_id, uid, b"b", cls, 1, received))
            db.execute("INSERT INTO junk_key VALUES (?,?,?,?,?,?)", ("ip", "192.0.2.0/24", int(cls != 0), received,
                                                                     mailbox_id, uid))
        count = [0]

        def tick() -> int:
            count[0] += 1
            return 0

        db.set_progress_handler(tick, 1)
        found = JunkView(db).history([("ip", "192.0.2.0/24")], destined=1, since=0, limit=10)
        return count[0], [s.spam for s in found]

    small, found_small = steps(100)
    large, found_large = steps(5000)
    assert found_small == found_large == [True, False, True]  # the three classified, newest first
    assert large < 2 * small, (small, large)


def test_a_row_made_by_the_analysis_is_taken_by_the_fold_of_exactly_its_delivery_and_folds_the_same() -> None:
    """SMTP's analysis process makes a delivery's content row (`wordrows.content_row`, Incoming.row)
    and the mail layer offers it while the delivery commits (`offered`): the fold takes it instead
    of making it again on the event loop, only for an event recording exactly those features, and
    what it folds is what a replay folds (the same bytes: a dump of every junk table)."""
    from eventmail.smtp.analysis import analyze_incoming

    corpus = Path(__file__).parent / "data" / "corpus"
    paths = sorted((corpus / "ham").glob("*.eml"))[:6] + sorted((corpus / "spam").glob("*.eml"))[:6]
    analysed = [analyze_incoming(p.read_bytes().replace(b"\n", b"\r\n"), "mx.example.test") for p in paths]
    created = pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=1, name="INBOX", uidvalidity=1))
    live, replayed = proj.connect(REGISTERED), proj.connect(REGISTERED)
    apply_all(live, [(1, 1, created)])
    apply_all(replayed, [(1, 1, created)])
    events = []
    for uid, out in enumerate(analysed, 1):
        features, row = out[3], out[7]
        assert len(features.words) > 100 and row == wordrows.encode(list(features.words))  # long: compressed
        features.ip_nets.append("192.0.2.0/26")  # the identities the plan adds
        event = pb.Event(message_added=pb.MessageAdded(mailbox_id=1, uid=2 * uid + 1, blob_id=bytes([uid]) * 32,
                                                       junk=features))
        other = pb.Event(message_added=pb.MessageAdded(mailbox_id=1, uid=2 * uid, blob_id=bytes([100 + uid]) * 32,
                                                       junk=pb.JunkFeatures(words=["other"])))
        with jp.offered(features, row):
            assert jp._READY.rows
            apply_all(live, [(2 * uid, 2 * uid, other)])
            assert jp._READY.rows, "taken by a delivery with other features"
            apply_all(live, [(2 * uid + 1, 2 * uid + 1, event)])
            assert not jp._READY.rows, "not taken by the delivery it was made for"
        events += [(2 * uid, 2 * uid, other), (2 * uid + 1, 2 * uid + 1, event)]
    assert not jp._READY.rows
    apply_all(replayed, events)
    assert jp.JunkView(live).dump() == jp.JunkView(replayed).dump()
    assert jp.JunkView(live).message_words(1, 3) == list(analysed[0][3].words)


def test_history_of_several_identities_is_the_newest_sightings_of_any_of_them() -> None:
    """JunkView.history reads every identity in one statement, each scan bounded by the limit: the
    newest `limit` classified messages meant for the mailbox that have any of the identities,
    each once, as a plain reading of every sighting (no limits) gives them."""
    db = proj.connect(REGISTERED)
    evs = [pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=i, name=n, uidvalidity=i))
           for i, n in ((1, "INBOX"), (2, "Junk"))]
    domains = ["a.test", "b.test", "c.test"]
    for uid in range(1, 25):
        dkim = [d for i, d in enumerate(domains) if (uid >> i) & 1]
        f = pb.JunkFeatures(words=["w"], dkim_domains=dkim, ip_nets=["192.0.2.0/26"] if uid % 5 == 0 else [])
        flags = ["$Junk"] if uid % 3 == 0 else ["$NotJunk"] if uid % 3 == 1 else []
        evs.append(pb.Event(message_added=pb.MessageAdded(
            mailbox_id=1 + uid % 2, uid=uid, blob_id=bytes([uid]) * 32, internal_date=1000 + uid % 7, junk=f,
            flags=flags)))
    apply_all(db, [(i, i, e) for i, e in enumerate(evs, 1)])
    view = jp.JunkView(db)
    keys = [("dkim", d) for d in domains] + [("ip", "192.0.2.0/26"), ("spf", "none.test")]
    for destined, since, limit in ((1, 0, 4), (2, 0, 3), (1, 1003, 10), (2, 0, 100)):
        rows = db.execute(
            "SELECT DISTINCT m.mailbox_id, m.uid, m.class, m.received FROM junk_key k JOIN junk_msg m "
            "ON m.mailbox_id=k.mailbox_id AND m.uid=k.uid WHERE k.classified=1 AND k.received>=? AND m.destined=? "
            f"AND m.class!=0 AND (k.kind, k.value) IN (VALUES {','.join(['(?,?)'] * len(keys))})",
            [since, destined, *(x for k in keys for x in k)]).fetchall()
        newest = sorted(rows, key=lambda r: (-r[3], r[0], r[1]))[:limit]
        want = [jp.Sighting(cls == jp.SPAM, received) for _m, _u, cls, received in newest]
        assert want and view.history(keys, destined, since, limit) == want
    assert view.history([], 1, 0, 5) == []
