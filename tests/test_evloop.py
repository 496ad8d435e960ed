"""The event loop the commands run on (uvloop), and start_now: a task's first step inside the caller's callback."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from argparse import Namespace
from pathlib import Path

import pytest
import uvloop

from eventmail import cli, evloop
from eventmail.netconn import Connection, ConnectionLimiter, Service, SocketLimits, listen
from eventmail.tls.certs import make_self_signed


def test_the_server_commands_run_on_uvloop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[type] = []

    async def serve(args: Namespace) -> None:
        seen.append(type(asyncio.get_running_loop()))

    monkeypatch.setattr(cli, "cmd_serve", serve)
    # asyncio's own loop as the default (tests/conftest.py makes uvloop the tests' default): the
    # command has to choose uvloop itself.
    tests_policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        assert cli.main(["serve", "--config", str(tmp_path / "eventmail.toml")]) == 0
    finally:
        asyncio.set_event_loop_policy(tests_policy)
    assert seen == [uvloop.Loop]


def test_run_runs_on_uvloop_and_returns_the_result() -> None:
    async def which() -> type:
        return type(asyncio.get_running_loop())

    assert evloop.run(which()) is uvloop.Loop


def test_start_now_runs_the_first_step_before_returning() -> None:
    async def main() -> None:
        steps: list[str] = []

        async def body() -> int:
            steps.append("first")
            await asyncio.sleep(0)
            steps.append("second")
            return 7

        task = evloop.start_now(body())
        assert steps == ["first"]  # asyncio.create_task would have run nothing yet
        assert await task == 7
        assert steps == ["first", "second"]

    evloop.run(main())


def test_start_now_passes_results_exceptions_and_cancellation_through() -> None:
    async def main() -> None:
        async def at_once() -> str:
            return "done"

        async def fails() -> None:
            raise ValueError("no")

        assert await evloop.start_now(at_once()) == "done"
        with pytest.raises(ValueError, match="no"):
            await evloop.start_now(fails())

        cleaned: list[str] = []

        async def waits() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                cleaned.append("finally")

        task = evloop.start_now(waits())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned == ["finally"]

    evloop.run(main())


def test_implicit_tls_reads_a_clienthello_that_came_before_the_accept(tmp_path: Path) -> None:
    """A ClientHello already waiting in the socket when the server accepts is read by TLS.

    The server's loop is held while the client connects and sends its ClientHello (the kernel
    completes the connection from the listen backlog), so the octets are there the moment the
    transport starts reading, right after connection_made(). Were the socket handed to TLS at a
    later turn of the loop (a task created in connection_made), the Connection would read them
    first and start_tls() would drop them as plaintext: the handshake would never finish."""
    make_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", ["localhost"])
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))

    async def greet(conn: Connection) -> None:
        conn.write(b"hello over TLS\r\n")
        await conn.drain(5.0)

    service = Service(name="test", handler=greet, log=logging.getLogger("test.evloop"), limiter=ConnectionLimiter(10),
                      refusal=b"", implicit_tls=server_ctx, limits=SocketLimits(handshake_timeout=5.0))
    loop = evloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        server = asyncio.run_coroutine_threadsafe(listen("127.0.0.1", 0, service), loop).result(10)
        port = server.sockets[0].getsockname()[1]
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            held.set()
            release.wait(10)

        loop.call_soon_threadsafe(hold)
        assert held.wait(10)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        raw.sendall(outgoing.read())  # the ClientHello, in the socket before the server accepted
        release.set()
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                data = raw.recv(65536)
                assert data, "the server closed the connection during the handshake"
                incoming.write(data)
        raw.sendall(outgoing.read())
        got = b""
        while not got.endswith(b"\r\n"):
            try:
                got += tls.read(1024)
            except ssl.SSLWantReadError:
                data = raw.recv(65536)
                assert data
                incoming.write(data)
        assert got == b"hello over TLS\r\n"
        raw.close()
        server.close()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
