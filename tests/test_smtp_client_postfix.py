"""The SMTP client against Postfix as the receiving MTA: delivery, PIPELINING, per-recipient replies, SIZE, SMTPUTF8, 8BITMIME, TLS by PKIX and DANE.

One isolated Postfix instance (TESTBED §2: own config, queue and log; loopback; no port 25) with
one smtpd listener per server flavour, relaying what it accepts to an aiosmtpd sink, so the bytes
that arrive can be compared with what was sent. smtpd_forbid_bare_newline is on everywhere:
Postfix itself would refuse a bare LF if one reached the wire.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from eventmail.smtp.attempt import AttemptResult, Outcome, Timeouts, TlsRequirement, attempt
from eventmail.smtp.tlspolicy import Tlsa
from tests.dns_fixture import process_alive
from tests.mailserver import free_port
from tests.smtp_certs import Certs, make_certs

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(shutil.which("postfix") is None, reason="postfix missing"),
    pytest.mark.skipif(os.geteuid() != 0, reason="an isolated Postfix instance needs root"),
]

NAME = "mx.remote.test"
TIMEOUTS = Timeouts.all(20.0)
# Each listener: name -> extra smtpd -o settings.
FLAVOURS: dict[str, tuple[str, ...]] = {
    "ca": (),  # STARTTLS with a certificate from the test CA (chain includes the CA)
    "self": ("smtpd_tls_cert_file={self_pem}", "smtpd_tls_key_file={self_key}"),
    "notls": ("smtpd_tls_security_level=none",),
    "small": ("message_size_limit=4000",),
    "noutf8": ("smtputf8_enable=no",),
    "old": ("smtpd_discard_ehlo_keywords=8bitmime,pipelining,silent-discard",),
}


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes, list[str]]] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,  # type: ignore[attr-defined]
                              list(envelope.mail_options)))  # type: ignore[attr-defined]
        return "250 2.0.0 kept"

    def wait(self, needle: bytes, timeout: float = 30) -> tuple[str, list[str], bytes, list[str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if needle in m[2]:
                    return m
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} never reached the sink")


@dataclass
class Peer:
    ports: dict[str, int]
    sink: Sink
    certs: Certs
    log: Path

    def send(self, flavour: str, rcpts: list[str], message: bytes, tls: TlsRequirement | None = None,
             mail_from: str = "alice@client.test", **kw: object) -> AttemptResult:
        return asyncio.run(attempt(NAME, "127.0.0.1", self.ports[flavour], mail_from, rcpts, message,
                                   tls=tls or TlsRequirement.opportunistic(), helo="client.test",
                                   timeouts=TIMEOUTS, **kw))  # type: ignore[arg-type]


def _master_cf(ports: dict[str, int], certs: Certs) -> str:
    lines = []
    for line in Path("/usr/share/postfix/master.cf.dist").read_text().splitlines():
        if line.startswith("smtp      inet"):
            for flavour, port in ports.items():
                lines.append(f"127.0.0.1:{port} inet n - n - - smtpd")
                for opt in FLAVOURS[flavour]:
                    lines.append("  -o " + opt.format(self_pem=certs.self_pem, self_key=certs.self_key_pem))
            continue
        parts = line.split()
        if len(parts) >= 5 and parts[1] == "unix" and parts[4] == "y":
            parts[4] = "n"  # chroot off (TESTBED §2, pitfall 4)
            line = " ".join(parts)
        lines.append(line)
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def peer() -> Iterator[Peer]:
    # Postfix's daemons run as postfix: their directories must be reachable (not pytest's 0700 tree).
    base = Path(tempfile.mkdtemp(prefix="eventmail-client-postfix-"))
    os.chmod(base, 0o755)
    certs = make_certs(base / "certs")
    etc, spool, data = base / "etc", base / "spool", base / "data"
    for d in (etc, spool, data):
        d.mkdir()
    shutil.chown(data, "postfix")
    sink = Sink()
    sink_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink_port, enable_SMTPUTF8=True)
    controller.start()
    ports = {flavour: free_port() for flavour in FLAVOURS}
    (etc / "transport").write_text(f"remote.test smtp:[127.0.0.1]:{sink_port}\n")
    (etc / "rcpt_access").write_text(
        "temp@remote.test 450 4.2.0 try again later\ngone@remote.test 550 5.1.1 no such user here\n"
    )
    (etc / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = {NAME}
mydomain = remote.test
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
local_recipient_maps =
mynetworks = 127.0.0.0/8
smtpd_recipient_restrictions = check_recipient_access texthash:{etc}/rcpt_access, permit_mynetworks, reject_unauth_destination
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
transport_maps = texthash:{etc}/transport
relay_domains = remote.test
maillog_file = {base}/postfix.log
maillog_file_prefixes = /var, /dev/stdout, /tmp
syslog_name = postfix-eventmail-client-test
smtpd_tls_cert_file = {certs.chain_pem}
smtpd_tls_key_file = {certs.key_pem}
smtpd_tls_security_level = may
# "yes" means "normalize" since Postfix's 2024 smuggling fixes (it accepts a bare LF), and
# $mynetworks, the default exclusion, covers loopback: refuse it, from every client.
smtpd_forbid_bare_newline = reject
smtpd_forbid_bare_newline_exclusions =
smtp_tls_security_level = none
smtp_host_lookup = native
smtp_dns_support_level = disabled
alias_maps =
alias_database =
biff = no
""")
    (etc / "master.cf").write_text(_master_cf(ports, certs))
    subprocess.run(["postfix", "-c", str(etc), "check"], check=True, timeout=60)
    subprocess.run(["script", "-qc", f"postfix -c {etc} start", "/dev/null"], check=True, timeout=60)
    pidfile = spool / "pid" / "master.pid"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _listening(ports["ca"]):
            time.sleep(0.1)
        yield Peer(ports, sink, certs, base / "postfix.log")
    finally:
        master = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
        subprocess.run(["script", "-qc", f"postfix -c {etc} stop", "/dev/null"], timeout=60)
        if master is not None:  # make sure the master we started is gone, by its PID
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and process_alive(master):
                time.sleep(0.1)
            if process_alive(master):
                os.kill(master, signal.SIGKILL)
        controller.stop()
        shutil.rmtree(base, ignore_errors=True)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def message(tag: str, body: bytes = b"Hello.\r\n.A line with a leading dot\r\n..two\r\n") -> bytes:
    return (f"From: Alice <alice@client.test>\r\nTo: bob@remote.test\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@client.test>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\n").encode() + body


