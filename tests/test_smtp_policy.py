"""SMTP policy end to end against a real `eventmail serve`: recipients (aliases, catch-alls, relaying), per-IP
limits, slow clients, failed logins, SCRAM-SHA-256(-PLUS), and every hostile input answered with its code and a log line."""

import base64
import hashlib
import json
import re
import shutil
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .dns_fixture import DnsServer, zone_text
from .mailserver import MailServer, swaks

scramp = pytest.importorskip("scramp", exc_type=ImportError)

pytestmark = [pytest.mark.peers, pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")]

PASSWORD = "policy test password"
IDLE = 3  # seconds: [limits] idle_timeout of this server
LIMITS = (
    f"[limits]\nconnections_per_ip = 3\nidle_timeout = {IDLE}\n"
    "login_failures_before_delay = 2\nlogin_failures_before_refusal = 3\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    base = tmp_path_factory.mktemp("policy")
    srv = MailServer(base, extra_config=LIMITS)
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    srv.add_account("bob", "bob@mail.test", PASSWORD)
    assert "address info@mail.test added" in srv.cli("account", "add-address", "alice", "info@mail.test")
    assert "catch-all for catchall.test added" in srv.cli("account", "add-address", "bob", "@catchall.test")
    srv.add_account("jose", "jösé@bücher.test", PASSWORD)
    zones = {
        "example.test": zone_text("example.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"', '_dmarc TXT "v=DMARC1; p=none"']),
        # IDNA: the sender's domain is looked up by its A-label (RFC 5890), the zone is written so.
        "xn--bcher-kva.test": zone_text("xn--bcher-kva.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"']),
    }
    with DnsServer.start(base / "dns", zones) as dns:
        srv.dns_port = dns.port
        srv.start()
        yield srv
        srv.stop()


def wait_log(srv: MailServer, needle: str, timeout: float = 10.0) -> str:
    return srv.wait_log(needle, timeout)


class Raw:
    """A raw SMTP connection from a chosen loopback address (limits are per remote address)."""

    def __init__(self, port: int, source: str = "127.0.0.1", greeting: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        if greeting:
            assert self.line().startswith(b"220 ")

    def line(self) -> bytes:
        return self.file.readline()

    def reply(self) -> bytes:
        """A whole (possibly multi-line) reply; its last line."""
        while True:
            line = self.line()
            if line[3:4] != b"-":
                return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def smtp(srv: MailServer, source: str = "127.0.0.1") -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30, source_address=(source, 0))
    s.ehlo("client.example.test")
    return s


def message(subject: str, body: bytes = b"hello\r\n") -> bytes:
    return f"From: s@example.test\r\nTo: someone@mail.test\r\nSubject: {subject}\r\n\r\n".encode() + body


def subjects(srv: MailServer, account: str, mailbox: str = "INBOX") -> bytes:
    return b"\n".join(srv.messages(account, mailbox))


# -- recipients ---------------------------------------------------------------------------------


def test_aliases_and_catch_alls_are_decided_at_rcpt(server: MailServer) -> None:
    with smtp(server) as s:
        s.mail("s@example.test")
        assert s.rcpt("info@mail.test")[0] == 250  # alice's alias
        assert s.rcpt("Anyone.At.All@CatchAll.test")[0] == 250  # bob's catch-all, any case
        code, text = s.rcpt("nobody@mail.test")  # mail.test has no catch-all
        assert (code, text[:5]) == (550, b"5.1.1")
        code, _ = s.data(message("alias and catch-all"))
        assert code == 250
    alice = server.wait_for("alice", 1)
    got = next(m for m in alice if b"alias and catch-all" in m)
    assert b"for <info@mail.test>" in got
    assert any(b"alias and catch-all" in m for m in server.wait_for("bob", 1))
    wait_log(server, "unknown recipient nobody@mail.test")


def test_an_alias_may_be_the_sender_on_submission(server: MailServer) -> None:
    ctx = ssl.create_default_context(cafile=str(server.cert))
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=ctx, timeout=30) as s:
        s.login("alice", PASSWORD)
        refused = s.sendmail("info@mail.test", ["bob@mail.test"],
                             b"From: info@mail.test\r\nSubject: sent as an alias\r\n\r\nhi\r\n")
        assert refused == {}
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            s.sendmail("x@catchall.test", ["bob@mail.test"], b"From: x@catchall.test\r\n\r\nhi\r\n")
        assert info.value.smtp_code == 553
    assert any(b"sent as an alias" in m for m in server.wait_for("bob", 2))
    wait_log(server, "alice may not send as x@catchall.test")


def test_relaying_is_refused_at_the_mx(server: MailServer) -> None:
    with smtp(server) as s:
        s.mail("s@example.test")
        code, text = s.rcpt("someone@elsewhere.example")
        # The refusal names the connection as its log lines do ("smtp N"), for the sender's bounce.
        assert code == 550 and re.fullmatch(rb"5\.7\.1 relaying denied \(smtp \d+\)", text), text
        assert s.rcpt("alice@mail.test")[0] == 250  # the transaction goes on for local recipients
    wait_log(server, "relaying to someone@elsewhere.example denied")


# -- content ------------------------------------------------------------------------------------


def test_nul_in_data_and_bdat_is_refused_and_the_session_goes_on(server: MailServer) -> None:
    """RFC 9051 §4.3 allows NUL in no IMAP literal but literal8, so mail with NUL is refused at
    the door (554 5.6.0, RFC 3463 §3.7), with a log line; the connection serves the next one."""
    c = Raw(server.ports["smtp"], source="127.0.0.8")
    c.cmd(b"EHLO client.example.test")
    assert c.cmd(b"MAIL FROM:<s@example.test>").startswith(b"250")
    assert c.cmd(b"RCPT TO:<alice@mail.test>").startswith(b"250")
    assert c.cmd(b"DATA").startswith(b"354")
    assert c.cmd(message("nul in data", b"a\x00b\r\n") + b".") == b"554 5.6.0 Message contains NUL bytes\r\n"
    wait_log(server, "127.0.0.8: 554 Message contains NUL bytes")
    assert c.cmd(b"MAIL FROM:<s@example.test>").startswith(b"250")
    assert c.cmd(b"RCPT TO:<alice@mail.test>").startswith(b"250")
    body = message("nul in bdat", b"\x00\r\n")
    c.send(b"BDAT %d LAST\r\n" % len(body) + body)
    assert c.reply() == b"554 5.6.0 Message contains NUL bytes\r\n"
    assert c.cmd(b"MAIL FROM:<s@example.test>").startswith(b"250")
    assert c.cmd(b"RCPT TO:<alice@mail.test>").startswith(b"250")
    assert c.cmd(b"DATA").startswith(b"354")
    assert c.cmd(message("clean after nul") + b".").startswith(b"250")
    c.cmd(b"QUIT")
    c.close()
    got = server.wait_for("alice", 1)
    assert any(b"clean after nul" in m for m in got)
    assert not any(b"nul in data" in m or b"nul in bdat" in m for m in got)


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks_pipelines_to_an_alias_and_a_catch_all(server: MailServer) -> None:
    p = swaks("-s", "127.0.0.1", "-p", str(server.ports["smtp"]), "--pipeline", "-f", "s@example.test",
              "-t", "info@mail.test,who.ever@catchall.test", "--h-Subject", "pipelined by swaks")
    assert p.returncode == 0, p.stdout
    # RFC 2920: MAIL, both RCPTs and DATA went out as one group before any reply came back.
    lines = [line[:4] for line in p.stdout.splitlines() if line[:4] in (" -> ", "<-  ")]
    sent_at = p.stdout.index(" -> MAIL FROM")
    assert p.stdout.index(" -> DATA", sent_at) < p.stdout.index("<-  250", sent_at), lines
    assert any(b"pipelined by swaks" in m for m in server.wait_for("alice", 1))
    assert any(b"pipelined by swaks" in m for m in server.wait_for("bob", 1))


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks_is_refused_relaying(server: MailServer) -> None:
    p = swaks("-s", "127.0.0.1", "-p", str(server.ports["smtp"]), "-f", "s@example.test", "-t", "x@elsewhere.example")
    assert p.returncode != 0
    assert "<** 550 5.7.1 relaying denied" in p.stdout


def test_unauthenticated_submission_is_refused(server: MailServer) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30) as s:
        s.starttls(context=ssl.create_default_context(cafile=str(server.cert)))
        s.ehlo("client.example.test")
        code, text = s.mail("alice@mail.test")
        assert (code, text[:5]) == (530, b"5.7.0")
        s.rset()
        assert s.rcpt("bob@mail.test")[0] == 503  # no transaction was opened
    wait_log(server, "MAIL without authentication refused")


# -- per-address limits and slow clients --------------------------------------------------------


def test_connections_per_ip_are_limited(server: MailServer) -> None:
    held = [Raw(server.ports["smtp"], "127.0.0.3") for _ in range(3)]
    extra = Raw(server.ports["smtp"], "127.0.0.3", greeting=False)
    assert extra.line().startswith(b"421 4.7.0")
    assert extra.line() == b""  # and closed
    wait_log(server, "127.0.0.3: too many connections (3 from 127.0.0.3), refused: 421 4.7.0")
    other = Raw(server.ports["smtp"], "127.0.0.4")  # another address is not affected
    assert other.cmd(b"QUIT").startswith(b"221")
    held.pop().close()
    deadline = time.monotonic() + 10
    while True:  # the server notices the close on its next read
        again = Raw(server.ports["smtp"], "127.0.0.3", greeting=False)
        if again.line().startswith(b"220"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for c in [*held, again, extra, other]:
        c.close()


def test_a_slow_client_is_dropped_after_the_idle_timeout(server: MailServer) -> None:
    c = Raw(server.ports["smtp"], "127.0.0.6")
    assert c.cmd(b"EHLO slow.example.test").startswith(b"250 ")
    c.send(b"MAIL FROM:<s@exa")  # half a command, then nothing
    start = time.monotonic()
    assert c.line().startswith(b"421 4.4.2")
    assert IDLE - 0.5 < time.monotonic() - start < IDLE + 10
    assert c.line() == b""
    c.close()
    wait_log(server, "127.0.0.6: idle timeout")


def test_failed_logins_are_delayed_then_refused(server: MailServer) -> None:
    ctx = ssl.create_default_context(cafile=str(server.cert))
    wrong = base64.b64encode(b"\0alice\0not the password").decode()
    right = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    codes = []
    for _ in range(4):
        with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30, source_address=("127.0.0.5", 0)) as s:
            s.starttls(context=ctx)
            s.ehlo("guesser.example.test")
            codes.append(s.docmd("AUTH", "PLAIN " + wrong))
    assert [c for c, _ in codes[:3]] == [535, 535, 535]
    assert codes[3][0] == 454 and codes[3][1].startswith(b"4.7.0 too many failed logins, try again later (smtp ")
    # The address is cooling down: even the right password is refused from it ...
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30, source_address=("127.0.0.5", 0)) as s:
        s.starttls(context=ctx)
        s.ehlo("guesser.example.test")
        assert s.docmd("AUTH", "PLAIN " + right)[0] == 454
    # ... but not from another address.
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30, source_address=("127.0.0.7", 0)) as s:
        s.starttls(context=ctx)
        s.ehlo("owner.example.test")
        assert s.docmd("AUTH", "PLAIN " + right)[0] == 235
    wait_log(server, "127.0.0.5: login refused, too many failures")
    wait_log(server, "127.0.0.5: authentication failed for 'alice'")


