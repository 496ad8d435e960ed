"""Test helper: a real `eventmail serve` process with its own data directory, key, certificate, DNS and ports."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from eventmail.opening import open_store
from eventmail.store import MasterKeySource, load_master_key
from eventmail.tls.certs import make_self_signed

from .conftest import ROOT

KIND = {"MX (SMTP)": "smtp", "submission (STARTTLS)": "submission", "submission (TLS)": "submissions",
        "IMAP (STARTTLS)": "imap", "IMAP (TLS)": "imaps", "HTTP": "http", "HTTPS": "https", "metrics (HTTP)": "metrics"}
PORT_LINE = re.compile("^(" + "|".join(re.escape(k) for k in KIND) + r")\s+127\.0\.0\.1 port (\d+)")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on, never handed out twice on this machine while its taker lives.

    Chosen below the kernel's ephemeral range (ip_local_port_range, 32768 and up by default): a
    port from that range may be taken as the source port of some other test's outgoing connection
    between our check and the server's bind, and the bind then fails with "address in use". Test
    processes running side by side (pytest's workers, a chaos run) claim a port with a file named
    after it, so two of them never choose the same one between a check and a bind."""
    low, high = _below_ephemeral()
    while True:
        port = random.randint(low, high)
        if port in _HANDED_OUT or not _claim(port):
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


_CLAIMS = Path(tempfile.gettempdir()) / "eventmail-test-ports"


