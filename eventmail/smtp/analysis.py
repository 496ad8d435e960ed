"""The CPU-heavy, pure part of an incoming message's handling — its one parse and its content features — in a process of its own, so that the server uses both cores.

The event loop keeps the sockets, the DNS-bound checks and the store; what only burns CPU on the
message's bytes goes to worker processes (config `analysis_workers`: by default one on 2 cores or
more; 0 runs it in a thread of the server). Python's GIL keeps threads on one core, and the profile of an MX under load put the
forged-verdict cut, DKIM's hashing, parsing and tokenizing at a third of its CPU
(docs/architecture.md). The work is a pure function of the bytes, so running it elsewhere changes
nothing but where the time is spent; should a worker die (killed), its messages are analysed in
a thread and the next one starts a new worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .. import cputime
from ..cputime import stage
from ..junk.features import analyze_message, analyze_message_tokens, named_addresses
from ..junk.wordrows import content_row
from ..mailauth.dkim import DkimPrepared, prepare_dkim
from ..mime.addresses import Author
from ..mime.headers import Field, without_fields
from ..mime.parsed import ParsedMessage
from ..proto import events_pb2 as pb

log = logging.getLogger(__name__)
JUNK_FIELD = b"x-eventmail-junk"  # the field of junk/analyze.py's header(), as the header reader names it


def strip_forged_verdicts(message: bytes, authserv_id: str) -> bytes:
    """Remove what claims to be our verdict, in one pass over the header: Authentication-Results
    fields with our authserv-id (RFC 8601 §5) and X-Eventmail-Junk fields (junk/analyze.py)."""
    ours = authserv_id.lower().encode()

    def forged(f: Field) -> bool:
        if f.name == b"authentication-results":
            return f.value.strip().lower().split(b";")[0].strip() == ours
        return f.name == JUNK_FIELD

    return without_fields(message, forged, names=(b"authentication-results", JUNK_FIELD))


@dataclass(frozen=True, slots=True)
class Incoming:
    """What an incoming SMTP message's bytes say, before any DNS or policy: its one parse, its
    content features, and its DKIM signatures' checks as far as they go without keys."""

    parsed: ParsedMessage  # of the message without forged verdicts (what is stored)
    features: pb.JunkFeatures
    dkim: DkimPrepared  # of the message as received (what the signer signed)
    named: tuple[str, ...]  # the To and Cc addresses, normalized (the junk plan's "names recipient")
    shape: tuple[int, int]  # (depth, parts) of the MIME tree, for the limits on both
    # The junk projection's content row of the features' words (junk.wordrows.content_row), made
    # here rather than on the event loop when the delivery is folded (junk.projection.offered).
    row: bytes


def mime_shape(structure: pb.MessageStructure) -> tuple[int, int]:
    """(depth, parts) of a message's MIME tree."""
    depth = parts = 0
    stack = [(structure.body, 1)]
    while stack:
        part, d = stack.pop()
        parts += 1
        depth = max(depth, d)
        stack.extend((p, d + 1) for p in part.parts)
        if part.HasField("message"):
            stack.append((part.message, d + 1))
    return depth, parts


def analyze_incoming(message: bytes, authserv_id: str) -> tuple[
        bytes | None, pb.MessageStructure, Author, pb.JunkFeatures, DkimPrepared, tuple[str, ...], tuple[int, int],
        bytes]:
    """An SMTP message's pure work in one trip: forged verdicts cut (the bytes come back only
    when that changed them), DKIM's per-byte part on the bytes as received, then the parse (and
    the shape of its tree), the content features, the To/Cc addresses of what is stored and the
    junk projection's content row of its words. Raises MimeTooDeep as parse_message does."""
    with stage("dkim"):
        dkim = prepare_dkim(message)
    body = strip_forged_verdicts(message, authserv_id)
    parsed, features, tokens = analyze_message_tokens(body)
    with stage("parse"):
        shape = mime_shape(parsed.structure)
    with stage("junk features"):
        named = named_addresses(body)
        row = content_row(tokens)  # the features' words, as strings already
    return (None if body is message else body), parsed.structure, parsed.author, features, dkim, named, shape, row


