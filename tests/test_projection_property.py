"""Projections are pure: on random event sequences, incremental state equals a rebuild from scratch."""

import asyncio
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.opening import open_store
from eventmail.proto import events_pb2 as pb
from eventmail.store import MasterKeySource, init_directory, load_master_key
from eventmail.store import projection as proj

MAILBOX_IDS = st.integers(1, 4)
UIDS = st.lists(st.integers(1, 12), max_size=4)
FLAGS = st.lists(st.sampled_from(["\\Seen", "\\Flagged", "\\Deleted", "$Junk", "$NotJunk", "work"]), max_size=3)
NAMES = st.sampled_from(["INBOX", "Sent", "Archive", "Archive/2024", "Lists", "Lists/python"])

events = st.one_of(
    st.builds(
        lambda i, n, v, s: pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=i, name=n, uidvalidity=v, subscribed=s)),
        MAILBOX_IDS, NAMES, st.integers(1, 2**32 - 1), st.booleans(),
    ),
    st.builds(lambda i, n: pb.Event(mailbox_renamed=pb.MailboxRenamed(mailbox_id=i, name=n, uidvalidity=7)), MAILBOX_IDS, NAMES),
    st.builds(lambda i: pb.Event(mailbox_deleted=pb.MailboxDeleted(mailbox_id=i)), MAILBOX_IDS),
    st.builds(lambda n, s: pb.Event(mailbox_subscription=pb.MailboxSubscription(name=n, subscribed=s)), NAMES, st.booleans()),
    st.builds(
        lambda i, u, f, b: pb.Event(
            message_added=pb.MessageAdded(
                mailbox_id=i, uid=u, blob_id=bytes([b]) * 32, size=100 + b, internal_date=1_700_000_000 + b, flags=f,
                structure=pb.MessageStructure(envelope=pb.Envelope(subject=b"s%d" % b, has_subject=True)),
            )
        ),
        MAILBOX_IDS, st.integers(1, 12), FLAGS, st.integers(0, 255),
    ),
    st.builds(
        lambda i, u, a, r, rep: pb.Event(flags_changed=pb.FlagsChanged(mailbox_id=i, uids=u, add=a, remove=r, replace=rep)),
        MAILBOX_IDS, UIDS, FLAGS, FLAGS, st.booleans(),
    ),
    st.builds(lambda i, u: pb.Event(messages_expunged=pb.MessagesExpunged(mailbox_id=i, uids=u)), MAILBOX_IDS, UIDS),
    st.builds(
        lambda s, su, d, du, mv, af: pb.Event(
            messages_copied=pb.MessagesCopied(
                source_mailbox_id=s, source_uids=su, dest_mailbox_id=d, dest_uids=du, move=mv, add_flags=af
            )
        ),
        MAILBOX_IDS, UIDS, MAILBOX_IDS, UIDS, st.booleans(), FLAGS,
    ),
    st.builds(lambda k, v: pb.Event(account_setting=pb.AccountSetting(key=k, value=v)), st.sampled_from("abc"), st.text(max_size=5)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=60), st.sets(st.integers(0, 60), max_size=4))
def test_incremental_with_checkpoints_equals_rebuild(evs: list[pb.Event], checkpoint_at: set[int]) -> None:
    items = [(seq, 1000 * seq, e) for seq, e in enumerate(evs, 1)]
    incremental = proj.connect()
    for i, item in enumerate(items):
        if i in checkpoint_at:
            # A checkpoint round trip (serialize, deserialize) mid-stream changes nothing.
            incremental = proj.from_bytes(incremental.serialize())
        proj.apply_all(incremental, [item])
    rebuilt = proj.connect()
    proj.apply_all(rebuilt, items)
    assert proj.MailboxView(incremental).dump() == proj.MailboxView(rebuilt).dump()


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=60))
def test_uids_never_go_backwards(evs: list[pb.Event]) -> None:
    """Whatever the events say, a mailbox's UIDNEXT never decreases and exceeds every UID in it."""
    db = proj.connect()
    view = proj.MailboxView(db)
    seen: dict[int, int] = {}
    for seq, e in enumerate(evs, 1):
        proj.apply_all(db, [(seq, seq, e)])
        for mb in view.mailboxes():
            assert mb.uidnext >= seen.get(mb.id, 1)
            seen[mb.id] = mb.uidnext
            assert all(m.uid < mb.uidnext for m in view.messages(mb.id))


@settings(max_examples=25, deadline=None)
@given(st.lists(events, max_size=40))
def test_store_projection_equals_replay_of_its_log(evs: list[pb.Event]) -> None:
    """Through the real store: the live view after appends equals a cold rebuild from the log alone."""
    import tempfile

    async def go() -> None:
        with tempfile.TemporaryDirectory() as t:
            d = Path(t) / "data"
            src = MasterKeySource(key_file=Path(t) / "k")
            init_directory(d, src)
            key = load_master_key(d, src)
            store = await open_store(d, key)
            await store.create_account("a", ["a@example.test"], None)
            async with store.use_account("a") as acct:
                await asyncio.gather(*(acct.append([e]) for e in evs))
                live = acct.view.dump()
            await store.close()
            for cp in (d / "checkpoints").iterdir():
                cp.unlink()
            store = await open_store(d, key)
            async with store.use_account("a") as acct:
                assert acct.view.dump() == live
            await store.close()

    asyncio.run(go())


@settings(max_examples=200, deadline=None)
@given(st.lists(events, max_size=60), st.lists(st.integers(0, 14), max_size=20))
def test_set_queries_agree_with_one_message_at_a_time(evs: list[pb.Event], asked: list[int]) -> None:
    """`messages_of` (FETCH, STORE and every session's fold of a change: one query for many
    UIDs) finds exactly what `message` finds UID by UID, and `uids_flagged` (EXPUNGE) exactly
    the messages whose flags hold that flag, not one whose keyword merely contains it."""
    db = proj.connect()
    proj.apply_all(db, [(seq, seq, e) for seq, e in enumerate(evs, 1)])
    view = proj.MailboxView(db)
    for mailbox_id in range(1, 5):
        one_by_one = {u: m for u in asked if (m := view.message(mailbox_id, u)) is not None}
        assert view.messages_of(mailbox_id, asked) == one_by_one
        for flag in ("\\Deleted", "\\Seen", "$Junk", "Junk"):
            assert view.uids_flagged(mailbox_id, flag) == [m.uid for m in view.messages(mailbox_id) if flag in m.flags]


def test_messages_of_past_one_query() -> None:
    """More UIDs than one `IN (...)` query takes are looked up in several."""
    db = proj.connect()
    items = [(1, 1, pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=1, name="INBOX", uidvalidity=1)))]
    items += [
        (seq, seq, pb.Event(message_added=pb.MessageAdded(mailbox_id=1, uid=seq, blob_id=seq.to_bytes(32, "big"), size=1)))
        for seq in range(2, proj._IN_CHUNK * 2 + 50)
    ]
    proj.apply_all(db, items)
    view = proj.MailboxView(db)
    uids = list(range(1, proj._IN_CHUNK * 2 + 60))
    assert sorted(view.messages_of(1, uids)) == [m.uid for m in view.messages(1)]
