"""IMAP stress: Dovecot's imaptest in its stress mode against eventmail and Dovecot in one run, as totals and a ratio.

    python bench/imapstress.py [--clients 10] [--secs 10] [--reps 1] [--messages 200] [--dir DIR]
                               [--no-peers] [-- IMAPTEST_ARG...]

imaptest's stress mode: `clients` connections for `secs` seconds, each running imaptest's
default random command mix (LOGIN, LIST, STATUS, SELECT, FETCH, STORE, EXPUNGE, APPEND,
LOGOUT: logins are part of the mix, as mail clients reconnect all day) and checking what each
server answers against what it has seen (an `Error:` line for every inconsistency or failed
command). Extra arguments go to imaptest as they are (`logout=0` keeps clients logged in).
Then, with `--checkpoint N` (default 3), one run against each server with imaptest's
`checkpoint=N`: every N s all sessions stop, send CHECK and must agree on the mailbox (messages,
UIDs, flags, keywords, MODSEQs); N must not divide `secs` (checkpoint_clash: imaptest's own bug).

Both servers get the same mbox (`--messages` distinct messages made from tests/data/corpus, as
bench/imap.py makes them) and the same settings, in alternating runs (the median of --reps).
eventmail runs as its own `eventmail serve` process (encrypted log and blobs, its real
Argon2id password verifier, plaintext login allowed on loopback); Dovecot is bench/peers.py's
isolated instance (maildir, plaintext login, `{PLAIN}` password). Prints per server the
commands run, commands per second, imaptest's average milliseconds per command of each kind
and errors, then the ratio of eventmail's commands to Dovecot's, then the checkpoint runs;
exits 1 when eventmail had errors, or its checkpoint run compared nothing. Needs imaptest (tools/imaptest-build; IMAPTEST
points at a built one, default ../imaptest-build beside the repository) and, for Dovecot, root
and the Debian packages bench/peers.py names; without them only eventmail is measured.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from imap import DOMAIN, PASSWORD, USER, ImapMailServer, corpus_messages  # noqa: E402
from peers import PASSWORD as PEER_PASSWORD  # noqa: E402
from peers import Peers, PeersUnavailable  # noqa: E402
from smtp_cpu import tree_ticks  # noqa: E402

IMAPTEST = Path(os.environ.get("IMAPTEST", str(ROOT.parent / "imaptest-build" / "src" / "imaptest")))
_COUNTS = re.compile(r"^\s*\d+(\s+\d+)*\s*$")


TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    label: str
    port: int
    user: str
    password: str
    pid: int  # the server's process (tree): its CPU time over a run is measured


@dataclass
class Run:
    commands: int
    secs: float
    errors: list[str] = field(default_factory=list)
    cpu: float | None = None  # the server's CPU seconds over the run
    latency: str = ""  # imaptest's last "ms/cmd avg" line, under its names line
    checkpoints: int = 0  # client states a checkpoint compared and found agreeing (imaptest's ChkP)

    @property
    def rate(self) -> float:
        return self.commands / self.secs

    @property
    def cpu_ms(self) -> float | None:
        """The server's CPU per command, in ms: unlike the rate, it hardly depends on what else
        the machine is doing."""
        return None if self.cpu is None else 1000 * self.cpu / self.commands


def write_mbox(path: Path, count: int) -> None:
    """The corpus messages as an mbox (mboxrd quoting, RFC 4155) for imaptest's APPENDs."""
    with path.open("wb") as f:
        for raw in corpus_messages(count):
            f.write(b"From bench@example.test Mon Dec  7 00:00:00 2026\n")
            for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
                f.write((b">" + line if re.match(rb">*From ", line) else line) + b"\n")
            f.write(b"\n")


def parse_latency(output: str) -> str:
    """imaptest's command names and the last line of its average milliseconds per command."""
    lines = output.splitlines()
    avg = [line for line in lines if line.endswith("ms/cmd avg")]
    names = [line for line in lines if line.startswith("Logi ")]
    return f"{names[0]}\n{avg[-1]}" if avg and names else ""