def analyze(body: bytes) -> tuple[pb.MessageStructure, Author, pb.JunkFeatures]:
    """The message parsed once, and what its content says for the junk filter (the bytes are
    not sent back: the caller has them). Raises MimeTooDeep as parse_message does."""
    parsed, features = analyze_message(body)
    return parsed.structure, parsed.author, features


# A message that takes the analysis through its lazily built parts (Analyzer.prefork).
_WARM_UP = (
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.co.uk; s=s; c=relaxed/relaxed; h=from:to;\r\n"
    b" bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n"
    b"From: Warm Up <warm@mail.example.co.uk>\r\nTo: a@example.org\r\nCc: =?utf-8?q?B=C3=A9?= <b@example.org>\r\n"
    b"Subject: =?iso-8859-1?q?caf=E9?=\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/alternative; boundary=b\r\n\r\n"
    b"--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"caf=E9 http://www.example.com/\r\n"
    b"--b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"PHA+Y2Fmw6k8L3A+\r\n--b--\r\n"
)

# What a worker may be asked to run, by name: nothing else crosses the pipe as code.
TASKS: dict[str, Callable[..., Any]] = {"analyze": analyze, "incoming": analyze_incoming}
_HEAD = 4  # a frame: its length (big-endian), then a pickle


# Workers in a row that fail to start (or die before their first answer) before the analysis
# stays in threads: a worker killed now and then is replaced, one that cannot run is given up.
MAX_FAILED_STARTS = 3


class NoWorkers(Exception):
    """Workers keep failing to start: analyse in threads."""


class WorkerDied(Exception):
    """The analysis process ended (killed, crashed) with this request unanswered."""


class _Worker:
    """One analysis process, requests on one stream and replies on another, answered in order:
    forked at the server's start (`fork_worker`, a socket pair) or `python -m
    eventmail.smtp.analysis` (its stdin and stdout). The streams are the event loop's own (no
    threads between the loop and the worker, as a multiprocessing pool has: its feeder and manager
    threads cost the server's GIL about as much as the parse they moved)."""

    def __init__(self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 forked: bool = False, proc: asyncio.subprocess.Process | None = None) -> None:
        self.pid = pid
        self.stream = reader
        self.writer = writer
        self.forked = forked  # this process's child, to reap: asyncio's watcher reaps `proc`
        self.proc = proc
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.alive = True
        self.answered = 0
        self.closing = False  # ended by close(): its end is no failure
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls) -> _Worker:
        """A worker as a new interpreter."""
        # The package's own directory on the path: the worker imports what this process runs,
        # wherever it was started from.
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stdin is not None
        return cls(proc.pid, proc.stdout, proc.stdin, proc=proc)

    @classmethod
    async def forked_from_here(cls, become: Callable[[], None]) -> _Worker:
        """A worker forked from this process (fork_worker)."""
        pid, sock = fork_worker(become)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        return cls(pid, reader, writer, forked=True)

    async def _read(self) -> None:
        out = self.stream
        try:
            while True:
                size = int.from_bytes(await out.readexactly(_HEAD), "big")
                ok, value, spent = pickle.loads(await out.readexactly(size))
                if spent:
                    cputime.add_elsewhere(spent)
                self.answered += 1
                future = self.waiting.popleft()
                if future.done():
                    continue  # its caller was cancelled
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError, pickle.UnpicklingError, IndexError) as e:
            if not self.closing:
                log.error("analysis: worker process %d ended (%s); a new one is started for the next message",
                          self.pid, type(e).__name__)
        finally:
            self.alive = False
            for future in self.waiting:
                if not future.done():
                    future.set_exception(WorkerDied())
            self.waiting.clear()
            self.writer.close()
            if self.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
            elif self.forked:
                # Not reaped yet, so the pid is still this worker's: the kill cannot hit another.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    await asyncio.to_thread(os.waitpid, self.pid, 0)

    async def call(self, name: str, *args: Any) -> Any:
        # The worker counts its stages only while this process does (cputime: clock reads cost).
        data = pickle.dumps((name, args, cputime.enabled()), protocol=pickle.HIGHEST_PROTOCOL)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        try:
            self.writer.write(len(data).to_bytes(_HEAD, "big") + data)
            await self.writer.drain()
        except (ConnectionError, RuntimeError) as e:
            raise WorkerDied() from e
        return await future

    def close(self) -> None:
        """End the worker: at the end of its input it exits."""
        self.closing = True
        self.writer.close()


