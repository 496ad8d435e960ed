"""SMTP benchmark: messages/s accepted by eventmail's MX beside Postfix delivering to Dovecot over LMTP, as a ratio.

    python bench/smtp.py [--messages 1000] [--clients 10] [--size 20000] [--reps 3] [--dir DIR] [--profile FILE]
                         [--pipeline]

The same load goes to both, in alternating runs (the median of --reps is reported):
real messages from tests/data/corpus/ham, each padded with real body lines (or trimmed at a line
boundary) to about --size bytes, given a From in the sender domain, a unique X-Bench-Seq header,
and a DKIM signature (rsa-sha256, 2048 bits) made before the clock starts. --clients threads send
over raw sockets, one message per connection as an inbound MX sees it: EHLO, MAIL (SIZE=, and
BODY=8BITMIME when the message has 8-bit octets), RCPT, DATA, QUIT, no pipelining (as the anchor's
load generator); with --pipeline, MAIL, RCPT and DATA go in one write when the server offers
PIPELINING, as Postfix, Exim and Mox send them (RFC 2920), to both servers alike.

- eventmail: `eventmail serve` as its own process; every message gets SPF, DKIM and DMARC
  (policy p=reject) evaluated against a local DNS server process (tests/dnsserver.py) serving the
  sender's zone, and its 250 comes only after the delivery event is fsynced into the log (there is
  no switch to turn fsync off). A 250 there is end-to-end delivery: the message is in the INBOX.
  After the runs every stored message is read back and its Authentication-Results checked.
- Postfix -> Dovecot: bench/peers.py's isolated instances (Postfix's 250 comes after its queue
  file is fsynced; Dovecot's LMTP delivery is fsynced before it answers). Postfix does no
  SPF/DKIM/DMARC in this setup. Its delivered msgs/s (until the last message is in the maildir)
  is reported beside its accepted msgs/s.

CPU is the core-seconds each server's process tree used during a run (bench/smtp_cpu.py);
eventmail's is also printed per message for its process, its event loop's thread and its
analysis processes. After the runs, one more run of eventmail alone prints its CPU by stage
(eventmail/cputime.py): counting by stage costs the server clock reads, so that run is not
in the figures compared.
Prints figures; asserts nothing. Postfix and Dovecot need root and the Debian packages postfix,
dovecot-imapd and dovecot-lmtpd; without them only eventmail's figures are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from peers import Peers, PeersUnavailable  # noqa: E402
from smtp_cpu import CpuWindow, loadavg  # noqa: E402

from eventmail import control  # noqa: E402
from eventmail.mailauth.dkim import sign_sync  # noqa: E402
from eventmail.mailauth.verdict import evaluate  # noqa: E402
from eventmail.mime.headers import first_value  # noqa: E402
from eventmail.mime.structure import parse_structure  # noqa: E402
from eventmail.opening import open_store  # noqa: E402
from eventmail.store import MasterKeySource, init_directory, load_master_key  # noqa: E402
from tests.dns_fixture import DnsServer, make_rsa_key, txt_rdata, zone_text  # noqa: E402
from tests.mailserver import MailServer  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus" / "ham"
SENDER_DOMAIN = "bench-sender.test"
# The author is in a subdomain, so DMARC finds the policy at the organizational domain (RFC 7489
# §6.6.3) and checks relaxed alignment with d= and the MAIL FROM domain.
AUTHOR = f"newsletter@news.{SENDER_DOMAIN}"
MAIL_FROM = f"bounce@{SENDER_DOMAIN}"
HELO = f"out.{SENDER_DOMAIN}"
SELECTOR = "bench"
RECIPIENT_DOMAIN = "example.test"
DROP_FIELDS = (b"from", b"dkim-signature", b"domainkey-signature", b"authentication-results", b"return-path")


# -- messages ---------------------------------------------------------------------------------


def corpus_raw(path: Path) -> bytes:
    """A corpus file with its mbox From_ line dropped and LF line endings."""
    data = path.read_bytes().replace(b"\r\n", b"\n")
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    return data


def padding_lines(raws: list[bytes]) -> list[bytes]:
    """Plain text lines from real bodies, used to grow messages to the wanted size."""
    pool = []
    for raw in raws:
        for line in raw.partition(b"\n\n")[2].split(b"\n"):
            if 20 <= len(line) <= 76 and not line.startswith((b"--", b">", b".", b"Content-")):
                pool.append(line + b"\n")
    return pool or [b"The quick brown fox jumps over the lazy dog, again and again.\n"]


def header_fields(head: bytes) -> list[bytes]:
    """Unfolded-aware split of a header block into fields (each with its continuation lines)."""
    fields: list[bytes] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\n" + line
        elif line:
            fields.append(line)
    return fields


@dataclass(frozen=True)
class Payload:
    wire: bytes  # dot-stuffed, ending in CRLF.CRLF
    size: int  # octets of the message itself
    eight_bit: bool


def signed_message(raw: bytes, size: int, index: int, pool: list[bytes], key: bytes) -> bytes:
    """A corpus message as the sender's domain sends it: our From, about `size` octets, CRLF, DKIM-signed."""
    head, _, body = raw.partition(b"\n\n")
    kept = [f for f in header_fields(head) if f.split(b":", 1)[0].strip().lower() not in DROP_FIELDS]
    head = b"\n".join([f"From: Bench Newsletter <{AUTHOR}>".encode(), *kept]) + b"\n"
    room = max(0, size - len(head) - 1 - 650)  # the DKIM-Signature and X-Bench-Seq fields come on top
    if len(body) > room:
        cut = body.rfind(b"\n", 0, room)
        body = body[: cut + 1] if cut > 0 else body[:room] + b"\n"
    else:
        if body and not body.endswith(b"\n"):
            body += b"\n"
        parts, n, k = [body], len(body), index
        while n < room:
            parts.append(pool[k % len(pool)])
            n += len(parts[-1])
            k += 7
        body = b"".join(parts)
    message = (head + b"\n" + body).replace(b"\n", b"\r\n")
    return sign_sync(message, SENDER_DOMAIN, SELECTOR, "rsa-sha256", key) + message


