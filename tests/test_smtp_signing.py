"""Submission signs with every active selector of the From domain (ed25519 and rsa), and OpenDKIM, an independent
DKIM implementation in C, verifies each signature in its own process, in a network namespace whose only DNS server is
the test DNS server process."""

import os
import shutil
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import authres
import pytest

from .dns_fixture import SERVER_SCRIPT, DnsServer, txt_rdata, zone_text
from .mailserver import MailServer, swaks

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("swaks", "opendkim-testmsg", "unshare", "ip")),
        reason="needs swaks, opendkim-testmsg (Debian opendkim-tools), unshare and ip",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace with its own resolv.conf needs root"),
]
PASSWORD = "signing test password"

# Runs inside the namespace: the DNS server on 127.0.0.1:53 (the resolver opendkim's libc uses),
# then opendkim-testmsg once per message file (exit 0 and no output when the signature verifies).
DRIVER = """
import os, subprocess, sys
script, zone, *messages = sys.argv[1:]
dns = subprocess.Popen([sys.executable, script, "--host", "127.0.0.1", "--port", "53", zone], stdout=subprocess.PIPE)
try:
    assert dns.stdout is not None and dns.stdout.readline().startswith(b"PORT 53")
    for m in messages:
        with open(m, "rb") as f:
            p = subprocess.run(["opendkim-testmsg"], stdin=f, capture_output=True, text=True, timeout=60)
        print(os.path.basename(m), p.returncode, " ".join(p.stderr.split()), flush=True)
finally:
    dns.terminate()
    dns.wait(10)
"""


def opendkim_verify(tmp_path: Path, zone: str, messages: dict[str, bytes]) -> dict[str, tuple[int, str]]:
    """{name: (exit status, error text)} of opendkim-testmsg for each message."""
    work = tmp_path / "opendkim"
    work.mkdir()
    (work / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (work / "driver.py").write_text(DRIVER)
    (work / "zone").write_text(zone)
    for name, data in messages.items():
        (work / name).write_bytes(data)
    p = subprocess.run(
        ["unshare", "--net", "--mount", "sh", "-c",
         'ip link set lo up && mount --bind "$0" /etc/resolv.conf && exec "$@"',
         str(work / "resolv.conf"), sys.executable, str(work / "driver.py"), str(SERVER_SCRIPT), str(work / "zone"),
         *(str(work / n) for n in messages)],
        capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr
    out = {}
    for line in p.stdout.splitlines():
        name, rc, *text = line.split(" ", 2)
        out[name] = (int(rc), text[0] if text else "")
    return out


def without_signature(message: bytes, algorithm: bytes) -> bytes:
    """The message with the DKIM-Signature field of `algorithm` (and its folded lines) removed."""
    head, sep, body = message.partition(b"\r\n\r\n")
    fields: list[list[bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    kept = [f for f in fields
            if not (f[0].lower().startswith(b"dkim-signature:") and b"a=" + algorithm in b"".join(f).replace(b" ", b""))]
    assert len(kept) == len(fields) - 1
    return b"\r\n".join(b"\r\n".join(f) for f in kept) + sep + body


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MailServer, str]]:
    base = tmp_path_factory.mktemp("signing")
    srv = MailServer(base)
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    srv.add_account("bob", "bob@mail.test", PASSWORD)
    ed = srv.cli("dkim", "add", "mail.test", "ed").split('TXT "', 1)[1].rstrip().rstrip('"')
    rsa = srv.cli("dkim", "add", "mail.test", "rsa", "--algorithm", "rsa-sha256").split('TXT "', 1)[1].rstrip().rstrip('"')
    zone = zone_text("mail.test", [
        '@ TXT "v=spf1 ip4:127.0.0.0/8 -all"', '_dmarc TXT "v=DMARC1; p=reject"', f"ed._domainkey TXT {txt_rdata(ed)}", f"rsa._domainkey TXT {txt_rdata(rsa)}",
    ])
    with DnsServer.start(base / "dns", {"mail.test": zone}) as dns:
        srv.dns_port = dns.port
        srv.start()
        yield srv, zone
        srv.stop()


@pytest.mark.parametrize("port_kind", ["submission", "submissions"])
def test_both_signatures_verify_with_opendkim(signer: tuple[MailServer, str], tmp_path: Path, port_kind: str) -> None:
    srv, zone = signer
    subject = f"two signatures via {port_kind}"
    tls = ["--tls-on-connect"] if port_kind == "submissions" else ["-tls"]
    p = swaks("-s", "127.0.0.1", "-p", str(srv.ports[port_kind]), *tls, "-a", "PLAIN", "-au", "alice", "-ap", PASSWORD,
              "-f", "alice@mail.test", "--h-From", "Alice <alice@mail.test>", "-t", "bob@mail.test",
              "--h-Subject", subject, "--body", "Signed twice.\nA line with trailing spaces   \n")
    assert p.returncode == 0, p.stdout
    delivered = next(m for m in srv.wait_for("bob", 1) if subject.encode() in m)
    head = delivered.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"DKIM-Signature:") == 2
    assert head.index(b"a=ed25519-sha256") < head.index(b"a=rsa-sha256")  # RFC 8463 §3: both; ed25519 first
    only_ed = without_signature(delivered, b"rsa-sha256")
    only_rsa = without_signature(delivered, b"ed25519-sha256")
    results = opendkim_verify(tmp_path, zone, {
        "ed.eml": only_ed,
        "rsa.eml": only_rsa,
        "ed-tampered.eml": only_ed.replace(b"Signed twice.", b"Signed thrice."),
        "rsa-tampered.eml": only_rsa.replace(subject.encode(), b"another subject"),
    })
    assert results["ed.eml"] == (0, ""), results
    assert results["rsa.eml"] == (0, ""), results
    assert results["ed-tampered.eml"][0] != 0 and "Bad signature" in results["ed-tampered.eml"][1]
    assert results["rsa-tampered.eml"][0] != 0 and "Bad signature" in results["rsa-tampered.eml"][1]


def test_our_mx_verifies_both_signatures(signer: tuple[MailServer, str]) -> None:
    """The signed message sent back in through the MX: dkim=pass for ed25519-sha256 and rsa-sha256 (RFC 8463)."""
    srv, _ = signer
    signed = next(m for m in srv.wait_for("alice", 1, "Sent") if b"two signatures via" in m)
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        assert s.sendmail("alice@mail.test", ["bob@mail.test"], b"X-Loop: back in\r\n" + signed) == {}
    back = next(m for m in srv.wait_for("bob", 3) if m.find(b"X-Loop: back in") >= 0)
    head = back.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").decode()
    field = next(line for line in head.split("\r\n") if line.startswith("Authentication-Results: mail.test;"))
    results = authres.AuthenticationResultsHeader.parse(field).results
    dkim = sorted((r.result, r.header_a) for r in results if r.method == "dkim")
    assert dkim == [("pass", "ed25519-sha256"), ("pass", "rsa-sha256")], field
    assert [r.result for r in results if r.method in ("spf", "dmarc")] == ["pass", "pass"]
