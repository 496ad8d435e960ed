"""Chaos scenarios (a)-(g) on a real primary/secondary pair on loopback; prints the table of results.

    python -m chaos.run --trials N [--mode sync|async|both] [--scenarios abcdefg]

Every message that got a 250 from either node must end up in the primary exactly once; after
healing, both nodes' stream heads must agree and `eventmail verify` must pass on both.
"""

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chaos.proxy import Proxy  # noqa: E402
from tests.dns_fixture import zone_text  # noqa: E402
from tests.mailserver import free_port  # noqa: E402
from tests.replica_pair import Node, caught_up, close_pair, make_pair  # noqa: E402

SCENARIOS = {
    "a": "SIGKILL primary under load",
    "b": "SIGKILL secondary, catch up",
    "c": "link cut (drop/delay/black-hole)",
    "d": "promote while old primary cut off",
    "e": "secondary disk full",
    "f": "primary dies, promote, mail on new",
    "g": "queue: primary dies while sending",
}
# Scenario (f): messages sent straight to the promoted node, each answered 250 or counted refused.
DIRECT_AFTER_PROMOTION = 10
CLIENTS = 4
SETTLE_TIMEOUT = 60.0
# How much longer a message not on the primary when its trial settled is waited for (with the
# pair kept running) before it counts as lost: a loaded machine can stretch a restart and the
# hand-off of what the backup MX took meanwhile past SETTLE_TIMEOUT. Found then, it is "late".
LATE_TIMEOUT = 180.0
# The bound of one trial (its waits are bounded one by one; this bounds their sum and anything
# unforeseen). A trial that overruns is a failure; the pair is torn down (which ends every wait
# on its processes) and the next trial gets a fresh one.
TRIAL_TIMEOUT = float(os.environ.get("CHAOS_TRIAL_TIMEOUT", "300"))
_ids = itertools.count(1)


@dataclass
class Result:
    scenario: str
    mode: str
    trials: int = 0
    accepted: int = 0
    lost: int = 0
    duplicated: int = 0
    failures: list[str] = field(default_factory=list)
    catchup: list[float] = field(default_factory=list)
    takeover: list[float] = field(default_factory=list)
    refused: int = 0  # (f): messages the promoted node refused after its promotion
    resent: int = 0  # (g): recipients sent again although a delivery was recorded (the fence failed)
    # Accepted messages a trial did not find on the primary when it settled; counted late or
    # lost when the pair is about to go (`_settle_late`).
    unsettled: set[str] = field(default_factory=set)
    late: int = 0
    # Trials whose heads differed while some of their messages were still on the way: checked
    # again with those (`_settle_late`).
    heads_pending: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # wall time of each trial

    def merge(self, other: "Result") -> None:
        self.trials += other.trials
        self.accepted += other.accepted
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.failures += other.failures
        self.catchup += other.catchup
        self.takeover += other.takeover
        self.refused += other.refused
        self.resent += other.resent
        self.unsettled |= other.unsettled
        self.late += other.late
        self.heads_pending += other.heads_pending


class Load:
    """SMTP clients behaving like MTAs: try the lowest-preference MX, then the backup; retry the
    same message a few times. A message is accepted at its first 250."""

    def __init__(self, mx: list[Node], tag: str) -> None:
        self.mx = mx
        self.tag = tag
        self.accepted: set[str] = set()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)]

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _client(self, i: int) -> None:
        while not self.stop.is_set():
            subject = f"{self.tag}-c{i}-{next(_ids)}"
            msg = (f"From: s@example.test\r\nTo: alice@mail.test\r\nSubject: {subject}\r\n"
                   f"Message-ID: <{subject}@example.test>\r\n\r\nbody {subject}\r\n").encode()
            for _attempt in range(3):
                if self._send_once(msg):
                    self.accepted.add(subject)
                    break
                if self.stop.wait(0.2):
                    break

    def _send_once(self, msg: bytes) -> bool:
        for node in self.mx:
            port = node.ports.get("smtp")
            if not port:
                continue
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                    s.sendmail("s@example.test", ["alice@mail.test"], msg)
                return True
            except (OSError, smtplib.SMTPException):
                continue
        return False