def make_payload(signed: bytes, seq: int, tag: str) -> Payload:
    """One transaction's DATA: a unique X-Bench-Seq field (outside the signature's h=, so the signature
    stays valid) makes every message distinct, as the receiver deduplicates identical retries."""
    message = f"X-Bench-Seq: {tag}-{seq}\r\n".encode() + signed
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return Payload(stuffed + b".\r\n", len(message), any(b > 127 for b in message))


def build_payloads(count: int, size: int, tags: list[str], key: bytes) -> dict[str, list[Payload]]:
    """For each tag, `count` payloads cycling through the corpus (each corpus message signed once)."""
    files = sorted(CORPUS.glob("*.eml"))[:count]
    if not files:
        sys.exit(f"no corpus messages in {CORPUS}")
    raws = [corpus_raw(f) for f in files]
    pool = padding_lines(raws)
    signed = [signed_message(raw, size, i, pool, key) for i, raw in enumerate(raws)]
    return {tag: [make_payload(signed[i % len(signed)], i, tag) for i in range(count)] for tag in tags}


# -- load generator ---------------------------------------------------------------------------


class SmtpFailure(Exception):
    def __init__(self, stage: str, reply: str) -> None:
        super().__init__(f"{stage} {reply}")
        self.stage, self.reply = stage, reply


