"""OBJECTID (RFC 8474) and SAVEDATE (RFC 8514) over real sockets: MAILBOXID, EMAILID and THREADID with
threads decided at delivery and recorded, save dates in FETCH and SEARCH, and the wire's parsing of them."""

from __future__ import annotations

import datetime
import imaplib
import re
import shutil
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.imap import Limits
from eventmail.imap import commands as c
from eventmail.imap.wire import ImapWire
from eventmail.opening import REGISTRATION
from eventmail.proto import events_pb2 as pb
from eventmail.store import Projector
from tests.imap_harness import ImapServer
from tests.mailserver import MailServer


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        yield s


def mail(msgid: str, subject: str, *, in_reply_to: str = "", references: str = "", body: str = "hi") -> bytes:
    lines = ["From: Bob <bob@example.test>", "To: alice@example.test", f"Subject: {subject}",
             "Date: Mon, 7 Feb 1994 21:52:25 -0800", f"Message-ID: <{msgid}>"]
    if in_reply_to:
        lines.append(f"In-Reply-To: <{in_reply_to}>")
    if references:
        lines.append("References: " + " ".join(f"<{r}>" for r in references.split()))
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def ids(m: imaplib.IMAP4, uid: int) -> tuple[str, str]:
    """(EMAILID, THREADID) of one message by UID in the selected mailbox."""
    typ, data = m.uid("FETCH", str(uid), "(EMAILID THREADID)")
    assert typ == "OK", data
    text = data[0].decode() if isinstance(data[0], bytes) else str(data[0])
    found = re.search(r"EMAILID \(([A-Za-z0-9_-]+)\) THREADID \(([A-Za-z0-9_-]+)\)", text)
    assert found is not None, text
    return found.group(1), found.group(2)


def uid_search(m: imaplib.IMAP4, *criteria: str) -> list[int]:
    typ, data = m.uid("SEARCH", *criteria)
    assert typ == "OK", data
    return [int(x) for x in data[0].split()]


def test_capabilities(srv: ImapServer) -> None:
    m = srv.imap()
    assert "OBJECTID" in m.capabilities and "SAVEDATE" in m.capabilities
    m.logout()


def test_mailboxid_from_create_select_status_and_list(srv: ImapServer) -> None:
    c_ = srv.raw()
    c_.login()
    out = c_.cmd(b"c CREATE Projects")
    created = re.fullmatch(rb"c OK \[MAILBOXID \(([A-Za-z0-9_-]+)\)\] CREATE completed", out[-1])
    assert created is not None, out  # RFC 8474 §4.1
    mbid = created.group(1)
    status = c_.cmd(b"s STATUS Projects (MAILBOXID)")
    assert status[0] == b"* STATUS \"Projects\" (MAILBOXID (" + mbid + b"))"
    select = c_.cmd(b"e EXAMINE Projects")
    assert b"* OK [MAILBOXID (" + mbid + b")] mailbox id" in select
    listed = c_.cmd(b'l LIST "" "Projects" RETURN (STATUS (MAILBOXID))')
    assert b"* STATUS \"Projects\" (MAILBOXID (" + mbid + b"))" in listed
    # RFC 8474 §4: a rename keeps the id; another mailbox has another
    c_.cmd(b"u UNSELECT")
    assert c_.cmd(b"r RENAME Projects Work")[-1].startswith(b"r OK")
    assert c_.cmd(b"s STATUS Work (MAILBOXID)")[0] == b"* STATUS \"Work\" (MAILBOXID (" + mbid + b"))"
    assert mbid not in c_.cmd(b"s STATUS INBOX (MAILBOXID)")[0]
    c_.close()


