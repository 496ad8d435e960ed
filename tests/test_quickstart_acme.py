"""From `eventmail quickstart` to a certificate-holding, signing server, as a new user gets there:
the written configuration, pointed at pebble instead of Let's Encrypt (nothing else changed but
loopback ports), gets its certificates by ACME, presents the one of the host on every TLS
listener with the key its printed TLSA record names, and signs what the account submits with
both of the domain's DKIM keys."""

from __future__ import annotations

import hashlib
import imaplib
import os
import re
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from eventmail.quickstart import ACME_DIRECTORY

from .conftest import ROOT
from .dns_fixture import DnsServer, zone_text
from .mailserver import free_port, insecure_tls
from .pebble_fixture import Pebble, needs_pebble

HOST = "mail.example.org"
NAMES = (HOST, "autoconfig.example.org", "mta-sts.example.org")


def served(port: int, name: str, root: bytes) -> x509.Certificate:
    """The certificate an implicit-TLS listener presents for `name`, verified against pebble's root."""
    ctx = ssl.create_default_context(cadata=root.decode())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=name) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@needs_pebble
def test_quickstart_to_a_server_with_the_cas_certificates_that_signs(tmp_path: Path) -> None:
    # The zone the user publishes: quickstart's records, with the host and its web names on this
    # machine (A records where quickstart writes CNAMEs to the host: the CA's resolver here does
    # not chase them).
    with DnsServer.start(tmp_path / "dns0", {"example.org": zone_text("example.org", [])}) as unsigned:
        d = tmp_path / "qs"
        p = subprocess.run([sys.executable, "-m", "eventmail", "quickstart", "you@example.org", "--dir", str(d),
                            "--dns", f"127.0.0.1:{unsigned.port}"], capture_output=True, text=True, timeout=180,
                           cwd=ROOT)
    assert p.returncode == 0, p.stderr
    password = re.search(r"^password:\s+(\S+)", p.stdout, re.M).group(1)  # type: ignore[union-attr]
    tlsa = re.search(r"_25\._tcp\.mail\.example\.org\. 3600 IN TLSA 3 1 1 ([0-9a-f]{64})", p.stdout).group(1)  # type: ignore[union-attr]
    zone = "\n".join(line for line in (d / "example.org.zone").read_text().splitlines() if " CNAME " not in line)
    zone += "".join(f"\n{n}. 3600 IN A 127.0.0.1" for n in NAMES) + "\n"

    http_port, tls_port = free_port(), free_port()
    with DnsServer.start(tmp_path / "dns", {"example.org": zone}) as dns:
        pebble = Pebble.start(tmp_path / "pebble", port=free_port(), management_port=free_port(), dns_port=dns.port,
                              http_port=http_port, tls_port=tls_port)
        try:
            config = d / "eventmail.toml"
            text = config.read_text()
            text = re.sub(r'\n\[\[listener\]\]\nkind = "\w+"\naddress = "::"\nport = \d+\n', "\n", text)
            ports = {"http": http_port, "https": tls_port}

            def local(m: re.Match[str]) -> str:
                return f'kind = "{m.group(1)}"\naddress = "127.0.0.1"\nport = {ports.get(m.group(1)) or free_port()}'

            text = re.sub(r'kind = "(\w+)"\naddress = "0\.0\.0\.0"\nport = \d+', local, text)
            text = text.replace("port = 9100", f"port = {free_port()}")
            text = text.replace('nameservers = ["127.0.0.1"]', f'nameservers = ["127.0.0.1"]\nport = {dns.port}')
            # The one change of the CA: pebble's directory, and trust for pebble's own HTTPS.
            assert ACME_DIRECTORY in text
            text = text.replace(f'directory = "{ACME_DIRECTORY}"',
                                f'directory = "{pebble.directory}"\nca_file = "{pebble.ca_file}"')
            if os.geteuid() == 0:
                text = text.replace('user = "eventmail"', 'user = "root"')
            config.write_text(text)
            check = subprocess.run([sys.executable, "-m", "eventmail", "config", "test", "--config", str(config)],
                                   capture_output=True, text=True, timeout=120, cwd=ROOT)
            assert check.returncode == 0, check.stderr

            proc = subprocess.Popen([sys.executable, "-m", "eventmail", "serve", "--config", str(config)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
            lines: list[str] = []
            installed = threading.Event()
            listening: dict[str, int] = {}

            def read() -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.append(line)
                    m = re.search(r"(\w+) listening on 127\.0\.0\.1 port (\d+)", line)
                    if m:
                        listening[m.group(1)] = int(m.group(2))
                    if "acme: installed the certificate for" in line and HOST + "," not in line and HOST in line:
                        installed.set()

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            try:
                assert installed.wait(120), "".join(line for line in lines if "acme" in line)
                root = pebble.root_pem()
                deadline = time.monotonic() + 60
                while True:  # the domain's names are ordered after the host's
                    try:
                        web = served(listening["https"], "autoconfig.example.org", root)
                        break
                    except ssl.SSLError:
                        assert time.monotonic() < deadline, "".join(line for line in lines if "acme" in line)
                        time.sleep(0.5)
                assert "mta-sts.example.org" in str(web.extensions.get_extension_for_class(x509.SubjectAlternativeName))
                for kind in ("imaps", "submissions", "https"):
                    cert = served(listening[kind], HOST, root)  # verified: the CA's, for the host
                    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo)
                    assert hashlib.sha256(spki).hexdigest() == tlsa, kind  # the printed TLSA is true

                # It signs: a message the account submits (to itself) carries both keys' signatures.
                with smtplib.SMTP_SSL("127.0.0.1", listening["submissions"], context=insecure_tls(), timeout=30,
                                      local_hostname="client.test") as s:
                    s.login("you", password)
                    s.sendmail("you@example.org", ["you@example.org"],
                               "From: you@example.org\r\nTo: you@example.org\r\nSubject: signed\r\n"
                               "Message-ID: <q1@example.org>\r\n\r\nhello\r\n")
                with imaplib.IMAP4_SSL("127.0.0.1", listening["imaps"], ssl_context=insecure_tls(), timeout=30) as m:
                    m.login("you", password)
                    m.select("INBOX")
                    _, data = m.search(None, "SUBJECT", "signed")
                    _, msg = m.fetch(data[0].split()[-1], "(BODY.PEEK[HEADER])")
                header = msg[0][1].decode()  # type: ignore[index]
                sigs = re.findall(r"^DKIM-Signature:(.*(?:\r\n[ \t].*)*)", header, re.M | re.I)
                algorithms = sorted(re.search(r"a=([\w-]+)", s_).group(1) for s_ in sigs)  # type: ignore[union-attr]
                assert algorithms == ["ed25519-sha256", "rsa-sha256"], header
                assert all("d=example.org" in s_.replace("\r\n", "").replace(" ", "") for s_ in sigs), header
            finally:
                proc.terminate()
                proc.wait(30)
        finally:
            pebble.stop()