class Client:
    """One SMTP connection over a raw socket (no library between the load and the server)."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.expect("greeting", 220)
        lines = self.command(b"EHLO " + HELO.encode(), "ehlo", 250)
        self.extensions = {line[4:].split(b" ")[0].upper() for line in lines[1:]}

    def reply(self, stage: str) -> tuple[int, list[bytes]]:
        lines = []
        while True:
            line = self.file.readline(4096)
            if not line:
                raise SmtpFailure(stage, "connection closed")
            lines.append(line.rstrip(b"\r\n"))
            if line[3:4] != b"-":
                break
        try:
            return int(lines[-1][:3]), lines
        except ValueError:
            raise SmtpFailure(stage, repr(lines[-1][:40])) from None

    def expect(self, stage: str, code: int) -> list[bytes]:
        got, lines = self.reply(stage)
        if got != code:
            raise SmtpFailure(stage, lines[-1][:60].decode("ascii", "replace"))
        return lines

    def command(self, line: bytes, stage: str, code: int) -> list[bytes]:
        self.sock.sendall(line + b"\r\n")
        return self.expect(stage, code)

    def close(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply("quit")
        except (OSError, SmtpFailure):
            pass
        self.file.close()
        self.sock.close()


@dataclass
class LoadResult:
    accepted: int = 0
    octets: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first: float = 0.0
    last_accept: float = 0.0

    @property
    def accept_seconds(self) -> float:
        return max(self.last_accept - self.first, 1e-9)

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.accept_seconds

    def latency_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def send_load(port: int, rcpt: str, payloads: list[Payload], clients: int, pipeline: bool = False) -> LoadResult:
    """Send every payload once, `clients` at a time, one message per connection; with `pipeline`
    MAIL, RCPT and DATA in one write where the server offers PIPELINING (RFC 2920)."""
    result = LoadResult()
    lock = threading.Lock()
    queue = iter(range(len(payloads)))
    go = threading.Event()

    def worker() -> None:
        go.wait()
        while True:
            with lock:
                seq = next(queue, None)
            if seq is None:
                return
            p = payloads[seq]
            client: Client | None = None
            try:
                client = Client(port)
                params = b" SIZE=%d" % p.size if b"SIZE" in client.extensions else b""
                if p.eight_bit and b"8BITMIME" in client.extensions:
                    params += b" BODY=8BITMIME"
                t0 = time.perf_counter()
                mail = b"MAIL FROM:<" + MAIL_FROM.encode() + b">" + params
                if pipeline and b"PIPELINING" in client.extensions:
                    client.sock.sendall(mail + b"\r\nRCPT TO:<" + rcpt.encode() + b">\r\nDATA\r\n")
                    client.expect("mail", 250)
                    client.expect("rcpt", 250)
                    client.expect("data", 354)
                else:
                    client.command(mail, "mail", 250)
                    client.command(b"RCPT TO:<" + rcpt.encode() + b">", "rcpt", 250)
                    client.command(b"DATA", "data", 354)
                client.sock.sendall(p.wire)
                client.expect("end of data", 250)
                t1 = time.perf_counter()
                with lock:
                    result.accepted += 1
                    result.octets += p.size
                    result.latencies.append(t1 - t0)
                    result.last_accept = max(result.last_accept, t1)
            except SmtpFailure as e:
                with lock:
                    result.errors[f"{e.stage}: {e.reply}"] += 1
            except OSError as e:
                with lock:
                    result.errors[f"socket: {type(e).__name__}"] += 1
            finally:
                if client is not None:
                    client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    result.first = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    return result


def maildir_count(maildir: Path) -> int:
    n = 0
    for sub in ("new", "cur"):
        try:
            n += sum(1 for e in (maildir / sub).iterdir() if not e.name.startswith("."))
        except FileNotFoundError:
            pass
    return n


# -- one run against each ---------------------------------------------------------------------


@dataclass
class Run:
    load: LoadResult
    cpu: dict[str, float | None]
    delivered: int = 0
    delivered_per_s: float = 0.0


def stage_seconds(server: MailServer) -> dict[str, float]:
    """The server's CPU seconds by stage (eventmail/cputime.py), through its control socket."""
    reply = control.request_in(server.directory, "stages") or {}
    return {k: float(v) for k, v in reply.get("cpu_seconds", {}).items()}


TICKS = os.sysconf("SC_CLK_TCK")