def body_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


def test_delivery_pipelined_per_recipient_and_byte_identical(peer: Peer) -> None:
    msg = message("pipelined")
    result = peer.send("ca", ["bob@remote.test", "temp@remote.test", "gone@remote.test", "carol@remote.test"], msg)
    outcomes = {r.rcpt: r.outcome for r in result.rcpts}
    assert outcomes == {"bob@remote.test": Outcome.DELIVERED, "temp@remote.test": Outcome.TEMPORARY,
                        "gone@remote.test": Outcome.PERMANENT, "carol@remote.test": Outcome.DELIVERED}, result
    gone = next(r for r in result.rcpts if r.rcpt == "gone@remote.test")
    assert gone.reply is not None and (gone.reply.code, gone.reply.enhanced) == (550, "5.1.1")
    temp = next(r for r in result.rcpts if r.rcpt == "temp@remote.test")
    assert temp.reply is not None and (temp.reply.code, temp.reply.enhanced) == (450, "4.2.0")
    # RFC 2920: MAIL, four RCPTs and DATA in one write. Writes: EHLO, STARTTLS, EHLO, the
    # envelope, the content, QUIT: the count does not grow with the recipients.
    assert result.pipelined and result.writes == 6
    assert result.tls.started and not result.tls.verified and result.tls.version
    mail_from, rcpts, data, _ = peer.sink.wait(b"Subject: pipelined")
    assert mail_from == "alice@client.test" and sorted(rcpts) == ["bob@remote.test", "carol@remote.test"]
    assert body_of(data) == body_of(msg)  # dot-stuffing undone by Postfix: byte-identical
    assert "improper command pipelining" not in peer.log.read_text()