class Pair:
    """Two nodes whose replication links run through proxies; `primary` tracks promotions."""

    def __init__(self, base: Path, mode: str, small_disk: bool = False, sink: "Sink | None" = None) -> None:
        self.base = base
        zones = {"remote.test": zone_text("remote.test", ["@ MX 10 mx", "mx A 127.0.0.1"])} if sink else None
        self.a, self.b = make_pair(base, mode=mode, on_timeout="tempfail", sync_timeout=1.0, zones=zones)
        if sink is not None:  # both nodes deliver the queue to the sink, found by MX lookup
            for n in (self.a, self.b):
                # 20 trials submit some 2,000 messages from one account: above Mox's 1,000 a day
                # (the default), after which every submission is refused, as it should be.
                n.extra_config += f"[queue]\nfirst_retry = 1\nmx_port = {sink.port}\nmessages_per_day = 1000000\n"
        self.to_a = Proxy(self.a.repl_port)  # b's follower reaches a through this
        self.to_b = Proxy(self.b.repl_port)
        self.a.peer_address = self.to_b.address
        self.b.peer_address = self.to_a.address
        self.mount: Path | None = None
        if small_disk:
            self.mount = self.b.base / "data"
            self.mount.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(self.mount)], check=True)
        self.primary, self.secondary = self.a, self.b
        self.a.start()
        self.b.start()

    def cut(self, mode: str, delay: float = 0.0) -> None:
        self.to_a.set(mode, delay)
        self.to_b.set(mode, delay)

    def heal(self) -> None:
        self.cut("pass")

    def close(self) -> None:
        close_pair(self.a, self.b)
        self.to_a.close()
        self.to_b.close()
        if self.mount is not None:
            subprocess.run(["umount", "-l", str(self.mount)], check=False)

    def restart(self, node: Node, kill: bool) -> None:
        if kill:
            node.kill()
        else:
            node.stop()
        node.ports.clear()

    def count(self, subjects: set[str]) -> dict[str, int]:
        bodies = self.primary.messages("alice") + self.primary.messages("alice", "Junk")
        found: dict[str, int] = dict.fromkeys(subjects, 0)
        for m in bodies:
            start = m.find(b"\r\nSubject: ")
            if start < 0:
                continue
            subject = m[start + 11 : m.index(b"\r\n", start + 11)].decode()
            if subject in found:
                found[subject] += 1
        return found

    def catch_up(self, healed: float) -> float:
        """Seconds from `healed` until the secondary follows the primary's epoch (a former primary
        has handed over its tail) and holds every record the primary held at that moment."""
        deadline = healed + SETTLE_TIMEOUT
        target: dict[str, int] | None = None
        while time.monotonic() < deadline:
            try:
                if target is None:
                    ps = self.primary.status()
                    target = {r["stream"]: r["position"] for r in ps["streams"] if r["role"] == "writer"}
                ss = self.secondary.status()
                if (ss["epoch"] == self.primary.status()["epoch"] and not ss["rejoining"] and ss["we_follow_peer"]
                        and all(self.secondary.positions().get(k, 0) >= v for k, v in target.items()
                                if not k.startswith("handoff/"))):
                    return time.monotonic() - healed
            except OSError:
                pass  # a node still starting: its control socket is not there yet
            time.sleep(0.05)
        return float("nan")

    def settle(self, subjects: set[str]) -> tuple[dict[str, int], bool]:
        """Wait until the secondary has caught up and every accepted message is on the primary;
        then whether the heads agree (`eventmail verify` on both nodes)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            if caught_up(self.secondary, self.primary):
                counts = self.count(subjects)
                if all(counts.values()) and self.heads_agree():
                    return counts, True
            time.sleep(0.5)
        return (counts or self.count(subjects)), self.heads_agree()

    def heads_agree(self) -> bool:
        return self.a.heads() == self.b.heads()


def _pause(lo: float, hi: float, rng: random.Random) -> None:
    time.sleep(rng.uniform(lo, hi))


def trial(pair: Pair, scenario: str, rng: random.Random, tag: str, res: Result) -> None:
    takeover: float | None = None
    with Load([pair.a, pair.b], tag) as load:
        _pause(0.5, 1.5, rng)
        if scenario == "a":
            pair.restart(pair.primary, kill=True)
            _pause(0.3, 1.0, rng)
            pair.primary.start()
        elif scenario == "b":
            pair.restart(pair.secondary, kill=True)
            _pause(0.5, 2.0, rng)
            pair.secondary.start()
        elif scenario == "c":
            how = rng.choice(["drop", "delay", "blackhole"])
            pair.cut(how, delay=0.2)
            _pause(1.0, 3.0, rng)
            pair.heal()
        elif scenario == "d":
            pair.cut("drop")
            _pause(0.2, 0.8, rng)
            t0 = time.monotonic()
            pair.secondary.replica("promote")
            # Takeover time: from the promote command to the new primary's first 250 for mail
            # sent to it directly (in sync mode that needs a follower again: see docs).
            taken: list[float] = []
            direct = threading.Thread(target=_send_direct, args=(pair.secondary, f"{tag}-direct", load, t0, taken))
            direct.start()
            pair.primary, pair.secondary = pair.secondary, pair.primary
            _pause(1.0, 2.0, rng)  # the cut-off old primary keeps receiving mail meanwhile
            pair.heal()
            direct.join(40)
            takeover = taken[0] if taken else float("nan")
        elif scenario == "f":
            # The shipped story: the primary dies for good, the operator promotes the secondary,
            # and mail (SMTP in, and reading it back) must work on it at once.
            dead = pair.primary
            pair.restart(dead, kill=True)
            t0 = time.monotonic()
            pair.secondary.replica("promote")
            pair.primary, pair.secondary = pair.secondary, dead
            subjects = [f"{tag}-direct{i}" for i in range(DIRECT_AFTER_PROMOTION)]
            for subject in subjects:
                taken = []
                _send_direct(pair.primary, subject, load, t0, taken, deadline=5)
                if taken:
                    takeover = taken[0] if takeover is None else takeover
                else:
                    res.refused += 1
            readable = pair.count({s for s in subjects if s in load.accepted})
            res.refused += sum(1 for c in readable.values() if c != 1)
            _pause(0.5, 1.5, rng)  # the promoted node alone, under the load
            dead.start()  # the old primary returns, sees the newer epoch and rejoins
        elif scenario == "e":
            filler = _fill(pair)
            _pause(1.0, 2.5, rng)
            filler.unlink()
        catchup = pair.catch_up(time.monotonic())  # under continuing load
        _pause(0.3, 0.8, rng)
    try:
        counts, agreed = pair.settle(load.accepted)
    except AssertionError as e:
        res.failures.append(f"{tag}: verify failed: {e}")
        counts, agreed = pair.count(load.accepted), True
    res.trials += 1
    res.accepted += len(load.accepted)
    if not load.accepted:  # no node took mail for the whole trial: refused, not a trial of the takeover
        res.failures.append(f"{tag}: no message accepted")
    res.unsettled |= {s for s, c in counts.items() if c == 0}
    res.duplicated += sum(1 for c in counts.values() if c > 1)
    res.catchup.append(catchup)
    if takeover is not None:
        res.takeover.append(takeover)
    if not agreed and res.unsettled:
        res.heads_pending.append(tag)  # still settling: the heads are compared again with the late ones
    elif not agreed:
        res.failures.append(f"{tag}: stream heads differ after healing")


def _settle_late(pair: "Pair", res: Result) -> None:
    """Count the unsettled messages of the trials on `pair`: those the primary holds within
    LATE_TIMEOUT are late, the others lost; and compare the nodes' heads again for the trials
    that ended unsettled with heads that differed."""
    missing = set(res.unsettled)
    deadline = time.monotonic() + LATE_TIMEOUT
    while missing and time.monotonic() < deadline:
        try:
            counts = pair.count(missing)
        except Exception:  # a node that cannot be read now may be readable in a second
            counts = {}
        missing = {s for s in missing if counts.get(s, 0) == 0}
        if missing:
            time.sleep(1.0)
    res.late += len(res.unsettled) - len(missing)
    res.lost += len(missing)
    res.unsettled.clear()
    def agree() -> bool:
        try:
            return pair.heads_agree()
        except Exception:  # a node that cannot be read now may be readable in a second
            return False

    while res.heads_pending and not agree() and time.monotonic() < deadline:
        time.sleep(1.0)
    if res.heads_pending and not agree():
        res.failures += [f"{tag}: stream heads differ after healing" for tag in res.heads_pending]
    res.heads_pending.clear()


def _send_direct(node: Node, subject: str, load: Load, t0: float, taken: list[float], deadline: float = 30) -> None:
    msg = (f"From: s@example.test\r\nTo: alice@mail.test\r\nSubject: {subject}\r\n"
           f"Message-ID: <{subject}@example.test>\r\n\r\ntakeover\r\n").encode()
    deadline = time.monotonic() + deadline
    while time.monotonic() < deadline:
        try:
            with smtplib.SMTP("127.0.0.1", node.ports["smtp"], timeout=10) as s:
                s.sendmail("s@example.test", ["alice@mail.test"], msg)
            load.accepted.add(subject)
            taken.append(time.monotonic() - t0)
            return
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)


def _fill(pair: Pair) -> Path:
    assert pair.mount is not None, "scenario e needs the small filesystem"
    filler = pair.mount / "filler"
    chunk = b"\0" * (1 << 20)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # Unbuffered writes until the filesystem refuses: then it is full to the last block.
        while True:
            try:
                if os.write(fd, chunk) == 0:
                    break
            except OSError:
                if len(chunk) <= 512:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return filler


# ---------------------------------------------------------------- scenario (g): the queue across a takeover


class Sink:
    """The far side of the Internet: an SMTP server (aiosmtpd) that keeps every message it accepts,
    a second copy of one included: the count is what the queue sent, not what an MTA kept."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.received: list[bytes] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.received.append(envelope.original_content)  # type: ignore[attr-defined]
        return "250 2.0.0 kept"

    def close(self) -> None:
        self.controller.stop()

    def count(self, subjects: set[str]) -> dict[str, int]:
        found = dict.fromkeys(subjects, 0)
        for m in list(self.received):
            start = m.find(b"\r\nSubject: ")
            if start >= 0:
                subject = m[start + 11 : m.index(b"\r\n", start + 11)].decode()
                if subject in found:
                    found[subject] += 1
        return found


