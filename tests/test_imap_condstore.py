"""CONDSTORE and QRESYNC (RFC 7162) with the log's seq as MODSEQ: CHANGEDSINCE, UNCHANGEDSINCE, MODSEQ search, VANISHED."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.imap_harness import HOST, PASSWORD, USER, ImapServer, RawClient, simple_message


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        for i in range(4):
            s.deliver(simple_message(f"m{i}"))
        yield s


def _modseq(line: bytes) -> int:
    m = re.search(rb"HIGHESTMODSEQ (\d+)", line) or re.search(rb"MODSEQ \((\d+)\)", line)
    assert m is not None, line
    return int(m.group(1))


def _select(c: RawClient, args: bytes = b"") -> tuple[list[bytes], int]:
    out = c.cmd(b"s SELECT INBOX" + args)
    assert out[-1].startswith(b"s OK")
    return out, _modseq(next(line for line in out if b"HIGHESTMODSEQ" in line))


def test_modseq_is_the_log_seq(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    _out, highest = _select(c, b" (CONDSTORE)")
    assert highest == srv.head_seq()
    out = c.cmd(b"a STORE 2 +FLAGS (\\Flagged)")
    assert _modseq(out[0]) == srv.head_seq()  # the flags_changed event's seq
    assert re.fullmatch(rb"\* 2 FETCH \((UID 2 )?FLAGS \(\\Flagged \\Recent\) MODSEQ \(\d+\)\)", out[0])
    st = c.cmd(b"b STATUS INBOX (HIGHESTMODSEQ)")[0]
    assert _modseq(st) == srv.head_seq()
    c.close()


def test_changedsince_and_unchangedsince(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    _out, before = _select(c, b" (CONDSTORE)")
    c.cmd(b"a STORE 3 +FLAGS (\\Seen)")
    after = srv.head_seq()
    # RFC 7162 §3.1.4: only messages changed after the given mod-sequence
    out = c.cmd(b"f FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % before)
    assert out == [b"* 3 FETCH (FLAGS (\\Seen \\Recent) MODSEQ (%d))" % after, b"f OK FETCH completed"]
    assert c.cmd(b"g FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % after) == [b"g OK FETCH completed"]
    # RFC 7162 §3.1.3: a message changed since UNCHANGEDSINCE is left alone and named in MODIFIED
    out = c.cmd(b"h STORE 1,3 (UNCHANGEDSINCE %d) +FLAGS (\\Answered)" % before)
    assert out[-1].startswith(b"h OK [MODIFIED 3]")
    flags = srv.view_flags("INBOX")
    assert "\\Answered" in flags[1] and "\\Answered" not in flags[3]
    # UNCHANGEDSINCE 0 fails for every message (RFC 7162 §3.1.3, example 6)
    out = c.cmd(b"i UID STORE 2 (UNCHANGEDSINCE 0) +FLAGS (\\Deleted)")
    assert out[-1].startswith(b"i OK [MODIFIED 2]")
    assert "\\Deleted" not in srv.view_flags("INBOX")[2]
    c.close()


def test_search_modseq(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    _out, before = _select(c)
    c.cmd(b"a STORE 2,4 +FLAGS (\\Flagged)")
    out = c.cmd(b"b SEARCH MODSEQ %d" % (before + 1))
    # RFC 7162 §3.1.5: the highest mod-sequence of the matches goes with them
    # RFC 7162 §3.1: the first CONDSTORE-enabling command while selected brings HIGHESTMODSEQ
    assert out == [b"* SEARCH 2 4 (MODSEQ %d)" % srv.head_seq(), b"* OK [HIGHESTMODSEQ %d] highest" % srv.head_seq(),
                   b"b OK SEARCH completed"]
    c.close()


def test_imapclient_condstore(srv: ImapServer) -> None:
    ic = IMAPClient(HOST, port=srv.plain_port, ssl=False, timeout=30)
    ic.login(USER, PASSWORD)
    info = ic.select_folder("INBOX")
    highest = info[b"HIGHESTMODSEQ"]
    ic.add_flags([2], [b"$Work"])
    changed = ic.fetch([1, 2, 3, 4], ["FLAGS"], modifiers=[f"CHANGEDSINCE {highest}"])
    assert list(changed) == [2] and changed[2][b"MODSEQ"] == (srv.head_seq(),)
    ic.logout()


def test_qresync_select_reports_vanished_and_changes(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"e ENABLE QRESYNC")
    out, highest = _select(c)
    validity = re.search(rb"UIDVALIDITY (\d+)", b"\n".join(out))
    assert validity is not None
    c.cmd(b"u UNSELECT")
    other = srv.imap()
    other.select("INBOX")
    other.store("1", "+FLAGS", r"(\Deleted)")
    other.expunge()
    other.store("2", "+FLAGS", r"(\Flagged)")  # UID 3 now
    other.logout()
    # RFC 7162 §3.2.5.1: VANISHED (EARLIER) for expunged UIDs, then FETCH of changed ones
    out = c.cmd(b"q SELECT INBOX (QRESYNC (%s %d 1:4))" % (validity.group(1), highest))
    assert b"* VANISHED (EARLIER) 1" in out
    fetched = [line for line in out if b" FETCH " in line]
    assert len(fetched) == 1 and b"UID 3 " in fetched[0] and b"\\Flagged" in fetched[0]
    # QRESYNC with an unknown UIDVALIDITY: a plain SELECT, nothing extra
    c.cmd(b"u2 UNSELECT")
    out = c.cmd(b"r SELECT INBOX (QRESYNC (1 %d))" % highest)
    assert not any(b"VANISHED" in line or b" FETCH " in line for line in out)
    c.close()


def test_qresync_needs_enable(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    out = c.cmd(b"q SELECT INBOX (QRESYNC (1 1))")
    assert out[-1].startswith(b"q BAD")
    c.close()


def test_qresync_expunges_arrive_as_vanished(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"e ENABLE QRESYNC")
    _select(c)
    other = srv.imap()
    other.select("INBOX")
    other.store("2:3", "+FLAGS", r"(\Deleted)")
    other.expunge()
    other.logout()
    out = c.cmd(b"n NOOP")
    assert b"* VANISHED 2:3" in out and not any(b"EXPUNGE" in line for line in out)
    # UID FETCH ... (CHANGEDSINCE n VANISHED) (RFC 7162 §3.2.6)
    out = c.cmd(b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert out[0] == b"* VANISHED (EARLIER) 2:3"
    c.close()


def test_select_while_selected_sends_closed(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"e ENABLE QRESYNC")
    _select(c)
    out = c.cmd(b"t SELECT Trash")
    assert out[0] == b"* OK [CLOSED] previous mailbox closed"  # RFC 7162 §3.2.11
    c.close()