def test_without_pipelining_one_command_per_round_trip(peer: Peer) -> None:
    result = peer.send("old", ["bob@remote.test", "carol@remote.test"], message("lockstep"))
    assert [r.outcome for r in result.rcpts] == [Outcome.DELIVERED] * 2, result
    assert not result.pipelined and result.writes == 9  # EHLO STARTTLS EHLO MAIL RCPT RCPT DATA content QUIT
    peer.sink.wait(b"Subject: lockstep")
    assert "improper command pipelining" not in peer.log.read_text()


def test_bare_lf_never_reaches_the_wire(peer: Peer) -> None:
    msg = message("bare-lf", b"line one\nline two\rline three\n.\nafter a lone dot\n").replace(b"\r\n", b"\n")
    result = peer.send("ca", ["bob@remote.test"], msg)
    # Postfix has smtpd_forbid_bare_newline=reject, no exclusions: a bare LF would have been refused.
    assert result.rcpts[0].outcome is Outcome.DELIVERED, result
    assert result.normalised == msg.count(b"\n") + 1
    _, _, data, _ = peer.sink.wait(b"Subject: bare-lf")
    assert body_of(data) == b"line one\r\nline two\r\nline three\r\n.\r\nafter a lone dot\r\n"


def test_size_over_the_servers_limit_is_permanent_and_not_sent(peer: Peer) -> None:
    result = peer.send("small", ["bob@remote.test"], message("big", b"x" * 70 + b"\r\n") * 100)
    assert result.rcpts[0].outcome is Outcome.PERMANENT
    assert "5.3.4" in result.rcpts[0].reason and "SIZE 4000" in result.rcpts[0].reason
    assert not any(r.stage == "mail" for r in result.replies)  # no transaction was started
    ok = peer.send("small", ["bob@remote.test"], message("small-ok"))
    assert ok.rcpts[0].outcome is Outcome.DELIVERED


def test_smtputf8_needed_and_not_offered_is_permanent(peer: Peer) -> None:
    result = peer.send("noutf8", ["jörg@remote.test"], message("utf8-refused"))
    assert result.rcpts[0].outcome is Outcome.PERMANENT and "5.6.7" in result.rcpts[0].reason
    assert not any(r.stage == "mail" for r in result.replies)
    ok = peer.send("ca", ["jörg@remote.test"], message("utf8-ok"))
    assert ok.rcpts[0].outcome is Outcome.DELIVERED, ok
    _, rcpts, _, options = peer.sink.wait(b"Subject: utf8-ok")
    assert rcpts == ["jörg@remote.test"] and "SMTPUTF8" in options  # Postfix relayed it as SMTPUTF8


def test_eight_bit_to_a_server_without_8bitmime_is_permanent(peer: Peer) -> None:
    eight = message("eight", "Grüße\r\n".encode())
    result = peer.send("old", ["bob@remote.test"], eight)
    assert result.rcpts[0].outcome is Outcome.PERMANENT and "5.6.3" in result.rcpts[0].reason
    ok = peer.send("ca", ["bob@remote.test"], eight)
    assert ok.rcpts[0].outcome is Outcome.DELIVERED
    _, _, data, _ = peer.sink.wait(b"Subject: eight")
    assert body_of(data) == "Grüße\r\n".encode()


def test_opportunistic_with_a_self_signed_certificate(peer: Peer) -> None:
    result = peer.send("self", ["bob@remote.test"], message("self-signed"))
    assert result.rcpts[0].outcome is Outcome.DELIVERED
    assert result.tls.started and not result.tls.verified and result.tls.cipher


