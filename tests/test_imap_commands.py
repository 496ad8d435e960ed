"""The remaining IMAP4rev1/rev2 commands and states: EXAMINE, CHECK, LOGOUT, UNSUBSCRIBE, MULTIAPPEND, STATUS items,
ENABLE IMAP4rev2, and changes from elsewhere reaching an IDLE session in log order."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.imap_harness import HOST, PASSWORD, USER, ImapServer, simple_message


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        s.deliver(simple_message("one"))
        s.deliver(simple_message("two"), flags=("\\Seen", "\\Deleted"))
        yield s


def test_examine_is_read_only(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    out = c.cmd(b"e EXAMINE INBOX")
    assert out[-1] == b"e OK [READ-ONLY] EXAMINE completed"
    assert b"* OK [PERMANENTFLAGS ()] flags permitted" in out
    assert c.cmd(b"f FETCH 1 BODY[TEXT]")[-1] == b"f OK FETCH completed"
    assert srv.view_flags("INBOX")[1] == ()  # no \Seen from a read-only mailbox (RFC 9051 §6.3.3)
    assert c.cmd(b"s STORE 1 +FLAGS (\\Flagged)")[-1].startswith(b"s NO [READ-ONLY]")
    assert c.cmd(b"x EXPUNGE")[-1].startswith(b"x NO [READ-ONLY]")
    assert c.cmd(b"c CLOSE")[-1] == b"c OK CLOSE completed"
    assert len(srv.view_flags("INBOX")) == 2  # CLOSE after EXAMINE expunges nothing
    c.close()


def test_select_responses(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    out = c.cmd(b"s SELECT INBOX")
    assert out[0] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
    # both messages arrived while no session had INBOX selected: \Recent here (RFC 3501 §2.3.2)
    assert b"* 2 EXISTS" in out and b"* 2 RECENT" in out
    assert b"* OK [UNSEEN 1] first unseen" in out
    assert any(re.fullmatch(rb"\* OK \[UIDVALIDITY \d+\] UIDs valid", line) for line in out)
    assert b"* OK [UIDNEXT 3] predicted next UID" in out
    assert out[-1] == b"s OK [READ-WRITE] SELECT completed"
    assert c.cmd(b"n SELECT Nonexistent")[-1].startswith(b"n NO [NONEXISTENT]")
    assert c.cmd(b"f FETCH 1 FLAGS")[-1].startswith(b"f BAD")  # a failed SELECT leaves nothing selected
    c.close()


def test_check_noop_logout(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    assert c.cmd(b"c CHECK") == [b"c OK CHECK completed"]
    assert c.cmd(b"n NOOP") == [b"n OK NOOP completed"]
    assert c.cmd(b"l LOGOUT") == [b"* BYE logging out", b"l OK LOGOUT completed"]
    assert c.closed()


def test_subscribe_unsubscribe(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    assert c.cmd(b"u UNSUBSCRIBE Junk") == [b"u OK UNSUBSCRIBE completed"]
    out = c.cmd(b'l LSUB "" "*"')
    assert not any(b'"Junk"' in line for line in out)
    assert c.cmd(b"s SUBSCRIBE Junk") == [b"s OK SUBSCRIBE completed"]
    assert b'* LSUB () "/" "Junk"' in c.cmd(b'm LSUB "" "*"')
    c.close()


def test_multiappend(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    a, b = simple_message("ma"), simple_message("mb")
    out = c.cmd(b"a APPEND Drafts (\\Draft) {%d+}\r\n" % len(a) + a + b' "01-Jan-2020 10:00:00 +0000" {%d+}\r\n' % len(b) + b)
    assert re.fullmatch(rb"a OK \[APPENDUID \d+ 1:2\] APPEND completed", out[-1])  # RFC 3502, RFC 4315
    assert srv.view_flags("Drafts") == {1: ("\\Draft",), 2: ()}
    c.cmd(b"s SELECT Drafts")
    assert c.cmd(b"f FETCH 2 INTERNALDATE")[0] == b'* 2 FETCH (INTERNALDATE " 1-Jan-2020 10:00:00 +0000")'  # date-day-fixed (RFC 9051 §9)
    c.close()


def test_status_items(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    out = c.cmd(b"s STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT HIGHESTMODSEQ MAILBOXID)")
    m = re.fullmatch(rb'\* STATUS "INBOX" \(MESSAGES 2 UIDNEXT 3 UIDVALIDITY \d+ UNSEEN 1 DELETED 1 SIZE (\d+) '
                     rb"RECENT 2 HIGHESTMODSEQ (\d+) MAILBOXID \((\w+)\)\)", out[0])
    assert m is not None, out[0]
    assert int(m.group(1)) == len(simple_message("one")) + len(simple_message("two"))
    assert int(m.group(2)) == srv.head_seq()
    c.close()


def test_status_counts_flags_exactly(srv: ImapServer) -> None:
    """UNSEEN, DELETED and SIZE are counted in the projection's database: a keyword that
    contains a system flag's name is not that flag."""
    srv.deliver(simple_message("three"), flags=("NotSeen", "Deleted2"))
    srv.deliver(simple_message("four"), flags=("\\Seen", "Seen"))
    c = srv.raw()
    c.login()
    out = c.cmd(b"s STATUS INBOX (MESSAGES UNSEEN DELETED SIZE)")
    size = sum(len(simple_message(s)) for s in ("one", "two", "three", "four"))
    assert out[0] == b'* STATUS "INBOX" (MESSAGES 4 UNSEEN 2 DELETED 1 SIZE %d)' % size
    c.close()


