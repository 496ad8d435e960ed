"""Test helper: Debian's pebble (an ACME CA for tests) on loopback, validating names through a DNS server of the test's."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from eventmail.tls.certs import make_self_signed

from .dns_fixture import stop_process

PEBBLE = shutil.which("pebble")
needs_pebble = pytest.mark.skipif(PEBBLE is None, reason="pebble is not installed (tools/install-debian-packages)")


@dataclass
class Pebble:
    """A running pebble: its directory URL, the file that trusts its HTTPS, its log."""

    process: subprocess.Popen[bytes]
    port: int
    management_port: int
    ca_file: Path
    log_path: Path
    host: str = "127.0.0.1"

    @property
    def directory(self) -> str:
        return f"https://{self.netloc(self.port)}/dir"

    def netloc(self, port: int) -> str:
        return f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"

    @classmethod
    def start(cls, work: Path, *, port: int, management_port: int, dns_port: int, http_port: int,
              tls_port: int, host: str = "127.0.0.1", nonce_reject: int = 5) -> Pebble:
        """`http_port` / `tls_port`: where its validation authority connects for HTTP-01 and
        TLS-ALPN-01, on the addresses the DNS server gives for each name; `host`: the address of
        its ACME and management APIs (127.0.0.1 or ::1); `nonce_reject`: the percentage of good
        nonces it refuses as bad (its default 5, as a CA may at any time: RFC 8555 §6.5)."""
        work.mkdir(parents=True, exist_ok=True)
        cert, key = work / "pebble-cert.pem", work / "pebble-key.pem"
        if not cert.exists():
            make_self_signed(cert, key, ["localhost", "127.0.0.1", "::1"])
        config = work / "pebble.json"
        netloc = f"[{host}]" if ":" in host else host
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"{netloc}:{port}", "managementListenAddress": f"{netloc}:{management_port}",
            "certificate": str(cert), "privateKey": str(key), "httpPort": http_port, "tlsPort": tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}))
        # No sleeps before validating; every order validated afresh (no authorization reuse), so
        # each test's challenges are really answered.
        env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_AUTHZREUSE": "0",
               "PEBBLE_WFE_NONCEREJECT": str(nonce_reject)}
        log_path = work / "pebble.log"
        assert PEBBLE is not None
        with log_path.open("ab") as out:
            process = subprocess.Popen([PEBBLE, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
                                       stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=work, env=env)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection((host, port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    stop_process(process)
                    raise RuntimeError("pebble did not start: " + log_path.read_text(errors="replace")) from None
                time.sleep(0.05)
        return cls(process, port, management_port, cert, log_path, host)

    def root_pem(self) -> bytes:
        """The root that issued this run's certificates (new each time pebble starts)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        url = f"https://{self.netloc(self.management_port)}/roots/0"
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            return bytes(r.read())

    def stop(self) -> None:
        stop_process(self.process)