# -- SCRAM-SHA-256 and SCRAM-SHA-256-PLUS on submission ------------------------------------------


def scram_login(s: smtplib.SMTP, mechanism: str, password: str, binding: bytes | None) -> tuple[int, bytes]:
    """AUTH with scramp (an independent SCRAM client); `binding` is the tls-server-end-point data."""
    client = scramp.ScramClient([mechanism], "alice", password,
                                channel_binding=("tls-server-end-point", binding) if binding is not None else None)
    code, resp = s.docmd("AUTH", f"{mechanism} {base64.b64encode(client.get_client_first().encode()).decode()}")
    if code != 334:
        return code, resp
    client.set_server_first(base64.b64decode(resp).decode())
    code, resp = s.docmd(base64.b64encode(client.get_client_final().encode()).decode())
    if code != 334:
        return code, resp
    client.set_server_final(base64.b64decode(resp).decode())  # raises unless the server proved the key
    return s.docmd("")


def end_point(sock: ssl.SSLSocket) -> bytes:
    """RFC 5929 §4.1 for our ECDSA-with-SHA256 certificate: the SHA-256 of its DER form."""
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).digest()


def starttls_session(srv: MailServer, source: str) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=30, source_address=(source, 0))
    s.starttls(context=ssl.create_default_context(cafile=str(srv.cert)))
    s.ehlo("client.example.test")
    return s


