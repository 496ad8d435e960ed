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
from concurrent.futures.process import BrokenProcessPool

from ..junk.features import analyze_message
from ..mime.addresses import Author
from ..mime.parsed import ParsedMessage
from ..proto import events_pb2 as pb

log = logging.getLogger(__name__)


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
        if self.workers == 0:
            structure, author, features = await asyncio.to_thread(analyze, body)
        else:
            try:
                structure, author, features = await asyncio.get_running_loop().run_in_executor(
                    self._executor(), analyze, body)
            except BrokenProcessPool:
                log.error("analysis: the worker process died; made anew, this message analysed in a thread")
                self._pool = None
                structure, author, features = await asyncio.to_thread(analyze, body)
        return ParsedMessage(body, structure, author), features

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