def _claim(port: int) -> bool:
    """Whether this process now holds `port`: its claim file is new, or its holder has ended."""
    _CLAIMS.mkdir(exist_ok=True)
    path = _CLAIMS / str(port)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        try:
            holder = int(path.read_text() or 0)
        except (OSError, ValueError):
            return False
        if holder in (0, os.getpid()) or _alive(holder):
            return False  # held, or being claimed (its file not yet written)
        path.unlink(missing_ok=True)  # its holder has ended: claim it anew
        return _claim(port)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def _alive(pid: int) -> bool:
    """Whether a process `pid` exists (one of another user's raises PermissionError: it does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _below_ephemeral() -> tuple[int, int]:
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    return (12000, first - 1) if first > 14000 else (first + 20000, 65000)


def ipv6_loopback() -> bool:
    """Whether this machine has ::1 to bind (some CI containers have no IPv6)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def eventmail(directory: Path, key_file: Path, *argv: str, stdin: str | None = None) -> str:
    """Run one CLI command on the instance's data directory; its stdout."""
    p = subprocess.run(
        [sys.executable, "-m", "eventmail", *argv, "--dir", str(directory), "--key-file", str(key_file)],
        input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    if p.returncode != 0:
        raise AssertionError(f"eventmail {' '.join(argv)}: {p.stderr}")
    return p.stdout


def stored_messages(directory: Path, key_file: Path, account: str, mailbox: str = "INBOX") -> list[bytes]:
    """The messages of a mailbox of the data directory, read through a read-only store (a server
    may be running on it)."""

    async def read() -> list[bytes]:
        key = load_master_key(directory, MasterKeySource(key_file=key_file))
        store = await open_store(directory, key, writable=False)
        try:
            acct = await store.account(account)
            mb = acct.mailbox_required(mailbox)
            return [acct.read_message_sync(m.blob_id) for m in acct.view.messages(mb.id)]
        finally:
            await store.close()

    return asyncio.run(read())


@dataclass
class MailServer:
    """An instance. `start()` runs `eventmail serve`; `ports` maps listener kinds to ports."""

    base: Path
    hostname: str = "mail.test"
    dns_port: int = 1
    smarthost: str | None = None
    allow_plaintext_auth: bool = False
    max_message_bytes: int | None = None
    extra_config: str = ""  # TOML tables appended to the file, e.g. "[limits]\nidle_timeout = 2\n"
    settings: str = ""  # top-level TOML settings, e.g. "allow_key_file_mode = true\n"
    python: str = sys.executable  # the interpreter `serve` runs on, and its environment (None: ours)
    env: dict[str, str] | None = None
    kinds: tuple[str, ...] = ("smtp", "submission", "submissions")  # the listeners, of config.LISTENER_KINDS
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    log_lines: list[str] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.base / "data"

    @property
    def key_file(self) -> Path:
        return self.base / "master.key"

    @property
    def cert(self) -> Path:
        return self.base / "cert.pem"

    def init(self) -> None:
        eventmail(self.directory, self.key_file, "key", "init")
        make_self_signed(self.cert, self.base / "key.pem", ["localhost", self.hostname, "127.0.0.1"])

    def cli(self, *argv: str, stdin: str | None = None) -> str:
        return eventmail(self.directory, self.key_file, *argv, stdin=stdin)

    def add_account(self, name: str, address: str, password: str) -> None:
        self.cli("account", "add", name, address, "--password-stdin", stdin=password + "\n")

    def write_config(self) -> Path:
        listeners = "".join(
            f'[[listener]]\nkind = "{k}"\naddress = "127.0.0.1"\nport = {self.ports.get(k) or free_port()}\n'
            for k in self.kinds
        )
        extra = f'smarthost = "{self.smarthost}"\n' if self.smarthost else ""
        if self.max_message_bytes is not None:
            extra += f"max_message_bytes = {self.max_message_bytes}\n"
        # Run as root (the tests may be): say so, as `serve` refuses root without a `user`.
        root = 'user = "root"\n' if os.geteuid() == 0 and "user =" not in self.settings else ""
        text = (
            f'{self.settings}{root}hostname = "{self.hostname}"\ndata_dir = "data"\nkey_file = "master.key"\n'
            f"allow_plaintext_auth = {'true' if self.allow_plaintext_auth else 'false'}\n{extra}"
            f'[tls]\ncert = "cert.pem"\nkey = "key.pem"\n'
            f'[resolver]\nnameservers = ["127.0.0.1"]\nport = {self.dns_port}\n{listeners}{self.extra_config}'
        )
        path = self.base / "eventmail.toml"
        path.write_text(text)
        return path

    def start(self) -> MailServer:
        config = self.write_config()
        self.proc = subprocess.Popen(
            [self.python, "-m", "eventmail", "serve", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=self.env,
        )
        ready = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log_lines.append(line.rstrip())
                m = PORT_LINE.match(line)
                if m:
                    self.ports[KIND[m.group(1)]] = int(m.group(2))
                if line.startswith("stop with"):
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60):
            self.stop()
            raise AssertionError("server did not start:\n" + "\n".join(self.log_lines))
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def wait_log(self, needle: str, timeout: float = 10.0, after: int = 0) -> str:
        """The first log line containing `needle`, among the lines after the first `after` ones
        (give `len(log_lines)` from before an action to wait for a line of that action). The log is
        read by a thread, so a line the server wrote before its reply may not be in `log_lines`
        yet when the reply arrives."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.log_lines)[after:]:
                if needle in line:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line with {needle!r}; last lines:\n" + "\n".join(self.log_lines[-20:]))
            time.sleep(0.05)

    def messages(self, account: str, mailbox: str = "INBOX") -> list[bytes]:
        """The messages of a mailbox, read through a read-only store beside the running server."""
        return stored_messages(self.directory, self.key_file, account, mailbox)

    def wait_for(self, account: str, count: int, mailbox: str = "INBOX", timeout: float = 20) -> list[bytes]:
        deadline = time.time() + timeout
        while True:
            msgs = self.messages(account, mailbox)
            if len(msgs) >= count or time.time() > deadline:
                return msgs
            time.sleep(0.2)


def swaks(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["swaks", "--timeout", "20", *argv], capture_output=True, text=True, timeout=timeout)



def insecure_tls() -> ssl.SSLContext:
    """A client context that takes the test server's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


LOCALSERVE_KINDS = ("smtp", "submission", "submissions", "imap", "imaps", "http")


@dataclass
class Localserve:
    """A `eventmail localserve` process on free loopback ports; `lines` is what it printed up to
    "stop with" (its ports, passwords and URLs)."""

    proc: subprocess.Popen[str]
    ports: dict[str, int]
    lines: list[str]

    def value_after(self, marker: str) -> str:
        """The word after `marker` in the first line that has it ("password: " -> the password)."""
        for line in self.lines:
            if marker in line:
                return line.split(marker, 1)[1].split()[0]
        raise AssertionError(f"no {marker!r} in localserve's output:\n" + "".join(self.lines))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def started_lines(proc: subprocess.Popen[str]) -> list[str]:
    """What a starting `eventmail serve`/`localserve` printed, up to its "stop with" line (or its end)."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("stop with"):
            break
    return lines


def start_localserve(directory: Path, *extra: str) -> Localserve:
    """Start localserve on `directory` (extra: e.g. "--password", "pw"), with no DNS to ask."""
    ports = {k: free_port() for k in LOCALSERVE_KINDS}
    args = [sys.executable, "-m", "eventmail", "localserve", "--dir", str(directory), "--dns", "127.0.0.1:9",
            *extra] + [f"--{k}-port={v}" for k, v in ports.items()]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    return Localserve(proc, ports, started_lines(proc))
