"""IMAP benchmark: a fresh mbsync of 2,500 messages and a metadata UID FETCH, eventmail beside Dovecot, as ratios.

    python bench/imap.py [--messages 2500] [--reps 3] [--dir DIR] [--no-peers]

Both servers get the same messages, APPENDed over IMAP by the same client: real messages from
tests/data/corpus (ham and spam, 400 files, used in turn), each given a unique X-Bench-Seq header
so that all --messages are distinct, CRLF line ends. Then, in alternating runs (the median of
--reps is reported):

- (a) mbsync (isync): a fresh full pull of INBOX into an empty maildir (`Sync Pull`, `Create
  Near`, `FSync no` so the client's disk does not dominate): wall time including connect and
  login; the maildir is checked to hold every message.
- (b) imaplib, after LOGIN and EXAMINE: `UID FETCH 1:* (UID FLAGS ENVELOPE BODYSTRUCTURE
  RFC822.SIZE)`, the command alone, and the octets it returned.
- (c) the same for `UID FETCH 1:* BODY.PEEK[]`.

eventmail runs as its own `eventmail serve` process (encrypted log and blobs, plaintext login
allowed on loopback); Dovecot is bench/peers.py's isolated instance (maildir, plaintext login)
with its imap_zlib plugin added. Neither uses TLS; both offer COMPRESS=DEFLATE, which mbsync
uses (imaplib does not). The APPEND rate of the population step (one client, LITERAL+) is printed too:
eventmail answers each APPEND after its blob and event are fsynced; Dovecot with its default
fsync settings.
Prints figures; asserts nothing. Dovecot needs root and the Debian packages dovecot-imapd,
dovecot-lmtpd and postfix (bench/peers.py starts both); without them only eventmail's figures
are printed.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from peers import PASSWORD as PEER_PASSWORD  # noqa: E402
from peers import Peers, PeersUnavailable  # noqa: E402

from tests.mailserver import MailServer, free_port  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus"
USER, DOMAIN = "bench", "example.test"
PASSWORD = "bench-imap-pass"
METADATA = "(UID FLAGS ENVELOPE BODYSTRUCTURE RFC822.SIZE)"


def corpus_messages(count: int) -> list[bytes]:
    """`count` distinct messages made from the corpus files, used in turn."""
    files = sorted([*(CORPUS / "ham").glob("*.eml"), *(CORPUS / "spam").glob("*.eml")])
    raws = []
    for f in files:
        data = f.read_bytes()
        if data.startswith(b"From "):
            data = data.split(b"\n", 1)[1]
        raws.append(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    return [b"X-Bench-Seq: %d\r\n" % i + raws[i % len(raws)] for i in range(count)]


class ImapMailServer(MailServer):
    """tests/mailserver.py's `eventmail serve` instance with an IMAP listener added."""

    def write_config(self) -> Path:
        path = super().write_config()
        port = self.ports.get("imap") or free_port()
        path.write_text(path.read_text() + f'[[listener]]\nkind = "imap"\naddress = "127.0.0.1"\nport = {port}\n')
        return path


class ZlibPeers(Peers):
    """bench/peers.py's Dovecot with its imap_zlib plugin, so that it offers COMPRESS=DEFLATE as
    eventmail does and mbsync compresses with both (like for like)."""

    def dovecot_conf(self) -> str:
        return super().dovecot_conf() + "protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n"


@dataclass
class Target:
    label: str
    port: int
    user: str
    password: str


class CountingIMAP4(imaplib.IMAP4):
    """imaplib that counts the octets it reads."""

    nread = 0

    def read(self, size: int) -> bytes:
        data = super().read(size)
        self.nread += len(data)
        return data

    def readline(self) -> bytes:
        line = super().readline()
        self.nread += len(line)
        return line


def connect(t: Target) -> CountingIMAP4:
    m = CountingIMAP4("127.0.0.1", t.port, timeout=600)
    m.login(t.user, t.password)
    return m


def populate(t: Target, messages: list[bytes]) -> float:
    """APPEND every message to INBOX with LITERAL+ (RFC 7888), as mail clients do; messages per
    second. (imaplib's synchronising literal, sent as two writes, meets delayed ACKs: it measures
    the TCP stack more than the server.)"""
    with socket.create_connection(("127.0.0.1", t.port), timeout=600) as sock:
        f = sock.makefile("rb")
        f.readline()

        def command(tag: bytes, line: bytes, literal: bytes = b"") -> bytes:
            sock.sendall(tag + b" " + line + (b" {%d+}\r\n" % len(literal) + literal if literal else b"") + b"\r\n")
            while True:
                reply = f.readline()
                if reply.startswith(tag + b" "):
                    return reply

        user = t.user.encode()
        if not command(b"l", b"LOGIN {%d+}\r\n" % len(user) + user + b" " + t.password.encode()).startswith(b"l OK"):
            raise RuntimeError(f"{t.label}: login failed")
        start = time.perf_counter()
        for i, raw in enumerate(messages):
            reply = command(b"a%d" % i, b"APPEND INBOX", raw)
            if not reply.startswith(b"a%d OK" % i):
                raise RuntimeError(f"{t.label}: APPEND failed: {reply!r}")
        rate = len(messages) / (time.perf_counter() - start)
        command(b"z", b"LOGOUT")
    return rate