class SubmitLoad(Load):
    """Mail clients submitting to a remote recipient on whichever node is the primary now (AUTH
    over STARTTLS); a message is accepted at its first 250."""

    def __init__(self, pair: "Pair", tag: str) -> None:
        super().__init__([], tag)
        self.pair = pair

    def _send_once(self, msg: bytes) -> bool:
        node = self.pair.primary
        port = node.ports.get("submission")
        if not port:
            return False
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                s.starttls(context=ctx)
                s.login("alice", "pw-alice-123")
                s.sendmail("alice@mail.test", ["bob@remote.test"], msg.replace(b"To: alice@mail.test", b"To: bob@remote.test")
                           .replace(b"From: s@example.test", b"From: alice@mail.test"))
            return True
        except (OSError, smtplib.SMTPException):
            return False


def queue_trial(pair: "Pair", sink: Sink, rng: random.Random, tag: str, res: Result) -> None:
    """(g): the primary is killed while its queue delivers, the secondary promoted; every submitted
    message must reach the remote MX, and the count of second copies is what the takeover cost."""
    with SubmitLoad(pair, tag) as load:
        _pause(0.5, 1.5, rng)
        dead = pair.primary
        pair.restart(dead, kill=True)
        t0 = time.monotonic()
        pair.secondary.replica("promote")
        pair.primary, pair.secondary = pair.secondary, dead
        _pause(1.0, 2.0, rng)
        takeover = time.monotonic() - t0
        dead.start()
        catchup = pair.catch_up(time.monotonic())
        _pause(0.3, 0.8, rng)
    deadline = time.monotonic() + SETTLE_TIMEOUT
    counts = sink.count(load.accepted)
    while time.monotonic() < deadline and not all(counts.values()):
        time.sleep(0.5)
        counts = sink.count(load.accepted)
    res.trials += 1
    res.accepted += len(load.accepted)
    if not load.accepted:  # no node took mail for the whole trial: refused, not a trial of the takeover
        res.failures.append(f"{tag}: no message accepted")
    res.lost += sum(1 for c in counts.values() if c == 0)
    res.duplicated += sum(1 for c in counts.values() if c > 1)
    res.catchup.append(catchup)
    res.takeover.append(takeover)
    if not pair.settle(set())[1]:
        res.failures.append(f"{tag}: stream heads differ after healing")
    # The fence: a recipient whose delivery was recorded is never tried again. A second copy at
    # the sink is a try that was in flight when the primary died (its 250 came, its record did
    # not): in doubt, so tried again, as every MTA does (RFC 1047).
    delivered: dict[str, int] = {}
    for line in pair.primary.cli("log", "queue").splitlines():
        a = json.loads(line.split("\t", 2)[2]).get("outboundAttempt")
        if a and a.get("delivered"):
            delivered[a["id"]] = delivered.get(a["id"], 0) + 1
    res.resent += sum(1 for n in delivered.values() if n > 1)
    print(f"  {tag}: {res.duplicated} in doubt and sent twice, {res.resent} sent again after a recorded delivery",
          flush=True)


