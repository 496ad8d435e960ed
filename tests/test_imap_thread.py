"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256) over a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imap_harness import ImapServer


def _msg(subject: str, msgid: str, date: str, refs: str = "", reply_to: str = "") -> bytes:
    head = f"From: a@x.test\r\nSubject: {subject}\r\nMessage-ID: <{msgid}>\r\nDate: {date}\r\n"
    if refs:
        head += f"References: {refs}\r\n"
    if reply_to:
        head += f"In-Reply-To: {reply_to}\r\n"
    return (head + "\r\nx\r\n").encode()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        s.deliver(_msg("plan", "p1@x", "Mon, 7 Feb 1994 10:00:00 +0000"))
        s.deliver(_msg("other", "o1@x", "Mon, 7 Feb 1994 11:00:00 +0000"))
        s.deliver(_msg("Re: plan", "p2@x", "Mon, 7 Feb 1994 12:00:00 +0000", refs="<p1@x>"))
        s.deliver(_msg("Re: plan", "p3@x", "Mon, 7 Feb 1994 13:00:00 +0000", reply_to="<p1@x>"))
        s.deliver(_msg("Re: plan", "p4@x", "Mon, 7 Feb 1994 14:00:00 +0000", refs="<p1@x> <p2@x>"))
        # its parent is missing: linked through the placeholder, then by subject
        s.deliver(_msg("Re: lost", "l2@x", "Mon, 7 Feb 1994 15:00:00 +0000", refs="<l1@x>"))
        yield s


def test_thread_references_and_orderedsubject(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    caps = c.cmd(b"c CAPABILITY")[0]
    assert b"THREAD=REFERENCES" in caps and b"THREAD=ORDEREDSUBJECT" in caps
    c.cmd(b"s SELECT INBOX")
    # 1 has two replies: 3 (with its own reply 5) and 4; a single chain is written flat
    assert c.cmd(b"a THREAD REFERENCES UTF-8 ALL")[0] == b"* THREAD (1 (3 5)(4))(2)(6)"
    assert c.cmd(b"b UID THREAD REFERENCES UTF-8 NOT UID 1")[0] == b"* THREAD (2)((3 5)(4))(6)"
    # ORDEREDSUBJECT: one thread per base subject, the first message the parent of the rest
    assert c.cmd(b"d THREAD ORDEREDSUBJECT UTF-8 ALL")[0] == b"* THREAD (1 (3)(4)(5))(2)(6)"
    assert c.cmd(b"e THREAD ORDEREDSUBJECT UTF-8 SUBJECT nothing")[0] == b"* THREAD"
    assert c.cmd(b"f THREAD NOSUCH UTF-8 ALL")[-1].startswith(b"f BAD")
