"""REPLACE and UID REPLACE (RFC 8508) over a real socket: the new message is stored, the original
expunged; nothing changes when the REPLACE fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imap_harness import ImapServer, RawClient, simple_message


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        for i in range(3):
            s.deliver(simple_message(f"draft {i}"))
        yield s


def _replace(c: RawClient, tag: bytes, head: bytes, message: bytes) -> list[bytes]:
    return c.cmd(tag + b" " + head + b" {%d+}\r\n" % len(message) + message)


def test_replace_stores_the_new_message_and_expunges_the_original(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    assert b"REPLACE" in c.cmd(b"c CAPABILITY")[0].split()
    c.cmd(b"s SELECT INBOX")
    new = simple_message("draft 1, edited")
    out = _replace(c, b"a", b"REPLACE 2 INBOX (\\Draft)", new)
    assert out[-1].startswith(b"a OK [APPENDUID ") and out[-1].split()[4].rstrip(b"]") == b"4"
    assert b"* 4 EXISTS" in out and b"* 2 EXPUNGE" in out  # the new one arrives, then the original goes
    assert srv.view_flags("INBOX") == {1: (), 3: (), 4: ("\\Draft",)}
    # UID REPLACE into another mailbox: the original leaves the selected one
    out = _replace(c, b"b", b"UID REPLACE 4 Drafts", simple_message("moved on"))
    assert out[-1].startswith(b"b OK [APPENDUID ")
    assert b"* 3 EXPUNGE" in out
    assert srv.view_flags("INBOX") == {1: (), 3: ()} and srv.view_flags("Drafts") == {1: ()}
    c.close()


def test_a_failed_replace_leaves_the_original(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    assert _replace(c, b"a", b"REPLACE 1 Nowhere", simple_message())[-1].startswith(b"a NO [TRYCREATE]")
    assert _replace(c, b"b", b"UID REPLACE 99 INBOX", simple_message())[-1].startswith(b"b NO")
    assert _replace(c, b"d", b"REPLACE 9 INBOX", simple_message())[-1].startswith(b"d BAD")
    assert _replace(c, b"e", b"REPLACE 1 INBOX (\\Bogus)", simple_message())[-1].startswith(b"e BAD")
    assert srv.view_flags("INBOX") == {1: (), 2: (), 3: ()}
    c.cmd(b"x EXAMINE INBOX")
    assert _replace(c, b"f", b"REPLACE 1 INBOX", simple_message())[-1].startswith(b"f NO [READ-ONLY]")
    c.cmd(b"u UNSELECT")
    assert _replace(c, b"g", b"REPLACE 1 INBOX", simple_message())[-1].startswith(b"g BAD")  # nothing selected
    assert srv.view_flags("INBOX") == {1: (), 2: (), 3: ()}
    c.close()


def test_uid_replace_takes_a_message_sized_literal(srv: ImapServer) -> None:
    """Its literal is a message (up to APPENDLIMIT), not a command argument (64 KiB)."""
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    big = simple_message("big", body="x" * 200_000)
    assert _replace(c, b"a", b"UID REPLACE 1 INBOX", big)[-1].startswith(b"a OK [APPENDUID ")
    assert _replace(c, b"b", b"REPLACE 1 INBOX", big)[-1].startswith(b"b OK [APPENDUID ")
    assert sorted(srv.view_flags("INBOX")) == [3, 4, 5]
    c.close()