def _bounded(run: Callable[[], None], seconds: float) -> BaseException | bool | None:
    """Run `run` in a thread for at most `seconds`: None when it finished, its exception when it
    raised, False when it overran (the thread is left to the caller's teardown)."""
    outcome: list[BaseException | None] = []

    def body() -> None:
        try:
            run()
            outcome.append(None)
        except BaseException as e:  # handed to the caller, which reports it
            outcome.append(e)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(seconds)
    return outcome[0] if outcome else False


def run_scenario(scenario: str, mode: str, trials: int, workdir: Path, seed: int | None = None,
                 trial_timeout: float = TRIAL_TIMEOUT) -> Result:
    rng = random.Random(seed)
    res = Result(scenario, mode)
    sink = Sink() if scenario == "g" else None
    bases: list[Path] = []

    def fresh_pair() -> Pair:
        bases.append(Path(tempfile.mkdtemp(prefix=f"chaos-{scenario}-{mode}-", dir=workdir)))
        return Pair(bases[-1], mode, small_disk=scenario == "e", sink=sink)

    pair: Pair | None = None
    try:
        for i in range(trials):
            tag = f"{scenario}{mode[0]}{i}"
            if pair is None:
                pair = fresh_pair()
            current = pair
            started = time.monotonic()
            # Each trial counts into its own Result, merged only when it finished: an abandoned
            # trial's thread cannot add to the table afterwards.
            one = Result(scenario, mode)
            run = (partial(queue_trial, current, sink, rng, tag, one) if sink is not None
                   else partial(trial, current, scenario, rng, tag, one))
            outcome = _bounded(run, trial_timeout)
            res.seconds.append(time.monotonic() - started)
            if outcome is None:
                res.merge(one)
                took = f", takeover {one.takeover[0]:.2f} s" if one.takeover else ""
                print(f"  {tag}: {one.accepted} accepted, {one.lost} lost, {len(one.unsettled)} not yet on the primary, "
                      f"{one.duplicated} duplicated, "
                      f"catch-up {_fmt(one.catchup).split('/')[0]} s{took}, {res.seconds[-1]:.0f} s; "
                      f"so far {res.lost} lost, {res.duplicated} duplicated", flush=True)
                continue
            # A trial that raised or overran is reported, not hidden; the next trial starts on a
            # fresh pair (this one may be in any state).
            if outcome is False:
                res.failures.append(f"{tag}: did not finish within {trial_timeout:.0f} s")
            else:
                res.failures.append(f"{tag}: {type(outcome).__name__}: {outcome}")
            _settle_late(pair, res)
            pair.close()
            pair = None
    finally:
        if pair is not None:
            _settle_late(pair, res)
            pair.close()
        if sink is not None:
            sink.close()
        for base in bases:
            shutil.rmtree(base, ignore_errors=True)
    return res


