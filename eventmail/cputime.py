"""CPU time by stage of a message's handling, summed per process: what bench/smtp.py prints as core-ms per message by stage.

Only synchronous, CPU-bound sections are measured (a thread's CPU time, `time.thread_time`, from
start to end of the section): across an `await` other tasks' work would be counted too. What is
not in a named stage (the event loop, SMTP sessions, DNS, the kernel's share of fsync and sockets)
is what remains of the process's CPU time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

_LOCK = threading.Lock()
_TOTALS: dict[str, float] = {}


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    start = time.thread_time()
    try:
        yield
    finally:
        spent = time.thread_time() - start
        with _LOCK:
            _TOTALS[name] = _TOTALS.get(name, 0.0) + spent


def totals() -> dict[str, float]:
    """CPU seconds by stage since the process started, and the process's own CPU seconds."""
    with _LOCK:
        out = dict(_TOTALS)
    out["process"] = time.process_time()
    return out
