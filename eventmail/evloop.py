"""The event loop every `eventmail` command runs on: uvloop's (libuv, in C), not asyncio's own.

Why: a delivery over SMTP is a dozen small reads and writes on a fresh connection, and asyncio's
selector loop and socket transports are Python code run for each of them; uvloop does the same in
C behind the same interface (docs/architecture.md, "The event loop", has the measured difference).
Nothing in eventmail depends on which loop runs it: protocols, start_tls, subprocesses, signal
handlers, executors and grpc.aio are used through asyncio's public interface only.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

import uvloop

__all__ = ["new_event_loop", "run", "start_now"]

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop of the kind the server runs on."""
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on a new loop of the kind the server runs on (Ctrl-C cancels `main` and
    raises KeyboardInterrupt, as asyncio.run does)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


def start_now(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """A task of `coro` whose first step, up to its first wait, runs now, inside the caller's
    callback, instead of at a later turn of the loop as asyncio.create_task's does (Python 3.12's
    eager tasks; this is 3.11).

    For a protocol's connection_made() that must act before the transport reads: neither uvloop
    nor asyncio before 3.12 lets connection_made() pause reading (the transport starts reading
    after it returns; CPython gh-103607), so what the task would do at its first step, such as
    handing the socket to TLS with loop.start_tls(), has to be done before connection_made()
    returns: else the client's first octets can be read, by the wrong protocol, in between."""
    loop = asyncio.get_running_loop()
    try:
        first = coro.send(None)
    except StopIteration as done:
        finished: asyncio.Future[T] = loop.create_future()
        finished.set_result(done.value)
        return finished
    except Exception as e:
        failed: asyncio.Future[T] = loop.create_future()
        failed.set_exception(e)
        return failed
    return loop.create_task(_go_on(coro, first))


@types.coroutine
def _go_on(coro: Coroutine[Any, Any, T], first: Any) -> Generator[Any, Any, T]:
    """The rest of `coro`, which has run up to yielding `first`: what `await coro` (yield from)
    does from there, passing the task's sends and throws (a cancellation) through."""
    yielded = first
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as e:  # thrown in by the task (its cancellation): passed on
            try:
                yielded = coro.throw(e)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
