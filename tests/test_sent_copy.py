"""One copy in Sent: submission files the server's copy, and the client's APPEND of the same message (Message-ID and author, within the window) adds nothing but its flags.

Over real sockets: smtplib submits on 587, imaplib APPENDs the same bytes as a client's Fcc does
(with its Bcc line, which the sent message lacks). The window itself is checked in process.
"""

from __future__ import annotations

import imaplib
import re
import shutil
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.mail import ingest
from eventmail.mime import parse_incoming
from eventmail.mime.parsed import parse_message
from eventmail.proto import events_pb2 as pb

from .imap_harness import USER, ImapServer
from .mailserver import MailServer, insecure_tls

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")

PASSWORD = "sent copy test password"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    srv = MailServer(tmp_path_factory.mktemp("sent"), kinds=("submission", "imaps"))
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    srv.add_account("bob", "bob@mail.test", PASSWORD)
    srv.start()
    yield srv
    srv.stop()


def message(message_id: str, subject: str, bcc: bool = False) -> bytes:
    return (
        "From: Alice <alice@mail.test>\r\nTo: bob@mail.test\r\n" + ("Bcc: carol@mail.test\r\n" if bcc else "")
        + f"Subject: {subject}\r\nMessage-ID: <{message_id}>\r\nDate: Mon, 7 Dec 2026 05:00:00 +0000\r\n\r\nhello\r\n"
    ).encode()


def submit(srv: MailServer, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=30) as s:
        s.starttls(context=insecure_tls())
        s.login("alice", PASSWORD)
        # as a client sends it: the Bcc line removed, the Bcc address a recipient
        sent = re.sub(rb"Bcc: [^\r]*\r\n", b"", raw)
        assert s.sendmail("alice@mail.test", ["bob@mail.test"], sent) == {}


def imap(srv: MailServer) -> imaplib.IMAP4_SSL:
    c = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=insecure_tls(), timeout=30)
    c.login("alice", PASSWORD)
    return c


def appenduid(c: imaplib.IMAP4_SSL, mailbox: str, flags: str, raw: bytes) -> int:
    typ, data = c.append(mailbox, flags, None, raw)
    assert typ == "OK", data
    m = re.search(rb"\[APPENDUID \d+ (\d+)\]", data[0])
    assert m, data
    return int(m.group(1))


def sent_messages(c: imaplib.IMAP4_SSL, mailbox: str = "Sent") -> dict[int, tuple[bytes, bytes]]:
    """UID → (Message-ID line, FLAGS) of each message in the mailbox."""
    assert c.select(mailbox, readonly=True)[0] == "OK"
    typ, data = c.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    assert typ == "OK"
    out = {}
    for item in data:
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))  # type: ignore[union-attr]
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1)  # type: ignore[union-attr]
            out[uid] = (item[1].strip(), flags)
    return out


def test_the_clients_append_of_a_sent_message_is_the_servers_copy(server: MailServer) -> None:
    raw = message("one.1@mail.test", "sent once", bcc=True)
    submit(server, raw)
    c = imap(server)
    try:
        before = sent_messages(c)
        (server_uid,) = [u for u, (mid, _) in before.items() if b"one.1@mail.test" in mid]
        # mutt, Thunderbird and the rest APPEND their own copy right after the 250
        uid = appenduid(c, "Sent", r"(\Seen \Flagged)", raw)
        assert uid == server_uid  # APPENDUID names the message that is there
        after = sent_messages(c)
        assert len(after) == len(before)
        assert set(after[uid][1].split()) >= {rb"\Seen", rb"\Flagged"}  # the client's flags, taken
    finally:
        c.logout()


def test_other_messages_and_other_mailboxes_are_stored(server: MailServer) -> None:
    submit(server, message("two.2@mail.test", "sent twice"))
    c = imap(server)
    try:
        before = sent_messages(c)
        # another Message-ID: a message of its own
        appenduid(c, "Sent", r"(\Seen)", message("three.3@mail.test", "appended only"))
        # the same Message-ID from another author: not the server's copy
        other = message("two.2@mail.test", "sent twice").replace(b"alice@mail.test", b"mallory@mail.test")
        appenduid(c, "Sent", r"(\Seen)", other)
        assert len(sent_messages(c)) == len(before) + 2
        # the same message into another mailbox (a draft kept, an archive): stored there
        appenduid(c, "Drafts", r"(\Seen)", message("two.2@mail.test", "sent twice"))
        assert len(sent_messages(c, "Drafts")) == 1
    finally:
        c.logout()


def test_a_deleted_server_copy_is_not_brought_back(server: MailServer) -> None:
    raw = message("four.4@mail.test", "deleted then appended")
    submit(server, raw)
    c = imap(server)
    try:
        c.select("Sent")
        typ, data = c.uid("SEARCH", "HEADER", "Message-ID", "four.4@mail.test")
        (uid,) = data[0].split()
        c.uid("STORE", uid, "+FLAGS", r"(\Deleted)")
        c.expunge()
        new = appenduid(c, "Sent", r"(\Seen)", raw)
        assert new > int(uid)
        assert b"four.4@mail.test" in sent_messages(c)[new][0]
    finally:
        c.logout()


def test_after_the_window_an_append_is_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: the server's copy filed as submission files it; an APPEND later than
    SENT_DEDUP_SECONDS (here set to -1: any time is later) makes a message of its own."""
    raw = message("five.5@mail.test", "later")
    with ImapServer(tmp_path) as srv:
        async def file_twice() -> int:
            async with srv.store.use_account(USER) as acct:
                parsed = parse_message(raw)
                first = await ingest.file_sent(acct, "Sent", parsed, b"", pb.Origin(kind="submission"))
                assert first is not None
                again = await ingest.file_sent(acct, "Sent", parsed, b"", pb.Origin(kind="submission"))
                assert again is None  # the same message submitted twice (a retry): one Sent copy
                return first.event.message_added.uid

        async def append_finds(window: float) -> int | None:
            monkeypatch.setattr(ingest, "SENT_DEDUP_SECONDS", window)
            async with srv.store.use_account(USER) as acct:
                sent = acct.view.mailbox("Sent")
                assert sent is not None
                return await ingest.sent_copy_of(acct, sent.id, parse_incoming(raw), ["\\Seen"])

        uid = srv.call(file_twice())
        assert srv.call(append_finds(600)) == uid
        assert srv.call(append_finds(-1)) is None
