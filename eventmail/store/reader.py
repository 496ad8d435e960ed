"""A long replay's reading (segments, chain, decryption) in a child process, so it runs on another core than the fold.

Reading, chain-hashing and decrypting a record costs 10-15 µs of CPU here, a third of what a
cold replay spends per event; the fold (one SQLite database, one thread) is the rest. A replay
of more than `PARALLEL_MIN` records has the two overlap: a child process (`python -m
eventmail.store.reader`, a fresh interpreter, not a fork of this threaded one) reads the records
from `since + HEAD_START` on and passes their plaintexts through a pipe, while this process reads
the first `HEAD_START` itself (covering the child's start, ~0.2 CPU s of imports) and then folds
what the child sends.

The child opens the stream read-only and checks what every reader checks (StreamLog.records:
the chain of every record, its decryption). Anything it cannot do -- it does not start, dies,
finds damage, sends a record out of order -- it stops, and this process reads the rest itself
from where the child's records ended, so the caller sees exactly what `StreamLog.plaintexts`
would give, the same errors included (a damaged log raises DamagedLog here, not in the child).

The stream's keys go to the child over its stdin pipe; nothing is written to disk, and the child
logs nothing (its stderr is discarded; it reports a failure as a short text through the pipe).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from .keyring import StreamKeys
from .log import StreamLog

log = logging.getLogger(__name__)

# Below this many records a replay reads in-process: a checkpoint every 20,000 events (account.py)
# keeps an ordinary open's tail under it, and a child costs ~0.2 CPU s to start.
PARALLEL_MIN = 30_000
# Records this process reads itself while the child starts.
HEAD_START = 10_000
# A replay's share that this process reads and prepares itself (`prepared`), the rest coming
# ready from the child. Measured per delivery in instructions (docs/replication.md, issue 14
# eleventh pass): the child reads one in ~46,000, prepares it in ~38,000 (the thread keys come
# recorded) and pickles it in ~9,000; this process unpickles it in ~6,000 and folds it in ~70,000,
# the fold now the larger half. So this process takes the least it can: the HEAD_START records it
# reads while the child starts (a tenth of the bench's 100,000).
REPLAY_SHARE = 0.1
# Records per message through the pipe.
BATCH = 500
# Batches the parent holds for the caller at most, pickled (~25 MB for deliveries made ready).
QUEUED = 80
# A follower's replicated batch is made ready by the Worker's child from this many deliveries
# on: a steady state's few records cost less in-process than the hop (~1 ms) to it and back.
WORKER_MIN = 64
# Seconds the Worker's child may take for a batch (2,048 deliveries: ~60 ms) before it is ended.
WORKER_TIMEOUT = 30.0
# Seconds without a Worker's child after it failed, and its idle time before it ends itself.
WORKER_RETRY = 60.0
WORKER_IDLE = 120.0
# Linux's F_SETPIPE_SZ: a 1 MiB pipe lets the child read a batch ahead of the fold.
_F_SETPIPE_SZ = 1031
_PIPE_BYTES = 1 << 20

Item = tuple[int, int, bytes]  # seq, time in µs, plaintext
T = TypeVar("T")
# (seq, time in µs, plaintext) -> what the caller folds (store.projection.prepare_record): pure,
# picklable (a module-level function, or a functools.partial of one with picklable arguments).
Prepare = Callable[[int, int, bytes], T]


@dataclass(frozen=True)
class _Job:
    stream: str
    path: str
    keys: StreamKeys
    since: int
    until: int
    verify_all: bool
    prepare: Callable[[int, int, bytes], Any] | None = None


def plaintexts(
    stream_log: StreamLog, since: int, until: int | None = None, own_share: float = 0.0, verify_all: bool = False
) -> Iterator[Item]:
    """(seq, time, plaintext) of the records after `since` up to `until` (the head when None),
    as `stream_log.plaintexts` gives them; read by a child process when there are many.

    This process reads the first `own_share` of them itself (at least HEAD_START): a caller
    that does little with each record (`verify` parses it) balances the two processes so.
    With `verify_all` each process checks the chain from the first segment's header on
    (`StreamLog.records`), not from a position the log remembered."""
    return _read(stream_log, since, until, own_share, verify_all, None)


def prepared(stream_log: StreamLog, since: int, prepare: Prepare[T]) -> Iterator[T]:
    """`prepare(seq, time, plaintext)` of each record after `since`, in order: a replay's items
    made ready to fold (store.projection.prepare_record parses each event and builds a
    delivery's rows). When there are many, the child process reads, decrypts *and* prepares its
    share, so the folding process is left little more than SQLite's work for those; it
    prepares its own share (the first REPLAY_SHARE, at least HEAD_START) itself."""
    return _read(stream_log, since, None, REPLAY_SHARE, False, prepare)


def _read(
    stream_log: StreamLog, since: int, until: int | None, own_share: float, verify_all: bool,
    prepare: Prepare[Any] | None,
) -> Iterator[Any]:
    until = stream_log.head.seq if until is None else until
    if until - since < PARALLEL_MIN or stream_log.keys is None:
        yield from _local(stream_log, since, until, verify_all, prepare)
        return
    start = since + max(HEAD_START, int((until - since) * own_share))
    child = _spawn(stream_log, start, until, verify_all, prepare)
    last = since
    if child is None:
        yield from _local(stream_log, since, until, verify_all, prepare)
        return
    assert child.stdout is not None
    drain = _Drain(child.stdout)
    drain.start()
    finished = False
    try:
        for item in _local(stream_log, since, start, verify_all, prepare):
            yield item
            last = item[0]
        last, finished = yield from _from_child(drain, last, stream_log.stream)
    finally:
        drain.stop.set()
        _end(child, finished)
        drain.join()
    yield from _local(stream_log, last, until, verify_all, prepare)


def _local(
    stream_log: StreamLog, since: int, until: int, verify_all: bool, prepare: Prepare[Any] | None = None
) -> Iterator[Any]:
    if since >= until:
        return
    for record, plaintext in stream_log.plaintexts(since, verify_all):
        if record.seq > until:
            return
        if prepare is None:
            yield record.seq, record.time_us, plaintext
        else:
            yield prepare(record.seq, record.time_us, plaintext)


def _spawn(
    stream_log: StreamLog, since: int, until: int, verify_all: bool, prepare: Prepare[Any] | None
) -> subprocess.Popen[bytes] | None:
    assert stream_log.keys is not None
    job = _Job(stream_log.stream, str(stream_log.path), stream_log.keys, since, until, verify_all, prepare)
    return _start_child(job, f"stream {stream_log.stream}: replay reader")


def _start_child(job: object, what: str) -> subprocess.Popen[bytes] | None:
    """`python -m eventmail.store.reader` with `job` on its stdin (which stays open), its
    stdout a pipe to us; None (and a log line) when it cannot start."""
    root = str(Path(__file__).resolve().parents[2])  # the directory holding the eventmail package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    child = None
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "eventmail.store.reader"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=env, close_fds=True,
        )
        assert child.stdin is not None and child.stdout is not None
        with contextlib.suppress(OSError):
            fcntl.fcntl(child.stdout.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
        pickle.dump(job, child.stdin)
        child.stdin.flush()
        if isinstance(job, _Job):
            child.stdin.close()
    except OSError as e:
        log.warning("%s did not start (%s); working in this process", what, e)
        if child is not None:
            _end(child, False)
        return None
    return child


def _frame(message: object) -> bytes:
    """One message between parent and child: its pickle's length (4 bytes, big-endian), then the pickle."""
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return len(data).to_bytes(4, "big") + data


def _send(out: IO[bytes], message: object) -> None:
    out.write(_frame(message))


class _Drain(threading.Thread):
    """Reads the child's messages off the pipe as they come, into a bounded queue, still pickled:
    the child runs ahead by up to QUEUED batches while this process reads its own share or folds
    (a pipe alone holds 1 MiB, a few thousand records, and the child would wait for the caller
    instead), and a batch waiting there holds a third of the memory its objects would."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(name="replay-reader", daemon=True)
        self.pipe = pipe
        self.queue: queue.Queue[bytes | Exception] = queue.Queue(QUEUED)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while True:
                head = self.pipe.read(4)
                data = self.pipe.read(int.from_bytes(head, "big")) if len(head) == 4 else b""
                if not data or len(data) != int.from_bytes(head, "big"):
                    raise EOFError("the replay reader's pipe closed")
                self._put(data)
        except Exception as e:  # the pipe closed or garbled: the caller reads on itself
            self._put(e)

    def _put(self, item: bytes | Exception) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


def _from_child(drain: _Drain, last: int, stream: str) -> Generator[Any, None, tuple[int, bool]]:
    """The child's records after `last`, as long as they continue it; returns the last seq given
    and whether the child sent all it had to."""
    while True:
        message = drain.queue.get()
        try:
            batch = pickle.loads(message) if isinstance(message, bytes) else message
        except Exception as e:
            batch = e
        if batch is None:
            return last, True
        if isinstance(batch, str):
            log.info("stream %s: replay reader stopped at seq %d (%s); reading on in this process", stream, last, batch)
            return last, False
        if not isinstance(batch, list):
            log.warning("stream %s: replay reader ended (%s); reading on in this process", stream,
                        batch or type(batch).__name__)
            return last, False
        for item in batch:
            if item[0] != last + 1:
                log.warning("stream %s: replay reader sent seq %d after %d; reading on in this process",
                            stream, item[0], last)
                return last, False
            yield item
            last = item[0]


def _end(child: subprocess.Popen[bytes], finished: bool) -> None:
    """Wait for a child that sent everything to exit; end any other (by its own handle)."""
    if finished:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
    if child.poll() is None:
        child.kill()
    with contextlib.suppress(OSError):
        if child.stdout is not None:
            child.stdout.close()
    child.wait()


@dataclass(frozen=True)
class _Serve:
    """A Worker's job: `prepare` each record of every batch that comes on stdin."""

    prepare: Callable[[int, int, bytes], Any]


class Worker:
    """A child process that makes a follower's replicated batches ready to fold, so the
    secondary's server process is left the fold's SQLite and little more for them.

    The same child as a replay's (`python -m eventmail.store.reader`, the same framing and
    `prepare`: store.projection.prepare_record), kept running: each batch's MessageAdded records
    go to it as (seq, time, plaintext) and come back made ready (store.projection.Added), in a
    thread of the Worker's own while the event loop folds the batch before. A batch of fewer
    than WORKER_MIN, a child not started yet (its imports take ~0.35 CPU s), one that errs,
    dies, answers out of shape or takes longer than WORKER_TIMEOUT: the call returns None and
    the caller prepares the batch itself, with the same result (the same function). A child that
    failed is ended and not started again for WORKER_RETRY seconds; one idle for WORKER_IDLE
    seconds ends itself, and the next batch starts a new one."""

    def __init__(self, prepare: Prepare[Any]) -> None:
        self.prepare = prepare
        self._child: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._used = 0.0
        self._failed = -WORKER_RETRY
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="prepare")
        self.batches = 0  # batches the child made ready (tests, metrics)

    async def __call__(self, items: list[Item]) -> list[Any] | None:
        if len(items) < WORKER_MIN:
            return None
        # Imported here, not at the top: the reading child runs this module and never needs
        # asyncio, whose import was a third of the child's start.
        import asyncio

        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self.run, items)
        except RuntimeError:  # closed meanwhile (the follower stopped): this process does it
            return None

    def start(self) -> None:
        """Start the child now if none runs (a follower expecting a catch-up: the child's start
        then overlaps the first batches' arrival)."""
        self._pool.submit(self._start)

    def _start(self) -> bool:
        """Whether a child runs (one started when none did and none failed recently)."""
        now = time.monotonic()
        if self._child is not None and now - self._used > WORKER_IDLE - 5:
            self._stop()  # it ends itself when idle: do not race it
        self._used = now
        if self._child is None and now - self._failed >= WORKER_RETRY:
            self._child = _start_child(_Serve(self.prepare), "the replicated batches' worker")
            if self._child is None:
                self._failed = now
            return False
        return self._child is not None

    def run(self, items: list[Item]) -> list[Any] | None:
        """`prepare` of each item by the child, or None (then the caller does it)."""
        child = self._child
        if not self._start() or child is None:
            return None
        now = time.monotonic()
        try:
            if not self._ready:
                if not _readable(child, 0):
                    return None  # still starting
                if _receive(child, now + WORKER_TIMEOUT) != "ready":
                    raise EOFError("no ready message")
                self._ready = True
            _request(child, items, now + WORKER_TIMEOUT)
            made = _receive(child, now + WORKER_TIMEOUT)
            if not isinstance(made, list) or len(made) != len(items):
                raise EOFError(f"answered {made if isinstance(made, str) else type(made).__name__}")
        except Exception as e:  # whatever it was, this process makes the batch ready itself
            log.warning("the replicated batches' worker failed (%s); making them ready in this process", e)
            self._failed = now
            self._stop()
            return None
        self.batches += 1
        return made

    def close(self) -> None:
        self._stop()
        self._pool.shutdown(wait=False)

    def _stop(self) -> None:
        child, self._child, self._ready = self._child, None, False
        if child is not None:
            with contextlib.suppress(OSError):
                if child.stdin is not None:
                    child.stdin.close()
            _end(child, False)


