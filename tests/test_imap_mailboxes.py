"""Mailboxes of an account over IMAP: the special ones, junk training flags on moves, CREATE/RENAME/DELETE, and
two sessions on one mailbox (one expunging while the other fetches)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.junk.projection import JUNK, NOT_JUNK
from tests.imap_harness import USER, ImapServer, simple_message


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        yield s


def _copy_events(srv: ImapServer) -> list[tuple[list[str], list[str]]]:
    return [(list(e.messages_copied.add_flags), list(e.messages_copied.remove_flags))
            for e in srv.events() if e.WhichOneof("kind") == "messages_copied"]


def test_new_account_has_the_special_mailboxes(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    out = c.cmd(b'l LIST "" "*" RETURN (SPECIAL-USE)')
    got = {line.rsplit(b" ", 1)[1].strip(b'"'): line.split(b")")[0].split(b"(")[1] for line in out[:-1]}
    assert got == {
        b"INBOX": b"\\HasNoChildren", b"Sent": b"\\HasNoChildren \\Sent", b"Archive": b"\\HasNoChildren \\Archive",
        b"Trash": b"\\HasNoChildren \\Trash", b"Drafts": b"\\HasNoChildren \\Drafts", b"Junk": b"\\HasNoChildren \\Junk",
    }
    c.close()


def test_moves_record_junk_training_flags(srv: ImapServer) -> None:
    for i in range(4):
        srv.deliver(simple_message(f"m{i}"))
    m = srv.imap()
    m.select("INBOX")
    assert m.uid("MOVE", "1", "Junk")[0] == "OK"  # into Junk: $Junk
    assert m.uid("MOVE", "2", "Archive")[0] == "OK"  # into Archive: $NotJunk
    assert m.uid("MOVE", "3", "Trash")[0] == "OK"  # into Trash: $NotJunk
    assert m.uid("MOVE", "4", "Drafts")[0] == "OK"  # elsewhere: nothing
    assert _copy_events(srv) == [([JUNK], [NOT_JUNK]), ([NOT_JUNK], [JUNK]), ([NOT_JUNK], [JUNK]), ([], [])]
    assert srv.view_flags("Junk") == {1: (JUNK,)}
    assert srv.view_flags("Archive") == {1: (NOT_JUNK,)}
    m.select("Junk")
    assert m.uid("MOVE", "1", "INBOX")[0] == "OK"  # out of Junk back to INBOX: $NotJunk, $Junk gone
    assert srv.view_flags("INBOX") == {5: (NOT_JUNK,)}
    m.select("INBOX")
    m.uid("MOVE", "5", "Junk")
    m.select("Junk")
    assert m.uid("MOVE", "2", "Trash")[0] == "OK"  # Junk → Trash: throwing junk away says nothing
    assert _copy_events(srv)[-1] == ([], [])
    assert srv.view_flags("Trash")[2] == (JUNK,)
    m.logout()


def test_copy_into_junk_flags_only_the_copy(srv: ImapServer) -> None:
    srv.deliver(simple_message())
    m = srv.imap()
    m.select("INBOX")
    assert m.copy("1", "Junk")[0] == "OK"
    assert srv.view_flags("INBOX") == {1: ()} and srv.view_flags("Junk") == {1: (JUNK,)}
    m.logout()


def test_copy_into_an_ordinary_mailbox_keeps_the_flags(srv: ImapServer) -> None:
    """RFC 9051 §6.4.7 (and imaptest's `copy` group): the copy has the original's flags, no more;
    a MOVE to the same place is what records $NotJunk."""
    srv.deliver(simple_message("a"), flags=("\\Flagged",))
    srv.deliver(simple_message("b"))
    m = srv.imap()
    assert m.create("Work")[0] == "OK"
    m.select("INBOX")
    assert m.uid("COPY", "1", "Work")[0] == "OK"
    assert m.uid("COPY", "2", "Archive")[0] == "OK"
    assert srv.view_flags("Work") == {1: ("\\Flagged",)} and srv.view_flags("Archive") == {1: ()}
    assert m.uid("MOVE", "2", "Work")[0] == "OK"
    assert srv.view_flags("Work")[2] == (NOT_JUNK,)
    m.logout()


def test_the_rule_is_in_the_store_for_every_writer(srv: ImapServer) -> None:
    """A writer other than IMAP (webmail will be one) moving through the store's API gets the same flags."""
    srv.deliver(simple_message())

    async def move() -> None:
        async with srv.store.use_account(USER) as acct:
            inbox, junk = acct.mailbox_required("INBOX"), acct.mailbox_required("Junk")
            await acct.copy(inbox.id, [1], junk.id, move=True)
    srv.call(move())
    assert srv.view_flags("Junk") == {1: (JUNK,)}


def test_create_rename_delete_subscribe(srv: ImapServer) -> None:
    m = srv.imap()
    assert m.create("Projects/2026/Q1")[0] == "OK"  # RFC 9051 §6.3.4: superiors created too
    names = [line.rsplit(b" ", 1)[1] for line in m.list()[1]]  # type: ignore[union-attr]
    assert b'"Projects"' in names and b'"Projects/2026/Q1"' in names
    assert m.create("Projects")[0] == "NO"
    srv.deliver(simple_message(), mailbox="Projects/2026/Q1")
    assert m.rename("Projects", "Work")[0] == "OK"  # children follow (RFC 9051 §6.3.6)
    assert m.status("Work/2026/Q1", "(MESSAGES)") == ("OK", [b'"Work/2026/Q1" (MESSAGES 1)'])
    assert m.subscribe("Work/2026/Q1")[0] == "OK"
    assert m.lsub('""', "Work/*")[1] == [b'() "/" "Work/2026/Q1"']
    assert m.delete("Work/2026/Q1")[0] == "OK"
    assert m.status("Work/2026/Q1", "(MESSAGES)")[0] == "NO"
    assert m.delete("INBOX")[0] == "NO"
    kinds = {e.WhichOneof("kind") for e in srv.events()}
    assert {"mailbox_created", "mailbox_renamed", "mailbox_deleted", "mailbox_subscription"} <= kinds
    m.logout()


def test_rename_inbox_moves_its_messages(srv: ImapServer) -> None:
    srv.deliver(simple_message())
    m = srv.imap()
    assert m.rename("INBOX", "Old")[0] == "OK"
    assert srv.view_flags("INBOX") == {} and len(srv.view_flags("Old")) == 1
    m.logout()


def test_deleting_the_selected_mailbox_ends_the_other_session(srv: ImapServer) -> None:
    m = srv.imap()
    m.create("Doomed")
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT Doomed")
    m.delete("Doomed")
    c.send(b"n NOOP\r\n")
    assert c.response().startswith(b"* BYE")
    assert c.closed()
    m.logout()


def test_fetch_while_another_session_expunges(srv: ImapServer) -> None:
    for i in range(5):
        srv.deliver(simple_message(f"m{i}"))
    a = srv.raw()
    a.login()
    a.cmd(b"s SELECT INBOX")
    b = srv.imap()
    b.select("INBOX")
    b.store("2", "+FLAGS", r"(\Deleted)")
    b.expunge()
    # RFC 9051 §7.5.1: no EXPUNGE during FETCH; message 2 is gone, so the FETCH says so
    out = a.cmd(b"f FETCH 1:5 (UID)")
    assert not any(line.endswith(b" EXPUNGE") for line in out)
    assert [line for line in out if b"FETCH" in line] == [
        b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)", b"* 4 FETCH (UID 4)", b"* 5 FETCH (UID 5)"]
    assert out[-1].startswith(b"f NO [EXPUNGEISSUED]")
    # the next command that may tell it does, and numbers shift only then
    assert a.cmd(b"n NOOP") == [b"* 2 EXPUNGE", b"n OK NOOP completed"]
    assert a.cmd(b"g FETCH 2 (UID)")[0] == b"* 2 FETCH (UID 3)"
    b.logout()
    a.close()


def test_two_sessions_hammering_one_mailbox(srv: ImapServer) -> None:
    """One session expunges a message at a time while the other fetches everything in a loop:
    neither fails, and the fetcher ends with exactly the messages that are left."""
    n = 40
    for i in range(n):
        srv.deliver(simple_message(f"m{i}"))
    errors: list[BaseException] = []

    def expunger() -> None:
        try:
            b = srv.imap()
            b.select("INBOX")
            for uid in range(1, n, 2):
                b.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
                b.expunge()
            b.logout()
        except BaseException as e:  # reported by the assertion below
            errors.append(e)

    a = srv.imap()
    a.select("INBOX")
    t = threading.Thread(target=expunger)
    t.start()
    while t.is_alive():
        typ, _data = a.uid("FETCH", "1:*", "(UID FLAGS)")
        assert typ == "OK"
        a.noop()
    t.join()
    assert not errors
    a.noop()
    typ, data = a.uid("SEARCH", None, "ALL")
    assert data[0] == b" ".join(str(u).encode() for u in range(2, n + 1, 2))
    typ, data = a.fetch("1:*", "(UID)")
    assert len(data) == n // 2
    a.logout()
