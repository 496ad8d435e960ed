"""Test helper: a primary and a secondary `eventmail serve` process replicating over mutual TLS on loopback."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventmail.tls.certs import make_self_signed
from replica.service import control_request

from .conftest import ROOT
from .dns_fixture import DnsServer, zone_text
from .mailserver import MailServer, free_port

RESERVED: set[int] = set()


def reserve_port() -> int:
    """A free port that listeners of the nodes will not be given."""
    while True:
        port = free_port()
        if port not in RESERVED:
            RESERVED.add(port)
            return port


@dataclass
class Node(MailServer):
    """One node of a pair. `peer_address` may point at a proxy instead of the peer itself."""

    name: str = "a"
    peer_name: str = "b"
    role: str = "secondary"
    repl_port: int = 0
    peer_address: str = ""
    mode: str = "async"
    on_timeout: str = "tempfail"
    sync_timeout: float = 2.0

    @property
    def config_path(self) -> Path:
        return self.base / "eventmail.toml"

    def write_config(self) -> Path:
        # Listener ports must not take a port reserved for replication (free_port() may hand
        # the same number out again once the reserving socket is closed).
        taken = set(RESERVED) | set(self.ports.values())
        for kind in ("smtp", "submission", "submissions"):
            while not self.ports.get(kind):
                port = free_port()
                if port not in taken:
                    self.ports[kind] = port
                    taken.add(port)
        path = super().write_config()
        path.write_text(path.read_text() + (
            f'[replication]\nnode = "{self.name}"\npeer_node = "{self.peer_name}"\nrole = "{self.role}"\n'
            f'listen = "127.0.0.1:{self.repl_port}"\npeer = "{self.peer_address}"\n'
            f'cert = "repl-cert.pem"\nkey = "repl-key.pem"\npeer_cert = "peer-cert.pem"\n'
            f'control = "replica.sock"\nmode = "{self.mode}"\non_timeout = "{self.on_timeout}"\n'
            f"sync_timeout = {self.sync_timeout}\n"
        ))
        return path

    def replica(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [sys.executable, "-m", "eventmail", "replica", *argv, "--config", str(self.config_path)],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"replica {' '.join(argv)}: {p.stderr}")
        return p

    def status(self) -> dict[str, Any]:
        """The running node's replication status, straight from its control socket."""
        return control_request(self.base / "replica.sock", "status")

    def positions(self) -> dict[str, int]:
        return {r["stream"]: r["position"] for r in self.status()["streams"]}

    def heads(self) -> dict[str, tuple[int, str]]:
        """Every stream's head as `eventmail verify` prints it (fails on any damage)."""
        out = self.cli("verify")
        heads = {}
        for line in out.splitlines():
            stream, seq, chain, *_ = line.split("\t")
            heads[stream] = (int(seq.split()[1]), chain.split()[1])
        return heads


_DNS: dict[int, DnsServer] = {}


def make_pair(base: Path, mode: str = "async", on_timeout: str = "tempfail", sync_timeout: float = 2.0,
              zones: dict[str, str] | None = None) -> tuple[Node, Node]:
    """Node a (primary, initialized, with account alice) and node b (a new secondary: only the
    master key file and certificates; its data directory comes from a's keyring). Both use one
    DNS server process (SPF for example.test); `close_pair` stops everything."""
    dns = DnsServer.start(base / "dns", {"example.test": zone_text("example.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"']),
                                         **(zones or {})})
    dns_port = dns.port
    a = Node(base / "a", name="a", peer_name="b", role="primary", mode=mode, on_timeout=on_timeout,
             sync_timeout=sync_timeout, dns_port=dns_port)
    b = Node(base / "b", name="b", peer_name="a", role="secondary", mode=mode, on_timeout=on_timeout,
             sync_timeout=sync_timeout, dns_port=dns_port)
    a.base.mkdir(parents=True)
    b.base.mkdir(parents=True)
    a.init()
    a.add_account("alice", "alice@mail.test", "pw-alice-123")
    shutil.copy(a.key_file, b.key_file)
    make_self_signed(b.cert, b.base / "key.pem", ["localhost", b.hostname, "127.0.0.1"])
    for n in (a, b):
        make_self_signed(n.base / "repl-cert.pem", n.base / "repl-key.pem", [n.name])
        n.repl_port = reserve_port()
    shutil.copy(a.base / "repl-cert.pem", b.base / "peer-cert.pem")
    shutil.copy(b.base / "repl-cert.pem", a.base / "peer-cert.pem")
    a.peer_address = f"127.0.0.1:{b.repl_port}"
    b.peer_address = f"127.0.0.1:{a.repl_port}"
    _DNS[id(a)] = dns
    return a, b


def close_pair(a: Node, b: Node) -> None:
    a.stop()
    b.stop()
    dns = _DNS.pop(id(a), None)
    if dns is not None:
        dns.stop()


def wait_until(predicate: object, timeout: float = 30, what: str = "condition") -> None:
    assert callable(predicate)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def caught_up(secondary: Node, primary: Node) -> bool:
    """Every stream the primary writes is at the same position on the secondary."""
    try:
        ps, ss = primary.status(), secondary.positions()
    except OSError:
        return False
    mine = [r for r in ps["streams"] if r["role"] == "writer" and not r["stream"].startswith("handoff/")]
    return bool(mine) and all(ss.get(r["stream"]) == r["position"] for r in mine)
