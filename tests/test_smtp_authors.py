"""The author of a message over real sockets: submission refuses every ambiguous From with 550 5.7.1 and a log
line; what it accepts, IMAP ENVELOPE serves; the MX reads the same From for DMARC as ENVELOPE shows."""

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

PASSWORD = "authors test password"
SPOOF = b'"CEO" <ceo@bank.example>'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    base = tmp_path_factory.mktemp("authors")
    srv = MailServer(base, kinds=("smtp", "submission", "imaps"))
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    srv.add_account("bob", "bob@mail.test", PASSWORD)
    zones = {
        "example.test": zone_text("example.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"', '_dmarc TXT "v=DMARC1; p=none"']),
        "bank.example": zone_text("bank.example", ['@ TXT "v=spf1 ip4:192.0.2.1 -all"', '_dmarc TXT "v=DMARC1; p=reject"']),
    }
    with DnsServer.start(base / "dns", zones) as dns:
        srv.dns_port = dns.port
        srv.start()
        yield srv
        srv.stop()



def submit(srv: MailServer, header: bytes, subject: str) -> tuple[int, bytes]:
    """Submit on 587 (STARTTLS, AUTH PLAIN) as alice; the reply to the end of DATA."""
    message = header + f"To: bob@mail.test\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=30) as s:
        s.starttls(context=insecure_tls())
        s.login("alice", PASSWORD)
        try:
            s.sendmail("alice@mail.test", ["bob@mail.test"], message)
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error
        return 250, b""


def count(srv: MailServer, needle: str) -> int:
    return sum(needle in line for line in list(srv.log_lines))


def envelope_from(srv: MailServer, user: str, subject: str, mailbox: str = "INBOX") -> bytes:
    """The from part of ENVELOPE (RFC 9051 §7.5.2) of the message with `subject`, over imaplib."""
    with imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=insecure_tls(), timeout=30) as c:
        c.login(user, PASSWORD)
        c.select(mailbox, readonly=True)
        typ, data = c.uid("SEARCH", "SUBJECT", f'"{subject}"')
        uids = data[0].split()
        assert typ == "OK" and len(uids) == 1, data
        typ, data = c.uid("FETCH", uids[-1], "(ENVELOPE)")
        assert typ == "OK"
        text = b"".join(d if isinstance(d, bytes) else b"".join(d) for d in data)
        # date subject (from-list) ...: the first parenthesised address list after the subject
        m = re.search(rb'ENVELOPE \((?:NIL|"[^"]*") (?:NIL|"[^"]*") (\(\(.*?\)\)|NIL)', text)
        assert m is not None, text
        return m.group(1)


AMBIGUOUS = {
    "wsp-before-colon-after-own": b"From: alice@mail.test\r\nFrom : " + SPOOF + b"\r\n",
    "wsp-before-colon-before-own": b"From : " + SPOOF + b"\r\nFrom: alice@mail.test\r\n",
    "tab-before-colon-alone": b"From\t: alice@mail.test\r\n",
    "two-own-from-fields": b"From: alice@mail.test\r\nFROM: alice@mail.test\r\n",
    "empty-from": b"From: \r\n",
    "group-from": b"From: undisclosed-recipients:;\r\n",
    "no-domain": b"From: alice\r\n",
    "no-from": b"",
}


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_submission_refuses_an_ambiguous_author(server: MailServer, case: str) -> None:
    before = count(server, "refused, ambiguous author")
    mark = len(server.log_lines)
    code, text = submit(server, AMBIGUOUS[case], f"ambiguous {case}")
    assert (code, text[:5]) == (550, b"5.7.1"), text
    server.wait_log("refused, ambiguous author", after=mark)
    assert count(server, "refused, ambiguous author") == before + 1
    # The server keeps serving: the next, unambiguous message goes through.
    assert submit(server, b'From: "Alice" <alice@mail.test>\r\n', f"after {case}")[0] == 250


def test_submission_accepts_one_from_and_envelope_serves_it(server: MailServer) -> None:
    subject = "one author"
    header = b'From: =?utf-8?q?ceo=40bank=2Eexample?= <alice@mail.test>\r\n'
    assert submit(server, header, subject) == (250, b"")
    for user, mailbox in (("bob", "INBOX"), ("alice", "Sent")):
        served = envelope_from(server, user, subject, mailbox)
        assert b'"alice" "mail.test"' in served and b"bank" not in served.split(b'"alice"')[1], served


def test_submission_still_refuses_a_foreign_from(server: MailServer) -> None:
    code, text = submit(server, b"From: " + SPOOF + b"\r\n", "foreign")
    assert (code, text[:5]) == (550, b"5.7.1")
    server.wait_log("tried to send as ['ceo@bank.example']")


def mx(srv: MailServer, header: bytes, subject: str, mail_from: str = "news@example.test") -> tuple[int, bytes]:
    message = header + f"To: bob@mail.test\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=60) as s:
        try:
            s.sendmail(mail_from, ["bob@mail.test"], message)
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error
        return 250, b""


def test_mx_refuses_several_from_fields(server: MailServer) -> None:
    # DMARC would align with one, ENVELOPE show the other: RFC 7489 §6.6.1, OpenDMARC RequiredHeaders.
    code, text = mx(server, b"From: news@example.test\r\nFrom : " + SPOOF + b"\r\n", "two authors")
    assert (code, text[:5]) == (550, b"5.7.1"), text
    server.wait_log("refused, 2 From fields")


def test_mx_dmarc_reads_the_from_envelope_serves(server: MailServer) -> None:
    # "From :" is From for DMARC too: the forged bank author meets the bank's p=reject.
    code, text = mx(server, b"From : " + SPOOF + b"\r\n", "spoofed bank")
    assert code == 550 and b"DMARC" in text, text
    server.wait_log("refused by DMARC policy")
    # And an honest one in the obsolete form is delivered, with the author DMARC checked in ENVELOPE.
    assert mx(server, b'From : "News" <news@example.test>\r\n', "obsolete but honest") == (250, b"")
    served = envelope_from(server, "bob", "obsolete but honest")
    assert b'"news" "example.test"' in served, served
    stored = next(m for m in server.messages("bob") if b"obsolete but honest" in m)
    assert b"header.from=example.test" in stored