def mbsync_pull(t: Target, scratch: Path, expected: int) -> float:
    home = Path(tempfile.mkdtemp(prefix="mbsync-", dir=scratch))
    try:
        (home / "mail").mkdir()
        rc = home / "mbsyncrc"
        rc.write_text(
            # FSync no: the client's own fsync of each maildir file would otherwise dominate (and
            # depend on whatever else the disk is doing), hiding the server being measured
            f'FSync no\n\nIMAPAccount b\nHost 127.0.0.1\nPort {t.port}\nUser "{t.user}"\nPass "{t.password}"\n'
            "SSLType None\nAuthMechs LOGIN PLAIN\n\nIMAPStore far\nAccount b\n\n"
            f"MaildirStore near\nPath {home}/mail/\nInbox {home}/mail/INBOX\nSubFolders Verbatim\n\n"
            "Channel c\nFar :far:INBOX\nNear :near:INBOX\nCreate Near\nSync Pull\nExpunge None\nSyncState *\n"
        )
        rc.chmod(0o600)
        start = time.perf_counter()
        p = subprocess.run(["mbsync", "-c", str(rc), "-q", "c"], capture_output=True, text=True, timeout=900)
        elapsed = time.perf_counter() - start
        got = sum(len(os.listdir(home / "mail" / "INBOX" / s)) for s in ("new", "cur"))
        if p.returncode != 0 or got != expected:
            raise RuntimeError(f"{t.label}: mbsync rc={p.returncode}, {got}/{expected} messages\n{p.stdout}{p.stderr}")
        return elapsed
    finally:
        shutil.rmtree(home, ignore_errors=True)


def timed_fetch(t: Target, items: str, expected: int) -> tuple[float, int]:
    m = connect(t)
    m.select("INBOX", readonly=True)
    m.nread = 0
    start = time.perf_counter()
    typ, data = m.uid("FETCH", "1:*", items)
    elapsed = time.perf_counter() - start
    count = sum(1 for d in data if re.match(rb"\d+ \(", d[0] if isinstance(d, tuple) else d or b""))
    if typ != "OK" or count != expected:
        raise RuntimeError(f"{t.label}: UID FETCH {items}: {typ}, {count}/{expected} responses")
    octets = m.nread
    m.logout()
    return elapsed, octets


@dataclass
class Runs:
    mbsync: list[float]
    metadata: list[float]
    bodies: list[float]
    metadata_octets: int = 0
    bodies_octets: int = 0


def run_once(t: Target, scratch: Path, n: int, runs: Runs) -> None:
    runs.mbsync.append(mbsync_pull(t, scratch, n))
    dt, runs.metadata_octets = timed_fetch(t, METADATA, n)
    runs.metadata.append(dt)
    dt, runs.bodies_octets = timed_fetch(t, "BODY.PEEK[]", n)
    runs.bodies.append(dt)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2500)
    ap.add_argument("--reps", type=int, default=3, help="runs against each server; the median is reported")
    ap.add_argument("--dir", type=Path, help="scratch directory (default: a new temporary one, removed after)")
    ap.add_argument("--no-peers", action="store_true", help="measure eventmail only")
    a = ap.parse_args()
    if shutil.which("mbsync") is None:
        print("mbsync (isync) is not installed: nothing measured")
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="imap-bench-", dir=a.dir))
    scratch.chmod(0o755)
    msgs = corpus_messages(a.messages)
    total = sum(len(m) for m in msgs)
    print(f"IMAP: {a.messages} messages ({total / 1e6:.1f} MB, avg {total / len(msgs):.0f} octets) from the corpus, "
          f"{a.reps} runs each, no TLS, loopback")
    server = ImapMailServer(scratch / "eventmail", allow_plaintext_auth=True)
    peers: Peers | None = None
    targets: list[Target] = []
    try:
        server.init()
        server.add_account(USER, f"{USER}@{DOMAIN}", PASSWORD)
        server.start()
        targets.append(Target("eventmail", server.ports["imap"], USER, PASSWORD))
        if not a.no_peers:
            try:
                peers = ZlibPeers(scratch / "peers", domain=DOMAIN).up()
                targets.append(Target("Dovecot", peers.imap_port, peers.user, PEER_PASSWORD))
            except PeersUnavailable as e:
                print(f"Dovecot not measured: {e}")
        results: dict[str, Runs] = {}
        for t in targets:
            rate = populate(t, msgs)
            print(f"  populate {t.label}: {rate:.0f} APPENDs/s")
            results[t.label] = Runs([], [], [])
        for rep in range(a.reps):
            line = f"  run {rep + 1}:"
            for t in targets:
                r = results[t.label]
                run_once(t, scratch, a.messages, r)
                line += f"  {t.label} mbsync {r.mbsync[-1]:.2f} s, metadata {r.metadata[-1]:.3f} s, " \
                        f"bodies {r.bodies[-1]:.3f} s;"
            print(line.rstrip(";"), flush=True)
        print()
        print(f"{'':<12} {'mbsync pull':>12} {'UID FETCH metadata':>20} {'UID FETCH BODY[]':>18}   (median s)")
        med = {k: (statistics.median(r.mbsync), statistics.median(r.metadata), statistics.median(r.bodies))
               for k, r in results.items()}
        for label, (mb, md, bd) in med.items():
            r = results[label]
            print(f"{label:<12} {mb:>12.2f} {md:>11.3f} ({r.metadata_octets / 1e6:.1f} MB) "
                  f"{bd:>9.3f} ({r.bodies_octets / 1e6:.1f} MB)")
        if "Dovecot" in med:
            ours, theirs = med["eventmail"], med["Dovecot"]
            print()
            print(f"ratio eventmail / Dovecot, time (lower is better): mbsync pull {ours[0] / theirs[0]:.2f}, "
                  f"metadata UID FETCH {ours[1] / theirs[1]:.2f}, BODY[] UID FETCH {ours[2] / theirs[2]:.2f}")
    finally:
        server.stop()
        if peers is not None:
            peers.down()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