def test_threads_decided_at_delivery(srv: ImapServer) -> None:
    root = srv.deliver(mail("a1@x", "lunch"))
    reply = srv.deliver(mail("a2@x", "Re: lunch", in_reply_to="a1@x"))
    deeper = srv.deliver(mail("a3@x", "RE: Re: lunch", references="a1@x a2@x"))
    renamed = srv.deliver(mail("a4@x", "dinner instead", in_reply_to="a2@x"))  # new subject: new thread
    by_subject = srv.deliver(mail("a5@x", "Re: lunch"))  # no references, a reply by subject: joins
    stranger = srv.deliver(mail("a6@x", "Re: lunch", in_reply_to="unknown@x"))  # references nothing known
    other = srv.deliver(mail("a7@x", "Re: tea"))
    again = srv.deliver(mail("a1@x", "lunch", body="the same message again"))  # a known Message-ID
    m = srv.imap()
    m.select("INBOX")
    got = {uid: ids(m, uid) for uid in (root, reply, deeper, renamed, by_subject, stranger, other, again)}
    thread = got[root][1]
    assert thread == "T" + got[root][0][1:]  # the first message's thread is named by its own email id
    assert [got[u][1] == thread for u in (reply, deeper, renamed, by_subject, stranger, other, again)] == [
        True, True, False, True, False, False, True]
    assert len({e for e, _t in got.values()}) == len(got)  # every message its own EMAILID
    # SEARCH THREADID / EMAILID (RFC 8474 §6)
    assert uid_search(m, "THREADID", thread) == sorted([root, reply, deeper, by_subject, again])
    assert uid_search(m, "EMAILID", got[renamed][0]) == [renamed]
    assert uid_search(m, "NOT", "THREADID", thread) == sorted([renamed, stranger, other])
    assert uid_search(m, "EMAILID", "E999999") == []
    m.logout()
    # The decision is in the events: the replies carry the first message's email id
    added = [e.message_added for e in srv.events() if e.WhichOneof("kind") == "message_added"]
    assert [a.thread_id for a in added] == [0, *[int(thread[1:]) if got[u][1] == thread else 0
                                                 for u in (reply, deeper, renamed, by_subject, stranger, other, again)]]


def test_sent_copy_by_append_joins_the_thread(srv: ImapServer) -> None:
    srv.deliver(mail("q1@x", "question"))
    m = srv.imap()
    typ, data = m.append("Sent", "(\\Seen)", None, mail("q2@x", "Re: question", in_reply_to="q1@x"))
    assert typ == "OK", data
    m.select("INBOX")
    inbox = ids(m, 1)
    m.select("Sent")
    sent = ids(m, 1)
    assert sent[1] == inbox[1] and sent[0] != inbox[0]
    m.logout()


def test_copy_and_move_keep_emailid_and_threadid(srv: ImapServer) -> None:
    first = srv.deliver(mail("c1@x", "report"))
    srv.deliver(mail("c2@x", "Re: report", in_reply_to="c1@x"))
    m = srv.imap()
    m.select("INBOX")
    original = {u: ids(m, u) for u in (1, 2)}
    assert m.uid("COPY", str(first), "Archive")[0] == "OK"
    assert m.uid("MOVE", "2", "Trash")[0] == "OK"
    m.select("Archive")
    assert ids(m, 1) == original[1]  # RFC 8474 §5.1: a copy keeps its EMAILID
    m.select("Trash")
    assert ids(m, 1) == original[2]  # and a moved message
    m.logout()


def test_projection_replays_recorded_threads_and_reads_old_events(srv: ImapServer) -> None:
    srv.deliver(mail("r1@x", "plans"))
    srv.deliver(mail("r2@x", "Re: plans", in_reply_to="r1@x"))
    events = srv.events()

    def rebuilt(evs: list[pb.Event]) -> dict[int, tuple[int, int]]:
        p = Projector(REGISTRATION)
        p.apply((seq, seq * 1000, e) for seq, e in enumerate(evs, start=1))
        mb = p.view.mailbox("INBOX")
        assert mb is not None
        return {m.uid: (m.email_id, m.thread_id) for m in p.view.messages(mb.id)}

    now = rebuilt(events)
    assert now[2][1] == now[1][0] == now[1][1]  # replay reproduces the recorded thread
    # An event from before threading (no thread id) reads as the first of its own thread
    old = []
    for e in events:
        copy = pb.Event()
        copy.CopyFrom(e)
        if copy.WhichOneof("kind") == "message_added":
            copy.message_added.ClearField("thread_id")
        old.append(copy)
    legacy = rebuilt(old)
    assert legacy[2] == (now[2][0], now[2][0]) and legacy[1] == now[1]


def test_savedate_fetch_and_search(srv: ImapServer) -> None:
    srv.deliver(mail("s1@x", "saved"))
    m = srv.imap()
    m.select("INBOX")
    typ, data = m.fetch("1", "(SAVEDATE INTERNALDATE)")
    assert typ == "OK"
    found = re.search(rb'SAVEDATE "([^"]+)"', data[0] if isinstance(data[0], bytes) else b"")
    assert found is not None, data
    saved = datetime.datetime.strptime(found.group(1).decode(), "%d-%b-%Y %H:%M:%S %z")
    day = saved.astimezone(datetime.UTC).date()
    imap_day = f"{day.day}-{day.strftime('%b')}-{day.year}"
    next_day = day + datetime.timedelta(days=1)
    imap_next = f"{next_day.day}-{next_day.strftime('%b')}-{next_day.year}"
    # The message's Date: is 1994 and its internal date now; the save date is the event's time
    assert uid_search(m, "SAVEDON", imap_day) == [1]
    assert uid_search(m, "SAVEDSINCE", imap_day) == [1]
    assert uid_search(m, "SAVEDBEFORE", imap_day) == []
    assert uid_search(m, "SAVEDBEFORE", imap_next) == [1]
    assert uid_search(m, "SAVEDATESUPPORTED") == [1]
    assert uid_search(m, "SENTON", "7-Feb-1994") == [1] and uid_search(m, "SAVEDON", "7-Feb-1994") == []
    m.logout()


