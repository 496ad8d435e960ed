"""NOTIFY (RFC 5465) over real sockets: one client sets its filters, another client (or a delivery)
changes the account, and the first hears of it between commands, without asking."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.imap import notify
from eventmail.proto import events_pb2 as pb
from tests.imap_harness import USER, ImapServer, RawClient, simple_message


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        yield s


def _client(srv: ImapServer) -> RawClient:
    c = srv.raw()
    c.login()
    return c


def _until(c: RawClient, wanted: bytes) -> list[bytes]:
    """Unsolicited responses up to the first that starts with `wanted` (no command is sent)."""
    out = []
    while True:
        out.append(c.response())
        if out[-1].startswith(wanted):
            return out


def test_status_of_other_mailboxes_without_a_command(srv: ImapServer) -> None:
    a, b = _client(srv), _client(srv)
    assert b"NOTIFY" in a.cmd(b"c CAPABILITY")[0].split()
    out = a.cmd(b"n NOTIFY SET STATUS (personal (MessageNew MessageExpunge))")
    assert out[-1].startswith(b"n OK")
    # RFC 5465 §3 STATUS: the current state of every mailbox the filters name
    assert any(line.startswith(b'* STATUS "INBOX" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY') for line in out)
    assert len([line for line in out if line.startswith(b"* STATUS")]) == len(srv.call(_mailbox_count(srv)))
    srv.deliver(simple_message("one"))
    got = _until(a, b'* STATUS "INBOX"')
    assert got[-1].startswith(b'* STATUS "INBOX" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY')
    # another session's expunge in a mailbox a does not have selected
    b.cmd(b"s SELECT INBOX")
    b.cmd(b"t STORE 1 +FLAGS (\\Deleted)")
    b.cmd(b"u EXPUNGE")
    assert _until(a, b'* STATUS "INBOX"')[-1].startswith(b'* STATUS "INBOX" (MESSAGES 0 UIDNEXT 2')
    # NOTIFY NONE: nothing more, not even at the next command
    assert a.cmd(b"o NOTIFY NONE")[-1].startswith(b"o OK")
    srv.deliver(simple_message("two"))
    assert not any(line.startswith(b"* STATUS") for line in a.cmd(b"p NOOP"))
    a.close()
    b.close()


async def _mailbox_count(srv: ImapServer) -> list[str]:
    async with srv.store.use_account(USER) as acct:
        return [m.name for m in acct.view.mailboxes()]


def test_selected_mailbox_new_messages_with_fetch_and_expunges_at_once(srv: ImapServer) -> None:
    srv.deliver(simple_message("first"))
    a, b = _client(srv), _client(srv)
    a.cmd(b"s SELECT INBOX")
    out = a.cmd(b"n NOTIFY SET (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) MessageExpunge FlagChange))")
    assert out[-1].startswith(b"n OK")
    srv.deliver(simple_message("second"))
    got = _until(a, b"* 2 FETCH")
    assert b"* 2 EXISTS" in got
    assert got[-1].startswith(b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {") and b"Subject: second" in got[-1]
    assert srv.view_flags("INBOX")[2] == ()  # telling did not set \Seen
    b.cmd(b"s SELECT INBOX")
    b.cmd(b"t STORE 1 +FLAGS (\\Flagged)")
    assert b"\\Flagged" in _until(a, b"* 1 FETCH")[-1]
    b.cmd(b"u STORE 1 +FLAGS (\\Deleted)")
    b.cmd(b"v EXPUNGE")
    # "selected": the expunge is told at once, with no command running (RFC 5465 §5.2)
    assert _until(a, b"* 1 EXPUNGE")[-1] == b"* 1 EXPUNGE"
    assert a.cmd(b"w FETCH 1 UID")[0] == b"* 1 FETCH (UID 2)"
    a.close()
    b.close()


def test_selected_delayed_holds_expunges_for_a_command(srv: ImapServer) -> None:
    for i in range(2):
        srv.deliver(simple_message(f"m{i}"))
    a, b = _client(srv), _client(srv)
    a.cmd(b"s SELECT INBOX")
    a.cmd(b"n NOTIFY SET (selected-delayed (MessageNew MessageExpunge FlagChange))")
    b.cmd(b"s SELECT INBOX")
    b.cmd(b"t STORE 1 +FLAGS (\\Deleted)")
    b.cmd(b"u EXPUNGE")
    # the flag change before it is told at once; the EXPUNGE waits for a command that allows it
    first = _until(a, b"* 1 FETCH")
    assert not any(line.endswith(b"EXPUNGE") for line in first)
    srv.deliver(simple_message("m2"))
    assert b"* 3 EXISTS" in _until(a, b"* 3 EXISTS")  # numbered as before the held expunge
    out = a.cmd(b"o NOOP")
    assert b"* 1 EXPUNGE" in out
    a.close()
    b.close()


def test_without_a_selected_filter_the_selected_mailbox_waits_for_a_command(srv: ImapServer) -> None:
    a = _client(srv)
    a.cmd(b"s SELECT INBOX")
    a.cmd(b"n NOTIFY SET (personal (MessageNew MessageExpunge))")
    srv.deliver(simple_message("to the selected one"))
    srv.deliver(simple_message("elsewhere"), mailbox="Archive")
    got = _until(a, b"* STATUS")
    assert got == [got[-1]] and got[-1].startswith(b'* STATUS "Archive" (MESSAGES 1')  # no STATUS of INBOX either
    assert b"* 1 EXISTS" in a.cmd(b"o NOOP")
    a.close()


def test_idle_with_notify_tells_the_selected_mailbox_and_done_flushes(srv: ImapServer) -> None:
    a, b = _client(srv), _client(srv)
    srv.deliver(simple_message("first"))
    a.cmd(b"s SELECT INBOX")
    a.cmd(b"n NOTIFY SET (subtree Lists (MessageNew MessageExpunge))")
    a.send(b"i IDLE\r\n")
    assert a.response().startswith(b"+ ")
    srv.deliver(simple_message("second"))
    assert _until(a, b"* 2 EXISTS")[-1] == b"* 2 EXISTS"  # IDLE tells the selected mailbox, NOTIFY or not
    b.cmd(b"s SELECT INBOX")
    b.cmd(b"t STORE 1 +FLAGS (\\Deleted)")
    b.cmd(b"u EXPUNGE")
    assert _until(a, b"* 1 EXPUNGE")[-1] == b"* 1 EXPUNGE"
    a.send(b"DONE\r\n")
    assert a.until(b"i")[-1].startswith(b"i OK")
    a.close()
    b.close()


def test_mailbox_subscription_and_metadata_events(srv: ImapServer) -> None:
    a, b = _client(srv), _client(srv)
    a.cmd(b"n NOTIFY SET (personal (MailboxName SubscriptionChange MailboxMetadataChange ServerMetadataChange))")
    b.cmd(b"c CREATE Projects")
    assert _until(a, b"* LIST")[-1] == b'* LIST () "/" "Projects"'
    b.cmd(b"r RENAME Projects Archive2")
    assert _until(a, b"* LIST")[-1] == b'* LIST () "/" "Archive2" ("OLDNAME" ("Projects"))'
    b.cmd(b"s SUBSCRIBE Archive2")
    assert _until(a, b"* LIST")[-1] == b'* LIST (\\Subscribed) "/" "Archive2"'
    b.cmd(b'm SETMETADATA "Archive2" (/private/comment "x")')
    assert _until(a, b"* METADATA")[-1] == b'* METADATA "Archive2" /private/comment'
    b.cmd(b'v SETMETADATA "" (/shared/comment "y")')
    assert _until(a, b"* METADATA")[-1] == b'* METADATA "" /shared/comment'
    b.cmd(b"d DELETE Archive2")
    got = _until(a, b"* LIST")
    assert got[-1] == b'* LIST (\\NonExistent) "/" "Archive2"'
    a.close()
    b.close()


def test_filters_choose_mailboxes_and_events(srv: ImapServer) -> None:
    a, b = _client(srv), _client(srv)
    for line in (b"c CREATE Lists", b"d CREATE Lists/ietf", b"e CREATE Other"):
        b.cmd(line)
    # the first group that names a mailbox decides: NONE silences Lists/ietf, subtree takes the rest
    a.cmd(b"n NOTIFY SET (mailboxes Lists/ietf NONE) (subtree Lists (MessageNew MessageExpunge))")
    srv.deliver(simple_message("o"), mailbox="Other")
    srv.deliver(simple_message("i"), mailbox="Lists/ietf")
    srv.deliver(simple_message("l"), mailbox="Lists")
    got = _until(a, b"* STATUS")
    assert got == [got[-1]] and got[-1].startswith(b'* STATUS "Lists" (MESSAGES 1')
    a.close()
    b.close()


def test_overflow_ends_notifications(srv: ImapServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "MAX_PENDING", 3)
    a = _client(srv)
    a.cmd(b"n NOTIFY SET (personal (SubscriptionChange))")

    async def burst() -> None:
        # five events committed together reach the session in one batch
        async with srv.store.use_account(USER) as acct:
            await acct.append([pb.Event(mailbox_subscription=pb.MailboxSubscription(name=f"x{i}", subscribed=True))
                               for i in range(5)])

    srv.call(burst())
    got = _until(a, b"* OK [NOTIFICATIONOVERFLOW]")
    assert not any(line.startswith(b"* LIST") for line in got)
    srv.call(burst())
    assert not any(line.startswith(b"* LIST") for line in a.cmd(b"p NOOP"))  # as after NOTIFY NONE
    a.close()


@pytest.mark.parametrize(("line", "answer"), [
    (b"a NOTIFY SET (personal (MessageNew))", b"a BAD"),  # RFC 5465 §5: with MessageExpunge
    (b"a NOTIFY SET (personal (FlagChange))", b"a BAD"),
    (b"a NOTIFY SET (selected (MailboxName))", b"a BAD"),  # message events only
    (b"a NOTIFY SET (selected (MessageNew MessageExpunge)) (selected-delayed (MessageNew MessageExpunge))", b"a BAD"),
    (b"a NOTIFY SET (personal (MessageNew (UID) MessageExpunge))", b"a BAD"),
    (b"a NOTIFY SET (personal (AnnotationChange MessageNew MessageExpunge))", b"a NO [BADEVENT (MessageNew"),
    (b"a NOTIFY SET (personal (Whatever))", b"a NO [BADEVENT"),
    (b"a NOTIFY SET (nowhere (MailboxName))", b"a BAD"),
    (b"a NOTIFY SET (mailboxes (A B) (MailboxName))", b"a OK"),
])
def test_notify_syntax(srv: ImapServer, line: bytes, answer: bytes) -> None:
    a = _client(srv)
    assert a.cmd(line)[-1].startswith(answer)
    a.close()
