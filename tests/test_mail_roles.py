"""Sent and Junk are found by their special-use role (RFC 6154), not by name: a client that renames
or deletes them does not make submission answer 451 or lose quarantined mail. Over real sockets:
imaplib renames and deletes, smtplib submits on 587 and delivers on 25."""

from __future__ import annotations

import imaplib
import re
import shutil
import smtplib
from collections.abc import Iterator

import pytest

from .dns_fixture import DnsServer, zone_text
from .mailserver import MailServer, insecure_tls

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")

PASSWORD = "roles test password"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    base = tmp_path_factory.mktemp("roles")
    srv = MailServer(base, kinds=("smtp", "submission", "imaps"))
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    zones = {
        "example.test": zone_text("example.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"']),
        # SPF fails from loopback and DMARC says quarantine: such mail goes to Junk.
        "quarantine.test": zone_text("quarantine.test", ['@ TXT "v=spf1 ip4:192.0.2.1 -all"',
                                                         '_dmarc TXT "v=DMARC1; p=quarantine"']),
    }
    with DnsServer.start(base / "dns", zones) as dns:
        srv.dns_port = dns.port
        srv.start()
        yield srv
        srv.stop()



def imap(srv: MailServer) -> imaplib.IMAP4_SSL:
    c = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=insecure_tls(), timeout=30)
    c.login("alice", PASSWORD)
    return c


def submit(srv: MailServer, subject: str) -> None:
    message = f"From: alice@mail.test\r\nTo: friend@example.test\r\nSubject: {subject}\r\n\r\nhi\r\n".encode()
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=30) as s:
        s.starttls(context=insecure_tls())
        s.login("alice", PASSWORD)
        assert s.sendmail("alice@mail.test", ["friend@example.test"], message) == {}


def subjects(c: imaplib.IMAP4_SSL, mailbox: str) -> list[bytes]:
    typ, _ = c.select(f'"{mailbox}"', readonly=True)
    assert typ == "OK", mailbox
    typ, data = c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    return [item[1].strip() for item in data if isinstance(item, tuple)] if typ == "OK" else []


def with_role(c: imaplib.IMAP4_SSL, role: str) -> list[str]:
    typ, data = c.list()
    assert typ == "OK"
    names = []
    for line in data:
        text = line.decode() if isinstance(line, bytes) else ""
        if role in text:
            names.append(re.sub(r'^.*"([^"]*)"$', r"\1", text))
    return names


def test_submission_files_into_a_renamed_sent_and_remakes_a_deleted_one(server: MailServer) -> None:
    c = imap(server)
    try:
        assert c.rename("Sent", '"Sent Items"')[0] == "OK"
        assert with_role(c, "\\Sent") == ["Sent Items"]
        submit(server, "after rename")  # 250, not 451
        assert b"Subject: after rename" in subjects(c, "Sent Items")

        c.select("INBOX")
        assert c.delete('"Sent Items"')[0] == "OK"
        assert with_role(c, "\\Sent") == []
        submit(server, "after delete")
        assert with_role(c, "\\Sent") == ["Sent"]
        assert subjects(c, "Sent") == [b"Subject: after delete"]
    finally:
        c.logout()


def test_quarantined_mail_goes_to_the_junk_role_mailbox_whatever_its_name(server: MailServer) -> None:
    c = imap(server)
    try:
        assert c.rename("Junk", "Spam")[0] == "OK"
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=30) as s:
            s.sendmail("x@quarantine.test", ["alice@mail.test"],
                       b"From: x@quarantine.test\r\nTo: alice@mail.test\r\nSubject: suspicious\r\n\r\nhi\r\n")
        assert b"Subject: suspicious" in subjects(c, "Spam")
        assert "Junk" not in with_role(c, "")  # no second Junk was made
    finally:
        c.logout()
