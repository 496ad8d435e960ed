"""CPU accounting for the SMTP benchmark (Linux /proc, stdlib only).

A "tree" is a server's root PID plus all its live descendants. Its CPU is the sum of utime+stime
of every live member plus cutime+cstime (CPU of children that already exited and were reaped by a
member). Postfix's and Dovecot's masters reap their own workers, so the change of that sum between
two snapshots is the CPU the whole daemon used in between, workers that came and went included.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    own: int  # utime + stime, ticks
    reaped: int  # cutime + cstime, ticks


def _stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = data[data.rfind(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
    return ProcStat(pid, int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))


def _all() -> dict[int, ProcStat]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                out[st.pid] = st
    return out


def tree_ticks(root: int, procs: dict[int, ProcStat] | None = None) -> int | None:
    """CPU ticks (live members + reaped children) of the process tree rooted at `root`."""
    procs = procs if procs is not None else _all()
    if root not in procs:
        return None
    kids: dict[int, list[int]] = {}
    for p in procs.values():
        kids.setdefault(p.ppid, []).append(p.pid)
    total, stack = 0, [root]
    while stack:
        p = procs[stack.pop()]
        total += p.own + p.reaped
        stack.extend(kids.get(p.pid, []))
    return total


def descendants(root: int) -> list[int]:
    """Live descendants of `root` (not `root` itself)."""
    kids: dict[int, list[int]] = {}
    for p in _all().values():
        kids.setdefault(p.ppid, []).append(p.pid)
    out, stack = [], [root]
    while stack:
        for child in kids.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def machine_ticks() -> dict[str, int]:
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = ([*values, 0, 0, 0, 0, 0, 0, 0, 0])[:8]
    return {"user": user + nice, "system": system + irq + softirq, "iowait": iowait, "idle": idle, "steal": steal}


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


@dataclass
class CpuWindow:
    """CPU of named process trees, of this process (the load generator) and of the machine."""

    trees: dict[str, int]
    result: dict[str, float | None] = field(default_factory=dict)
    machine: dict[str, float] = field(default_factory=dict)

    def start(self) -> CpuWindow:
        procs = _all()
        self._t0 = {k: tree_ticks(pid, procs) for k, pid in self.trees.items()}
        self._m0 = machine_ticks()
        self._r0 = resource.getrusage(resource.RUSAGE_SELF)
        self._wall0 = time.perf_counter()
        return self

    def snapshot(self) -> dict[str, int | None]:
        procs = _all()
        return {k: tree_ticks(pid, procs) for k, pid in self.trees.items()}

    def settle(self, quiet: float = 0.3, limit: float = 5.0) -> float:
        """Wait until no tree has used CPU for `quiet` seconds (work a server does after its last
        reply or delivery: index updates, queue cleanup), at most `limit` s; the time waited."""
        start = time.perf_counter()
        last, since = self.snapshot(), time.perf_counter()
        while time.perf_counter() - start < limit:
            time.sleep(0.05)
            now = self.snapshot()
            if now != last:
                last, since = now, time.perf_counter()
            elif time.perf_counter() - since >= quiet:
                break
        return time.perf_counter() - start

    def stop(self) -> CpuWindow:
        t1 = self.snapshot()
        m1 = machine_ticks()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        self.wall = time.perf_counter() - self._wall0
        for k in self.trees:
            before, after = self._t0[k], t1[k]
            self.result[k] = None if before is None or after is None else (after - before) / TICK
        self.result["load generator"] = (r1.ru_utime - self._r0.ru_utime) + (r1.ru_stime - self._r0.ru_stime)
        self.machine = {k: (m1[k] - self._m0[k]) / TICK for k in m1}
        return self

    def as_dict(self) -> dict[str, object]:
        return {"wall_s": round(self.wall, 3), "trees_core_s": self.result, "machine_core_s": self.machine}
