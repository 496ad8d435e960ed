"""The thread index's keys recorded in MessageAdded at ingress index a replay as the keys computed from the envelope do, and old events without them still replay."""

import asyncio
import sqlite3
from pathlib import Path

from eventmail.mail.threads import THREAD_INDEX, thread_of
from eventmail.mime.structure import parse_structure
from eventmail.opening import REGISTRATION, open_store
from eventmail.proto import events_pb2 as pb
from eventmail.store import Mailbox, MasterKeySource, init_directory, load_master_key
from eventmail.store import projection as proj

PROJECTIONS = REGISTRATION.projections
CORPUS = Path(__file__).parent / "data" / "corpus"
INBOX = Mailbox(id=1, name="INBOX", uidvalidity=5, uidnext=1, special_use=0, highest_modseq=0)


def corpus() -> list[tuple[bytes, pb.MessageStructure]]:
    out = []
    for f in sorted(CORPUS.glob("*/*.eml")):
        raw = f.read_bytes().split(b"\n", 1)[1].replace(b"\n", b"\r\n")
        out.append((raw, parse_structure(raw)))
    return out


def _threads(db: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in ("thread_msgid", "thread_subject")}


def test_the_keys_thread_of_decides_by_are_the_keys_computed_from_the_envelope() -> None:
    db = proj.connect(PROJECTIONS)
    messages = corpus()
    assert len(messages) > 300
    for raw, structure in messages:
        _thread, own, subject = thread_of(db, raw, structure, INBOX, 10**15)
        assert (own, subject) == THREAD_INDEX.prepare(pb.MessageAdded(structure=structure))


def test_a_replay_indexes_by_the_recorded_keys_and_old_events_as_before() -> None:
    decide = proj.connect(PROJECTIONS)
    recorded, old = [pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=1, name="INBOX", uidvalidity=5))], []
    for uid, (raw, structure) in enumerate(corpus(), 1):
        thread, own, subject = thread_of(decide, raw, structure, INBOX, 10**15)
        added = pb.MessageAdded(mailbox_id=1, uid=uid, blob_id=uid.to_bytes(32, "big"), size=len(raw),
                                structure=structure, thread_id=thread, thread_message_id=own or b"",
                                thread_subject=subject)
        recorded.append(pb.Event(message_added=added))
    for e in recorded:
        e2 = pb.Event()
        e2.CopyFrom(e)
        if e2.HasField("message_added"):
            e2.message_added.ClearField("thread_message_id")
            e2.message_added.ClearField("thread_subject")
        old.append(e2)
    assert any(e.message_added.thread_message_id for e in recorded[1:])
    assert any(e.message_added.thread_subject for e in recorded[1:])
    new_db, old_db = proj.Projector(REGISTRATION), proj.Projector(REGISTRATION)
    new_db.replay([(seq, seq, e) for seq, e in enumerate(recorded, 1)])
    old_db.replay([(seq, seq, e) for seq, e in enumerate(old, 1)])
    assert _threads(new_db.db) == _threads(old_db.db)
    assert len(_threads(new_db.db)["thread_msgid"]) > 300


def test_the_replay_takes_the_recorded_keys_not_the_envelope() -> None:
    # Decisions are events: what was recorded is what the index holds, even if the envelope's
    # parse changed since (here: an envelope that says otherwise).
    envelope = pb.Envelope(message_id=b"<parsed@x>", subject=b"Re: parsed", has_subject=True)
    added = pb.MessageAdded(structure=pb.MessageStructure(envelope=envelope),
                            thread_message_id=b"recorded@x", thread_subject="recorded")
    assert THREAD_INDEX.prepare(added) == (b"recorded@x", "recorded")
    added.thread_message_id = b""  # recorded: the message had no Message-ID
    assert THREAD_INDEX.prepare(added) == (None, "recorded")
    assert THREAD_INDEX.prepare(pb.MessageAdded(structure=pb.MessageStructure(envelope=envelope))) == (
        b"parsed@x", "parsed")


def test_an_added_message_records_the_keys_its_thread_was_decided_by(tmp_path: Path) -> None:
    async def go() -> None:
        d = tmp_path / "data"
        src = MasterKeySource(key_file=tmp_path / "master.key")
        init_directory(d, src)
        store = await open_store(d, load_master_key(d, src))
        await store.create_account("a", ["a@example.test"], None)
        async with store.use_account("a") as acct:
            await acct.add_message("INBOX", b"Message-ID: <m0@x>\r\nSubject: Re: [list] plans\r\n\r\nbody\r\n")
            await acct.add_message("INBOX", b"Subject: Fwd: plans\r\n\r\nbody\r\n")
            events = [pb.Event.FromString(pt) for _r, pt in acct._log.plaintexts()]
        await store.close()
        added = [e.message_added for e in events if e.HasField("message_added")]
        assert [(a.HasField("thread_subject"), a.thread_message_id, a.thread_subject) for a in added] == [
            (True, b"m0@x", "plans"), (True, b"", "plans")]

    asyncio.run(go())
