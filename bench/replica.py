"""Replication figures on a real pair on loopback: lag at a steady rate, catch-up rate, sync/async throughput.

    python bench/replica.py [--rate 20] [--seconds 10] [--backlog 5000] [--clients 4] [--busy]
        [--rounds 6] [--parts lag,throughput,catchup,initial]

"initial" is the initial sync of a new secondary (an empty data directory) with everything the
primary holds (the catch-up's backlog too when both run); its progress lines are printed.

With --busy, bench/smtp.py (eventmail's MX alone, 10 clients) runs beside the lag measurement, so
the lag is measured on a machine busy with SMTP; the load average is printed with it.

There is no real peer to put beside replication here (no other mail server with log shipping
runs on this machine), so the figures are eventmail's own: async lag, catch-up records/s, and
sync mode's SMTP throughput as a ratio of async mode's on the same pair.
"""

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eventmail import control  # noqa: E402
from eventmail.opening import open_store  # noqa: E402
from eventmail.store import MasterKeySource, load_master_key  # noqa: E402
from tests.replica_pair import Node, caught_up, close_pair, make_pair, wait_until  # noqa: E402


def message(subject: str) -> bytes:
    return (f"From: s@example.test\r\nTo: alice@mail.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@example.test>\r\n\r\n" + "body line\r\n" * 40).encode()


def send(port: int, subject: str) -> float:
    """Deliver one message; the wall-clock time its 250 arrived (before QUIT)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail("s@example.test", ["alice@mail.test"], message(subject))
        return time.time()


def position(node: Node, stream: str = "account/alice") -> int:
    return int(node.positions().get(stream, 0))


def durable(node: Node, since: int, stream: str = "account/alice") -> tuple[int, list[tuple[int, float]]]:
    """The secondary's position, and its positions past `since` that became durable and when
    (its clock; of its last 256)."""
    reply = control.request(node.base / "replica.sock", "replica.status", {"recent_since": since}) or {}
    row = next((r for r in reply.get("streams", []) if r["stream"] == stream), None)
    if row is None:
        return 0, []
    return int(row["position"]), [(int(seq), float(at)) for seq, at in row.get("durable_recent", [])]


def lag(a: Node, b: Node, rate: float, seconds: float, poll: float) -> tuple[list[float], list[float]]:
    """Send at a steady rate; for each 250, the time until the secondary holds that record: as
    its status poller saw it (from the end of the SMTP session, as the first figures of this
    bench), and by the secondary's own clock (from the 250 to the fsync; the same machine's
    clock), which leaves out the poller's own waits for a CPU."""
    seen: list[tuple[float, int]] = []
    became: dict[int, float] = {}  # position -> when it became durable (the secondary's clock)
    stop = threading.Event()

    def watch() -> None:
        last = -1
        while not stop.is_set():
            p, recent = durable(b, max(last, 0))
            if p != last:
                seen.append((time.monotonic(), p))
                last = p
            became.update(recent)
            time.sleep(poll)

    base = position(a)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    acked: list[tuple[float, float, int]] = []
    start = time.monotonic()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        time.sleep(max(0.0, due - time.monotonic()))
        t_250 = send(a.ports["smtp"], f"lag-{i}")
        acked.append((time.monotonic(), t_250, base + i + 1))
    wait_until(lambda: caught_up(b, a), what="the secondary to catch up")
    time.sleep(0.1)
    stop.set()
    watcher.join()
    polled, clocked = [], []
    positions = sorted(became.items())
    for t_ack, t_250, seq in acked:
        first = next((t for t, p in seen if p >= seq), None)
        if first is not None:
            polled.append(max(0.0, first - t_ack))
        # The first position at or past seq that became durable: seq did then (the secondary
        # keeps its last 256, so a poll every few tens of ms misses none at this rate).
        at = next((at for p, at in positions if p >= seq), None)
        if at is not None:
            clocked.append(max(0.0, at - t_250))
    return polled, clocked


def throughput(port: int, clients: int, seconds: float, tag: str) -> float:
    count = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(c: int) -> None:
        i = 0
        while time.monotonic() < stop:
            send(port, f"{tag}-{c}-{i}")
            i += 1
            with lock:
                count[0] += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count[0] / (time.monotonic() - t0)


def alternating_throughput(directory: Path, clients: int, seconds: float, n: int) -> list[tuple[float, float]]:
    """Async and sync pairs up side by side, loaded in turn (`n` rounds, each mode `seconds / n`
    per round, which one goes first alternating): the ratio of two runs minutes apart moved with
    the machine's load as much as with the code. (async, sync) msg/s of each round."""
    pairs = {mode: make_pair(directory / mode, mode=mode, on_timeout="tempfail", sync_timeout=10.0)
             for mode in ("async", "sync")}
    try:
        for a, b in pairs.values():
            a.start()
            b.start()
        for a, b in pairs.values():
            wait_until(lambda a=a, b=b: caught_up(b, a), what="initial catch-up")
        for mode, (a, _) in pairs.items():  # untimed: each server's first deliveries open its account
            throughput(a.ports["smtp"], clients, 1.0, f"{mode}-warm")
        out = []
        for r in range(n):
            rates: dict[str, float] = {}
            for mode in ("async", "sync") if r % 2 == 0 else ("sync", "async"):
                rates[mode] = throughput(pairs[mode][0].ports["smtp"], clients, seconds / n, f"{mode}{r}")
            out.append((rates["async"], rates["sync"]))
        return out
    finally:
        for a, b in pairs.values():
            close_pair(a, b)


