"""Outbound benchmark: messages/s from submission to acceptance by a Postfix sink found by MX lookup, eventmail beside Postfix→Postfix, as a ratio.

    python bench/outbound.py [--messages 200] [--clients 4] [--size 4000] [--timeout 120]
                             [--eventmail-config TOML] [--eventmail-smarthost] [--only postfix|eventmail]

Everything runs in the remote-MX bed (tests/remote_mx.py): a private network namespace whose
only resolver is the bed's validating unbound on 127.0.0.1:53 serving the signed zone
`remote.test` (MX mx.remote.test, ::1 and 127.0.0.10, TLSA 3 1 1 of the sink's certificate).
The sink is the bed's Postfix: the MX of remote.test on port 25, STARTTLS, delivering to a maildir.
A message counts when it is in the sink's maildir; the rate is the message count over the time
from the first submission to the last arrival. Both halves get the same load, in turn:

- eventmail: `eventmail serve` (own process, inside the namespace) with the config the bench
  writes: submission on 127.0.0.1 (STARTTLS, AUTH PLAIN as alice@client.test), and
  `[resolver] nameservers = ["127.0.0.1"], port = 53`, so a server that delivers by MX asks the
  bed's unbound and never the system resolver. What `serve` does with the mail is whatever that
  config makes it do: while the queue does not deliver by MX, nothing arrives and the half reports
  that instead of a rate. `--eventmail-config` appends TOML (a key the queue needs);
  `--eventmail-smarthost` relays to the sink as a smarthost (`smarthost = "mx.remote.test:25"`,
  no MX lookup, the name resolved by the namespace's resolv.conf, i.e. the bed's unbound, and the
  certificate verified against the bed's CA through SSL_CERT_FILE): main's relay path, labelled so.
- Postfix→Postfix: the bed's relay Postfix (relay.client.test, 127.0.0.3:10025), which finds the
  sink by MX lookup through the same unbound (`smtp_dns_support_level = dnssec`,
  `smtp_tls_security_level = dane`: DANE-verified TLS). Submission is STARTTLS without AUTH
  (relay permitted from 127.0.0.0/8): Postfix's AUTH needs a SASL backend (Dovecot or Cyrus),
  which the bed does not run.

The load: --clients threads (inside the namespace), messages of about --size bytes, by default one
per connection as a mail client submits: EHLO, STARTTLS, EHLO, [AUTH PLAIN,] MAIL, RCPT, DATA,
QUIT (`--per-connection N` sends N per session, so eventmail's AUTH, a password hash check, is paid
once per N messages).
CPU is core-ms per message of each process tree during the run (bench/smtp_cpu.py): the sending
server (eventmail's process, or the relay Postfix's master and its workers), the sink Postfix,
and unbound. Needs root and the Debian packages of the bed (tests/remote_mx.py). Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import smtplib
import ssl
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

from smtp_cpu import CpuWindow, loadavg  # noqa: E402

from tests.mailserver import MailServer  # noqa: E402
from tests.remote_mx import RELAY, RELAY_PORT, Bed, RemoteMx, unavailable  # noqa: E402

SENDER = "alice@client.test"
PASSWORD = "outbound bench password"
RCPT = f"bench@{Bed.GOOD.domain}"
HOSTNAME = "mail.client.test"


def payload(seq: int, size: int, run: str) -> bytes:
    head = (f"From: Alice <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: outbound bench {seq}\r\n"
            f"Message-ID: <{run}.{seq}@client.test>\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n"
            f"X-Bench-Run: {run}\r\nX-Bench-Seq: {seq}\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, for the outbound benchmark.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


@dataclass
class Load:
    submitted: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    first: float = 0.0
    last_submit: float = 0.0


def submit_load(port: int, auth: bool, messages: list[bytes], clients: int, per_connection: int) -> Load:
    """Submit every message once, `clients` at a time, `per_connection` per session (run inside the bed)."""
    load = Load()
    lock = threading.Lock()
    batches = iter([messages[i : i + per_connection] for i in range(0, len(messages), per_connection)])
    go = threading.Event()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the bed's and eventmail's test certificates

    def worker() -> None:
        go.wait()
        while True:
            with lock:
                batch = next(batches, None)
            if batch is None:
                return
            try:
                with smtplib.SMTP("127.0.0.1" if auth else RELAY, port, local_hostname="client.test",
                                  timeout=60) as s:
                    s.starttls(context=ctx)
                    if auth:
                        s.login(SENDER, PASSWORD)
                    for msg in batch:
                        s.sendmail(SENDER, [RCPT], msg)
                        with lock:
                            load.submitted += 1
                            load.last_submit = max(load.last_submit, time.perf_counter())
            except (smtplib.SMTPException, OSError) as exc:
                with lock:
                    load.errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    load.first = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    return load


@dataclass
class Half:
    label: str
    load: Load
    arrived: int
    seconds: float  # first submission to last arrival
    cpu: dict[str, float | None]
    note: str = ""

    def per_s(self) -> float:
        return self.arrived / self.seconds if self.arrived else 0.0

    def core_ms(self, tree: str) -> float | None:
        v = self.cpu.get(tree)
        return None if v is None or not self.arrived else 1000 * v / self.arrived


def run_half(bed: RemoteMx, label: str, sender_tree: tuple[str, int], port: int, auth: bool,
             args: argparse.Namespace) -> Half:
    count, size, clients, timeout = args.messages, args.size, args.clients, args.timeout
    run = f"{label.split()[0]}-{time.time_ns()}"
    messages = [payload(i, size, run) for i in range(count)]
    mx_master = bed.master_pid(bed.postfix[0])
    assert mx_master is not None and bed.unbound is not None
    trees = {"sender": sender_tree[1], "sink postfix": mx_master, "unbound": bed.unbound.pid}
    before = bed.count()
    cpu = CpuWindow(trees).start()
    load = bed.call(submit_load, port, auth, messages, clients, args.per_connection)
    deadline = time.monotonic() + timeout
    arrived, last_change, last_count = 0, time.perf_counter(), before
    while time.monotonic() < deadline:
        n = bed.count()
        if n != last_count:
            last_count, last_change = n, time.perf_counter()
        arrived = n - before
        if arrived >= load.submitted:
            break
        time.sleep(0.02)
    cpu.settle()
    cpu.stop()
    note = ""
    if arrived < load.submitted:
        note = f"only {arrived} of {load.submitted} submitted messages reached the sink within {timeout:.0f} s"
    return Half(label, load, arrived, max(last_change - load.first, 1e-9), cpu.result, note)


def eventmail_server(bed: RemoteMx, base: Path, extra_config: str, smarthost: bool) -> MailServer:
    srv = bed.mail_server(base, hostname=HOSTNAME, kinds=("smtp", "submission"), extra_config=extra_config,
                          smarthost=f"{Bed.GOOD.host}:25" if smarthost else None)
    srv.add_account("alice", SENDER, PASSWORD)
    return srv.start()


def describe(h: Half) -> dict[str, object]:
    return {
        "label": h.label, "submitted": h.load.submitted, "arrived": h.arrived,
        "msgs_per_s": round(h.per_s(), 1), "seconds": round(h.seconds, 3),
        "core_ms_per_msg": {k: (None if h.core_ms(k) is None else round(h.core_ms(k) or 0.0, 2)) for k in h.cpu},
        "errors": dict(h.load.errors), "note": h.note,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--size", type=int, default=4000)
    ap.add_argument("--per-connection", type=int, default=1,
                    help="messages per session (eventmail's AUTH, an Argon2id check, is paid once per session)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for arrivals after submission")
    ap.add_argument("--eventmail-config", default="", help="TOML appended to eventmail's config")
    ap.add_argument("--eventmail-smarthost", action="store_true",
                    help="relay to the sink as a smarthost (no MX lookup), as main's relay path does")
    ap.add_argument("--only", choices=("postfix", "eventmail"))
    args = ap.parse_args()
    reason = unavailable()
    if reason:
        print(f"outbound bench skipped: {reason}")
        return 0
    base = Path(tempfile.mkdtemp(prefix="eventmail-bench-outbound-"))
    base.chmod(0o755)  # Postfix's daemons (user postfix) must reach the bed below it
    print(f"load: {args.messages} messages of ~{args.size} B, {args.clients} clients, {args.per_connection} per "
          f"connection; "
          f"loadavg {loadavg()}")
    halves: list[Half] = []
    try:
        with RemoteMx.start(base / "bed", relay=True) as bed:
            if args.only != "eventmail":
                relay_master = bed.master_pid(bed.postfix[1]) if len(bed.postfix) > 1 else None
                assert relay_master is not None
                halves.append(run_half(bed, "postfix→postfix (MX lookup, DANE)", ("relay", relay_master),
                                       RELAY_PORT, False, args))
                verified = bed.relay_log().count("Verified TLS connection established to mx.remote.test")
                print(f"relay postfix: {verified} DANE-verified connections to the sink")
            if args.only != "postfix":
                srv = eventmail_server(bed, base, args.eventmail_config, args.eventmail_smarthost)
                try:
                    assert srv.proc is not None
                    label = "eventmail (smarthost, no MX lookup)" if args.eventmail_smarthost else "eventmail (serve as configured)"
                    half = run_half(bed, label, ("eventmail", srv.proc.pid), srv.ports["submission"], True, args)
                    halves.append(half)
                    if half.arrived < half.load.submitted:
                        odd = [line for line in srv.log_lines if " deferred " in line or " failed " in line
                               or "ERROR" in line or ("WARNING" in line and "running as root" not in line)]
                        print("eventmail's deferrals, failures and warnings:\n    " + "\n    ".join(odd[:10] or ["(none)"]))
                finally:
                    srv.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'':38} {'arrived':>8} {'msgs/s':>8} {'sender':>10} {'sink':>10} {'unbound':>10}   (core-ms per message)")
    for h in halves:
        cm = [h.core_ms(k) for k in ("sender", "sink postfix", "unbound")]
        cells = " ".join(f"{'-' if v is None else f'{v:.2f}':>10}" for v in cm)
        print(f"{h.label:38} {h.arrived:>8} {h.per_s():>8.1f} {cells}")
        if h.note or h.load.errors:
            print(f"    {h.note} {dict(h.load.errors) if h.load.errors else ''}".rstrip())
    if len(halves) == 2 and halves[0].arrived and halves[1].arrived:
        pf, em = halves
        sender_pf, sender_em = pf.core_ms("sender"), em.core_ms("sender")
        cpu_ratio = f"{sender_em / sender_pf:.2f}" if sender_pf and sender_em else "-"
        print(f"ratio eventmail/postfix: msgs/s {em.per_s() / pf.per_s():.2f}, sender core-ms per message {cpu_ratio}")
    elif len(halves) == 2:
        print("ratio: not available (one half delivered nothing)")
    print(json.dumps({"outbound": [describe(h) for h in halves]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