def parse_totals(output: str) -> tuple[dict[str, int], list[str]]:
    """imaptest's `Totals:` counts by column name (Logi, List, ..., ChkP), and its `Error:`,
    `Panic:` and `Fatal:` lines."""
    lines = output.splitlines()
    counts: dict[str, int] = {}
    if "Totals:" in lines:
        after = lines[lines.index("Totals:") + 1 :]
        names = after[0].split() if after else []
        values = next((line for line in after if _COUNTS.match(line)), None)
        if values is not None:
            counts = dict(zip(names, (int(x) for x in values.split()), strict=False))
    errors = [line for line in lines if line.startswith(("Error:", "Panic:", "Fatal:"))]
    return counts, errors


def commands(counts: dict[str, int]) -> int:
    """The commands a run made: every column but ChkP (the client states a checkpoint compared)."""
    return sum(n for name, n in counts.items() if name != "ChkP")


def stress(t: Target, mbox: Path, clients: int, secs: int, extra: list[str], scratch: Path) -> Run:
    argv = [str(IMAPTEST), "host=127.0.0.1", f"port={t.port}", f"user={t.user}", f"pass={t.password}",
            f"mbox={mbox}", f"clients={clients}", f"secs={secs}", *extra]
    env = {**os.environ, "LD_LIBRARY_PATH": "/usr/lib/dovecot"}
    before = tree_ticks(t.pid)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 120, env=env, cwd=scratch)
    after = tree_ticks(t.pid)
    output = p.stdout + p.stderr
    counts, errors = parse_totals(output)
    if not counts and not errors:
        raise RuntimeError(f"{t.label}: imaptest printed no totals (rc {p.returncode}):\n{output[-3000:]}")
    cpu = (after - before) / TICK if before is not None and after is not None else None
    return Run(commands(counts), secs, errors, cpu, parse_latency(output), counts.get("ChkP", 0))


def empty_inbox(t: Target) -> None:
    """Expunge every message of the target's INBOX, so that a checkpoint run starts as on a new
    account: imaptest's first SELECT then sees every message (none) \\Recent.

    Until some session has seen all of a mailbox's messages \\Recent, imaptest's checkpoint mode
    has its clients mark *all* their messages \\Deleted (client_dirty_all_flags, to get to a
    state where RECENT counts can be checked), and that function indexes its per-message array
    up to the EXISTS count without growing it as every other path does (array_idx_get_space):
    a client that was told of new messages by EXISTS and has not fetched them yet aborts imaptest
    in array.c. Starting from an empty mailbox skips that mode; both servers get the same."""
    with imaplib.IMAP4("127.0.0.1", t.port) as c:
        c.login(t.user, t.password)
        _typ, exists = c.select("INBOX")
        if int(exists[0] or 0):
            c.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
            c.expunge()
        c.logout()