def test_no_starttls(peer: Peer) -> None:
    result = peer.send("notls", ["bob@remote.test"], message("cleartext"))
    assert result.rcpts[0].outcome is Outcome.DELIVERED
    assert not result.tls.started and result.tls.failure == "STARTTLS not offered"
    required = peer.send("notls", ["bob@remote.test"], message("cleartext-refused"),
                         TlsRequirement.pkix(NAME, cafile=str(peer.certs.ca_pem), policy="mta-sts"))
    assert required.rcpts[0].outcome is Outcome.TEMPORARY
    assert "STARTTLS not offered and mta-sts requires TLS" in required.rcpts[0].reason


def test_pkix_required(peer: Peer) -> None:
    pkix = TlsRequirement.pkix(NAME, cafile=str(peer.certs.ca_pem), policy="mta-sts")
    bad = peer.send("self", ["bob@remote.test"], message("pkix-self"), pkix)
    assert bad.rcpts[0].outcome is Outcome.TEMPORARY and not bad.tls.verified
    assert "CERTIFICATE_VERIFY_FAILED" in (bad.tls.failure or "") and not bad.tls.fallback
    assert not any(r.stage == "mail" for r in bad.replies)
    good = peer.send("ca", ["bob@remote.test"], message("pkix-ca"), pkix)
    assert good.rcpts[0].outcome is Outcome.DELIVERED
    assert good.tls.verified and good.tls.verified_by == "pkix" and good.tls.policy == "mta-sts"
    wrong_name = peer.send("ca", ["bob@remote.test"], message("pkix-name"),
                           TlsRequirement.pkix("other.remote.test", cafile=str(peer.certs.ca_pem)))
    assert wrong_name.rcpts[0].outcome is Outcome.TEMPORARY


def test_dane(peer: Peer) -> None:
    ee = peer.send("ca", ["bob@remote.test"], message("dane-ee"), TlsRequirement.dane(NAME, [peer.certs.tlsa_ee()]))
    assert ee.rcpts[0].outcome is Outcome.DELIVERED, ee
    assert ee.tls.verified and ee.tls.verified_by == "dane-ee" and ee.tls.policy == "dane"
    ta = peer.send("ca", ["bob@remote.test"], message("dane-ta"), TlsRequirement.dane(NAME, [peer.certs.tlsa_ta()]))
    assert ta.rcpts[0].outcome is Outcome.DELIVERED, ta
    assert ta.tls.verified_by == "dane-ta"
    # The self-signed listener's key is not the one in the record: refused, reason recorded.
    bad = peer.send("self", ["bob@remote.test"], message("dane-bad"), TlsRequirement.dane(NAME, [peer.certs.tlsa_ee()]))
    assert bad.rcpts[0].outcome is Outcome.TEMPORARY
    assert bad.tls.started and not bad.tls.verified and "leaf does not match" in (bad.tls.failure or "")
    assert not any(r.stage == "mail" for r in bad.replies)
    # DANE-TA under a name the certificate does not carry (RFC 7672 §3.2.2).
    other = peer.send("ca", ["bob@remote.test"], message("dane-ta-name"),
                      TlsRequirement.dane("other.remote.test", [peer.certs.tlsa_ta()]))
    assert other.rcpts[0].outcome is Outcome.TEMPORARY and "other.remote.test" in (other.tls.failure or "")
    # Only PKIX-TA/EE records: unusable for SMTP (RFC 7672 §3.1.3): TLS required, not verified.
    unusable = peer.send("ca", ["bob@remote.test"], message("dane-unusable"),
                         TlsRequirement.dane(NAME, [Tlsa(1, 1, 1, peer.certs.tlsa_ee().data)]))
    assert unusable.rcpts[0].outcome is Outcome.DELIVERED
    assert unusable.tls.started and not unusable.tls.verified and "no usable TLSA" in (unusable.tls.failure or "")
