"""The delivery attempt against Python servers: hostile ones (endless, huge, silent, injecting), TLS fallback, AUTH on aiosmtpd."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from eventmail.smtp.attempt import Auth, Outcome, Timeouts, TlsRequirement, attempt
from eventmail.smtp.client import ClientLimits
from tests.mailserver import free_port
from tests.smtp_certs import make_certs

FAST = Timeouts.all(1.0)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler, body: Callable[[int], Awaitable[None]]) -> None:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await body(port)
    finally:
        server.close()
        await server.wait_closed()


def run(handler: Handler, body: Callable[[int], Awaitable[None]]) -> None:
    asyncio.run(serve(handler, body))


async def go(port: int, **kw: object) -> object:
    args: dict[str, object] = {"tls": TlsRequirement.opportunistic(), "helo": "client.test", "timeouts": FAST}
    args.update(kw)
    return await attempt("mx.test", "127.0.0.1", port, "a@x.test", ["b@y.test", "c@y.test"], b"hi\r\n", **args)  # type: ignore[arg-type]


def hostile(payload: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await payload(writer)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return handler


@pytest.mark.parametrize(
    ("name", "needle"),
    [("endless-lines", "lines"), ("huge-line", "longer than"), ("silent", "timed out"), ("trickle", "timed out")],
)
def test_hostile_servers_are_bounded_and_temporary(name: str, needle: str) -> None:
    async def payload(writer: asyncio.StreamWriter) -> None:
        if name == "endless-lines":
            while True:
                writer.write(b"220-more and more\r\n" * 100)
                await writer.drain()
        elif name == "huge-line":
            while True:
                writer.write(b"x" * 65536)
                await writer.drain()
        elif name == "silent":
            await asyncio.sleep(10)
        else:  # one octet at a time, each in time for a per-read timeout, never a whole reply
            for b in b"220 " + b"y" * 1000:
                writer.write(bytes([b]))
                await writer.drain()
                await asyncio.sleep(0.05)

    async def body(port: int) -> None:
        t0 = time.monotonic()
        result = await go(port, limits=ClientLimits(max_line=1024, max_lines=50, max_reply=8192))
        assert time.monotonic() - t0 < 5
        assert needle in (result.error or ""), result.error  # type: ignore[attr-defined]
        assert [r.outcome for r in result.rcpts] == [Outcome.TEMPORARY] * 2  # type: ignore[attr-defined]
        assert all(needle in r.reason for r in result.rcpts)  # type: ignore[attr-defined]

    run(hostile(payload), body)


class Scripted:
    """A small SMTP server: offers STARTTLS and breaks the handshake on the first connection, then
    takes mail in the clear; keeps every octet received."""

    def __init__(self, break_tls: bool = True, inject: bool = False) -> None:
        self.break_tls = break_tls
        self.inject = inject
        self.connections = 0
        self.received = bytearray()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        first = self.connections == 1
        writer.write(b"220 scripted ESMTP\r\n")
        try:
            in_data = False
            while line := await reader.readline():
                self.received += line
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        writer.write(b"250 2.0.0 kept\r\n")
                    continue
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-scripted\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 STARTTLS\r\n")
                elif verb == b"STAR":
                    if self.inject:
                        writer.write(b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
                    elif first:
                        writer.write(b"220 go ahead\r\n")
                        await writer.drain()
                        await reader.read(4096)  # the ClientHello; answered with nonsense
                        writer.write(b"this is not a TLS handshake\r\n")
                    else:
                        writer.write(b"454 4.7.0 no\r\n")
                    await writer.drain()
                    return
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    in_data = True
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 2.0.0 ok\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def test_opportunistic_handshake_failure_retries_in_plaintext() -> None:
    server = Scripted()
    # A bare LF and a bare CR in the message: neither reaches the wire bare (RFC 5321 §2.3.8).
    message = b"Subject: x\n\n.line one\nline two\rend\r\n"

    async def body(port: int) -> None:
        result = await attempt("mx.test", "127.0.0.1", port, "a@x.test", ["b@y.test"], message,
                               tls=TlsRequirement.opportunistic(), helo="client.test", timeouts=FAST)
        assert result.rcpts[0].outcome is Outcome.DELIVERED, result
        assert result.tls.fallback and not result.tls.started
        assert "handshake" in (result.tls.failure or "")
        assert server.connections == 2
        assert result.normalised == 4
        assert result.pipelined

    run(server, body)
    rest = bytes(server.received).replace(b"\r\n", b"")
    assert b"\r" not in rest and b"\n" not in rest
    assert b"..line one\r\nline two\r\nend\r\n.\r\n" in server.received  # dot-stuffed, CRLF only
    assert server.received.count(b"STARTTLS") == 1


def test_required_tls_does_not_fall_back() -> None:
    server = Scripted()

    async def body(port: int) -> None:
        result = await go(port, tls=TlsRequirement.pkix("mx.test"))
        assert result.rcpts[0].outcome is Outcome.TEMPORARY  # type: ignore[attr-defined]
        assert "handshake" in (result.tls.failure or "") and not result.tls.fallback  # type: ignore[attr-defined]
        assert server.connections == 1

    run(server, body)
    assert b"MAIL" not in server.received


def test_starttls_response_injection_is_refused() -> None:
    server = Scripted(inject=True)

    async def body(port: int) -> None:
        result = await go(port)
        assert "after the 220" in (result.error or "")  # type: ignore[attr-defined]
        assert result.rcpts[0].outcome is Outcome.TEMPORARY  # type: ignore[attr-defined]

    run(server, body)


def test_requiretls_needs_a_verifying_policy() -> None:
    async def body(port: int) -> None:
        result = await go(port, requiretls=True)
        assert [r.outcome for r in result.rcpts] == [Outcome.PERMANENT] * 2  # type: ignore[attr-defined]
        assert "REQUIRETLS" in (result.error or "")  # type: ignore[attr-defined]

    server = Scripted()
    run(server, body)
    assert server.connections == 0  # decided before connecting


class Keep:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes, bool]] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,  # type: ignore[attr-defined]
                              session.authenticated))  # type: ignore[attr-defined]
        return "250 2.0.0 kept"


def _auth(server: object, session: object, envelope: object, mechanism: str, data: object) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"user", b"pass")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535


@pytest.mark.parametrize("implicit", [True, False])
def test_auth_over_tls_with_aiosmtpd(tmp_path: Path, implicit: bool) -> None:
    certs = make_certs(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(certs.chain_pem), str(certs.key_pem))
    keep = Keep()
    kw: dict[str, object] = {"ssl_context": ctx} if implicit else {"tls_context": ctx, "require_starttls": True}
    port = free_port()
    controller = Controller(keep, hostname="127.0.0.1", port=port, authenticator=_auth,
                            auth_require_tls=not implicit,  # aiosmtpd counts only STARTTLS as TLS here
                            server_hostname="mx.remote.test", **kw)
    controller.start()
    try:
        tls = TlsRequirement.pkix("mx.remote.test", cafile=str(certs.ca_pem), implicit=implicit, policy="smarthost")
        result = asyncio.run(attempt("mx.remote.test", "127.0.0.1", port, "a@x.test", ["b@y.test"], b"Subject: s\r\n\r\nhi\r\n",
                                     tls=tls, helo="client.test", auth=Auth("user", "pass"), timeouts=Timeouts.all(5)))
        assert result.rcpts[0].outcome is Outcome.DELIVERED, result
        assert result.tls.verified and result.tls.verified_by == "pkix" and result.tls.version
        assert keep.messages[0][3] is True
        assert any(r.stage == "auth" and r.code == 235 for r in result.replies)
        bad = asyncio.run(attempt("mx.remote.test", "127.0.0.1", port, "a@x.test", ["b@y.test"], b"x\r\n",
                                  tls=tls, helo="client.test", auth=Auth("user", "wrong"), timeouts=Timeouts.all(5)))
        assert bad.rcpts[0].outcome is Outcome.TEMPORARY and "authentication failed" in bad.rcpts[0].reason
    finally:
        controller.stop()


def test_starttls_injection_arriving_late_is_refused() -> None:
    # The injected lines come after the 220, in a later segment: they wait in the stream's
    # buffer, and must not be read after the handshake as if they came through TLS.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 x\r\n")
        await reader.readline()
        writer.write(b"250-x\r\n250 STARTTLS\r\n")
        await reader.readline()
        writer.write(b"220 go ahead\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"250 2.0.0 injected\r\n")
        await writer.drain()
        await asyncio.sleep(2)
        writer.close()

    async def body(port: int) -> None:
        # Required TLS, so no plaintext retry: the injected reply either waits in the buffer
        # (refused before the handshake) or arrives during it (a failed handshake).
        result = await go(port, tls=TlsRequirement.pkix("mx.test"))
        assert result.rcpts[0].outcome is Outcome.TEMPORARY  # type: ignore[attr-defined]
        assert "after the 220" in (result.error or "") or "handshake" in (result.error or ""), result  # type: ignore[attr-defined]
        assert not any(r.code == 250 and "injected" in r.text for r in result.replies)  # type: ignore[attr-defined]

    run(handler, body)


def test_a_server_that_closes_after_354_is_a_temporary_failure() -> None:
    """The server goes away while the message is being sent: the attempt ends as a connection
    failure, temporary, not as a bug (here the drain notices first; a write that finds the
    transport already closed, which on uvloop raises RuntimeError, is turned into the same
    failure by `_write`)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 closing ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-closing\r\n250 PIPELINING\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    return  # and close, with the message under way
                else:
                    writer.write(b"250 2.0.0 ok\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def body(port: int) -> None:
        result = await attempt("mx.test", "127.0.0.1", port, "a@x.test", ["b@y.test"],
                               b"Subject: big\r\n\r\n" + b"x" * 76 + b"\r\n" * 1 + (b"y" * 998 + b"\r\n") * 20000,
                               tls=TlsRequirement.opportunistic(), helo="client.test", timeouts=FAST)
        assert [r.outcome for r in result.rcpts] == [Outcome.TEMPORARY]
        assert "connection" in (result.error or ""), result.error

    for _ in range(3):
        run(handler, body)
