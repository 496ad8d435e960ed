"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267) over a real socket: PARTIAL windows, live results
(UPDATE: ADDTO / REMOVEFROM after changes by this and other sessions), CANCELUPDATE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imap_harness import ImapServer, simple_message


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        for i in range(5):
            s.deliver(simple_message(f"s{i}", body=f"body {i}"))
        yield s


def _esearch(lines: list[bytes]) -> list[bytes]:
    return [x for x in lines if x.startswith(b"* ESEARCH")]


def test_capabilities_are_offered(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    caps = c.cmd(b"c CAPABILITY")[0].split()
    assert b"CONTEXT=SEARCH" in caps and b"CONTEXT=SORT" in caps
    c.close()


def test_partial_windows_of_search_and_sort(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    assert _esearch(c.cmd(b"a SEARCH RETURN (PARTIAL 2:4) ALL")) == [b'* ESEARCH (TAG "a") PARTIAL (2:4 2:4)']
    assert _esearch(c.cmd(b"b SEARCH RETURN (PARTIAL 4:2) 1:2,4:5")) == [b'* ESEARCH (TAG "b") PARTIAL (2:4 2,4:5)']
    assert _esearch(c.cmd(b"d SEARCH RETURN (PARTIAL 6:9) ALL")) == [b'* ESEARCH (TAG "d") PARTIAL (6:9 NIL)']
    assert _esearch(c.cmd(b"e UID SEARCH RETURN (PARTIAL 1:2 COUNT) ALL")) == [
        b'* ESEARCH (TAG "e") UID COUNT 5 PARTIAL (1:2 1:2)']
    # in sort order: the window of the sorted result, written in that order
    assert _esearch(c.cmd(b"f SORT RETURN (PARTIAL 1:3) (REVERSE SUBJECT) US-ASCII ALL")) == [
        b'* ESEARCH (TAG "f") PARTIAL (1:3 5,4,3)']
    for bad in (b"PARTIAL 1", b"PARTIAL 1:*", b"PARTIAL *:1", b"PARTIAL 0:2"):
        assert c.cmd(b"g SEARCH RETURN (" + bad + b") ALL")[-1].startswith(b"g BAD")
    c.close()


def test_live_search_follows_flags_arrivals_and_expunges(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    other = srv.raw()
    other.login()
    other.cmd(b"s SELECT INBOX")
    assert _esearch(c.cmd(b"live SEARCH RETURN (UPDATE ALL) SEEN")) == [b'* ESEARCH (TAG "live")']
    # another session's change reaches this one at its next command
    other.cmd(b"a STORE 1,2,4 +FLAGS (\\Seen)")
    assert _esearch(c.cmd(b"n NOOP")) == [b'* ESEARCH (TAG "live") ADDTO (0 1:2,4)']
    # this session's own change is told with the command's answer
    assert _esearch(c.cmd(b"b STORE 2 -FLAGS (\\Seen)")) == [b'* ESEARCH (TAG "live") REMOVEFROM (0 2)']
    # a member expunged leaves the result before its EXPUNGE, by the number it had
    c.cmd(b"d STORE 4 +FLAGS (\\Deleted)")
    out = c.cmd(b"e EXPUNGE")
    assert out[:2] == [b'* ESEARCH (TAG "live") REMOVEFROM (0 4)', b"* 4 EXPUNGE"]
    # new mail that matches enters it
    srv.deliver(simple_message("new"), flags=("\\Seen",))
    out = c.cmd(b"f NOOP")
    assert b"* 5 EXISTS" in out and _esearch(out) == [b'* ESEARCH (TAG "live") ADDTO (0 5)']
    assert c.cmd(b'g CANCELUPDATE "live"')[-1].startswith(b"g OK")
    other.cmd(b"h STORE 3 +FLAGS (\\Seen)")
    assert _esearch(c.cmd(b"i NOOP")) == []
    assert c.cmd(b'j CANCELUPDATE "live"')[-1].startswith(b"j NO")
    c.close()
    other.close()


def test_live_uid_search_and_live_sort_positions(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    c.cmd(b"a STORE 2,4 +FLAGS (\\Flagged)")
    assert _esearch(c.cmd(b"u UID SEARCH RETURN (UPDATE ALL) FLAGGED")) == [b'* ESEARCH (TAG "u") UID ALL 2,4']
    assert _esearch(c.cmd(b"r SORT RETURN (UPDATE ALL) (REVERSE SUBJECT) US-ASCII FLAGGED")) == [
        b'* ESEARCH (TAG "r") ALL 4,2']
    out = _esearch(c.cmd(b"b STORE 3 +FLAGS (\\Flagged)"))
    # sorted: message 3 goes between 4 and 2, position 2
    assert sorted(out) == [b'* ESEARCH (TAG "r") ADDTO (2 3)', b'* ESEARCH (TAG "u") UID ADDTO (0 3)']
    out = _esearch(c.cmd(b"d STORE 4 -FLAGS (\\Flagged)"))
    assert sorted(out) == [b'* ESEARCH (TAG "r") REMOVEFROM (1 4)', b'* ESEARCH (TAG "u") UID REMOVEFROM (0 4)']
    c.cmd(b"e CLOSE")
    c.cmd(b"f SELECT INBOX")
    assert c.cmd(b'g CANCELUPDATE "r"')[-1].startswith(b"g NO")  # live results end with the selection
    c.close()


def test_partial_with_update_is_refused_not_half_done(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    assert c.cmd(b"a SEARCH RETURN (UPDATE PARTIAL 1:2) ALL")[-1].startswith(b"a NO")
    assert c.cmd(b'b CANCELUPDATE "a"')[-1].startswith(b"b NO")
    c.close()


def test_a_live_result_that_fails_to_update_is_dropped_not_the_command(
        srv: ImapServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while bringing a live result up to date (a bug) costs the live result, with
    NOUPDATE; the command that ran still gets its OK."""
    from eventmail.imap import messages

    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    c.cmd(b"live SEARCH RETURN (UPDATE) SEEN")

    async def broken(*_a: object) -> list[object]:
        raise RuntimeError("injected")

    monkeypatch.setattr(messages, "matching", broken)
    out = c.cmd(b"a STORE 1 +FLAGS (\\Seen)")
    assert out[-1].startswith(b"a OK")
    assert b'* NO [NOUPDATE "live"] this result is no longer kept up to date' in out
    assert c.cmd(b'b CANCELUPDATE "live"')[-1].startswith(b"b NO")
    c.close()