def implicit_tls_session(srv: MailServer, source: str) -> smtplib.SMTP:
    s = smtplib.SMTP_SSL("127.0.0.1", srv.ports["submissions"], timeout=30, source_address=(source, 0),
                         context=ssl.create_default_context(cafile=str(srv.cert)))
    s.ehlo("client.example.test")
    return s


# Each from its own address: the failures below must not add up in the failed-login limiter.
SESSIONS: dict[str, Callable[[MailServer, str], smtplib.SMTP]] = {"587": starttls_session, "465": implicit_tls_session}


@pytest.mark.parametrize("port", sorted(SESSIONS))
def test_scram_without_plus_as_clients_at_their_defaults_can_do_it(server: MailServer, port: str) -> None:
    """SCRAM-SHA-256 over TLS; -PLUS is not offered (no tls-exporter here: docs/security.md), so a
    client that would bind with tls-server-end-point is refused -PLUS and plain SCRAM works."""
    net = "127.0.1." if port == "587" else "127.0.2."
    with SESSIONS[port](server, net + "1") as s:
        assert s.esmtp_features["auth"].split()[:1] == ["SCRAM-SHA-256"]
        assert "SCRAM-SHA-256-PLUS" not in s.esmtp_features["auth"].split()
        assert isinstance(s.sock, ssl.SSLSocket)
        assert scram_login(s, "SCRAM-SHA-256-PLUS", PASSWORD, end_point(s.sock))[0] == 504
    with SESSIONS[port](server, net + "3") as s:
        assert scram_login(s, "SCRAM-SHA-256", PASSWORD, None)[0] == 235
        assert s.sendmail("alice@mail.test", ["bob@mail.test"], b"From: alice@mail.test\r\nSubject: scram\r\n\r\nx\r\n") == {}
    with SESSIONS[port](server, net + "4") as s:
        assert scram_login(s, "SCRAM-SHA-256", "wrong password", None)[0] == 535


