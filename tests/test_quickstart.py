"""`eventmail quickstart` as a new user runs it: what it writes loads where it must (the zone file in
dnspython's zone parser and a real DNS server, the unit in systemd-analyze), and the configuration
it writes starts a server that takes mail for the address and lets the account read it."""

from __future__ import annotations

import hashlib
import imaplib
import os
import re
import shutil
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.resolver
import dns.zone
import pytest

from eventmail.quickstart import ACME_DIRECTORY

from .conftest import ROOT
from .dns_fixture import DnsServer, zone_text
from .mailserver import free_port, insecure_tls

# The resolver quickstart asks whether the host's zone is DNSSEC-signed: a DNS server process with
# an unsigned example.org (a module fixture sets it), never the system's.
RESOLVER: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def unsigned_zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with DnsServer.start(tmp_path_factory.mktemp("dns-unsigned"), {"example.org": zone_text("example.org", [])}) as server:
        RESOLVER[:] = [f"127.0.0.1:{server.port}"]
        yield


def quickstart(directory: Path, *argv: str, dns: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventmail", "quickstart", *argv, "--dir", str(directory),
                           "--dns", dns or RESOLVER[0]], capture_output=True, text=True, timeout=180, cwd=ROOT)


def test_quickstart_writes_what_a_new_domain_needs_and_the_server_runs_from_it(tmp_path: Path) -> None:
    d = tmp_path / "qs"
    p = quickstart(d, "you@example.org")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    password = re.search(r"^password:\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    key_file = Path(re.search(r"^master key:\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    assert key_file.exists() and not key_file.resolve().is_relative_to((d / "data").resolve())
    assert "Back up" in out and "Next:" in out

    # The zone file loads, and holds each record the domain needs.
    zone = dns.zone.from_file(str(d / "example.org.zone"), relativize=False)
    def txt(name: str) -> list[bytes]:
        return [b"".join(r.strings) for r in zone.find_rdataset(name, "TXT")]
    assert [str(r.exchange) for r in zone.find_rdataset("example.org.", "MX")] == ["mail.example.org."]
    assert txt("example.org.") == [b"v=spf1 mx -all"]
    assert txt("_dmarc.example.org.")[0].startswith(b"v=DMARC1; p=reject")
    assert txt("_smtp._tls.example.org.")[0].startswith(b"v=TLSRPTv1")
    dkim = {str(name): b"".join(r.strings) for name, _, r in zone.iterate_rdatas("TXT") if "_domainkey" in str(name)}
    assert len(dkim) == 2 and any(b"k=ed25519" in v for v in dkim.values()) and any(b"k=rsa" in v for v in dkim.values())
    assert {str(r.target) for r in zone.find_rdataset("_imaps._tcp.example.org.", "SRV")} == {"mail.example.org."}
    for line in out.splitlines():  # what is printed is what is in the file (the checklist aside)
        if " IN " in line and not line.startswith(";") and not re.match(r"\d+\. ", line):
            assert line in (d / "example.org.zone").read_text()

    if shutil.which("systemd-analyze"):
        v = subprocess.run(["systemd-analyze", "verify", str(d / "eventmail.service")], capture_output=True, text=True)
        assert v.returncode == 0, v.stderr

    again = quickstart(d, "you@example.org")
    assert again.returncode == 2 and "already holds" in again.stderr  # nothing overwritten

    # A real DNS server loads the zone file and serves its records as written.
    with DnsServer.start(tmp_path / "dns", {
        "example.org": (d / "example.org.zone").read_text(),
        "sender.test": zone_text("sender.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"']),
    }) as server:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port = ["127.0.0.1"], server.port
        answer = r.resolve(next(iter(dkim)), "TXT")
        assert b"".join(answer[0].strings) == next(iter(dkim.values()))

        # The configuration starts a server (on loopback test ports, as root here) that takes mail
        # for the address, and the account reads it with the printed password.
        config = d / "eventmail.toml"
        text = config.read_text()
        text = re.sub(r'\n\[\[listener\]\]\nkind = "\w+"\naddress = "::"\nport = \d+\n', "\n", text)
        text = re.sub(r'address = "0\.0\.0\.0"\nport = \d+', lambda m: f'address = "127.0.0.1"\nport = {free_port()}', text)
        if os.geteuid() == 0:
            text = text.replace('user = "eventmail"', 'user = "root"')
        text = text.replace('nameservers = ["127.0.0.1"]', f'nameservers = ["127.0.0.1"]\nport = {server.port}')
        text = text.replace("port = 9100", f"port = {free_port()}")
        # Its [acme] names Let's Encrypt; here the CA is a port nobody listens on, as when the CA
        # cannot be reached: the server starts anyway, with a self-signed certificate, and says so.
        assert ACME_DIRECTORY in text
        text = text.replace(ACME_DIRECTORY, "https://127.0.0.1:9/directory")
        config.write_text(text)
        proc = subprocess.Popen([sys.executable, "-m", "eventmail", "serve", "--config", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        try:
            ports = {}
            self_signed = False
            assert proc.stdout is not None
            for line in proc.stdout:
                self_signed = self_signed or "SELF-SIGNED" in line
                m = re.search(r"(\w+) listening on 127\.0\.0\.1 port (\d+)", line)
                if m:
                    ports[m.group(1)] = int(m.group(2))
                if line.startswith("stop with") or "Traceback" in line:
                    break
            assert {"smtp", "imaps", "https"} <= set(ports), ports
            assert self_signed
            with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as s:
                s.sendmail("a@sender.test", ["you@example.org"], "Subject: first mail\r\n\r\nhello\r\n")
            with imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"], ssl_context=insecure_tls(), timeout=30) as m:
                m.login("you", password)
                typ, data = m.select("INBOX")
                assert typ == "OK" and int(data[0]) == 1
        finally:
            proc.terminate()
            proc.wait(30)


@pytest.mark.parametrize("address", ["not-an-address", "a@b@c"])
def test_quickstart_refuses_a_bad_address(tmp_path: Path, address: str) -> None:
    p = quickstart(tmp_path / "qs", address)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "qs").exists()


def dns_check(work: Path, config: Path, zone: str) -> subprocess.CompletedProcess[str]:
    """`eventmail dns check example.org` with the configuration's resolver pointed at a DNS server
    process serving `zone`."""
    with DnsServer.start(work / f"dns{len(zone)}", {"example.org": zone}) as server:
        config.write_text(re.sub(r"nameservers = \[\"127.0.0.1\"\]\n(port = \d+\n)?",
                                 f'nameservers = ["127.0.0.1"]\nport = {server.port}\n', config.read_text()))
        return subprocess.run([sys.executable, "-m", "eventmail", "dns", "check", "example.org", "--config",
                               str(config)], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_dns_check_says_what_is_missing_or_wrong_with_the_fix(tmp_path: Path) -> None:
    d = tmp_path / "qs"
    assert quickstart(d, "you@example.org").returncode == 0
    zone = (d / "example.org.zone").read_text() + "mail 3600 IN A 192.0.2.25\n"
    config = d / "eventmail.toml"

    good = dns_check(tmp_path, config, zone)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "all 20 records as they should be" in good.stdout and "MISSING" not in good.stdout, good.stdout
    assert "OK      TLSA _25._tcp.mail.example.org." in good.stdout and "not DNSSEC-signed" in good.stdout

    rsa = next(line for line in zone.splitlines() if "b._domainkey" in line)
    broken = (zone.replace(rsa + "\n", "")
              .replace("IN MX 10 mail.example.org.", "IN MX 10 mx.elsewhere.test.")
              .replace('_dmarc.example.org. 3600 IN TXT', "_dmarc-old.example.org. 3600 IN TXT")
              .replace('"v=STSv1; id=', '"v=STSv1; id=0'))  # a policy id of another policy
    bad = dns_check(tmp_path, config, broken)
    assert bad.returncode == 1 and "4 of 20 records missing or wrong" in bad.stderr, bad.stdout + bad.stderr
    out = bad.stdout
    assert "WRONG   MX example.org." in out and "published: 10 mx.elsewhere.test." in out, out
    assert f"MISSING TXT {rsa.split()[0]}" in out and f"publish: {rsa}" in out, out
    assert "MISSING TXT _dmarc.example.org." in out
    assert "OK      TXT _smtp._tls.example.org." in out
    assert "WRONG   TXT _mta-sts.example.org." in out and "OK      CNAME autoconfig.example.org." in out, out


def signed_zone(zone: str) -> str:
    """The zone with a DNSKEY at its apex, as a signed zone publishes (the records are not signed:
    quickstart and dns check look for the key, as a resolver's answer shows a signed zone)."""
    import dns.dnssec
    from cryptography.hazmat.primitives.asymmetric import ed25519

    dnskey = dns.dnssec.make_dnskey(ed25519.Ed25519PrivateKey.generate().public_key(), dns.dnssec.Algorithm.ED25519,
                                    flags=257)
    return zone + f"example.org. 3600 IN DNSKEY {dnskey.to_text()}\n"


def spki_sha256(key_file: Path) -> str:
    """TLSA 3 1 1's data for a key, by openssl (not the code under test)."""
    der = subprocess.run(["openssl", "pkey", "-in", str(key_file), "-pubout", "-outform", "DER"], capture_output=True,
                         check=True).stdout
    return hashlib.sha256(der).hexdigest()


def test_quickstart_publishes_tlsa_when_the_zone_is_signed_and_dns_check_compares_it(tmp_path: Path) -> None:
    unsigned = tmp_path / "unsigned"
    p = quickstart(unsigned, "you@example.org")
    assert p.returncode == 0, p.stderr
    assert "TLSA" not in (unsigned / "example.org.zone").read_text()
    assert "Your zone is not DNSSEC-signed; once it is, publish DANE's TLSA record" in p.stdout, p.stdout

    base = zone_text("example.org", [])
    with DnsServer.start(tmp_path / "dns-signed", {"example.org": signed_zone(base)}) as server:
        d = tmp_path / "qs"
        p = quickstart(d, "you@example.org", dns=f"127.0.0.1:{server.port}")
    assert p.returncode == 0, p.stderr
    want = f"_25._tcp.mail.example.org. 3600 IN TLSA 3 1 1 {spki_sha256(d / 'tls' / 'key.pem')}"
    assert want in p.stdout and "Not in the records: TLSA" not in p.stdout, p.stdout
    zone = dns.zone.from_file(str(d / "example.org.zone"), relativize=False)
    (tlsa,) = zone.find_rdataset("_25._tcp.mail.example.org.", "TLSA")
    assert (tlsa.usage, tlsa.selector, tlsa.mtype) == (3, 1, 1)
    config = d / "eventmail.toml"
    assert f'host_key_file = "{d / "tls" / "key.pem"}"' in config.read_text()  # renewals keep the key

    published = (d / "example.org.zone").read_text() + "mail 3600 IN A 192.0.2.25\n"

    good = dns_check(tmp_path, config, signed_zone(published))
    assert good.returncode == 0 and "OK      TLSA _25._tcp.mail.example.org." in good.stdout, good.stdout + good.stderr
    other = "3 1 1 " + "ab" * 32
    wrong = dns_check(tmp_path, config, signed_zone(published.replace(want.split("TLSA ")[1], other)))
    assert wrong.returncode == 1 and "WRONG   TLSA _25._tcp.mail.example.org." in wrong.stdout, wrong.stdout
    assert "validating senders will not deliver" in wrong.stdout and f"publish: {want}" in wrong.stdout
    missing = dns_check(tmp_path, config, signed_zone(published.replace(want + "\n", "")))
    assert missing.returncode == 1 and "MISSING TLSA _25._tcp.mail.example.org." in missing.stdout, missing.stdout


def test_config_test_names_each_problem(tmp_path: Path) -> None:
    from eventmail.tls.certs import make_self_signed

    d = tmp_path / "qs"
    assert quickstart(d, "you@example.org").returncode == 0
    config = d / "eventmail.toml"
    good = config.read_text()

    def config_test(text: str) -> subprocess.CompletedProcess[str]:
        config.write_text(text)
        return subprocess.run([sys.executable, "-m", "eventmail", "config", "test", "--config", str(config)],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)

    ok = config_test(good)
    assert ok.returncode == 0 and ok.stdout.strip().endswith(": OK"), ok.stdout + ok.stderr
    make_self_signed(tmp_path / "other-cert.pem", tmp_path / "other-key.pem", ["other.test"])
    other_key = tmp_path / "other.key"
    subprocess.run([sys.executable, "-m", "eventmail", "key", "init", "--dir", str(tmp_path / "other-data"),
                    "--key-file", str(other_key)], check=True, capture_output=True, cwd=ROOT)
    cases = [
        (good.replace('nameservers = ["127.0.0.1"]', 'nameserver = ["127.0.0.1"]'), "resolver.nameserver: unknown setting"),
        (good.replace(str(d / "tls" / "cert.pem"), str(d / "tls" / "gone.pem")), "tls.cert: " + str(d / "tls" / "gone.pem") + " does not exist"),
        (good.replace(str(d / "tls" / "key.pem"), str(tmp_path / "other-key.pem")), "the key does not belong to the certificate"),
        (good.replace(str(d / "keys" / "master.key"), str(other_key)), "key_file: the master key does not open"),
        (good.replace(f'data_dir = "{d / "data"}"', f'data_dir = "{tmp_path / "nowhere"}"'), "data_dir: "),
        (good.replace(f'directory = "{ACME_DIRECTORY}"', 'directory = "https://ca.test/dir"\nca_file = "gone-ca.pem"'),
         "acme.ca_file: "),
        (good.replace(f'directory = "{ACME_DIRECTORY}"', 'directory = "ca.test"'),
         "acme.directory: 'ca.test' is not an http(s) URL"),
        (good.replace(f'host_key_file = "{d / "tls" / "key.pem"}"', f'host_key_file = "{d / "tls" / "cert.pem"}"'),
         f"acme.host_key_file: {d / 'tls' / 'cert.pem'}: not an unencrypted PEM private key"),
    ]
    for text, needle in cases:
        assert text != good
        p = config_test(text)
        assert p.returncode == 1, (needle, p.stdout, p.stderr)
        assert needle in p.stderr and "Traceback" not in p.stderr, (needle, p.stderr)
        assert "serve would not start" in p.stderr
    config.write_text(good)


def test_quickstart_behind_an_existing_webserver(tmp_path: Path) -> None:
    from eventmail.config import load

    d = tmp_path / "qs"
    p = quickstart(d, "you@example.org", "--existing-webserver")
    assert p.returncode == 0, p.stderr
    cfg = load(d / "eventmail.toml")
    kinds = {(li.kind, li.address, li.port) for li in cfg.listeners}
    assert ("http", "127.0.0.1", 1080) in kinds
    assert not any(k in ("https",) or (k == "http" and port in (80, 443)) for k, _, port in kinds)
    assert cfg.trusted_proxies == ("127.0.0.1", "::1")
    assert cfg.acme is not None and cfg.acme.challenges == ("http-01",)  # 443 is not ours: no TLS-ALPN-01
    nginx = (d / "nginx-eventmail.conf").read_text()
    assert "server_name mail.example.org autoconfig.example.org mta-sts.example.org;" in nginx
    assert "proxy_pass http://127.0.0.1:1080;" in nginx and "X-Forwarded-Proto $scheme" in nginx
    assert "nginx-eventmail.conf" in p.stdout
    # The MTA-STS and autoconfig records are still published: the web server in front serves them.
    assert "_mta-sts.example.org." in (d / "example.org.zone").read_text()
    v = subprocess.run([sys.executable, "-m", "eventmail", "config", "test", "--config", str(d / "eventmail.toml")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert v.returncode == 0, v.stderr
