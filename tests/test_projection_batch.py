"""The batched fold: runs of deliveries folded together leave every projection table as folding each event alone does."""

import asyncio
import pickle
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.opening import REGISTRATION, open_store
from eventmail.proto import events_pb2 as pb
from eventmail.store import Change, Delivery, Registration
from eventmail.store import projection as proj

PROJECTIONS = REGISTRATION.projections
MAILBOX_IDS = st.integers(1, 4)
UIDS = st.lists(st.integers(1, 12), max_size=4)
FLAGS = st.lists(st.sampled_from(["\\Seen", "\\Flagged", "$Junk", "$NotJunk", "work"]), max_size=3)
SUBJECTS = st.sampled_from([b"lunch", b"Re: lunch", b"[list] Fwd: plans", b"=?utf-8?q?caf=C3=A9?=", b""])
MSGIDS = st.sampled_from([b"", b"<a@x>", b"<b@x>", b"<c@x>"])


def _added(mailbox_id: int, uid: int, blob: int, flags: list[str], subject: bytes, msgid: bytes, thread: int,
           words: list[str], sent_to: list[str], reject: bytes, dkim: list[str], key: bytes,
           features: bool = True) -> pb.Event:
    structure = pb.MessageStructure(envelope=pb.Envelope(subject=subject, has_subject=bool(subject), message_id=msgid))
    junk = pb.JunkFeatures(words=words, sent_to=sent_to, reject_key=reject, dkim_domains=dkim, spf_domain="spf.test")
    added = pb.MessageAdded(
        mailbox_id=mailbox_id, uid=uid, blob_id=bytes([blob]) * 32, size=100 + blob, internal_date=1_700_000_000 + blob,
        flags=flags, structure=structure, thread_id=thread, message_id_hash=key)
    if features:  # without: an import, a copy made by hand (the junk fold takes those apart)
        added.junk.CopyFrom(junk)
    return pb.Event(message_added=added)


# Deliveries that the view takes in and ones it refuses (a UID below UIDNEXT, a missing
# mailbox), the same blob twice (content counted once per blob), classified ones (trained).
deliveries = st.builds(
    _added, MAILBOX_IDS, st.integers(0, 12), st.integers(0, 6), FLAGS, SUBJECTS, MSGIDS, st.integers(0, 3),
    st.lists(st.sampled_from(["cheap", "pills", "meeting", "lunch"]), max_size=3),
    st.lists(st.sampled_from(["bob@x.test", "carol@y.test"]), max_size=2),
    st.sampled_from([b"", b"r1", b"r2"]), st.lists(st.sampled_from(["x.test", "y.test"]), max_size=2),
    st.sampled_from([b"", b"k1", b"k2"]), st.booleans(),
)
others = st.one_of(
    st.builds(lambda i, n: pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=i, name=n, uidvalidity=5)),
              MAILBOX_IDS, st.sampled_from(["INBOX", "Junk", "Archive", "Lists"])),
    st.builds(lambda i: pb.Event(mailbox_deleted=pb.MailboxDeleted(mailbox_id=i)), MAILBOX_IDS),
    st.builds(lambda i, u, a, r: pb.Event(flags_changed=pb.FlagsChanged(mailbox_id=i, uids=u, add=a, remove=r)),
              MAILBOX_IDS, UIDS, FLAGS, FLAGS),
    st.builds(lambda i, u: pb.Event(messages_expunged=pb.MessagesExpunged(mailbox_id=i, uids=u)), MAILBOX_IDS, UIDS),
    st.builds(lambda s, su, d, du, mv: pb.Event(messages_copied=pb.MessagesCopied(
        source_mailbox_id=s, source_uids=su, dest_mailbox_id=d, dest_uids=du, move=mv)),
        MAILBOX_IDS, UIDS, MAILBOX_IDS, UIDS, st.booleans()),
)
# A log is blocks: single events of any kind, and runs of deliveries (what a batch folds together).
blocks = st.one_of(others.map(lambda e: [e]), st.lists(deliveries, min_size=1, max_size=10))
START = [pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=i, name=f"box{i}", uidvalidity=5)) for i in (1, 2)]