def _fmt(values: list[float]) -> str:
    vals = [v for v in values if v == v]
    if not vals:
        return "-"
    return f"{statistics.median(vals):.2f}/{max(vals):.2f}"


def table(results: list[Result]) -> str:
    lines = [f"{'scenario':<40} {'mode':<6} {'trials':>6} {'accepted':>8} {'lost':>5} {'late':>5} {'dup':>5} "
             f"{'catch-up s med/max':>19} {'takeover s med/max':>19} {'refused after promote':>21} "
             f"{'resent after record':>19}"]
    for r in results:
        refused = str(r.refused) if r.scenario == "f" else "-"
        resent = str(r.resent) if r.scenario == "g" else "-"
        lines.append(f"({r.scenario}) {SCENARIOS[r.scenario]:<36} {r.mode:<6} {r.trials:>6} {r.accepted:>8} "
                     f"{r.lost:>5} {r.late:>5} {r.duplicated:>5} {_fmt(r.catchup):>19} {_fmt(r.takeover):>19} {refused:>21} "
                     f"{resent:>19}")
    lines.append("")
    lines.append("takeover s per trial (promote to the new primary's first 250):")
    for r in results:
        if r.takeover:
            lines.append(f"  ({r.scenario}) {r.mode:<6} " + " ".join(f"{t:.2f}" for t in r.takeover))
    lines.append("trial s max per scenario and mode (bound "
                 f"{TRIAL_TIMEOUT:.0f} s): " + ", ".join(f"({r.scenario}) {r.mode} {max(r.seconds, default=0):.0f}"
                                                         for r in results))
    for r in results:
        for f in r.failures:
            lines.append(f"  ({r.scenario}, {r.mode}) {f}")
    return "\n".join(lines)


