"""The CPU-heavy, pure part of an incoming message's handling — its one parse and its content features — in a process of its own, so that the server uses both cores.

The event loop keeps the sockets, the DNS-bound checks and the store; what only burns CPU on the
message's bytes can go to worker processes (config `analysis_workers`; 0, the default, runs it in
a thread of the server). Python's GIL keeps threads on one core, and the profile of an MX under
load put parsing and tokenizing at a quarter of its CPU; but each worker costs about 40 MB and on
2 cores bench/smtp.py gained 6 % (docs/architecture.md), so it is an option, not the default. The work is a pure function of the bytes, so running
it elsewhere changes nothing but where the time is spent; should the pool break (a worker killed),
the work is done in a thread as before and the pool is made anew.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from ..cputime import stage
from ..junk.features import analyze_message
from ..mailauth.dkim import DkimPrepared, prepare_dkim
from ..mime.addresses import Author
from ..mime.headers import Field, without_fields
from ..mime.parsed import ParsedMessage
from ..proto import events_pb2 as pb

log = logging.getLogger(__name__)
T = TypeVar("T")
JUNK_FIELD = b"x-eventmail-junk"  # the field of junk/analyze.py's header(), as the header reader names it


def strip_forged_verdicts(message: bytes, authserv_id: str) -> bytes:
    """Remove what claims to be our verdict, in one pass over the header: Authentication-Results
    fields with our authserv-id (RFC 8601 §5) and X-Eventmail-Junk fields (junk/analyze.py)."""
    ours = authserv_id.lower().encode()

    def forged(f: Field) -> bool:
        if f.name == b"authentication-results":
            return f.value.strip().lower().split(b";")[0].strip() == ours
        return f.name == JUNK_FIELD

    return without_fields(message, forged)


@dataclass(frozen=True, slots=True)
class Incoming:
    """What an incoming SMTP message's bytes say, before any DNS or policy: its one parse, its
    content features, and its DKIM signatures' checks as far as they go without keys."""

    parsed: ParsedMessage  # of the message without forged verdicts (what is stored)
    features: pb.JunkFeatures
    dkim: DkimPrepared  # of the message as received (what the signer signed)


def analyze_incoming(message: bytes, authserv_id: str
                     ) -> tuple[bytes | None, pb.MessageStructure, Author, pb.JunkFeatures, DkimPrepared]:
    """An SMTP message's pure work in one trip: forged verdicts cut (the bytes come back only
    when that changed them), DKIM's per-byte part on the bytes as received, then the parse and
    the content features of what is stored. Raises MimeTooDeep as parse_message does."""
    with stage("dkim"):
        dkim = prepare_dkim(message)
    body = strip_forged_verdicts(message, authserv_id)
    parsed, features = analyze_message(body)
    return (None if body is message else body), parsed.structure, parsed.author, features, dkim


def analyze(body: bytes) -> tuple[pb.MessageStructure, Author, pb.JunkFeatures]:
    """The message parsed once, and what its content says for the junk filter (the bytes are
    not sent back: the caller has them). Raises MimeTooDeep as parse_message does."""
    parsed, features = analyze_message(body)
    return parsed.structure, parsed.author, features


class Analyzer:
    """Runs `analyze` in worker processes (started on first use, by spawning: the server's
    process has threads, which forking would copy in an unknown state)."""

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    async def analyze(self, body: bytes) -> tuple[ParsedMessage, pb.JunkFeatures]:
        """`analyze` where the analysis runs (IMAP APPEND)."""
        structure, author, features = await self._run(analyze, body)
        return ParsedMessage(body, structure, author), features

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.workers == 0:
            return await asyncio.to_thread(fn, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)
        except BrokenProcessPool:
            log.error("analysis: the worker process died; made anew, this message analysed in a thread")
            self._pool = None
            return await asyncio.to_thread(fn, *args)

    async def incoming(self, message: bytes, authserv_id: str) -> Incoming:
        """`analyze_incoming` where the analysis runs (Raises MimeTooDeep)."""
        body, structure, author, features, dkim = await self._run(analyze_incoming, message, authserv_id)
        return Incoming(ParsedMessage(message if body is None else body, structure, author), features, dkim)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