def test_no_auth_before_tls(server: MailServer) -> None:
    c = Raw(server.ports["submission"])
    ehlo = []
    c.send(b"EHLO client.example.test\r\n")
    while True:
        line = c.line()
        ehlo.append(line)
        if line[3:4] != b"-":
            break
    assert not any(b"AUTH" in line for line in ehlo)
    for mech in (b"PLAIN " + base64.b64encode(f"\0alice\0{PASSWORD}".encode()), b"SCRAM-SHA-256", b"LOGIN"):
        assert c.cmd(b"AUTH " + mech)[:3] in (b"503", b"504", b"530", b"538")
    assert c.cmd(b"MAIL FROM:<alice@mail.test>").startswith(b"530")
    c.close()


# -- hostile input: each has its code, a log line, and the server goes on ----------------------


def test_deeply_nested_mime_is_refused(server: MailServer) -> None:
    body = b""
    for level in range(40):
        body = (f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n').encode() + body
        body += f"\r\n--b{level}--\r\n".encode()
    nested = b"From: s@example.test\r\nSubject: nested bomb\r\nMIME-Version: 1.0\r\n" + body
    with smtp(server) as s:
        with pytest.raises(smtplib.SMTPDataError) as info:
            s.sendmail("s@example.test", ["alice@mail.test"], nested)
        assert (info.value.smtp_code, info.value.smtp_error[:5]) == (554, b"5.6.0")
        assert s.sendmail("s@example.test", ["alice@mail.test"], message("after the bomb")) == {}
    assert b"nested bomb" not in subjects(server, "alice")
    wait_log(server, "refused, MIME nesting deeper than 30")  # mime.MAX_MIME_DEPTH


def test_huge_mime_is_refused(server: MailServer) -> None:
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(2500))
    huge = (b"From: s@example.test\r\nSubject: many parts\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + parts + b"--p--\r\n")
    with smtp(server) as s:
        with pytest.raises(smtplib.SMTPDataError) as info:
            s.sendmail("s@example.test", ["alice@mail.test"], huge)
        assert info.value.smtp_code == 554
    assert b"many parts" not in subjects(server, "alice")
    line = wait_log(server, "refused, MIME depth 2 parts")
    assert int(line.rsplit("parts ", 1)[1]) > 2000


def test_over_long_lines(server: MailServer) -> None:
    c = Raw(server.ports["smtp"], "127.0.0.8")
    assert c.cmd(b"EHLO long.example.test").startswith(b"250 ")
    assert c.cmd(b"NOOP " + b"n" * 600).startswith(b"500 5.5.2 Line too long")
    assert c.cmd(b"MAIL FROM:<s@example.test>").startswith(b"250")
    assert c.cmd(b"RCPT TO:<alice@mail.test>").startswith(b"250")
    assert c.cmd(b"DATA").startswith(b"354")
    c.send(b"Subject: long line\r\n\r\n" + b"t" * 1200 + b"\r\n.\r\n")
    assert c.reply().startswith(b"500 5.5.2 Line too long")
    assert c.cmd(b"NOOP").startswith(b"250")  # still serving
    c.close()
    assert b"long line" not in subjects(server, "alice")
    wait_log(server, "127.0.0.8: 500 Line too long")


def test_too_many_recipients(server: MailServer) -> None:
    c = Raw(server.ports["smtp"], "127.0.0.9")
    assert c.cmd(b"EHLO many.example.test").startswith(b"250 ")
    assert c.cmd(b"MAIL FROM:<s@example.test>").startswith(b"250")
    replies = [c.cmd(b"RCPT TO:<alice@mail.test>") for _ in range(101)]
    assert all(r.startswith(b"250") for r in replies[:100])
    assert replies[100].startswith(b"452 4.5.3")
    c.close()
    wait_log(server, "127.0.0.9: 452 Too many recipients")


def test_oversized_message_declared_with_size(server: MailServer) -> None:
    c = Raw(server.ports["smtp"], "127.0.0.10")
    assert c.cmd(b"EHLO big.example.test").startswith(b"250 ")
    assert c.cmd(b"MAIL FROM:<s@example.test> SIZE=999999999999").startswith(b"552 5.3.4")
    assert c.cmd(b"MAIL FROM:<s@example.test> SIZE=1000").startswith(b"250")
    c.close()
    wait_log(server, "127.0.0.10: 552")


@pytest.mark.parametrize(
    "command",
    [b"MAIL FROM:<j\xc3\x28@example.test> SMTPUTF8", b"RCPT TO:<\xff\xfe@mail.test>"],
    ids=["mail-from", "rcpt-to"],
)
def test_invalid_utf8_in_addresses(server: MailServer, command: bytes) -> None:
    c = Raw(server.ports["smtp"], "127.0.0.11")
    assert c.cmd(b"EHLO utf8.example.test").startswith(b"250 ")
    if command.startswith(b"RCPT"):
        assert c.cmd(b"MAIL FROM:<s@example.test> SMTPUTF8").startswith(b"250")
    reply = c.cmd(command)
    assert reply[:1] == b"5" and b"UTF-8" in reply, reply
    assert c.cmd(b"NOOP").startswith(b"250")
    c.close()
    wait_log(server, "127.0.0.11: 501 Address is not valid UTF-8")


def test_invalid_utf8_in_content_is_kept_as_sent(server: MailServer) -> None:
    """Content is octets (RFC 6152): invalid UTF-8 there is delivered unchanged, never decoded lossily."""
    body = b"caf\xc3 \xff\xfe broken utf-8\r\n"
    with smtp(server) as s:
        assert s.sendmail("s@example.test", ["alice@mail.test"], message("bad utf8 body", body),
                          mail_options=["BODY=8BITMIME"]) == {}
    assert any(body in m for m in server.wait_for("alice", 1))


def test_pipelined_body_before_354_is_refused(server: MailServer) -> None:
    """RFC 2920 §3.1: DATA ends a command group; the content must wait for the 354."""
    c = Raw(server.ports["smtp"], "127.0.0.12")
    assert c.cmd(b"EHLO pipe.example.test").startswith(b"250 ")
    c.send(b"MAIL FROM:<s@example.test>\r\nRCPT TO:<alice@mail.test>\r\nDATA\r\n"
           b"Subject: too early\r\n\r\nx\r\n.\r\n")
    replies = [c.line() for _ in range(4)]
    assert [r[:3] for r in replies] == [b"250", b"250", b"354", b"554"]
    assert c.line() == b""
    c.close()
    assert b"too early" not in subjects(server, "alice")
    wait_log(server, "127.0.0.12: 554 Error: SMTP protocol synchronization")


def test_commands_pipelined_behind_starttls_are_discarded(server: MailServer) -> None:
    """CVE-2011-0411: plaintext injected behind STARTTLS must not run inside the TLS session."""
    c = Raw(server.ports["smtp"], "127.0.0.13")
    assert c.cmd(b"EHLO inject.example.test").startswith(b"250 ")
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@example.test>\r\nRCPT TO:<alice@mail.test>\r\n")
    assert c.line().startswith(b"220")
    ctx = ssl.create_default_context(cafile=str(server.cert))
    tls = ctx.wrap_socket(c.sock, server_hostname="127.0.0.1")
    f = tls.makefile("rb")
    tls.sendall(b"EHLO inject.example.test\r\n")
    while (line := f.readline())[3:4] == b"-":
        pass
    assert line.startswith(b"250 ")
    tls.sendall(b"DATA\r\n")
    assert f.readline().startswith(b"503")  # the injected MAIL and RCPT never happened
    tls.close()
    c.close()
    wait_log(server, "127.0.0.13: dropped 58 octets pipelined behind STARTTLS")


def test_the_server_still_delivers_after_all_this(server: MailServer) -> None:
    with smtp(server) as s:
        assert s.sendmail("s@example.test", ["alice@mail.test"], message("still here")) == {}
    assert any(b"still here" in m for m in server.wait_for("alice", 1))


def test_addresses_are_managed_from_the_cli(tmp_path: Path) -> None:
    srv = MailServer(tmp_path)
    srv.init()
    srv.add_account("carol", "carol@mail.test", PASSWORD)
    srv.add_account("dave", "dave@mail.test", PASSWORD)
    srv.cli("account", "add-address", "carol", "@mail.test")
    with pytest.raises(AssertionError, match="belongs to account carol"):
        srv.cli("account", "add-address", "dave", "@MAIL.test")
    with pytest.raises(AssertionError, match="expected local@domain"):
        srv.cli("account", "add-address", "dave", "no-at-sign")
    assert "carol@mail.test, @mail.test" in srv.cli("account", "list")
    srv.cli("account", "remove-address", "carol", "@mail.test")
    with pytest.raises(AssertionError, match="has no address"):
        srv.cli("account", "remove-address", "dave", "carol@mail.test")
    assert "carol\tcarol@mail.test\tpassword" in srv.cli("account", "list")


def test_requiretls_is_kept_with_the_queued_message(server: MailServer) -> None:
    """RFC 8689 §4.1: a message submitted with REQUIRETLS may only be relayed over TLS; the queue keeps the flag."""
    ctx = ssl.create_default_context(cafile=str(server.cert))
    with smtplib.SMTP_SSL("127.0.0.1", server.ports["submissions"], context=ctx, timeout=30,
                          source_address=("127.0.3.1", 0)) as s:
        s.ehlo("client.example.test")
        assert s.has_extn("requiretls")
        s.login("alice", PASSWORD)
        for rcpt, options in (("tls-only@remote.example", ["REQUIRETLS"]), ("any-way@remote.example", [])):
            assert s.sendmail("alice@mail.test", [rcpt], b"From: alice@mail.test\r\n\r\nx\r\n", mail_options=options) == {}
    queued = [line for line in server.cli("log", "queue").splitlines() if "outboundQueued" in line]
    flags = {("tls-only" in line, '"requiretls":true' in line.replace(" ", "")) for line in queued}
    assert flags == {(True, True), (False, False)}, queued


def test_idna_and_utf8_local_parts_end_to_end(server: MailServer) -> None:
    """RFC 6531: a UTF-8 sender at an IDN, to the recipient written with a U-label and with an A-label."""
    msg = "From: zoë@bücher.test\r\nTo: jösé@bücher.test\r\nSubject: grüße\r\n\r\nhej\r\n".encode()
    with smtp(server) as s:
        for rcpt in ("jösé@bücher.test", "JÖSÉ@xn--bcher-kva.test"):
            assert s.sendmail("zoë@bücher.test", [rcpt], msg + rcpt.encode() + b"\r\n",
                              mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused):  # without SMTPUTF8 a UTF-8 path is refused
            s.sendmail("s@example.test", ["jösé@bücher.test"], b"Subject: no\r\n\r\nx\r\n")
    got = [m for m in server.wait_for("jose", 2) if "grüße".encode() in m]
    assert len(got) == 2
    for m in got:
        head = m.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").decode()
        assert "with UTF8SMTP" in head  # RFC 6531 §4.3 trace protocol
        assert "spf=pass" in head and "zoë@bücher.test" in head.split("spf=pass", 1)[1], head


def test_the_verdict_is_recorded_in_the_delivery_event(server: MailServer) -> None:
    """The verdict and its reasons are stored with the delivery; replay reads them, never asks DNS again."""
    with smtp(server) as s:
        assert s.sendmail("s@example.test", ["alice@mail.test"], message("verdict recorded")) == {}
    server.wait_for("alice", 1)
    events = [json.loads(line.split("\t", 2)[2]) for line in server.cli("log", "alice").splitlines()]
    origin = next(e["messageAdded"]["origin"] for e in events
                  if "messageAdded" in e and e["messageAdded"]["origin"].get("mailFrom") == "s@example.test")
    verdict = json.loads(origin["verdict"])
    assert verdict["spf"]["result"] == "pass" and verdict["spf"]["mechanism"] == "ip4:127.0.0.0/8"
    assert verdict["dmarc"]["result"] == "pass" and verdict["dkim"] == []
    assert "spf=pass example.test" in verdict["reasons"]
    assert origin["authenticationResults"].startswith("Authentication-Results: mail.test;")


def test_chunking_bdat_delivers(server: MailServer) -> None:
    """RFC 3030: the message in BDAT chunks (a chunk may end anywhere, even inside a line)."""
    c = Raw(server.ports["smtp"], "127.0.3.2")
    assert c.cmd(b"EHLO chunky.example.test").startswith(b"250 ")
    first, last = b"From: s@example.test\r\nSubject: chunked\r\n\r\nfirst half, ", b"second half\r\n"
    c.send(b"MAIL FROM:<s@example.test>\r\nRCPT TO:<alice@mail.test>\r\n")
    assert [c.reply()[:3], c.reply()[:3]] == [b"250", b"250"]
    c.send(b"BDAT %d\r\n" % len(first) + first)
    assert c.reply().startswith(b"250")
    c.send(b"BDAT %d LAST\r\n" % len(last) + last)
    assert c.reply().startswith(b"250 2.0.0 queued as")
    c.close()
    assert any(b"first half, second half\r\n" in m for m in server.wait_for("alice", 1))