def _name_process(name: bytes) -> None:
    """What `ps -o comm`, top and psutil's name() show for this process (Linux: PR_SET_NAME)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name[:15]), 0, 0, 0)


def fork_worker(become: Callable[[], None]) -> tuple[int, socket.socket]:
    """A worker forked from this process, which must have no thread but the calling one (a fork
    copies other threads' locks in whatever state they are): its pid and this side of its socket.

    The worker shares this process's pages (the interpreter, every module imported) until one of
    the two writes to a page, where a new interpreter builds its own (docs/architecture.md has the
    figures). In the child: the event loop's signal wakeup and handlers are undone, every file
    descriptor but the socket and stdin, stdout, stderr is closed (ports, store files, epoll: none
    is a worker's business), and `become` drops the server's privileges before any request."""
    if threading.active_count() > 1:
        raise RuntimeError("fork_worker: this process runs threads")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # The free pages inside glibc's heap back to the system first, so neither process keeps them
    # (nor copies them when it allocates there).
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
    # Every object alive now out of the collector's sight (CPython's advice before a fork: a
    # collection in the child would write to every object it walks, copying their pages).
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ours.close()
            signal.set_wakeup_fd(-1)  # the event loop's, which the worker does not run
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            keep = theirs.detach()
            for fd in [int(name) for name in os.listdir("/proc/self/fd") if name.isdigit()]:
                if fd > 2 and fd != keep:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            become()
            _name_process(b"analysis")
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
            os.dup2(2, 1)  # a stray print cannot reach the server's stdout: the log's from here on
            with os.fdopen(keep, "rb") as inp, os.fdopen(os.dup(keep), "wb") as out:
                serve_worker(inp, out)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    theirs.close()
    return pid, ours


def default_workers() -> int:
    """`analysis_workers` when the configuration does not say: one worker when this process may
    run on 2 cores or more. bench/smtp.py on 2 cores: the server's own CPU per delivery (what its
    GIL serialises) about 3 ms lower with it, for 48 MB (docs/architecture.md); on 1 core a
    worker would only add its hand-offs."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return 1 if cores >= 2 else 0


class Analyzer:
    """Runs the analysis in `workers` processes, or with 0 in a thread of the server. The workers
    are forked by `prefork` at the server's start, before any thread; a worker started later (in
    place of one that died, or without prefork) is a new interpreter: the server then has threads,
    which a fork would copy in an unknown state. A request goes to the worker with the fewest
    waiting."""

    def __init__(self, workers: int | None = 0) -> None:
        self.workers = default_workers() if workers is None else workers
        self._pool: list[_Worker] = []
        self._failures = 0  # workers in a row that could not start or died before any answer
        self._starting: asyncio.Lock | None = None

    async def _worker(self) -> _Worker:
        if sum(w.alive for w in self._pool) < self.workers:
            if self._starting is None:
                self._starting = asyncio.Lock()
            async with self._starting:  # the requests that came while one started wait for it
                for w in self._pool:
                    if not w.alive:
                        self._failures = self._failures + 1 if w.answered == 0 else 0
                self._pool[:] = [w for w in self._pool if w.alive]
                if self._failures >= MAX_FAILED_STARTS:
                    raise NoWorkers()
                if len(self._pool) < self.workers:
                    worker = await _Worker.start()
                    self._pool.append(worker)
        return min((w for w in self._pool if w.alive), key=lambda w: len(w.waiting))

    async def prefork(self, become: Callable[[], None] = lambda: None) -> None:
        """Fork the workers now (fork_worker), if this process has no thread yet; `become` is
        called in each (the server's privileges drop). Else they start on first use."""
        if self.workers <= 0:
            return
        if threading.active_count() > 1:
            log.info("analysis: threads are running: the workers will be new interpreters, not forked")
            return
        # What the analysis builds at its first message (the public suffix list parsed, about
        # 1.2 MB; codecs and tables imported), built once here and shared with the workers,
        # instead of once in each process.
        try:
            analyze_incoming(_WARM_UP, "localhost")
        except Exception:
            log.exception("analysis: the warm-up message failed")
        while len(self._pool) < self.workers:
            try:
                self._pool.append(await _Worker.forked_from_here(become))
            except OSError as e:  # no memory or processes left: the first message starts one
                log.error("analysis: could not fork a worker process: %s", e)
                return

    async def analyze(self, body: bytes) -> tuple[ParsedMessage, pb.JunkFeatures]:
        """`analyze` where the analysis runs (IMAP APPEND)."""
        structure, author, features = await self._run("analyze", body)
        return ParsedMessage(body, structure, author), features

    async def incoming(self, message: bytes, authserv_id: str) -> Incoming:
        """`analyze_incoming` where the analysis runs (Raises MimeTooDeep)."""
        body, structure, author, features, dkim, named, shape, row = await self._run("incoming", message, authserv_id)
        return Incoming(ParsedMessage(message if body is None else body, structure, author), features, dkim, named,
                        shape, row)

    async def _run(self, name: str, *args: Any) -> Any:
        if self.workers > 0:
            try:
                return await (await self._worker()).call(name, *args)
            except WorkerDied:
                pass  # killed, out of memory: this message is analysed here, the next starts a worker
            except OSError as e:
                self._failures += 1
                log.error("analysis: could not start a worker process: %s", e)
            except NoWorkers:
                # Workers that cannot start (the interpreter or the code unreadable after the
                # server dropped its privileges, ...) would cost every message a failed start.
                log.error("analysis: %d worker processes in a row ended before answering; analysing in "
                          "threads from now on (analysis_workers = 0)", self._failures)
                self.workers = 0
        return await asyncio.to_thread(TASKS[name], *args)

    def close(self) -> None:
        for w in self._pool:
            w.close()
        self._pool = []


def serve_worker(inp: IO[bytes], out: IO[bytes]) -> None:
    """The worker's loop: answer requests from `inp` on `out` until `inp` ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the server's to handle
    while True:
        head = inp.read(_HEAD)
        if len(head) < _HEAD:
            return
        name, args, counting = pickle.loads(inp.read(int.from_bytes(head, "big")))
        cputime.enable(counting)
        before = cputime.stages() if counting else {}  # the stages' CPU goes back with the answer
        try:
            result = TASKS[name](*args)
            spent = cputime.since(before) if counting else {}
            reply = pickle.dumps((True, result, spent), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # raised in the server as it was raised here
            spent = cputime.since(before) if counting else {}
            try:
                reply = pickle.dumps((False, e, spent), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:
                reply = pickle.dumps((False, RuntimeError(f"{type(e).__name__}: {e}"), spent))
        out.write(len(reply).to_bytes(_HEAD, "big") + reply)
        out.flush()


def main() -> None:
    """A worker as a new interpreter: requests on stdin, replies on stdout."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print cannot corrupt a frame: stdout is the log's from here on
    serve_worker(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