def checkpoint_clash(secs: int, args: list[str]) -> str | None:
    """Why imaptest would abort on `checkpoint=N` with these `secs`, or None.

    imaptest's own bug (release-2.3, client-state.c:222 `client->plan_size == 0`): when a
    checkpoint is under way at the moment the run ends, imaptest's stop makes every client's
    next command LOGOUT (client_eat_first_plan) while the checkpoint has just put CHECK in the
    client's plan; the client sends LOGOUT instead of CHECK, its plan keeps the CHECK, and once
    the logged-out client is asked for more commands the assertion fails. With N dividing
    `secs` the last checkpoint starts in the very second the run stops, so it aborts most runs,
    against Dovecot as against eventmail. An N that does not divide `secs` has no checkpoint
    there (docs/operations.md)."""
    for a in args:
        if a.startswith("checkpoint="):
            n = int(a.split("=", 1)[1] or 0)
            if n > 0 and secs % n == 0:
                return (f"checkpoint={n} divides secs={secs}: imaptest's last checkpoint would start as the "
                        "run stops, and imaptest aborts on its own assertion (client-state.c:222); "
                        "choose an interval that does not divide secs")
    return None


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--secs", type=int, default=10)
    ap.add_argument("--reps", type=int, default=1, help="runs against each server; the median is reported")
    ap.add_argument("--messages", type=int, default=200, help="messages in the mbox imaptest APPENDs from")
    ap.add_argument("--dir", type=Path, help="scratch directory (default: a new temporary one, removed after)")
    ap.add_argument("--no-peers", action="store_true", help="measure eventmail only")
    ap.add_argument("--checkpoint", type=int, default=3, metavar="N",
                    help="then one run each with imaptest's checkpoint=N (sessions' views compared every N s; "
                         "0: none; N must not divide --secs, see checkpoint_clash)")
    ap.add_argument("imaptest_args", nargs="*", help="passed to imaptest (after --)")
    a = ap.parse_args()
    if not IMAPTEST.exists():
        print(f"imaptest is not built ({IMAPTEST}; tools/imaptest-build makes it): nothing measured")
        return 0
    checkpoint_args = [*a.imaptest_args, f"checkpoint={a.checkpoint}"] if a.checkpoint else []
    for args in (a.imaptest_args, checkpoint_args):
        clash = checkpoint_clash(a.secs, args)
        if clash is not None:
            ap.error(clash)
    scratch = Path(tempfile.mkdtemp(prefix="imapstress-", dir=a.dir))
    scratch.chmod(0o755)
    mbox = scratch / "stress.mbox"
    write_mbox(mbox, a.messages)
    settings = " ".join([f"clients={a.clients}", f"secs={a.secs}", *a.imaptest_args])
    print(f"imaptest stress: {settings}, mbox of {a.messages} corpus messages, {a.reps} run(s) each, no TLS, loopback")
    server = ImapMailServer(scratch / "eventmail", allow_plaintext_auth=True)
    peers: Peers | None = None
    targets: list[Target] = []
    failed = False
    try:
        server.init()
        server.add_account(USER, f"{USER}@{DOMAIN}", PASSWORD)
        server.start()
        assert server.proc is not None
        targets.append(Target("eventmail", server.ports["imap"], USER, PASSWORD, server.proc.pid))
        if not a.no_peers:
            try:
                peers = Peers(scratch / "peers", domain=DOMAIN).up()
                assert peers.dovecot_pid is not None
                targets.append(Target("Dovecot", peers.imap_port, peers.user, PEER_PASSWORD, peers.dovecot_pid))
            except PeersUnavailable as e:
                print(f"Dovecot not measured: {e}")
        runs: dict[str, list[Run]] = {t.label: [] for t in targets}
        for rep in range(a.reps):
            for t in targets:
                run = stress(t, mbox, a.clients, a.secs, a.imaptest_args, scratch)
                runs[t.label].append(run)
                print(f"  run {rep + 1} {t.label}: {run.commands} commands, {run.rate:.0f}/s, "
                      f"{_ms(run.cpu_ms)} ms CPU/command, {len(run.errors)} errors", flush=True)
                for line in [*run.latency.splitlines(), *run.errors[:5]]:
                    print(f"    {line}")
        print()
        print(f"{'':<12} {'commands':>10} {'commands/s':>11} {'CPU ms/command':>15} {'errors':>7}"
              "   (median run by commands)")
        med: dict[str, Run] = {}
        for label, rs in runs.items():
            m = sorted(rs, key=lambda r: r.commands)[len(rs) // 2]
            med[label] = m
            print(f"{label:<12} {m.commands:>10} {m.rate:>11.0f} {_ms(m.cpu_ms):>15} {len(m.errors):>7}")
        failed = any(r.errors for r in runs["eventmail"])
        if "Dovecot" in med:
            ratio = med["eventmail"].commands / med["Dovecot"].commands
            print(f"\nratio eventmail / Dovecot, commands (higher is better): {ratio:.2f} "
                  f"(median of {statistics.median(len(r.errors) for r in runs['eventmail']):.0f} errors)")
        if checkpoint_args:
            # Every few seconds imaptest stops all clients of the mailbox, has each send CHECK, and
            # compares their views: the same messages, UIDs, flags, keywords and MODSEQs everywhere.
            print(f"\ncheckpoint run: {' '.join(checkpoint_args)}")
            for t in targets:
                empty_inbox(t)
                run = stress(t, mbox, a.clients, a.secs, checkpoint_args, scratch)
                print(f"  {t.label}: {run.commands} commands, {run.checkpoints} client states compared at "
                      f"checkpoints, {len(run.errors)} errors", flush=True)
                for line in run.errors[:5]:
                    print(f"    {line}")
                if t.label == "eventmail" and (run.errors or not run.checkpoints):
                    failed = True
    finally:
        server.stop()
        if peers is not None:
            peers.down()
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
