"""IMAP sessions end to end with imaplib: log in, select, append, fetch, store, expunge, and IDLE seeing a delivery."""

from __future__ import annotations

import imaplib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.proto import events_pb2 as pb
from tests.imap_harness import PASSWORD, USER, ImapServer, corpus, simple_message


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        yield s


def _kinds(srv: ImapServer) -> list[str]:
    return [e.WhichOneof("kind") or "" for e in srv.events()]


def test_login_select_append_fetch_store_expunge(srv: ImapServer) -> None:
    m = srv.imap()
    typ, data = m.select("INBOX")
    assert (typ, data) == ("OK", [b"0"])
    raw = corpus(1)[0]
    typ, data = m.append("INBOX", r"(\Flagged)", imaplib.Time2Internaldate(time.time()), raw)
    assert typ == "OK"
    # RFC 4315 APPENDUID: the UIDVALIDITY of INBOX and the new UID
    match = re.match(rb"\[APPENDUID (\d+) (\d+)\]", data[0])
    assert match is not None and match.group(2) == b"1"
    typ, data = m.noop()
    assert typ == "OK"
    typ, data = m.uid("FETCH", "1", "(FLAGS RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK"
    meta, body = data[0]  # type: ignore[misc]
    assert body == raw
    assert f"RFC822.SIZE {len(raw)}".encode() in meta
    assert b"\\Flagged" in meta and b"\\Seen" not in meta
    # BODY[] (no PEEK) sets \Seen, and the log records it
    typ, data = m.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK"
    assert srv.view_flags("INBOX")[1] == ("\\Flagged", "\\Seen")
    typ, data = m.store("1", "+FLAGS", r"(\Deleted $Label1)")
    assert typ == "OK"
    assert b"\\Deleted" in data[0] and b"$Label1" in data[0]  # type: ignore[operator]
    typ, data = m.expunge()
    assert (typ, data) == ("OK", [b"1"])
    assert srv.view_flags("INBOX") == {}
    kinds = _kinds(srv)
    # every change is an event, in the order it was made
    assert kinds[-4:] == ["message_added", "flags_changed", "flags_changed", "messages_expunged"]
    m.logout()


def test_append_is_on_disk_before_ok(srv: ImapServer) -> None:
    """When the APPEND's OK arrives, its event is in the account's log, marked as an IMAP append."""
    m = srv.imap()
    assert m.append("Drafts", None, None, simple_message("draft"))[0] == "OK"
    added = [e.message_added for e in srv.events() if e.WhichOneof("kind") == "message_added"]
    assert len(added) == 1 and added[0].origin.kind == "imap-append"
    m.logout()


def test_wrong_password_is_refused(srv: ImapServer) -> None:
    m = srv.imap(login=False)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        m.login(USER, "wrong")
    m.login(USER, PASSWORD)  # the session goes on
    assert m.select("INBOX")[0] == "OK"
    m.logout()


def test_commands_need_the_right_state(srv: ImapServer) -> None:
    c = srv.raw()
    assert c.cmd(b"a SELECT INBOX")[-1].startswith(b"a BAD")
    c.login()
    assert c.cmd(b"b FETCH 1 FLAGS")[-1].startswith(b"b BAD")
    assert c.cmd(b"c LOGIN alice secret")[-1].startswith(b"c BAD")
    c.close()


def test_starttls_and_implicit_tls(srv: ImapServer) -> None:
    # STARTTLS port: no password before TLS (RFC 9051 §6.2.3 LOGINDISABLED)
    m = imaplib.IMAP4("127.0.0.1", srv.starttls_port, timeout=30)
    assert "LOGINDISABLED" in m.capabilities and "STARTTLS" in m.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        m.login(USER, PASSWORD)
    m.starttls(ssl_context=srv.client_context())
    assert "STARTTLS" not in m.capabilities and "AUTH=PLAIN" in m.capabilities
    m.login(USER, PASSWORD)
    assert m.select("INBOX")[0] == "OK"
    m.logout()
    s = srv.imaps()
    assert s.select("INBOX")[0] == "OK"
    s.logout()


def test_idle_sees_a_delivery(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    assert c.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    c.send(b"i IDLE\r\n")
    assert c.response().startswith(b"+ ")
    uid = srv.deliver(simple_message("while idling"))
    assert c.response() == b"* 1 EXISTS"
    assert c.response() == b"* 1 RECENT"  # RFC 3501 §7.3.2: this session is the one it is recent for
    srv.deliver(simple_message("second"), flags=("\\Seen",))
    assert c.response() == b"* 2 EXISTS"
    assert c.response() == b"* 2 RECENT"
    c.send(b"DONE\r\n")
    assert c.response().startswith(b"i OK")
    out = c.cmd(f"f UID FETCH {uid}:* (UID FLAGS)".encode())
    assert out[0] == b"* 1 FETCH (UID 1 FLAGS (\\Recent))"
    assert out[1] == b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent))"
    c.close()


def test_idle_sees_flags_and_expunge_from_another_session(srv: ImapServer) -> None:
    for i in range(3):
        srv.deliver(simple_message(f"m{i}"))
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    c.send(b"i IDLE\r\n")
    assert c.response().startswith(b"+ ")
    other = srv.imap()
    other.select("INBOX")
    other.store("2", "+FLAGS", r"(\Flagged)")
    assert c.response() == b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))"  # c selected first
    other.store("1", "+FLAGS", r"(\Deleted)")
    assert c.response() == b"* 1 FETCH (UID 1 FLAGS (\\Deleted \\Recent))"
    other.expunge()
    assert c.response() == b"* 1 EXPUNGE"
    c.send(b"DONE\r\n")
    assert c.response().startswith(b"i OK")
    assert c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    other.logout()
    c.close()


def test_delivery_origin_is_smtp_and_uids_grow(srv: ImapServer) -> None:
    uids = [srv.deliver(simple_message(f"m{i}")) for i in range(3)]
    assert uids == [1, 2, 3]
    m = srv.imap()
    m.select("INBOX")
    m.store("1:3", "+FLAGS", r"(\Deleted)")
    m.expunge()
    assert srv.deliver(simple_message("after")) == 4  # RFC 9051 §2.3.1.1: UIDs are never reused
    added = [e.message_added for e in srv.events() if e.WhichOneof("kind") == "message_added"]
    assert [a.origin.kind for a in added] == ["smtp"] * 4
    assert isinstance(added[0], pb.MessageAdded)
    m.logout()
