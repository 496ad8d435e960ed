"""Postfix as the remote MTA: relaying into our MX, and our submission relaying out through it."""

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import authres
import pytest
from aiosmtpd.controller import Controller

from .dns_fixture import DnsServer, zone_text
from .mailserver import MailServer, free_port, swaks

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(shutil.which("postfix") is None or shutil.which("swaks") is None, reason="postfix/swaks missing"),
    pytest.mark.skipif(os.geteuid() != 0, reason="an isolated Postfix instance needs root"),
]
PASSWORD = "postfix test password"


class Sink:
    """The far side of the Internet: an SMTP server that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))  # type: ignore[attr-defined]
        return "250 2.0.0 kept"


def postfix_instance(base: Path, port: int, transports: dict[str, int]) -> Path:
    """An isolated Postfix (own config, queue, log) listening on 127.0.0.1:port."""
    etc, spool, data = base / "etc", base / "spool", base / "data"
    for d in (etc, spool, data):
        d.mkdir(parents=True, exist_ok=True)
    shutil.chown(data, "postfix")
    os.chmod(base, 0o755)
    transport = "".join(f"{dom} smtp:[127.0.0.1]:{p}\n" for dom, p in transports.items())
    (etc / "transport").write_text(transport)
    (etc / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.remote.test
mydomain = remote.test
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
local_recipient_maps =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
transport_maps = texthash:{etc}/transport
relay_domains = {", ".join(transports)}
maillog_file = {base}/postfix.log
maillog_file_prefixes = /var, /dev/stdout, /tmp
syslog_name = postfix-eventmail-test
smtp_tls_security_level = may
smtp_host_lookup = native
smtp_dns_support_level = disabled
alias_maps =
alias_database =
biff = no
""")
    master = Path("/usr/share/postfix/master.cf.dist").read_text()
    lines = []
    for line in master.splitlines():
        if line.startswith("smtp      inet"):
            line = f"127.0.0.1:{port} inet n - n - - smtpd"
        parts = line.split()
        if len(parts) >= 5 and parts[1] == "unix" and parts[4] == "y":
            parts[4] = "n"
            line = " ".join(parts)
        lines.append(line)
    (etc / "master.cf").write_text("\n".join(lines) + "\n")
    return etc


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MailServer, int, Sink, Path]]:
    # Postfix's daemons run as the postfix user: its directories must be reachable, which
    # pytest's private (0700) temporary tree is not.
    base = Path(tempfile.mkdtemp(prefix="eventmail-postfix-"))
    os.chmod(base, 0o755)
    sink = Sink()
    sink_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink_port)
    controller.start()
    srv = MailServer(base / "em")
    srv.base.mkdir()
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    mx_port, pf_port = free_port(), free_port()
    srv.ports["smtp"] = mx_port
    srv.smarthost = f"127.0.0.1:{pf_port}"
    etc = postfix_instance(base / "postfix", pf_port, {"mail.test": mx_port, "remote.test": sink_port})
    zones = {"remote.test": zone_text("remote.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"'])}
    with DnsServer.start(base / "dns", zones) as dns:
        srv.dns_port = dns.port
        srv.start()
        subprocess.run(["script", "-qc", f"postfix -c {etc} start", "/dev/null"], check=True, timeout=60)
        try:
            yield srv, pf_port, sink, base / "postfix" / "postfix.log"
        finally:
            subprocess.run(["script", "-qc", f"postfix -c {etc} stop", "/dev/null"], timeout=60)
            srv.stop()
            controller.stop()
            shutil.rmtree(base, ignore_errors=True)


def test_postfix_relays_into_our_mx(pair: tuple[MailServer, int, Sink, Path]) -> None:
    srv, pf_port, _, log = pair
    p = swaks("-s", "127.0.0.1", "-p", str(pf_port), "-f", "carol@remote.test", "--h-From", "carol@remote.test",
              "-t", "alice@mail.test", "--h-Subject", "through postfix")
    assert p.returncode == 0, p.stdout
    msgs = srv.wait_for("alice", 1)
    assert any(b"through postfix" in m for m in msgs), log.read_text() if log.exists() else "no postfix log"
    got = next(m for m in msgs if b"through postfix" in m)
    assert b"by mta.remote.test (Postfix)" in got  # Postfix's own trace line came through
    assert b"Received: from mta.remote.test" in got
    # Our verdict for the relayed message, parsed by authres (an independent RFC 8601 parser).
    head = got.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ").decode()
    field = next(line for line in head.split("\r\n") if line.startswith("Authentication-Results: mail.test;"))
    parsed = authres.AuthenticationResultsHeader.parse(field)
    results = {r.method: r for r in parsed.results}
    assert results["spf"].result == "pass" and results["spf"].smtp_mailfrom == "carol@remote.test"
    assert results["dkim"].result == "none" and results["dmarc"].result == "none"


def test_our_submission_relays_out_through_postfix(pair: tuple[MailServer, int, Sink, Path]) -> None:
    srv, _, sink, log = pair
    p = swaks("-s", "127.0.0.1", "-p", str(srv.ports["submission"]), "-tls", "-a", "PLAIN", "-au", "alice",
              "-ap", PASSWORD, "-f", "alice@mail.test", "--h-From", "alice@mail.test", "-t", "dave@remote.test",
              "--h-Subject", "out through postfix")
    assert p.returncode == 0, p.stdout
    deadline = time.time() + 30
    while time.time() < deadline and not any(b"out through postfix" in m for _, _, m in sink.messages):
        time.sleep(0.2)
    assert any(b"out through postfix" in m for _, _, m in sink.messages), log.read_text() if log.exists() else ""
    mail_from, rcpts, data = next(x for x in sink.messages if b"out through postfix" in x[2])
    assert mail_from == "alice@mail.test" and rcpts == ["dave@remote.test"]
    assert b"by mta.remote.test (Postfix)" in data and b"by mail.test (eventmail)" in data
    # The attempt is recorded in the queue stream.
    out = srv.cli("log", "queue")
    assert '"outboundQueued"' in out and '"delivered":true' in out


