"""UIDONLY (RFC 9586) and INPROGRESS (RFC 9585) over real sockets: UIDFETCH and VANISHED instead of sequence
numbers, BAD [UIDREQUIRED] for commands that use them, and progress reports of a long text SEARCH."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.imap import messages
from tests.imap_harness import ImapServer, simple_message


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        yield s


def test_uidonly(srv: ImapServer) -> None:
    for i in range(3):
        srv.deliver(simple_message(f"m{i}", Message_ID=f"<u{i}@x>"))
    c = srv.raw()
    assert b"UIDONLY" in c.cmd(b"c CAPABILITY")[0]
    c.login()
    assert c.cmd(b"e ENABLE UIDONLY") == [b"* ENABLED UIDONLY", b"e OK ENABLE completed"]
    out = c.cmd(b"s SELECT INBOX")
    assert not any(b"[UNSEEN " in line for line in out)  # a sequence number (RFC 9586 §3)
    assert b"* 3 EXISTS" in out
    # UID FETCH answers UIDFETCH, named by UID
    assert c.cmd(b"f UID FETCH 2:3 (FLAGS)") == [
        b"* 2 UIDFETCH (UID 2 FLAGS (\\Recent))", b"* 3 UIDFETCH (UID 3 FLAGS (\\Recent))", b"f OK FETCH completed"]
    assert c.cmd(b"t UID STORE 1 +FLAGS (\\Flagged)")[0] == b"* 1 UIDFETCH (UID 1 FLAGS (\\Flagged \\Recent))"
    # Sequence numbers are refused
    for line in (b"x FETCH 1 FLAGS", b"x STORE 1 +FLAGS (\\Seen)", b"x COPY 1 Archive", b"x MOVE 1 Archive",
                 b"x SEARCH ALL", b"x UID SEARCH 1:2", b"x UID SEARCH OR UID 1 2", b"x SORT (DATE) UTF-8 ALL",
                 b"x THREAD REFERENCES UTF-8 ALL"):
        assert c.cmd(line)[-1].startswith(b"x BAD [UIDREQUIRED]"), line
    assert c.cmd(b"x UID SEARCH UID 1:2")[-2:] == [b"* SEARCH 1 2", b"x OK SEARCH completed"]
    # An expunge is told as VANISHED, another session's flag change as UIDFETCH
    other = srv.imap()
    other.select("INBOX")
    other.uid("STORE", "3", "+FLAGS", "(\\Seen)")
    other.uid("STORE", "2", "+FLAGS", "(\\Deleted)")
    other.expunge()
    other.logout()
    out = c.cmd(b"n NOOP")
    assert b"* VANISHED 2" in out and not any(re.match(rb"\* \d+ EXPUNGE", line) for line in out), out
    assert b"* 3 UIDFETCH (UID 3 FLAGS (\\Seen \\Recent))" in out, out
    c.close()
    # Without ENABLE, nothing changes
    d = srv.raw()
    d.login()
    d.cmd(b"s SELECT INBOX")
    assert d.cmd(b"f FETCH 1 (UID)")[0] == b"* 1 FETCH (UID 1)"
    d.close()


def test_inprogress_during_a_text_search(srv: ImapServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # A text SEARCH reads messages in slices (64 at a time); with the period at 0 every slice
    # but the last reports (the count, not the clock, is what this test is about).
    monkeypatch.setattr(messages, "INPROGRESS_SECONDS", 0.0)
    for i in range(150):
        srv.deliver(simple_message(f"s{i}", body="needle" if i % 50 == 0 else "hay", Message_ID=f"<p{i}@x>"))
    c = srv.raw()
    assert b"INPROGRESS" in c.cmd(b"c CAPABILITY")[0]
    c.login()
    c.cmd(b"s SELECT INBOX")
    out = c.cmd(b"q UID SEARCH BODY needle")
    progress = [line for line in out if b"INPROGRESS" in line]
    assert progress == [b'* OK [INPROGRESS ("q" 64 150)] still searching',
                        b'* OK [INPROGRESS ("q" 128 150)] still searching'], out
    assert out[-2:] == [b"* SEARCH 1 51 101", b"q OK SEARCH completed"]
    # A search that reads no text looks at 100 messages a slice
    assert [line for line in c.cmd(b"r UID SEARCH ALL") if b"INPROGRESS" in line] == [
        b'* OK [INPROGRESS ("r" 100 150)] still searching']
    c.close()