def tables(db: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of the view and the registered projections, in a canonical order."""
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    return {n: sorted(db.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}


@settings(max_examples=200, deadline=None)
@given(st.lists(blocks, max_size=12))
def test_a_batched_fold_equals_folding_each_event_alone(log: list[list[pb.Event]]) -> None:
    events = START + [e for block in log for e in block]
    items = [(seq, 1000 * seq, e) for seq, e in enumerate(events, 1)]
    batched = proj.connect(PROJECTIONS)
    changes = proj.apply_all(batched, items, PROJECTIONS)
    alone = proj.connect(PROJECTIONS)
    one_by_one = [proj.apply_all(alone, [item], PROJECTIONS)[0] for item in items]
    assert tables(batched) == tables(alone)
    # A replay folds without making change objects (Projector.replay), to the same state.
    replayed = proj.connect(PROJECTIONS)
    assert proj.apply_all(replayed, items, PROJECTIONS, changes=False) == []
    assert tables(replayed) == tables(alone)
    cold = proj.Projector(REGISTRATION)
    cold.replay(items)
    assert tables(cold.db) == tables(alone)
    assert indexes(cold.db) == indexes(alone)
    # A cold replay whose later records come made ready from the reading child (store.reader):
    # each record prepared from its plaintext and passed through pickle, the earlier ones as events.
    preps = proj.preparers(PROJECTIONS)
    half = len(items) // 2
    ready = items[:half] + [pickle.loads(pickle.dumps(proj.prepare_record(preps, seq, t, e.SerializeToString())))
                            for seq, t, e in items[half:]]
    assert sum(len(i) == 5 for i in ready) == sum(e.HasField("message_added") for _s, _t, e in items[half:])
    from_child = proj.Projector(REGISTRATION)
    from_child.replay(ready)
    assert tables(from_child.db) == tables(alone)
    # What each event changed, as subscribers (IMAP IDLE, webmail) are told it, is the same too.
    assert changes == one_by_one


def indexes(db: sqlite3.Connection) -> list[tuple[object, ...]]:
    return db.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type='index' ORDER BY name").fetchall()


def test_a_cold_replay_builds_the_blob_index_once_and_keeps_it_when_it_fails() -> None:
    """Projector.replay into an empty view makes the message table's blob index after the fold;
    the index is there after a replay that failed halfway too (the view is then rolled back)."""
    fresh = proj.connect(PROJECTIONS)
    events = START + [_added(1, uid, uid, [], b"s", b"", 0, [], [], b"", [], b"") for uid in range(1, 6)]
    items = [(seq, seq, e) for seq, e in enumerate(events, 1)]
    cold = proj.Projector(REGISTRATION)
    cold.replay(items)
    assert indexes(cold.db) == indexes(fresh)
    plan = cold.db.execute("EXPLAIN QUERY PLAN SELECT uid FROM message WHERE mailbox_id=1 AND blob_id=?",
                           (bytes([3]) * 32,)).fetchall()
    assert "message_blob" in repr(plan)
    assert cold.view.uid_of_blob(1, bytes([3]) * 32) == 3

    def failing() -> Iterator[tuple[int, int, pb.Event]]:
        yield from items
        raise OSError("the log could not be read further")

    broken = proj.Projector(REGISTRATION)
    with pytest.raises(OSError):
        broken.replay(failing())
    assert indexes(broken.db) == indexes(fresh)
    assert broken.view.seq == 0


class Runs:
    """A registered projection that counts deliveries and records how it was handed them."""

    name = "runs-1"
    schema = "CREATE TABLE runs_count(n INTEGER NOT NULL); INSERT INTO runs_count VALUES (0);"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def apply(self, db: sqlite3.Connection, seq: int, event: pb.Event) -> Sequence[Change]:
        if event.WhichOneof("kind") == "message_added":
            self.calls.append(1)
            db.execute("UPDATE runs_count SET n=n+1")
        return ()

    def apply_run(self, db: sqlite3.Connection, run: Sequence[Delivery]) -> Sequence[Sequence[Change]]:
        self.calls.append(len(run))
        db.execute("UPDATE runs_count SET n=n+?", (len(run),))
        return [()] * len(run)


def test_a_commit_of_several_deliveries_reaches_projections_as_one_run() -> None:
    runs = Runs()
    db = proj.connect([runs])
    events = START + [_added(1, uid, uid, [], b"s", b"", 0, [], [], b"", [], b"") for uid in range(1, 6)]
    events.append(pb.Event(flags_changed=pb.FlagsChanged(mailbox_id=1, uids=[1], add=["\\Seen"])))
    events += [_added(2, uid, uid, [], b"s", b"", 0, [], [], b"", [], b"") for uid in range(1, 4)]
    proj.apply_all(db, [(seq, seq, e) for seq, e in enumerate(events, 1)], [runs])
    assert runs.calls == [5, 3]
    assert db.execute("SELECT n FROM runs_count").fetchone() == (8,)
    assert db.execute("SELECT COUNT(*) FROM message").fetchone() == (8,)


def _refuse(*args: object) -> object:
    raise AssertionError("a decision was made again while folding recorded events")


def test_replay_never_makes_a_decision_again(keyed_dir: tuple[Path, bytes]) -> None:
    """A cold replay (no checkpoint) of an account with threaded deliveries and copies, through a
    registration whose decision hooks refuse to run, gives the state the live account had."""

    async def go() -> None:
        d, key = keyed_dir
        store = await open_store(d, key)
        await store.create_account("a", ["a@example.test"], None)
        async with store.use_account("a") as acct:
            msgs = [f"Message-ID: <m{i}@x>\r\nSubject: {'Re: ' if i else ''}plans\r\n"
                    f"{'In-Reply-To: <m0@x>' if i else 'X: y'}\r\n\r\nbody {i}\r\n".encode() for i in range(6)]
            for raw in msgs[:2]:
                await acct.add_message("INBOX", raw)
            await asyncio.gather(*(acct.add_message("INBOX", raw) for raw in msgs[2:]))
            inbox = acct.mailbox_required("INBOX").id
            await acct.copy(inbox, [1, 2], acct.mailbox_required("Junk").id)
            live = tables(acct.db)
            assert len({m.thread_id for m in acct.view.messages(inbox)}) == 1  # the replies joined
        await store.close()
        for cp in (d / "checkpoints").iterdir():
            cp.unlink()
        refusing = Registration(projections=PROJECTIONS, message_facts=_refuse, copy_flags=_refuse,
                                thread_of=_refuse)  # type: ignore[arg-type]
        from eventmail.store import Store

        store = await Store.open(d, key, registration=refusing)
        async with store.use_account("a") as acct:
            assert tables(acct.db) == live
        await store.close()

    asyncio.run(go())


def test_a_run_mixing_deliveries_with_and_without_junk_features_folds_as_each_alone() -> None:
    # The junk fold copies a mailbox's featureless deliveries from the message rows in one
    # statement, unless deliveries with features were taken in that mailbox in the same run.
    pattern = [(1, False), (1, True), (1, False), (2, False), (1, True), (2, False), (1, False), (2, False)]
    run = [_added(box, uid, uid % 3, ["\\Seen"] if uid % 2 else [], b"Re: lunch", b"<a@x>", 0, ["lunch"], [], b"",
                  [], b"", features) for uid, (box, features) in enumerate(pattern, 1)]
    items = [(seq, 1000 * seq, e) for seq, e in enumerate(START + run, 1)]
    batched = proj.connect(PROJECTIONS)
    proj.apply_all(batched, items, PROJECTIONS)
    alone = proj.connect(PROJECTIONS)
    for item in items:
        proj.apply_all(alone, [item], PROJECTIONS)
    assert tables(batched) == tables(alone)
    assert len(tables(batched)["junk_msg"]) == len(run)
