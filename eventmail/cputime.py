"""CPU time by stage of a message's handling, summed per process: what bench/smtp.py prints as core-ms per message by stage.

Two ways to measure, both charging a thread's CPU time (`time.thread_time`, user and system):

- `stage(name)` around a synchronous, CPU-bound section (in a worker thread or on the loop);
- `timed(name, awaitable)` around a coroutine that runs on the event loop: each of its steps (from
  one await to the next) is charged, so the time other tasks take while it waits is not. Work it
  hands to threads or to tasks of their own (gather) is charged where it runs.

Stages nest exclusively: time spent in an inner stage is the inner stage's only, so the stages
never add up to more than the process used. What is in no stage (callbacks outside any task,
DNS replies, the selector, futures completed from threads, the kernel's share outside them) is
what remains of the process's CPU time, told apart for the event loop's thread and the others.
The analysis processes (eventmail/smtp/analysis.py) send their stages back with each answer:
they are named "analysis: <stage>", outside the process's own.

The accounting starts when it is first asked for (`totals()`: the control socket's `stages`
request, which bench/smtp.py sends) and costs nothing before: `stage` and `timed` then read no
clock. A thread's CPU clock is a system call (vDSO has none for it), 45-50 of them a delivery:
too little to measure in bench/smtp.py's runs (docs/architecture.md), but a server nobody asks
has no reason to make them, nor a benchmark's compared runs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Awaitable, Generator, Iterator
from typing import Any, TypeVar

_LOCK = threading.Lock()
_TOTALS: dict[str, float] = {}
_ON_MAIN = {"staged": 0.0}  # stage time charged on the main thread (the event loop's)
_MAIN = threading.main_thread().ident
_local = threading.local()
_clock = time.thread_time  # the calling thread's CPU seconds (tests give a clock of their own)
_on = [False]  # whether stages are counted: from the first `totals()` (or `enable()`) on

T = TypeVar("T")


def _stack() -> list[str]:
    stack: list[str] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def _charge(name: str, seconds: float) -> None:
    with _LOCK:
        _TOTALS[name] = _TOTALS.get(name, 0.0) + seconds
        if threading.get_ident() == _MAIN:
            _ON_MAIN["staged"] += seconds


def _enter(name: str) -> None:
    now = _clock()
    stack = _stack()
    if stack:
        _charge(stack[-1], now - _local.since)  # the outer stage pauses
    stack.append(name)
    _local.since = now


def _leave() -> None:
    now = _clock()
    _charge(_stack().pop(), now - _local.since)
    _local.since = now  # the outer stage, if any, resumes


def enable(on: bool = True) -> None:
    """Start (or stop) counting stages in this process; an analysis worker follows its server's."""
    _on[0] = on


def enabled() -> bool:
    return _on[0]


@contextlib.contextmanager
def _counted(name: str) -> Iterator[None]:
    _enter(name)
    try:
        yield
    finally:
        _leave()


def stage(name: str) -> contextlib.AbstractContextManager[None]:
    """Charge the calling thread's CPU in this block to `name` (nothing while not counting)."""
    return _counted(name) if _on[0] else contextlib.nullcontext()


class _Timed:
    """An awaitable that runs `aw` and charges each of its steps to `name`."""

    __slots__ = ("aw", "name")

    def __init__(self, name: str, aw: Awaitable[Any]) -> None:
        self.name, self.aw = name, aw

    def __await__(self) -> Generator[Any, Any, Any]:
        it = self.aw.__await__()
        sent: Any = None
        error: BaseException | None = None
        while True:
            _enter(self.name)
            try:
                yielded = it.throw(error) if error is not None else it.send(sent)
            except StopIteration as done:
                return done.value
            finally:
                _leave()
            try:
                sent, error = (yield yielded), None
            except GeneratorExit:
                it.close()
                raise
            except BaseException as e:  # a cancellation goes on into the coroutine
                sent, error = None, e


def timed(name: str, aw: Awaitable[T]) -> Awaitable[T]:
    """`aw`, with the CPU time of its steps on the event loop charged to stage `name` (`aw`
    itself while not counting)."""
    return _Timed(name, aw) if _on[0] else aw


_ELSEWHERE: dict[str, float] = {}  # stages of other processes (the analysis workers), by name


def since(before: dict[str, float]) -> dict[str, float]:
    """This process's stage seconds since `before` (an earlier `stages()`), for a worker to send."""
    now = stages()
    return {k: v - before.get(k, 0.0) for k, v in now.items() if v != before.get(k, 0.0)}


def stages() -> dict[str, float]:
    """The stage sums alone, as `totals` has them."""
    with _LOCK:
        return dict(_TOTALS)


def add_elsewhere(spent: dict[str, float]) -> None:
    """Count stage seconds a worker process spent for this one (its CPU is not this process's:
    `totals` names them apart, "analysis: <stage>")."""
    with _LOCK:
        for k, v in spent.items():
            _ELSEWHERE[k] = _ELSEWHERE.get(k, 0.0) + v


def totals() -> dict[str, float]:
    """CPU seconds by stage since the accounting started (this call starts it when it is the
    first); the process's own CPU seconds since it started ("process"), its main thread's ("main
    thread": the event loop's) and of that, what stages took ("main thread staged")."""
    _on[0] = True
    with _LOCK:
        out = dict(_TOTALS)
        out["main thread staged"] = _ON_MAIN["staged"]
        out.update((f"analysis: {k}", v) for k, v in _ELSEWHERE.items())
    out["process"] = time.process_time()
    try:
        assert _MAIN is not None
        out["main thread"] = time.clock_gettime(time.pthread_getcpuclockid(_MAIN))
    except (OSError, AttributeError, AssertionError):
        pass
    return out