async def backlog(directory: Path, key_file: Path, n: int) -> None:
    """Append `n` deliveries to the stopped primary directly (group-committed, 50 at a time)."""
    store = await open_store(directory, load_master_key(directory, MasterKeySource(key_file=key_file)))
    try:
        async with store.use_account("alice") as acct:
            for i in range(0, n, 50):
                await asyncio.gather(*(acct.add_message("INBOX", message(f"backlog-{j}")) for j in range(i, min(n, i + 50))))
    finally:
        await store.close()


def cpu(node: Node) -> float:
    """User and system CPU seconds of a node's server process so far (its worker process's,
    eventmail.store.reader, included while it runs)."""
    assert node.proc is not None
    return sum(own_cpu(p) for p in [psutil.Process(node.proc.pid), *children(node)])


def children(node: Node) -> list[psutil.Process]:
    assert node.proc is not None
    try:
        return list(psutil.Process(node.proc.pid).children(recursive=True))
    except psutil.Error:
        return []


def own_cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def profile(node: Node, out: str) -> subprocess.Popen[bytes]:
    """py-spy recording the node's server process (and its children) until it gets SIGINT."""
    assert node.proc is not None
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--pid", str(node.proc.pid), "--subprocesses", "-r", "200",
                             "--threads", "-f", "raw", "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class SmtpBench:
    """bench/smtp.py as a background load (its own process group, ended by its id)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            # It signs every message of every run before it starts its server: 3 runs of 400
            # messages keep its server busy well beyond the lag measurement.
            [sys.executable, str(ROOT / "bench" / "smtp.py"), "--no-peers", "--messages", "400", "--reps", "3"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )

    def running(self) -> bool:
        """Whether the bench's own server has started and takes load (uses CPU)."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
            return any("serve" in c.cmdline() for c in children) and sum(
                c.cpu_percent(interval=0.5) for c in children) > 20
        except psutil.Error:
            return False

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=20.0, help="deliveries per second for the lag figure")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--backlog", type=int, default=5000, help="records the secondary catches up on")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=6, help="alternating async/sync rounds of the throughput part")
    ap.add_argument("--poll-ms", type=float, default=2.0,
                    help="the lag part's pause between two status requests to the secondary (each costs its loop)")
    ap.add_argument("--busy", action="store_true", help="run bench/smtp.py beside the lag measurement")
    ap.add_argument("--parts", default="lag,throughput,catchup,initial",
                    help="comma-separated subset of lag, throughput, catchup, initial")
    ap.add_argument("--profile", metavar="FILE",
                    help="py-spy (raw, 200 Hz, with native frames' idle left out) on the secondary during the catch-up")
    ap.add_argument("--profile-primary", metavar="FILE",
                    help="py-spy likewise on the primary (the leader reading and shipping) during the catch-up")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    load_at_start = os.getloadavg()[0]
    progress: list[str] = []
    with tempfile.TemporaryDirectory(prefix="eventmail-bench-replica-") as tmp:
        results: dict[str, float] = {}
        rounds: list[tuple[float, float]] = []
        if "throughput" in parts:
            rounds = alternating_throughput(Path(tmp) / "throughput", args.clients, args.seconds, args.rounds)
            results["async_msgs_per_s"] = statistics.fmean(r[0] for r in rounds)
            results["sync_msgs_per_s"] = statistics.fmean(r[1] for r in rounds)
        for mode in ("async",) if parts & {"lag", "catchup", "initial"} else ():
            a, b = make_pair(Path(tmp) / mode, mode=mode, on_timeout="tempfail", sync_timeout=10.0)
            a.start()
            b.start()
            try:
                wait_until(lambda a=a, b=b: caught_up(b, a), what="initial catch-up")  # type: ignore[misc]
                if mode == "async" and "lag" in parts:
                    load = SmtpBench() if args.busy else None
                    try:
                        if load is not None:
                            wait_until(load.running, timeout=600, what="the SMTP bench to take load")
                        load_before = os.getloadavg()[0]
                        lags, clocked = lag(a, b, args.rate, args.seconds, args.poll_ms / 1000)
                        results["load"] = max(load_before, os.getloadavg()[0])
                    finally:
                        if load is not None:
                            load.close()
                    results["lag_p50_ms"] = statistics.median(lags) * 1000
                    results["lag_p99_ms"] = pct(lags, 99) * 1000
                    results["lag_n"] = len(lags)
                    results["lag_clock_p50_ms"] = statistics.median(clocked) * 1000
                    results["lag_clock_p99_ms"] = pct(clocked, 99) * 1000
                if mode == "async" and "catchup" in parts:
                    b.stop()
                    a.stop()
                    asyncio.run(backlog(a.directory, a.key_file, args.backlog))
                    a.ports.clear()
                    b.ports.clear()
                    a.start()
                    t0 = time.monotonic()
                    b.start()
                    t1 = time.monotonic()  # the secondary's process is up; from here on it catches up
                    cpu0 = {n.name: cpu(n) for n in (a, b)}
                    spy = profile(b, args.profile) if args.profile else None
                    spy_a = profile(a, args.profile_primary) if args.profile_primary else None
                    wait_until(lambda a=a, b=b: caught_up(b, a), timeout=600, what="catch-up")  # type: ignore[misc]
                    done = time.monotonic()
                    for s in (spy, spy_a):
                        if s is not None:
                            s.send_signal(signal.SIGINT)
                            s.wait(30)
                    results["catchup_cpu_a"] = cpu(a) - cpu0[a.name]
                    results["catchup_cpu_b"] = cpu(b) - cpu0[b.name]
                    results["catchup_cpu_b_worker"] = sum(own_cpu(p) for p in children(b))
                    results["catchup_s"] = done - t1
                    results["catchup_with_start_s"] = done - t0
                    results["catchup_records_per_s"] = args.backlog / (done - t1)
                    if os.environ.get("BENCH_TIMING"):
                        print("\n".join(line for line in b.log_lines if "TIMING" in line))
                if mode == "async" and "initial" in parts:
                    # A new secondary: its data directory is gone; it fetches the keyring and
                    # then every stream from the first record.
                    b.stop()
                    shutil.rmtree(b.directory)
                    b.ports.clear()
                    records = sum(int(r["position"]) for r in a.status()["streams"] if r["role"] == "writer")
                    mark = len(b.log_lines)
                    b.start()
                    t1 = time.monotonic()
                    cpu0b = cpu(b)
                    wait_until(lambda a=a, b=b: caught_up(b, a), timeout=900, what="initial sync")  # type: ignore[misc]
                    done = time.monotonic()
                    results["initial_records"] = records
                    results["initial_s"] = done - t1
                    results["initial_cpu_b"] = cpu(b) - cpu0b
                    results["initial_cpu_b_worker"] = sum(own_cpu(p) for p in children(b))
                    time.sleep(1.5)  # the leader's next heartbeat ends the catch-up: its last line
                    progress = [line for line in b.log_lines[mark:] if "catching up with" in line or "caught up with" in line]
            finally:
                close_pair(a, b)
    print("replication on loopback, two `eventmail serve` processes, mutual TLS, 2-core machine; "
          f"load average {load_at_start:.1f} at the start")
    if "lag" in parts:
        print(f"async lag at {args.rate:.0f} deliveries/s over {args.seconds:.0f} s ({results['lag_n']:.0f} messages): "
          f"p50 {results['lag_p50_ms']:.1f} ms, p99 {results['lag_p99_ms']:.1f} ms (250 to record durable on the secondary)"
          f"{', beside bench/smtp.py' if args.busy else ''}; load average {results['load']:.1f}")
        print(f"    by the secondary's clock (250 to its fsync, without the poller's delay): "
              f"p50 {results['lag_clock_p50_ms']:.1f} ms, p99 {results['lag_clock_p99_ms']:.1f} ms; status polled every {args.poll_ms:g} ms")
    if "catchup" in parts:
        print(f"catch-up: {args.backlog} records (each a delivery with its blob) in {results['catchup_s']:.1f} s "
          f"= {results['catchup_records_per_s']:.0f} records/s once the secondary runs "
          f"({results['catchup_with_start_s']:.1f} s including its start); CPU: secondary "
          f"{results['catchup_cpu_b']:.2f} s ({args.backlog / results['catchup_cpu_b']:.0f} records per core-second; "
          f"of it {results['catchup_cpu_b_worker']:.2f} s in its worker process), "
          f"primary {results['catchup_cpu_a']:.2f} s (user+system, polled every 0.2 s)")
    if "initial" in parts:
        print(f"initial sync of a new secondary: {results['initial_records']:.0f} records (every stream; the "
              f"account's each a delivery with its blob) in {results['initial_s']:.1f} s = "
              f"{results['initial_records'] / results['initial_s']:.0f} records/s once its process runs; CPU: secondary "
              f"{results['initial_cpu_b']:.2f} s (of it {results['initial_cpu_b_worker']:.2f} s in its worker process); "
              "its progress lines:")
        for line in progress:
            print("    " + line.strip())
    if "throughput" in parts:
        ratio = results["sync_msgs_per_s"] / results["async_msgs_per_s"]
        print(f"SMTP throughput, {args.clients} clients: async {results['async_msgs_per_s']:.1f} msg/s, "
          f"sync {results['sync_msgs_per_s']:.1f} msg/s, sync/async = {ratio:.2f} "
          f"({len(rounds)} alternating rounds of {args.seconds / len(rounds):.1f} s each; ratio by round: "
          f"{', '.join(f'{s / a:.2f}' for a, s in rounds)}, median {statistics.median(s / a for a, s in rounds):.2f})")


if __name__ == "__main__":
    main()
