"""Test helpers: start tests/dnsserver.py as a process on a free loopback port, and make DKIM keys and zone text.

Test modules wrap these in their own fixtures, for example:

    @pytest.fixture(scope="module")
    def dns_server(tmp_path_factory):
        with DnsServer.start(tmp_path_factory.mktemp("dns"), {"example.test": "..."}) as server:
            yield server

or use the function-scoped factory fixture `dns_servers` (bind it in the test module with
`dns_servers = dns_fixture.dns_servers`): `server = dns_servers({"x.test": zone_text(...)})`; every
server it started is stopped after the test.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import nacl.signing
import pytest

from eventmail.mailauth.resolver import Resolver, ResolverConfig

P = ParamSpec("P")
T = TypeVar("T")

SERVER_SCRIPT = Path(__file__).with_name("dnsserver.py")
DATA_DIR = Path(__file__).with_name("data") / "dns"
READY_TIMEOUT = 15.0


def async_test(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Run an `async def` test with asyncio.run (the project does not use pytest-asyncio)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


def zone_text(origin: str, records: Iterable[str], ttl: int = 300, negative_ttl: int = 60) -> str:
    """A complete zone: $ORIGIN, $TTL, SOA and NS, then `records` (zone-file lines)."""
    origin = origin.rstrip(".") + "."
    head = [
        f"$ORIGIN {origin}",
        f"$TTL {ttl}",
        f"@ SOA ns1 hostmaster 1 3600 600 86400 {negative_ttl}",
        "@ NS ns1",
        "ns1 A 127.0.0.1",
    ]
    return "\n".join([*head, *records]) + "\n"


def txt_rdata(value: str | bytes, chunk: int = 255) -> str:
    """A TXT rdata in zone syntax, split into <=255-octet character-strings (RFC 1035 §3.3.14)."""
    raw = value.encode() if isinstance(value, str) else value
    parts = [raw[i : i + chunk] for i in range(0, len(raw), chunk)] or [b""]
    quoted = []
    for part in parts:
        text = "".join(chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\{b:03d}" for b in part)
        quoted.append(f'"{text}"')
    return "( " + " ".join(quoted) + " )"


@dataclass
class DnsServer:
    """A running tests/dnsserver.py process."""

    process: subprocess.Popen[bytes]
    port: int
    host: str
    zone_dir: Path
    stderr_path: Path
    zone_paths: tuple[Path, ...] = ()
    behaviour_args: tuple[str, ...] = ()

    @classmethod
    def start(
        cls,
        zone_dir: Path,
        zones: Mapping[str, str] | None = None,
        zone_files: Iterable[Path] = (),
        behaviours: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> DnsServer:
        """Write `zones` ({origin: zone text}) into `zone_dir`, start the server, wait for its port."""
        zone_dir.mkdir(parents=True, exist_ok=True)
        paths = list(zone_files)
        for origin, text in (zones or {}).items():
            path = zone_dir / f"{origin.rstrip('.')}.zone"
            path.write_text(text, encoding="utf-8")
            paths.append(path)
        behaviour_args: list[str] = []
        for name, mode in (behaviours or {}).items():
            behaviour_args += ["--behaviour", f"{name}={mode}"]
        args = [sys.executable, str(SERVER_SCRIPT), "--host", host, "--port", "0", *behaviour_args]
        args += [str(p) for p in paths]
        stderr_path = zone_dir / "dnsserver.stderr"
        with stderr_path.open("wb") as err:
            process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        assert process.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            ready, _, _ = select.select([process.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(process.stdout.fileno(), 1)
                if not chunk:
                    break
                line += chunk
        if not line.startswith(b"PORT "):
            process.kill()
            process.wait(5)
            raise RuntimeError(f"dnsserver did not start: {line!r} {stderr_path.read_text(errors='replace')}")
        return cls(
            process, int(line.split()[1]), host, zone_dir, stderr_path, tuple(paths), tuple(behaviour_args)
        )

    def resolver(self, **overrides: float) -> Resolver:
        """A Resolver pointed at this server, with short timeouts suited to tests."""
        config = ResolverConfig(
            nameservers=(self.host,),
            port=self.port,
            timeout=float(overrides.get("timeout", 1.0)),
            lifetime=float(overrides.get("lifetime", 2.0)),
        )
        return Resolver(config)

    def stop(self) -> None:
        stop_process(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> DnsServer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@pytest.fixture
def dns_servers(tmp_path: Path) -> Iterator[Callable[..., DnsServer]]:
    """Factory fixture: `dns_servers(zones, zone_files=(), behaviours=None)` starts a server."""
    started: list[DnsServer] = []

    def start(
        zones: Mapping[str, str] | None = None,
        zone_files: Iterable[Path] = (),
        behaviours: Mapping[str, str] | None = None,
    ) -> DnsServer:
        server = DnsServer.start(tmp_path / f"dns-{len(started)}", zones, zone_files, behaviours)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- DKIM keys made by the tests ------------------------------------------------------------------


@dataclass(frozen=True)
class DkimKey:
    """A private key in the format `eventmail.mailauth.dkim.sign` takes, and its DNS TXT value."""

    algorithm: str  # "rsa-sha256" or "ed25519-sha256"
    private_key: bytes
    txt: str
    bits: int = field(default=0)


def make_rsa_key(bits: int = 2048) -> DkimKey:
    """RSA key via the openssl CLI (PEM PKCS#8), with the SubjectPublicKeyInfo as p=."""
    pem = subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"],
        check=True,
        capture_output=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubout", "-outform", "DER"], input=pem, check=True, capture_output=True
    ).stdout
    return DkimKey("rsa-sha256", pem, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}", bits)


def make_ed25519_key() -> DkimKey:
    """RFC 8463 §4: the private key is the 32-byte seed (base64 for dkimpy); p= is the raw public key."""
    sk = nacl.signing.SigningKey.generate()
    seed_b64 = base64.b64encode(bytes(sk))
    pub_b64 = base64.b64encode(bytes(sk.verify_key)).decode()
    return DkimKey("ed25519-sha256", seed_b64, f"v=DKIM1; k=ed25519; p={pub_b64}", 256)


def process_alive(pid: int) -> bool:
    """Whether a process of that id exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process(process: subprocess.Popen[Any]) -> None:
    """End a process the test started: SIGTERM by PID, then SIGKILL if it does not exit within 5 s."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)
