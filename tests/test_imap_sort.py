"""SORT, SORT=DISPLAY and ESORT (RFC 5256, 5957, 5267) over a real socket, and RFC 5256 §2.1 base subjects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.imap.sort import base_subject
from tests.imap_harness import ImapServer


@pytest.mark.parametrize(("raw", "base"), [
    (b"Re: hello", "hello"),
    (b"RE: [list] Fwd: Re:  hello   world (fwd)", "hello world"),
    (b"[list] hello", "hello"),
    (b"[only a blob]", "[only a blob]"),  # §2.1 (4): a blob stays when nothing would remain
    (b"[fwd: Re: inner]", "inner"),
    (b"=?utf-8?q?Re=3A_caf=C3=A9?=", "café"),
    (b"re:re:re: x", "x"),
])
def test_base_subject(raw: bytes, base: str) -> None:
    assert base_subject(raw) == base


def _msg(subject: str, sender: str, date: str, body: str = "x") -> bytes:
    return (f"From: {sender}\r\nTo: alice@example.test\r\nSubject: {subject}\r\nDate: {date}\r\n\r\n{body}\r\n").encode()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        s.deliver(_msg("Re: beta", "Zed <a@x.test>", "Mon, 7 Feb 1994 21:52:25 -0800", "a longer body here"))
        s.deliver(_msg("alpha", "Amy <z@x.test>", "Mon, 7 Feb 1994 20:52:25 -0800"))
        s.deliver(_msg("[list] gamma", "m@x.test", "Tue, 8 Feb 1994 01:00:00 +0000", "yy"))
        yield s


def test_sort_keys_and_esort(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    assert b"SORT=DISPLAY" in c.cmd(b"c CAPABILITY")[0]
    c.cmd(b"s SELECT INBOX")
    assert c.cmd(b"a SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 2 1 3"
    assert c.cmd(b"b SORT (REVERSE SUBJECT) UTF-8 ALL")[0] == b"* SORT 3 1 2"
    assert c.cmd(b"d SORT (FROM) UTF-8 ALL")[0] == b"* SORT 1 3 2"  # local parts a, m, z
    assert c.cmd(b"e SORT (DISPLAYFROM) UTF-8 ALL")[0] == b"* SORT 2 3 1"  # Amy, m@x.test, Zed
    assert c.cmd(b"f SORT (DATE) UTF-8 ALL")[0] == b"* SORT 3 2 1"  # in UTC, 8 Feb: 05:52, 04:52, 01:00
    assert c.cmd(b"g SORT (SIZE) UTF-8 NOT SUBJECT gamma")[0] == b"* SORT 2 1"
    assert c.cmd(b"h UID SORT (ARRIVAL) UTF-8 ALL")[0] == b"* SORT 1 2 3"
    assert c.cmd(b"i SORT RETURN (MIN MAX COUNT ALL) (SUBJECT) UTF-8 ALL")[0] == (
        b'* ESEARCH (TAG "i") MIN 2 MAX 3 COUNT 3 ALL 2,1,3')
    assert c.cmd(b"j SORT (NOSUCH) UTF-8 ALL")[-1].startswith(b"j BAD")
    assert c.cmd(b"k SORT (SUBJECT) KOI9-X ALL")[-1].startswith(b"k NO [BADCHARSET")