def thread_seconds(pid: int, tid: int) -> float:
    """CPU seconds (user and system) of one thread of a process, from /proc."""
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_eventmail(server: MailServer, dns: DnsServer, payloads: list[Payload], clients: int,
                  profile: Path | None = None, stages: bool = False, pipeline: bool = False) -> Run:
    """One run of the load. The server's CPU per message is measured from outside (/proc): its
    process, its event loop's thread (the main one) and its analysis processes. With `stages`
    the server also counts CPU by stage (its first `stages` request starts that, and the clock
    reads it takes cost the loop's thread: eventmail/cputime.py), and the stages are printed."""
    assert server.proc is not None
    pid = server.proc.pid
    before = stage_seconds(server) if stages else {}
    cpu = CpuWindow({"eventmail": pid, "dns server": dns.process.pid}).start()
    proc0, loop0 = cpu_seconds(pid), thread_seconds(pid, pid)
    spy = start_profile(pid, profile) if profile else None
    load = send_load(server.ports["smtp"], f"bench@{RECIPIENT_DOMAIN}", payloads, clients, pipeline)
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its samples when interrupted
        spy.wait(60)
    cpu.settle()
    cpu.stop()
    process, loop = cpu_seconds(pid) - proc0, thread_seconds(pid, pid) - loop0
    n = max(load.accepted, 1)
    # The analysis processes' CPU is the tree's rest.
    workers = (cpu.result.get("eventmail") or 0.0) - process
    whole = (f"process {1000 * process / n:.2f} (event loop thread {1000 * loop / n:.2f}); "
             f"analysis processes {1000 * workers / n:.2f}")
    if not stages:
        print(f"    server core-ms per message: {whole}")
        return Run(load, cpu.result, load.accepted, load.accepted_per_s)
    after = stage_seconds(server)
    spent = {k: after[k] - before.get(k, 0.0) for k in after}
    elsewhere = {k.removeprefix("analysis: "): spent.pop(k) for k in [k for k in spent if k.startswith("analysis: ")]}
    for k in ("process", "main thread"):
        spent.pop(k, None)
    main_staged = spent.pop("main thread staged", 0.0)
    named = "  ".join(f"{k} {1000 * v / n:.2f}" for k, v in sorted(spent.items(), key=lambda kv: -kv[1]))
    # What no stage took, on the event loop's thread (callbacks outside tasks: DNS replies, futures
    # completed from threads, the selector) and in the worker threads (their hand-offs, fsync waits).
    loop_other = loop - main_staged
    threads_other = process - loop - (sum(spent.values()) - main_staged)
    in_workers = "  ".join(f"{k} {1000 * v / n:.2f}" for k, v in sorted(elsewhere.items(), key=lambda kv: -kv[1]))
    print(f"    by stage (measured in the server): {named}  "
          f"other: event loop {1000 * loop_other / n:.2f}, threads {1000 * threads_other / n:.2f}  "
          f"= {whole}{f' ({in_workers})' if in_workers else ''}")
    # The 250 is sent after the delivery event is fsynced: accepted is delivered.
    return Run(load, cpu.result, load.accepted, load.accepted_per_s)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) of one process, its threads included, without its children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the server (200 Hz, without pausing it) until interrupted; raw stacks to `out`
    (one line per distinct stack with its count: grep and sum them, or feed flamegraph.pl). Only the
    thread holding the GIL is sampled (--gil): threads waiting for it would otherwise look busy; so
    what runs without the GIL (fsync, socket writes, hashing and crypto in C) is not seen."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([spy, "record", "-p", str(pid), "-r", "200", "-f", "raw", "--nonblocking", "--gil",
                             "-o", str(out)], stdout=subprocess.DEVNULL)


def run_postfix(peers: Peers, payloads: list[Payload], clients: int, timeout: float = 300.0,
                pipeline: bool = False) -> Run:
    assert peers.postfix_pid is not None and peers.dovecot_pid is not None
    before = maildir_count(peers.maildir)
    cpu = CpuWindow({"postfix": peers.postfix_pid, "dovecot": peers.dovecot_pid}).start()
    load = send_load(peers.smtp_port, peers.user, payloads, clients, pipeline)
    deadline = time.monotonic() + timeout
    delivered = maildir_count(peers.maildir) - before
    while delivered < load.accepted and time.monotonic() < deadline:
        time.sleep(0.02)
        delivered = maildir_count(peers.maildir) - before
    end = time.perf_counter()
    cpu.settle()
    cpu.stop()
    return Run(load, cpu.result, delivered, delivered / max(end - load.first, 1e-9))


