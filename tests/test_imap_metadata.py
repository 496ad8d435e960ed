"""METADATA, METADATA-SERVER (RFC 5464) and LIST-METADATA (RFC 9590) over a real socket: entries are
events, kept across restarts, follow renames and leave with deletes; the limits answer with their codes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.imap.wire import ImapWire
from eventmail.mail import metadata as mail_metadata
from eventmail.opening import open_store
from eventmail.store import MasterKeySource, load_master_key
from tests.imap_harness import USER, ImapServer


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        yield s


def test_capabilities_and_round_trip(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    caps = c.cmd(b"c CAPABILITY")[0].split()
    assert {b"METADATA", b"METADATA-SERVER", b"LIST-METADATA"} <= set(caps)
    assert c.cmd(b'a SETMETADATA INBOX (/private/comment "my note" /shared/Comment {3+}\r\nabc)')[-1].startswith(b"a OK")
    out = c.cmd(b"b GETMETADATA INBOX (/private/comment /shared/comment /private/nothing)")
    assert out[0] == b'* METADATA "INBOX" (/private/comment "my note" /shared/comment "abc" /private/nothing NIL)'
    # the server's own entries: mailbox ""
    assert c.cmd(b'd SETMETADATA "" (/shared/comment "server note")')[-1].startswith(b"d OK")
    assert c.cmd(b'e GETMETADATA "" /shared/comment')[0] == b'* METADATA "" (/shared/comment "server note")'
    # NIL removes; a mailbox's entries are not the server's
    assert c.cmd(b"f SETMETADATA INBOX (/private/comment NIL)")[-1].startswith(b"f OK")
    assert c.cmd(b"g GETMETADATA INBOX /private/comment")[0] == b'* METADATA "INBOX" (/private/comment NIL)'
    kinds = [e.WhichOneof("kind") for e in srv.events()]
    assert kinds.count("metadata_changed") == 3  # one event per SETMETADATA
    c.close()


def test_depth_maxsize_and_longentries(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    big = b"x" * 2000
    c.cmd(b'a SETMETADATA INBOX (/private/f/a "1" /private/f/a/deep "2" /private/f/b {2000+}\r\n' + big + b")")
    out = c.cmd(b"b GETMETADATA INBOX (DEPTH 1) /private/f")  # options after the mailbox, as RFC 5464's examples
    assert out[0] == b'* METADATA "INBOX" (/private/f/a "1" /private/f/b "' + big + b'" /private/f NIL)'  # not /a/deep
    out = c.cmd(b"d GETMETADATA (DEPTH infinity MAXSIZE 100) INBOX /private/f")  # as its ABNF
    assert out[0] == b'* METADATA "INBOX" (/private/f/a "1" /private/f/a/deep "2" /private/f NIL)'
    assert out[-1].startswith(b"d OK [METADATA LONGENTRIES 2000]")
    assert c.cmd(b"e GETMETADATA INBOX (DEPTH 0) /private/f")[-1].startswith(b"e OK")
    c.close()


def test_limits_refuse_the_whole_command(srv: ImapServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mail_metadata, "MAX_ENTRIES", 3)
    monkeypatch.setattr(mail_metadata, "MAX_VALUE", 10)
    c = srv.raw()
    c.login()
    assert c.cmd(b'a SETMETADATA INBOX (/private/a "1" /private/b "2")')[-1].startswith(b"a OK")
    out = c.cmd(b'b SETMETADATA INBOX (/private/c "3" /private/d "4")')
    assert out[-1].startswith(b"b NO [METADATA TOOMANY]")
    assert c.cmd(b"d GETMETADATA INBOX /private/c")[0] == b'* METADATA "INBOX" (/private/c NIL)'  # nothing set
    assert c.cmd(b'e SETMETADATA INBOX (/private/a "01234567890")')[-1].startswith(b"e NO [METADATA MAXSIZE 10]")
    # replacing and removing stay possible at the limit
    assert c.cmd(b'f SETMETADATA INBOX (/private/a NIL /private/c "3")')[-1].startswith(b"f OK")
    assert c.cmd(b'g SETMETADATA "" (/shared/admin "mailto:x@example.test")')[-1].startswith(b"g NO")  # read-only
    for line, why in [(b'h SETMETADATA INBOX (/other/x "1")', b"BAD"), (b'i SETMETADATA INBOX (/private "1")', b"BAD"),
                      (b'j SETMETADATA INBOX (/private/vendor/x "1")', b"BAD"), (b"k GETMETADATA INBOX /private/*", b"BAD"),
                      (b'l SETMETADATA Nowhere (/private/a "1")', b"NO [NONEXISTENT]")]:
        assert c.cmd(line)[-1].startswith(line.split()[0] + b" " + why), line
    c.close()


def test_entries_follow_the_mailbox_and_survive_a_restart(tmp_path: Path) -> None:
    with ImapServer(tmp_path) as srv:
        c = srv.raw()
        c.login()
        for line in [b"a CREATE Work", b'b SETMETADATA Work (/private/comment "w")', b"d RENAME Work Job",
                     b'e SETMETADATA INBOX (/shared/comment "in")', b"f RENAME INBOX Old",
                     b"g CREATE Gone", b'h SETMETADATA Gone (/private/comment "g")', b"i DELETE Gone", b"j CREATE Gone"]:
            assert c.cmd(line)[-1].split()[1] == b"OK", line
        assert c.cmd(b"k GETMETADATA Job /private/comment")[0] == b'* METADATA "Job" (/private/comment "w")'
        # RFC 5464 §4.1: renaming INBOX copies its entries; INBOX keeps them
        assert c.cmd(b"l GETMETADATA Old /shared/comment")[0] == b'* METADATA "Old" (/shared/comment "in")'
        assert c.cmd(b"m GETMETADATA INBOX /shared/comment")[0] == b'* METADATA "INBOX" (/shared/comment "in")'
        # a new mailbox of a deleted one's name inherits nothing
        assert c.cmd(b"n GETMETADATA Gone /private/comment")[0] == b'* METADATA "Gone" (/private/comment NIL)'
        out = c.cmd(b'o LIST "" "*" RETURN (METADATA (/private/comment /shared/comment))')
        assert b'* METADATA "Job" (/private/comment "w")' in out and b'* METADATA "Old" (/shared/comment "in")' in out
        assert not any(line.startswith(b"* METADATA Gone") for line in out)
        c.close()
    # the projection is rebuilt from the log (or its checkpoint) when the store opens again
    data = tmp_path / "data"

    async def reopen() -> dict[str, bytes]:
        store = await open_store(data, load_master_key(data, MasterKeySource(key_file=tmp_path / "master.key")))
        try:
            async with store.use_account(USER) as acct:
                mb = acct.view.mailbox("Job")
                assert mb is not None
                return mail_metadata.entries(acct.view, mb.id)
        finally:
            await store.close()

    assert asyncio.run(reopen()) == {"/private/comment": b"w"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_the_parsers_never_crash(tail: bytes) -> None:
    """Whatever follows the command names, the wire answers with a command or a protocol error."""
    for head in (b"a GETMETADATA ", b"a SETMETADATA ", b"a NOTIFY ", b"a ESEARCH ", b'a LIST "" * RETURN (METADATA '):
        wire = ImapWire(authenticated=True)
        items = wire.receive(head + tail.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n")
        assert items is not None
