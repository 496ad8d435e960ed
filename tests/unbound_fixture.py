"""Test helper: unbound on a loopback port, validating DNSSEC-signed local zones so answers carry the AD bit (TESTBED §5b).

`ValidatingDns.start(dir, signed={origin: zone text}, unsigned={...}, corrupt=[(owner, old, new)])`
signs each `signed` zone with ldns (ECDSA P-256 KSK + ZSK, NSEC3), trusts its KSK, serves
`unsigned` zones without a trust anchor (insecure: no AD), and edits the signed text afterwards
for each `corrupt` entry, so that record's RRSIG no longer matches (bogus: SERVFAIL). Unbound's
fake root points at 127.0.0.1, so nothing leaves loopback. `stop()` ends the process by PID.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import dns.flags
import dns.message
import dns.query
import dns.rdatatype

from eventmail.mailauth.resolver import Resolver, ResolverConfig

from .dns_fixture import stop_process

TOOLS = ("unbound", "ldns-keygen", "ldns-signzone")
READY_TIMEOUT = 15.0


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (unbound needs both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port")


def _sign(directory: Path, origin: str, text: str, corrupt: Iterable[tuple[str, str, str]]) -> tuple[Path, Path]:
    """Sign a zone; return the signed zone file and the KSK's DS file (the trust anchor)."""
    plain = directory / f"{origin}.zone"
    plain.write_text(text, encoding="utf-8")

    def keygen(*flags: str) -> str:
        out = subprocess.run(
            ["ldns-keygen", "-a", "ECDSAP256SHA256", *flags, origin],
            cwd=directory, check=True, capture_output=True, text=True,
        )
        return out.stdout.strip()

    ksk = keygen("-k")
    zsk = keygen()
    subprocess.run(
        ["ldns-signzone", "-n", str(plain), zsk, ksk], cwd=directory, check=True, capture_output=True
    )
    signed = directory / f"{origin}.zone.signed"
    data = signed.read_text(encoding="utf-8")
    for owner, old, new in corrupt:
        lines = data.splitlines()
        hits = [i for i, line in enumerate(lines) if line.startswith(owner) and old in line and "RRSIG" not in line]
        if not hits:
            raise RuntimeError(f"nothing to corrupt at {owner}")
        for i in hits:
            lines[i] = lines[i].replace(old, new)
        data = "\n".join(lines) + "\n"
    signed.write_text(data, encoding="utf-8")
    return signed, directory / f"{ksk}.ds"


def write_config(
    directory: Path,
    signed: Mapping[str, str],
    unsigned: Mapping[str, str] | None = None,
    corrupt: Iterable[tuple[str, str, str]] = (),
    *,
    port: int,
    interface: str = "127.0.0.1",
) -> Path:
    """Sign the zones and write DIRECTORY/unbound.conf for unbound on `interface`:`port`; its path.

    tests/remote_mx.py starts unbound with it inside a network namespace, on port 53."""
    directory.mkdir(parents=True, exist_ok=True)
    corrupt = list(corrupt)
    conf: list[str] = []
    anchors: list[Path] = []
    for origin, text in signed.items():
        zone, anchor = _sign(directory, origin.rstrip("."), text, corrupt)
        anchors.append(anchor)
        conf += _auth_zone(origin, zone)
    for origin, text in (unsigned or {}).items():
        zone = directory / f"{origin.rstrip('.')}.zone"
        zone.write_text(text, encoding="utf-8")
        conf += _auth_zone(origin, zone)
    (directory / "root.hints").write_text(". 3600000 NS fake-root.\nfake-root. 3600000 A 127.0.0.1\n")
    server = [
        "server:",
        f"  interface: {interface}",
        f"  port: {port}",
        "  do-daemonize: no",
        '  username: ""',
        '  chroot: ""',
        f'  directory: "{directory}"',
        "  use-syslog: no",
        f'  logfile: "{directory}/unbound.log"',
        "  verbosity: 1",
        "  val-log-level: 2",
        "  do-ip6: no",
        "  outgoing-interface: 127.0.0.1",
        "  do-not-query-localhost: no",
        "  access-control: 127.0.0.0/8 allow",
        f'  root-hints: "{directory}/root.hints"',
        '  module-config: "validator iterator"',
        *[f'  trust-anchor-file: "{a}"' for a in anchors],
        # RFC 6761 §6.2: unbound serves "test." as an empty static zone unless told not to.
        '  local-zone: "test." nodefault',
        # Test answers must not outlive a test's zone edits; no prefetch traffic either.
        "  cache-max-ttl: 5",
        "remote-control:",
        "  control-enable: no",
    ]
    conf_path = directory / "unbound.conf"
    conf_path.write_text("\n".join(server + conf) + "\n", encoding="utf-8")
    check = subprocess.run(["unbound-checkconf", str(conf_path)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"unbound.conf: {check.stdout}{check.stderr}")
    return conf_path


@dataclass
class ValidatingDns:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @classmethod
    def start(
        cls,
        directory: Path,
        signed: Mapping[str, str],
        unsigned: Mapping[str, str] | None = None,
        corrupt: Iterable[tuple[str, str, str]] = (),
    ) -> ValidatingDns:
        port = _free_port()
        conf_path = write_config(directory, signed, unsigned, corrupt, port=port)
        with (directory / "unbound.out").open("wb") as out:
            process = subprocess.Popen(
                ["unbound", "-d", "-c", str(conf_path)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self = cls(process, port, directory)
        try:
            self._wait_ready(next(iter(signed)))
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, origin: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        query = dns.message.make_query(origin, dns.rdatatype.SOA, flags=dns.flags.RD | dns.flags.AD)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"unbound exited: {(self.directory / 'unbound.out').read_text(errors='replace')}")
            try:
                reply = dns.query.udp(query, "127.0.0.1", timeout=0.5, port=self.port)
            except (OSError, dns.exception.Timeout):
                time.sleep(0.1)
                continue
            if reply.flags & dns.flags.AD:
                return
            time.sleep(0.1)
        raise RuntimeError(f"unbound not validating {origin}: {(self.directory / 'unbound.log').read_text(errors='replace')[-2000:]}")

    def resolver(self) -> Resolver:
        return Resolver(ResolverConfig(nameservers=("127.0.0.1",), port=self.port, timeout=1.0, lifetime=3.0))

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> ValidatingDns:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _auth_zone(origin: str, path: Path) -> list[str]:
    # for-upstream: unbound treats the zone as data from upstream and validates it (TESTBED §5b).
    return [
        "auth-zone:",
        f'  name: "{origin.rstrip(".")}."',
        f'  zonefile: "{path}"',
        "  for-downstream: no",
        "  for-upstream: yes",
        "  fallback-enabled: no",
    ]