# -- setup ------------------------------------------------------------------------------------


def sender_zone(dkim_txt: str) -> str:
    return zone_text(SENDER_DOMAIN, [
        '@ TXT "v=spf1 ip4:127.0.0.0/8 -all"',
        f"{SELECTOR}._domainkey TXT {txt_rdata(dkim_txt)}",
        '_dmarc TXT "v=DMARC1; p=reject; adkim=r; aspf=r"',
        "news MX 10 mx",
        "mx A 127.0.0.1",
    ])


def check_stored(server: MailServer, expected: int) -> str:
    """Read back every delivered message: the count and the verdicts in Authentication-Results."""
    messages = server.messages("bench")
    verdicts: Counter[str] = Counter()
    for m in messages:
        head = m.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
        ar = next((line for line in head.split(b"\r\n") if line.lower().startswith(b"authentication-results:")), b"")
        verdicts[" ".join(f"{k}={'pass' if k.encode() + b'=pass' in ar else 'NOT pass'}"
                          for k in ("spf", "dkim", "dmarc"))] += 1
    summary = ", ".join(f"{n} with {v}" for v, n in verdicts.most_common())
    return f"{len(messages)} messages in bench's INBOX (expected {expected}): {summary or 'none'}"


def breakdown(directory: Path, dns: DnsServer, payloads: list[Payload]) -> str:
    """Where eventmail's CPU per message goes: the main steps of an MX delivery, one after another,
    in this process (CPU time of the process, so work in helper threads counts)."""
    messages = [p.wire[:-3].replace(b"\r\n..", b"\r\n.") for p in payloads]

    async def measure() -> dict[str, float]:
        resolver = dns.resolver()
        await evaluate(messages[0], "127.0.0.1", HELO, MAIL_FROM, resolver)  # DNS answers cached, as in a run
        out: dict[str, float] = {}
        t = time.process_time()
        for m in messages:
            await evaluate(m, "127.0.0.1", HELO, MAIL_FROM, resolver)
        out["SPF+DKIM+DMARC"] = time.process_time() - t
        t = time.process_time()
        for m in messages:
            parse_structure(m)
        out["MIME structure"] = time.process_time() - t
        source = MasterKeySource(key_file=directory / "master.key")
        init_directory(directory / "data", source)
        store = await open_store(directory / "data", load_master_key(directory / "data", source))
        try:
            await store.create_account("bench", [f"bench@{RECIPIENT_DOMAIN}"], None)
            async with store.use_account("bench") as acct:
                t = time.process_time()
                for m in messages:
                    await acct.add_message("INBOX", m, delivery_key=acct.delivery_key(first_value(m, b"message-id") or b"", m))
                out["store append (blob + event, fsync; projections)"] = time.process_time() - t
        finally:
            await store.close()
        return out

    parts = asyncio.run(measure())
    return "; ".join(f"{k} {1000 * v / len(messages):.2f}" for k, v in parts.items())