def _readable(child: subprocess.Popen[bytes], timeout: float) -> bool:
    assert child.stdout is not None
    return bool(select.select([child.stdout], [], [], max(timeout, 0))[0])


def _receive(child: subprocess.Popen[bytes], deadline: float) -> Any:
    """One framed message from the child (as `_send` writes them), waiting until `deadline`."""
    assert child.stdout is not None
    fd = child.stdout.fileno()

    def exactly(n: int) -> bytes:
        data = _read_exactly(fd, n, deadline)
        if len(data) < n:
            raise EOFError("the worker's pipe closed")
        return data

    return pickle.loads(exactly(int.from_bytes(exactly(4), "big")))


def _request(child: subprocess.Popen[bytes], items: list[Item], deadline: float) -> None:
    """A batch to the child, framed as `_send` does, waiting at most until `deadline` to write."""
    assert child.stdin is not None
    fd = child.stdin.fileno()
    view = memoryview(_frame(items))
    os.set_blocking(fd, False)
    while view:
        if not select.select([], [fd], [], max(deadline - time.monotonic(), 0))[1]:
            raise TimeoutError("the worker does not read")
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue


def _read_exactly(fd: int, n: int, deadline: float | None = None) -> bytes:
    """`n` bytes from `fd`, or fewer at its end; with a `deadline` (monotonic), TimeoutError
    when nothing more comes before it."""
    parts, left = [], n
    while left:
        if deadline is not None and not select.select([fd], [], [], max(deadline - time.monotonic(), 0))[0]:
            raise TimeoutError("no answer in time")
        more = os.read(fd, min(left, _PIPE_BYTES))
        if not more:
            break
        parts.append(more)
        left -= len(more)
    return b"".join(parts)