def iterate(modes: list[str], scenarios: str) -> Iterator[tuple[str, str]]:
    for mode in modes:
        for s in scenarios:
            yield s, mode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--trials", type=int, default=int(os.environ.get("TRIALS", "3")))
    p.add_argument("--mode", choices=["sync", "async", "both"], default="both")
    p.add_argument("--scenarios", default="abcdefg")
    p.add_argument("--seed", type=int)
    args = p.parse_args(argv)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    modes = ["sync", "async"] if args.mode == "both" else [args.mode]
    results = []
    with tempfile.TemporaryDirectory(prefix="eventmail-chaos-") as work:
        for s, mode in iterate(modes, args.scenarios):
            started = time.monotonic()
            r = run_scenario(s, mode, args.trials, Path(work), args.seed)
            results.append(r)
            print(f"({s}) {mode}: {r.trials} trials, {r.accepted} accepted, {r.lost} lost, {r.late} late, "
                  f"{r.duplicated} duplicated, {len(r.failures)} failures ({time.monotonic() - started:.0f} s)", flush=True)
    print()
    print(table(results))
    # (g)'s duplicates are the in-doubt tries of a crash (counted, not failed); its fence is `resent`.
    bad = any(r.failures or r.refused or r.resent or (r.mode == "sync" and (r.lost or (r.duplicated and r.scenario != "g")))
              for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