def test_savedate_comes_from_the_recorded_event(srv: ImapServer) -> None:
    """The save date is the time of the record that put the message in its mailbox: a rebuilt
    view given other record times shows those (nothing reads the clock)."""
    srv.deliver(mail("t1@x", "when"))
    events = srv.events()
    p = Projector(REGISTRATION)
    at = 1_000_000_000_000_000  # 2001-09-09
    p.apply((seq, at + seq, e) for seq, e in enumerate(events, start=1))
    mb = p.view.mailbox("INBOX")
    assert mb is not None
    (msg,) = p.view.messages(mb.id)
    assert msg.saved_us == at + len(events)


def one(line: bytes) -> c.Item:
    items = ImapWire(Limits(), authenticated=True).receive(line)
    assert len(items) == 1
    return items[0]


def test_wire_parses_objectid_and_savedate_items() -> None:
    cmd = one(b"a UID FETCH 1:* (EMAILID THREADID SAVEDATE)\r\n")
    assert isinstance(cmd, c.Fetch) and [i.name for i in cmd.items] == ["EMAILID", "THREADID", "SAVEDATE"]
    cmd = one(b"b SEARCH OR EMAILID E12 THREADID T3 SAVEDSINCE 1-Jan-2020\r\n")
    assert isinstance(cmd, c.Search)
    assert cmd.key == c.SearchAnd((c.SearchOr(c.SearchObjectId("EMAILID", "E12"), c.SearchObjectId("THREADID", "T3")),
                                   c.SearchDate("SAVEDSINCE", datetime.date(2020, 1, 1))))
    assert one(b"b SEARCH SAVEDATESUPPORTED\r\n") == c.Search("b", c.SearchAll())
    # objectid = 1*255(ALPHA / DIGIT / "_" / "-") (RFC 8474 §7)
    for bad in (b"c SEARCH EMAILID E1$\r\n", b"c SEARCH THREADID " + b"T" * 256 + b"\r\n", b"c SEARCH EMAILID\r\n"):
        item = one(bad)
        assert isinstance(item, c.ProtocolError) and item.status == "BAD", item


def test_a_checkpoint_of_the_older_view_is_not_restored() -> None:
    """Version 1 views had no email id, thread id or save date: their checkpoints are rebuilt from the log."""
    p = Projector(REGISTRATION)
    assert Projector.restore(REGISTRATION, p.db.serialize()) is not None
    p.db.execute("DELETE FROM meta WHERE key='view'")
    assert Projector.restore(REGISTRATION, p.db.serialize()) is None


def test_threads_over_smtp_survive_a_restart_and_a_rebuild(tmp_path: Path) -> None:
    """A real `eventmail serve`: mail delivered over SMTP is threaded at delivery; after a restart
    with the checkpoints removed (the view rebuilt from the log) the ids are the same."""
    srv = MailServer(tmp_path, kinds=("smtp", "imaps"))
    srv.init()
    srv.add_account("alice", "alice@mail.test", "alice password 1")

    def ids_over_imaps() -> list[tuple[str, str]]:
        m = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], timeout=30,
                              ssl_context=ssl.create_default_context(cafile=str(srv.cert)))
        m.login("alice", "alice password 1")
        m.select("INBOX")
        got = [ids(m, uid) for uid in (1, 2, 3)]
        m.logout()
        return got

    srv.start()
    try:
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
            s.sendmail("bob@example.test", ["alice@mail.test"], mail("w1@x", "weekend"))
            s.sendmail("bob@example.test", ["alice@mail.test"], mail("w2@x", "Re: weekend", in_reply_to="w1@x"))
            s.sendmail("bob@example.test", ["alice@mail.test"], mail("w3@x", "other"))
        srv.wait_for("alice", 3)
        before = ids_over_imaps()
    finally:
        srv.stop()
    assert before[0][1] == before[1][1] != before[2][1]
    shutil.rmtree(srv.directory / "checkpoints")
    shutil.rmtree(srv.directory / "past-checkpoints", ignore_errors=True)
    srv.start()
    try:
        assert ids_over_imaps() == before
    finally:
        srv.stop()