def test_enable_imap4rev2(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    assert c.cmd(b"e ENABLE IMAP4rev2")[0] == b"* ENABLED IMAP4rev2"
    out = c.cmd(b"s SELECT INBOX")
    assert not any(b"RECENT" in line or b"[UNSEEN" in line for line in out)  # RFC 9051 Appendix E
    # RFC 9051 §6.4.4: SEARCH answers with ESEARCH
    assert c.cmd(b"f SEARCH DELETED") == [b'* ESEARCH (TAG "f") ALL 2', b"f OK SEARCH completed"]
    c.close()


def test_idle_gets_changes_in_log_order(srv: ImapServer) -> None:
    """Deliveries, another session's flag change and expunge, a delivery again: the idling
    session hears them in the order the log committed them (QRESYNC: VANISHED, not EXPUNGE)."""
    ic = IMAPClient(HOST, port=srv.plain_port, ssl=False, timeout=30)
    ic.login(USER, PASSWORD)
    ic.enable("QRESYNC")
    ic.select_folder("INBOX")
    ic.idle()
    other = srv.imap()
    other.select("INBOX")
    srv.deliver(simple_message("three"))
    other.uid("STORE", "1", "+FLAGS", r"(\Flagged)")
    other.expunge()  # UID 2 was \Deleted
    srv.deliver(simple_message("four"))
    got: list[object] = []
    while len(got) < 4:
        # `* n RECENT` follows each EXISTS (RFC 3501 §7.3.2): not part of the order looked at
        got += [r for r in ic.idle_check(timeout=10) if r[1] != b"RECENT"]  # type: ignore[index]
    ic.idle_done()
    kinds = [(r[1] if isinstance(r[1], bytes) else r[0]) for r in got]
    assert kinds[:4] == [b"EXISTS", b"FETCH", b"VANISHED", b"EXISTS"]
    assert got[0][0] == 3 and got[3][0] == 3  # type: ignore[index]
    other.logout()
    ic.logout()


def test_pipelined_commands_are_answered_in_one_write(srv: ImapServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 9051 §5.5: commands a client sends together are run in order; their responses leave
    in one write of the socket layer (one send()), not one per command."""
    from eventmail import netconn

    writes: list[bytes] = []
    original = netconn.Connection.write

    def counted(self: netconn.Connection, data: bytes) -> None:
        writes.append(data)
        original(self, data)

    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    monkeypatch.setattr(netconn.Connection, "write", counted)
    c.send(b"a NOOP\r\nb FETCH 1 (FLAGS)\r\nc CHECK\r\nd NOOP\r\n")
    assert c.until(b"d")[-1] == b"d OK NOOP completed"
    assert len(writes) == 1, writes
    where = [writes[0].find(tag) for tag in (b"a OK", b"b OK", b"c OK", b"d OK")]
    assert min(where) >= 0 and where == sorted(where), writes  # all four, in order
    monkeypatch.undo()
    c.cmd(b"l LOGOUT")
