"""METADATA, METADATA-SERVER (RFC 5464) and LIST-METADATA (RFC 9590) over a real socket: entries are
events, kept across restarts, follow renames and leave with deletes; the limits answer with their codes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.imap.commands import SetMetadata
from eventmail.imap.wire import ImapWire
from eventmail.mail import metadata as mail_metadata
from eventmail.opening import open_store
from eventmail.proto import events_pb2 as pb
from eventmail.store import MasterKeySource, load_master_key
from eventmail.store import projection as proj
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


def test_a_value_over_the_limit_gets_maxsize(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    big = b"v" * (mail_metadata.MAX_VALUE + 1)
    out = c.cmd(b"a SETMETADATA INBOX (/private/comment {%d+}\r\n" % len(big) + big + b")")
    assert out[-1].startswith(b"a NO [METADATA MAXSIZE %d]" % mail_metadata.MAX_VALUE)
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
        # RFC 9590: each listed mailbox's entries, NIL where it has none
        assert b'* METADATA "Job" (/private/comment "w" /shared/comment NIL)' in out
        assert b'* METADATA "Old" (/shared/comment "in" /private/comment NIL)' in out
        assert b'* METADATA "Gone" (/private/comment NIL /shared/comment NIL)' in out
        i = out.index(b'* METADATA "Job" (/private/comment "w" /shared/comment NIL)')
        assert out[i - 1].startswith(b"* LIST") and out[i - 1].endswith(b'"Job"')  # right after its LIST
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


# ------------------------------------------------------------------ the projection is pure

_IDS = st.integers(0, 3)  # 0: the server's entries
_ENTRY_NAMES = st.sampled_from(["/private/comment", "/shared/comment", "/private/vendor/x/y"])
_meta_events = st.one_of(
    st.builds(lambda i, n: pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=i, name=n, uidvalidity=1)),
              st.integers(1, 3), st.sampled_from(["INBOX", "A", "B"])),
    st.builds(lambda i: pb.Event(mailbox_deleted=pb.MailboxDeleted(mailbox_id=i)), st.integers(1, 3)),
    st.builds(lambda i, n: pb.Event(mailbox_renamed=pb.MailboxRenamed(mailbox_id=i, name=n, uidvalidity=1)),
              st.integers(1, 3), st.sampled_from(["C", "D"])),
    st.builds(lambda i, es: pb.Event(metadata_changed=pb.MetadataChanged(mailbox_id=i, entries=es)), _IDS,
              st.lists(st.builds(lambda n, v, r: pb.MetadataEntry(name=n, value=v, remove=r), _ENTRY_NAMES,
                                 st.binary(max_size=4), st.booleans()), max_size=3)),
)


def _entries_dump(db: object) -> list[tuple[object, ...]]:
    return sorted(db.execute("SELECT * FROM metadata").fetchall())  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None)
@given(st.lists(_meta_events, max_size=40), st.sets(st.integers(0, 40), max_size=3))
def test_metadata_projection_incremental_equals_rebuild(evs: list[pb.Event], checkpoint_at: set[int]) -> None:
    registered = (mail_metadata.METADATA_PROJECTION,)
    items = [(seq, seq, e) for seq, e in enumerate(evs, 1)]
    db = proj.connect(registered)
    for i, item in enumerate(items):
        if i in checkpoint_at:
            restored = proj.from_bytes(db.serialize(), registered)
            assert restored is not None
            db = restored
        proj.apply_all(db, [item], registered)
        # a mailbox that is gone has no entries left (RFC 5464 §4.1)
        live = {r[0] for r in db.execute("SELECT id FROM mailbox")} | {mail_metadata.SERVER}
        assert {r[0] for r in db.execute("SELECT mailbox_id FROM metadata")} <= live
    rebuilt = proj.connect(registered)
    proj.apply_all(rebuilt, items, registered)
    assert _entries_dump(db) == _entries_dump(rebuilt)


_NAME_PARTS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=8)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["/private", "/shared"]), st.lists(_NAME_PARTS, min_size=1, max_size=3),
                          st.one_of(st.none(), st.binary(max_size=40))), min_size=1, max_size=5))
def test_setmetadata_parses_what_was_sent(entries: list[tuple[str, list[str], bytes | None]]) -> None:
    """Entry values of any octets (literal, literal8 with NUL) and NIL come out of the wire as sent."""
    wanted = []
    parts = []
    for top, names, value in entries:
        name = top + "/" + "/".join(names)
        if names[0] == "vendor" and len(names) < 3:
            continue
        wanted.append((name, value))
        if value is None:
            parts.append(name.encode() + b" NIL")
        else:
            parts.append(name.encode() + b" " + (b"~" if b"\x00" in value else b"") + b"{%d+}\r\n" % len(value) + value)
    if not wanted:
        return
    items = ImapWire(authenticated=True).receive(b"a SETMETADATA INBOX (" + b" ".join(parts) + b")\r\n")
    assert len(items) == 1 and isinstance(items[0], SetMetadata)
    assert list(items[0].entries) == wanted
