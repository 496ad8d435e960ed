"""SMTP in, end to end: a real `eventmail serve` process, swaks, smtplib, a DNS server process, dkimpy in its own process."""

import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from .dns_fixture import DnsServer, txt_rdata, zone_text
from .mailserver import MailServer, swaks

pytestmark = [pytest.mark.peers, pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")]

PASSWORD = "correct horse battery"


def zones(dkim_record: str) -> dict[str, str]:
    return {
        # Our own domain: its DKIM key (made by `eventmail dkim add`) and an SPF record.
        "mail.test": zone_text("mail.test", [
            "@ A 127.0.0.1", '@ TXT "v=spf1 ip4:127.0.0.0/8 -all"',
            f"ed._domainkey TXT {txt_rdata(dkim_record)}",
            '_dmarc TXT "v=DMARC1; p=reject"',
        ]),
        # A sender allowed to send from loopback.
        "example.test": zone_text("example.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"', '_dmarc TXT "v=DMARC1; p=reject"']),
        # Senders whose SPF fails from loopback, with strict policies.
        "reject.test": zone_text("reject.test", ['@ TXT "v=spf1 ip4:192.0.2.1 -all"', '_dmarc TXT "v=DMARC1; p=reject"']),
        "quarantine.test": zone_text("quarantine.test", ['@ TXT "v=spf1 ip4:192.0.2.1 -all"', '_dmarc TXT "v=DMARC1; p=quarantine"']),
        "xn--bcher-kva.test": zone_text("xn--bcher-kva.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"']),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    base = tmp_path_factory.mktemp("mx")
    srv = MailServer(base, max_message_bytes=2 << 20)  # the oversized message below need not be 50 MB
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    srv.add_account("bob", "bob@mail.test", PASSWORD)
    srv.add_account("jose", "jösé@bücher.test", PASSWORD)
    record = srv.cli("dkim", "add", "mail.test", "ed").split('TXT "', 1)[1].rstrip().rstrip('"')
    with DnsServer.start(base / "dns", zones(record)) as dns:
        srv.dns_port = dns.port
        srv.start()
        srv.dns = dns  # type: ignore[attr-defined]
        yield srv
        srv.stop()


def smtp_port(srv: MailServer) -> str:
    return str(srv.ports["smtp"])


def test_ehlo_offers_the_extensions(server: MailServer) -> None:
    p = swaks("-s", "127.0.0.1", "-p", smtp_port(server), "-t", "alice@mail.test", "--quit-after", "EHLO")
    for ext in ("PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE", "ENHANCEDSTATUSCODES", "STARTTLS", "CHUNKING"):
        assert f"250-{ext}" in p.stdout or f"250 {ext}" in p.stdout, ext
    assert "AUTH" not in p.stdout  # the MX offers no AUTH
    p = swaks("-s", "127.0.0.1", "-p", smtp_port(server), "-t", "alice@mail.test", "-tls", "--quit-after", "EHLO")
    assert "REQUIRETLS" in p.stdout and "STARTTLS" not in p.stdout.split("<~")[-1]


def test_mx_delivery_adds_trace_and_authentication_results(server: MailServer) -> None:
    before = len(server.messages("alice"))
    p = swaks("-s", "127.0.0.1", "-p", smtp_port(server), "-f", "sender@example.test", "-t", "alice@mail.test",
              "--h-Subject", "mx delivery", "--h-From", "sender@example.test")
    assert p.returncode == 0, p.stdout
    assert "250 2.0.0 queued as" in p.stdout
    msgs = server.messages("alice")
    assert len(msgs) == before + 1
    head = msgs[-1].split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"Received: from ")
    assert b"by mail.test (eventmail) with ESMTP" in head
    assert b"Authentication-Results: mail.test;" in head
    assert b"spf=pass" in head and b"dmarc=pass" in head


def test_unknown_recipient_is_refused_at_rcpt(server: MailServer) -> None:
    p = swaks("-s", "127.0.0.1", "-p", smtp_port(server), "-f", "sender@example.test", "-t", "nobody@mail.test")
    assert p.returncode != 0
    assert "550 5.1.1" in p.stdout


def test_dmarc_reject_is_550_and_quarantine_goes_to_junk(server: MailServer) -> None:
    p = swaks("-s", "127.0.0.1", "-p", smtp_port(server), "-f", "x@reject.test", "--h-From", "x@reject.test",
              "-t", "bob@mail.test", "--h-Subject", "forged")
    assert "550 5.7.1" in p.stdout
    assert not any(b"forged" in m for m in server.messages("bob"))
    junk = len(server.messages("bob", "Junk"))
    p = swaks("-s", "127.0.0.1", "-p", smtp_port(server), "-f", "x@quarantine.test", "--h-From", "x@quarantine.test",
              "-t", "bob@mail.test", "--h-Subject", "suspicious")
    assert p.returncode == 0
    assert len(server.messages("bob", "Junk")) == junk + 1
    assert b"dmarc=fail" in server.messages("bob", "Junk")[-1]


def test_a_forged_authentication_results_header_is_removed(server: MailServer) -> None:
    p = swaks("-s", "127.0.0.1", "-p", smtp_port(server), "-f", "x@example.test", "--h-From", "x@example.test",
              "-t", "bob@mail.test", "--add-header", "Authentication-Results: mail.test; dmarc=pass (forged)",
              "--h-Subject", "forger")
    assert p.returncode == 0
    msg = next(m for m in server.messages("bob") if b"forger" in m)
    assert b"(forged)" not in msg


def test_a_retried_transaction_is_delivered_once(server: MailServer, tmp_path: Path) -> None:
    data = tmp_path / "m.eml"
    data.write_bytes(
        b"From: s@example.test\r\nTo: alice@mail.test\r\nMessage-ID: <retry-1@example.test>\r\n"
        b"Subject: retried\r\n\r\nsame bytes twice\r\n"
    )
    for _ in range(2):
        p = swaks("-s", "127.0.0.1", "-p", smtp_port(server), "-f", "s@example.test", "-t", "alice@mail.test",
                  "--data", f"@{data}")
        assert p.returncode == 0
    assert sum(b"retry-1@example.test" in m for m in server.messages("alice")) == 1


def test_a_pipelining_client_delivers(server: MailServer) -> None:
    """swaks sends MAIL, RCPT and DATA in one write when PIPELINING is offered (RFC 2920)."""
    p = swaks("-s", "127.0.0.1", "-p", smtp_port(server), "-f", "s@example.test", "--h-From", "s@example.test",
              "-t", "alice@mail.test", "--pipeline", "--h-Subject", "pipelined delivery")
    assert p.returncode == 0, p.stdout
    assert "250 2.0.0 queued as" in p.stdout
    assert any(b"pipelined delivery" in m for m in server.messages("alice"))


def data_segments_in(s: socket.socket) -> int:
    """Segments with data this socket received (Linux TCP_INFO's tcpi_data_segs_in, since 4.6)."""
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int.from_bytes(info[152:156], sys.byteorder)


def greeted(s: socket.socket) -> BinaryIO:
    """The socket's reading side, after the greeting and the replies to EHLO."""
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"EHLO client.example.test\r\n")
    while f.readline()[3:4] == b"-":
        pass
    return f


def test_replies_to_pipelined_commands_come_in_one_segment(server: MailServer) -> None:
    """RFC 2920 §3.1: the replies to MAIL, RCPT and DATA sent in one packet go out in one write
    (the server sends each write at once, TCP_NODELAY: one per reply before)."""
    with socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=20) as s:
        f = greeted(s)
        before = data_segments_in(s)
        s.sendall(b"MAIL FROM:<s@example.test>\r\nRCPT TO:<bob@mail.test>\r\nDATA\r\n")
        assert [f.readline()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        assert data_segments_in(s) - before == 1
        s.sendall(b"From: s@example.test\r\nSubject: one segment\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        assert [line[:3] for line in f.read().split(b"\r\n") if line] == [b"250", b"221"]
    assert any(b"one segment" in m for m in server.messages("bob"))


def test_held_replies_are_written_a_hundred_at_a_time(server: MailServer) -> None:
    """The replies held for one write are bounded (smtp.server.HELD_REPLIES): 150 pipelined
    commands (MAIL and RSET, 75 times) in one packet are answered in two writes."""
    from eventmail.smtp.server import HELD_REPLIES

    assert HELD_REPLIES < 150 < 2 * HELD_REPLIES
    with socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=20) as s:
        f = greeted(s)
        before = data_segments_in(s)
        s.sendall(b"MAIL FROM:<s@example.test>\r\nRSET\r\n" * 75)
        assert all(f.readline().startswith(b"250 ") for _ in range(150))
        assert data_segments_in(s) - before == 2


def test_internationalised_domain_and_utf8_local_part(server: MailServer) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.ehlo("client.example.test")
        assert s.has_extn("smtputf8")
        msg = "From: s@example.test\r\nTo: jösé@bücher.test\r\nSubject: ünïcödé\r\n\r\nhej\r\n".encode()
        s.sendmail("s@example.test", ["jösé@bücher.test"], msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    got = server.messages("jose")
    assert any("ünïcödé".encode() in m for m in got)


def test_submission_requires_tls_before_auth(server: MailServer) -> None:
    p = swaks("-s", "127.0.0.1", "-p", str(server.ports["submission"]), "-f", "alice@mail.test",
              "-t", "bob@mail.test", "-a", "PLAIN", "-au", "alice", "-ap", PASSWORD)
    assert p.returncode != 0
    assert "AUTH" not in p.stdout.split("EHLO", 1)[1].split("\n -> ", 1)[0]


def test_submission_checks_the_from_address(server: MailServer) -> None:
    p = swaks("-s", "127.0.0.1", "-p", str(server.ports["submission"]), "-tls", "-a", "PLAIN", "-au", "alice",
              "-ap", PASSWORD, "-f", "alice@mail.test", "--h-From", "bob@mail.test", "-t", "bob@mail.test")
    assert "550 5.7.1" in p.stdout
    p = swaks("-s", "127.0.0.1", "-p", str(server.ports["submission"]), "-tls", "-a", "PLAIN", "-au", "alice",
              "-ap", PASSWORD, "-f", "bob@mail.test", "-t", "bob@mail.test")
    assert "553 5.7.1" in p.stdout


@pytest.mark.parametrize("port_kind", ["submission", "submissions"])
def test_submission_signs_copies_to_sent_and_delivers_locally(server: MailServer, tmp_path: Path, port_kind: str) -> None:
    sent_before = len(server.messages("alice", "Sent"))
    tls = ["--tls-on-connect"] if port_kind == "submissions" else ["-tls"]
    subject = f"signed hello via {port_kind}"
    p = swaks("-s", "127.0.0.1", "-p", str(server.ports[port_kind]), *tls, "-a", "LOGIN",
              "-au", "alice@mail.test", "-ap", PASSWORD, "-f", "alice@mail.test", "--h-From", "alice@mail.test",
              "-t", "bob@mail.test", "--h-Subject", subject)
    assert p.returncode == 0, p.stdout
    assert len(server.messages("alice", "Sent")) == sent_before + 1
    delivered = next(m for m in server.messages("bob") if subject.encode() in m)
    assert b"DKIM-Signature:" in delivered and b"d=mail.test" in delivered and b"a=ed25519-sha256" in delivered
    # An independent verifier in its own process, asking the DNS server process for the key.
    msg = tmp_path / "signed.eml"
    msg.write_bytes(delivered)
    verifier = (
        "import sys, dkim, dns.resolver\n"
        "r = dns.resolver.Resolver(configure=False); r.nameservers = ['127.0.0.1']; r.port = int(sys.argv[2])\n"
        "def txt(name, timeout=5):\n"
        "    return b''.join(b''.join(x.strings) for x in r.resolve(name.decode().rstrip('.'), 'TXT'))\n"
        "print('verified' if dkim.verify(open(sys.argv[1], 'rb').read(), dnsfunc=txt) else 'failed')\n"
    )
    out = subprocess.run([sys.executable, "-c", verifier, str(msg), str(server.dns.port)],  # type: ignore[attr-defined]
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "verified", out.stderr
    tampered = tmp_path / "tampered.eml"
    tampered.write_bytes(delivered.replace(b"This is a test mailing", b"This is a changed mailing"))
    out = subprocess.run([sys.executable, "-c", verifier, str(tampered), str(server.dns.port)],  # type: ignore[attr-defined]
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "failed"


def test_failed_logins_are_limited(server: MailServer) -> None:
    outs = []
    for _ in range(7):
        p = swaks("-s", "127.0.0.1", "-p", str(server.ports["submission"]), "-tls", "-a", "PLAIN", "-au", "ghost",
                  "-ap", "wrong", "-t", "bob@mail.test", "--quit-after", "AUTH", timeout=120)
        outs.append(p.stdout)
    assert all("535 5.7.8" in o or "454 4.7.0" in o for o in outs)
    server.wait_log("authentication failed")


@pytest.mark.parametrize("terminator", [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\r\n.\r\n"])
def test_smuggled_transaction_is_never_delivered(server: MailServer, terminator: bytes) -> None:
    smuggled = b"MAIL FROM:<evil@example.test>\r\nRCPT TO:<bob@mail.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n"
    with socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=20) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO client.example.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        s.sendall(b"MAIL FROM:<s@example.test>\r\nRCPT TO:<bob@mail.test>\r\nDATA\r\n")
        assert [f.readline()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        s.sendall(b"Subject: carrier\r\n\r\nhello" + terminator + smuggled + b"QUIT\r\n")
        replies = f.read().split(b"\r\n")
    codes = [r[:3] for r in replies if r]
    assert codes[0] == b"550"  # the bare CR/LF refuses the whole message at the real end of data
    assert b"smuggled" not in b"".join(server.messages("bob"))
    assert b"carrier" not in b"".join(server.messages("bob"))


def test_the_server_keeps_serving_after_hostile_input(server: MailServer) -> None:
    with socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=20) as s:
        s.sendall(b"EHLO x\r\n" + b"NOOP " + b"A" * 5000 + b"\r\n" + b"\xff\xfe garbage\r\n" * 3 + b"QUIT\r\n")
        s.recv(65536)
    p = swaks("-s", "127.0.0.1", "-p", smtp_port(server), "-f", "s@example.test", "-t", "alice@mail.test")
    assert p.returncode == 0


def test_tls_certificate_is_served_on_implicit_tls(server: MailServer) -> None:
    ctx = ssl.create_default_context(cafile=str(server.cert))
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=ctx) as s:
        code, _ = s.ehlo()
        assert code == 250 and s.has_extn("auth")


def test_size_and_recipient_limits(server: MailServer, tmp_path: Path) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"]) as s:
        s.ehlo("client.example.test")
        limit = int(s.esmtp_features["size"])
        code, text = s.mail("s@example.test", [f"SIZE={limit + 1}"])
        assert code == 552 and text.startswith(b"5.3.4")
        s.rset()
        s.mail("s@example.test")
        codes = [s.rcpt("alice@mail.test")[0] for _ in range(120)]
        assert codes[0] == 250 and 452 in codes  # RFC 5321 §4.5.3.1.8: too many recipients
    big = tmp_path / "big.eml"
    big.write_bytes(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (limit // 1000 + 10))
    p = swaks("-s", "127.0.0.1", "-p", smtp_port(server), "-f", "s@example.test", "-t", "alice@mail.test",
              "--data", f"@{big}", timeout=120)
    assert "552 5.3.4" in p.stdout
    server.wait_log(": 552 Message size exceeds")
    assert not any(m.endswith(b"x" * 998 + b"\r\n") and len(m) > limit for m in server.messages("alice"))


def test_localserve_starts_and_delivers(tmp_path: Path) -> None:
    """`eventmail localserve` (what `make run` starts): ports and password printed, mail goes in."""
    from .mailserver import start_localserve

    ls = start_localserve(tmp_path / "ls", "--password", "pw-local-1")
    ports = ls.ports
    try:
        text = "".join(ls.lines)
        assert f"port {ports['smtp']}" in text and "password: pw-local-1" in text
        p = swaks("-s", "127.0.0.1", "-p", str(ports["submission"]), "-a", "PLAIN", "-au", "you@localhost",
                  "-ap", "pw-local-1", "-f", "you@localhost", "-t", "anyone@example.org", "--h-Subject", "local")
        assert p.returncode == 0, p.stdout
    finally:
        ls.stop()