def resident_pages(pid: int) -> set[int]:
    """The physical frames (PFNs) of a process's resident pages, from /proc/PID/pagemap (bits 0-54
    of a present page's entry, bit 63; the kernel shows the frame numbers to root only: empty
    otherwise)."""
    frames: set[int] = set()
    page = os.sysconf("SC_PAGE_SIZE")
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if line.rstrip().endswith("[vsyscall]"):
                continue
            pagemap.seek(start // page * 8)
            data = pagemap.read((end - start) // page * 8)
            for (entry,) in struct.iter_unpack("<Q", data):
                if entry >> 63 and entry & ((1 << 55) - 1):
                    frames.add(entry & ((1 << 55) - 1))
    return frames


def rss(pid: int) -> str:
    """The memory of the server's process tree, in MB. For the server and each child (the analysis
    workers and what starts them): its resident size (RSS), its unique memory (USS: what ending
    it would free) and its proportional share (PSS: its unique pages, plus each page it shares
    divided by the number of processes mapping it). Then the tree's total PSS, what the processes
    together cost the machine (docs/architecture.md: the goal is judged on it), and, as root, the
    tree's resident pages counted once: every page any of them maps, shared or not, counted once
    (what they would take on a machine with no other process: the pages of libc or libpython that
    other programs also map count in full here, and only in part in PSS)."""
    import psutil

    def mb(p: psutil.Process) -> tuple[str, float]:
        full = p.memory_full_info()
        return f"{full.rss / 1e6:.0f} MB (unique {full.uss / 1e6:.0f}, PSS {full.pss / 1e6:.0f})", full.pss

    proc = psutil.Process(pid)
    tree = [proc, *proc.children(recursive=True)]
    text, total = mb(proc)
    parts = [f"server {text}"]
    for c in tree[1:]:
        text, pss = mb(c)
        parts.append(f"child {c.pid} ({c.name()}: {' '.join(c.cmdline()[1:3])}) {text}")
        total += pss
    frames: set[int] = set()
    for p in tree:
        with contextlib.suppress(OSError):
            frames |= resident_pages(p.pid)
    once = f", resident pages counted once {len(frames) * os.sysconf('SC_PAGE_SIZE') / 1e6:.0f} MB" if frames else ""
    return ", ".join(parts) + f"; the tree's PSS {total / 1e6:.0f} MB{once}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def describe(label: str, runs: list[Run], trees: tuple[str, ...]) -> dict[str, float]:
    acc = median([r.load.accepted_per_s for r in runs])
    dlv = median([r.delivered_per_s for r in runs])
    p50 = median([r.load.latency_ms(0.5) for r in runs])
    p99 = median([r.load.latency_ms(0.99) for r in runs])
    per_msg = {t: median([1000 * (r.cpu.get(t) or 0.0) / max(r.load.accepted, 1) for r in runs]) for t in trees}
    errors: Counter[str] = Counter()
    for r in runs:
        errors.update(r.load.errors)
    cpu = "  ".join(f"{t} {v:.2f}" for t, v in per_msg.items())
    print(f"{label:<34} {acc:>9.1f} {dlv:>10.1f} {p50:>8.1f} {p99:>8.1f}   CPU ms/msg: {cpu}")
    print(f"{'':<34} runs (accepted msgs/s): {', '.join(f'{r.load.accepted_per_s:.1f}' for r in runs)}; "
          f"accepted {sum(r.load.accepted for r in runs)}, delivered {sum(r.delivered for r in runs)}, "
          f"errors {sum(errors.values())}{' ' + str(dict(errors)) if errors else ''}")
    return {"accepted": acc, "delivered": dlv}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1000, help="messages per run")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--size", type=int, default=20000, help="message size in octets (about)")
    ap.add_argument("--reps", type=int, default=3, help="runs against each server; the median is reported")
    ap.add_argument("--dir", type=Path, help="scratch directory (default: a new temporary one, removed after)")
    ap.add_argument("--no-peers", action="store_true", help="measure eventmail only")
    ap.add_argument("--settings", default="", help="TOML settings for eventmail's configuration, e.g. 'analysis_workers = 0'")
    ap.add_argument("--profile", type=Path, help="record py-spy samples of the server during its first run into this file")
    ap.add_argument("--pipeline", action="store_true", help="MAIL, RCPT and DATA in one write (RFC 2920), to both servers")
    a = ap.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="smtp-bench-", dir=a.dir)) if a.dir else Path(tempfile.mkdtemp(prefix="smtp-bench-"))
    scratch.chmod(0o755)
    key = make_rsa_key(2048)
    tags = [f"r{rep}-{secrets.token_hex(3)}" for rep in range(a.reps)]
    staged_tag = f"stages-{secrets.token_hex(3)}"
    t0 = time.perf_counter()
    payloads = build_payloads(a.messages, a.size, [*tags, staged_tag], key.private_key)
    avg = statistics.mean(p.size for ps in payloads.values() for p in ps)
    eight = sum(p.eight_bit for p in payloads[tags[0]])
    print(f"SMTP in: {a.messages} messages per run (avg {avg:.0f} octets, {eight} with 8-bit octets, DKIM rsa-sha256 "
          f"signed; prepared in {time.perf_counter() - t0:.1f} s), {a.clients} clients, one message per connection, "
          f"{a.reps} runs each{', pipelined' if a.pipeline else ''}; load average {loadavg()}")

    dns = DnsServer.start(scratch / "dns", {SENDER_DOMAIN: sender_zone(key.txt)})
    server = MailServer(scratch / "eventmail", dns_port=dns.port, settings=a.settings.replace("\\n", "\n") + "\n")
    peers: Peers | None = None
    ours: list[Run] = []
    theirs: list[Run] = []
    try:
        server.init()
        server.add_account("bench", f"bench@{RECIPIENT_DOMAIN}", base64.b64encode(secrets.token_bytes(12)).decode())
        server.start()
        if not a.no_peers:
            try:
                peers = Peers(scratch / "peers", domain=RECIPIENT_DOMAIN).up()
            except PeersUnavailable as e:
                print(f"Postfix -> Dovecot not measured: {e}")
        for rep, tag in enumerate(tags):
            ours.append(run_eventmail(server, dns, payloads[tag], a.clients, a.profile if rep == 0 else None,
                                      pipeline=a.pipeline))
            print(f"  run {rep + 1}: eventmail {ours[-1].load.accepted_per_s:.1f} msgs/s accepted", end="")
            if peers is not None:
                theirs.append(run_postfix(peers, payloads[tag], a.clients, pipeline=a.pipeline))
                print(f", Postfix {theirs[-1].load.accepted_per_s:.1f} accepted / "
                      f"{theirs[-1].delivered_per_s:.1f} delivered to Dovecot", end="")
            print(flush=True)
        assert server.proc is not None
        memory = f"eventmail RSS after {sum(r.load.accepted for r in ours)} deliveries: {rss(server.proc.pid)}"
        # Where the CPU goes, in a run of its own: counting by stage costs the server clock reads,
        # which the runs above (the server as it runs unasked) do not pay.
        staged = run_eventmail(server, dns, payloads[staged_tag], a.clients, stages=True, pipeline=a.pipeline)
        print(f"  run with CPU counted by stage (not in the figures below): eventmail "
              f"{staged.load.accepted_per_s:.1f} msgs/s accepted", flush=True)
        print()
        print(f"{'':<34} {'accepted':>9} {'delivered':>10} {'p50 ms':>8} {'p99 ms':>8}   (msgs/s; latency MAIL..250)")
        mine = describe("eventmail (SPF+DKIM+DMARC, fsync)", ours, ("eventmail", "dns server"))
        if theirs:
            ref = describe("Postfix -> Dovecot LMTP", theirs, ("postfix", "dovecot"))
            print()
            print(f"ratio eventmail / Postfix, accepted msgs/s: {mine['accepted'] / ref['accepted']:.2f}")
            print(f"ratio eventmail / Postfix->Dovecot, delivered msgs/s: {mine['delivered'] / ref['delivered']:.2f}")
        print()
        print(memory)
        delivered = sum(r.load.accepted for r in ours) + staged.load.accepted
        print(f"eventmail RSS after {delivered} deliveries (with the run by stage): {rss(server.proc.pid)}")
        print("check: " + check_stored(server, delivered))
        errors = [line for line in server.log_lines if " ERROR " in line]
        for line in errors[:3]:  # the first few say why; the count says how often
            print("server log: " + line[-1500:])
        if len(errors) > 3:
            print(f"server log: {len(errors)} ERROR lines in all")
        print("eventmail CPU ms/msg by step (one at a time, in this process): "
              + breakdown(scratch / "breakdown", dns, payloads[tags[0]][:200]))
    finally:
        server.stop()
        if peers is not None:
            peers.down()
        dns.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