def _serve(job: _Serve, inp: IO[bytes], out: IO[bytes]) -> None:
    """A Worker's child: answers each batch, in order, until its stdin closes or it idles."""
    _send(out, "ready")
    out.flush()
    fd = inp.fileno()  # read unbuffered: select sees what is still to read
    while select.select([fd], [], [], WORKER_IDLE)[0]:
        head = _read_exactly(fd, 4)
        data = _read_exactly(fd, int.from_bytes(head, "big")) if len(head) == 4 else b""
        if not data:
            return
        try:
            made = [job.prepare(*item) for item in pickle.loads(data)]
        except Exception as e:
            _send(out, type(e).__name__)  # the parent does this batch itself, and stops us
            out.flush()
            return
        _send(out, made)
        out.flush()


def _child() -> None:
    # The pipe is our stdout: keep it for the records, and send anything else printed to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    from eventmail.store import reader as this  # the job's classes: this module runs as __main__

    job = pickle.load(sys.stdin.buffer)
    if isinstance(job, this._Serve):
        with contextlib.suppress(BrokenPipeError):
            _serve(job, sys.stdin.buffer, out)
        return
    batch: list[Any] = []
    try:
        stream_log = StreamLog(job.stream, Path(job.path), job.keys, writable=False)
        for item in _local(stream_log, job.since, job.until, job.verify_all, job.prepare):
            batch.append(item)
            if len(batch) >= BATCH:
                _send(out, batch)
                batch = []
        _send(out, batch)
        _send(out, None)
    except BrokenPipeError:
        return  # the parent stopped reading (it has what it needed)
    except Exception as e:
        # What was read before it still goes out; the parent reads the rest itself and meets the
        # same problem there, with its own error and log line.
        with contextlib.suppress(BrokenPipeError):
            _send(out, batch)
            _send(out, type(e).__name__)
    with contextlib.suppress(BrokenPipeError):
        out.close()


if __name__ == "__main__":
    _child()
