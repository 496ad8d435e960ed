"""The IMAP listeners: bytes from the socket into the wire, its items through the session, responses back out."""

# One asyncio Protocol per connection keeps the input buffer in our hands, which STARTTLS needs:
# whatever plaintext the client pipelined behind STARTTLS is dropped before the handshake
# starts (RFC 9051 §6.2.1; the bug of CVE-2011-0411), and nothing but the handshake is read
# after it. Between writing the OK to STARTTLS and handing the socket to TLS nothing awaits, so
# no byte can land in between. The loop is otherwise the one of STYLE §1: read, receive(),
# handle(), encode(), write; plus the autologout timer and, while a client IDLEs, waiting for
# the account's next change as well as for input.

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import ssl
from typing import Any

from eventmail.imap import responses as r
from eventmail.imap.auth import Authenticator
from eventmail.imap.session import AUTOLOGOUT, PREAUTH_TIMEOUT, ServerOptions, Session
from eventmail.imap.wire import ImapWire, Limits
from eventmail.sasl import LoginLimiter, get_dummy_password_set
from eventmail.store import Store

log = logging.getLogger("eventmail.imap")

# Input held unread before the socket stops being read (a client pipelining hard while a long
# command runs); the wire's own Limits bound what one command may hold.
READ_HIGH = 1 << 20
# Output queued in the transport before the session waits for the client to read it.
WRITE_HIGH = 1 << 20
# Responses of one command are gathered up to this size before they are written: a FETCH of
# thousands of messages then costs a few send() calls instead of one per message.
BATCH_BYTES = 64 * 1024
# A TLS handshake that has not finished in this time is abandoned.
TLS_HANDSHAKE_TIMEOUT = 30.0

_ids = itertools.count(1)


class _Connection(asyncio.Protocol):
    def __init__(self, opts: ServerOptions, starttls_context: ssl.SSLContext | None, implicit_tls: bool) -> None:
        self.opts = opts
        self.starttls_context = starttls_context
        self.implicit_tls = implicit_tls
        self.transport: asyncio.Transport | None = None
        self.cid = f"#{next(_ids)}"
        self.peer = ""
        self._buf = bytearray()
        self._eof = False
        self._paused = False
        self._ready = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        # responses of the command being run, written together (None: write at once)
        self._batch: list[bytes] | None = None
        self._batch_size = 0

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
        self.cid = f"#{self.cid.lstrip('#')} {self.peer}"
        self._task = asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._ready.set()
        if len(self._buf) > READ_HIGH and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._ready.set()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._ready.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # ------------------------------------------------------------------ I/O helpers

    def _take(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def _write(self, wire: ImapWire, resp: r.Response) -> None:
        if isinstance(resp, r.StatusResponse) and resp.status in ("NO", "BAD", "BYE"):
            code = f" [{resp.code.name}]" if resp.code is not None else ""
            log.info("imap %s: %s %s%s %s", self.cid, resp.tag or "*", resp.status, code, resp.text)
        batching = self._batch is not None and not isinstance(resp, r.ContinuationRequest)
        try:
            data = wire.encode(resp, flush=not batching)
        except r.EncodeError:
            log.exception("imap %s: cannot encode a response", self.cid)
            data = wire.encode(r.no(None, "a response could not be sent", r.ResponseCode("SERVERBUG")),
                               flush=not batching)
        assert self.transport is not None
        if self.transport.is_closing():
            return
        if batching:
            assert self._batch is not None
            self._batch.append(data)
            self._batch_size += len(data)
            if self._batch_size >= BATCH_BYTES:
                self._flush(wire)
            return
        self._flush(wire)
        self.transport.write(data)
        if isinstance(resp, r.ContinuationRequest) and resp.challenge is None:
            self._ack_literal_at_once()

    def _flush(self, wire: ImapWire) -> None:
        """Write the responses batched so far in one go (one send() rather than one per FETCH)."""
        if self._batch:
            self._batch.append(wire.flush())
            data = b"".join(self._batch)
            self._batch.clear()
            self._batch_size = 0
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(data)

    def _ack_literal_at_once(self) -> None:
        """After `+ Ready` the client sends the literal and, in a second write, the CRLF that ends
        the command; with Nagle on its side that CRLF waits for our ACK of the literal, which
        Linux delays (up to 40 ms) because we just sent data and look interactive. Asking for a
        quick ACK now avoids that stall on every synchronising literal (imaplib's APPEND)."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None and hasattr(socket, "TCP_QUICKACK"):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    async def _drain(self) -> None:
        await self._writable.wait()

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    # ------------------------------------------------------------------ the connection

    async def _run(self) -> None:
        wire = ImapWire(self.opts.limits)
        session = Session(self.opts, wire, conn=self.cid, peer=self.peer, tls=self.implicit_tls)
        log.info("imap %s: connected%s", self.cid, " (TLS)" if self.implicit_tls else "")
        try:
            self._write(wire, session.greeting())
            while not self._closing():
                data = await self._next_input(wire, session)
                if data is None:
                    break
                if await self._feed(wire, session, data):
                    break
                await self._drain()
        except (ConnectionError, ssl.SSLError, TimeoutError) as e:
            log.info("imap %s: connection ended: %s", self.cid, e)
        except Exception:
            log.exception("imap %s: internal error; closing the connection", self.cid)
            with contextlib.suppress(Exception):
                self._write(wire, r.bye("internal server error"))
        finally:
            try:
                await session.close()
            except Exception:
                log.exception("imap %s: error while closing the session", self.cid)
            if self.transport is not None:
                self.transport.close()
            log.info("imap %s: disconnected", self.cid)

    async def _feed(self, wire: ImapWire, session: Session, data: bytes) -> bool:
        """Run what `data` completes; True when the connection is to close."""
        for item in wire.receive(data):
            self._batch = []
            try:
                async for resp in session.handle(item):
                    self._write(wire, resp)
                    if session.action is None and self.transport is not None \
                            and self.transport.get_write_buffer_size() > WRITE_HIGH:
                        await self._drain()
                self._flush(wire)
            finally:
                self._batch = None
            action, session.action = session.action, None
            if action == "close":
                await self._drain()
                return True
            if action == "starttls":
                return not await self._start_tls(wire, session)
            if action == "compress":
                self._buf.clear()  # RFC 4978 §3: the client sends nothing uncompressed after COMPRESS
                wire.start_compression()
            if self._closing():
                return True
        if wire.closed:
            # the wire gave up on the input (its last item says why, with BYE): nothing more to read
            await self._drain()
            return True
        return False

    async def _start_tls(self, wire: ImapWire, session: Session) -> bool:
        # Nothing has been awaited since the OK was written: drop the plaintext that came with
        # or after the command, then hand the socket to TLS.
        self._buf.clear()
        wire.start_tls()
        assert self.transport is not None and self.starttls_context is not None
        loop = asyncio.get_running_loop()
        try:
            new = await loop.start_tls(self.transport, self, self.starttls_context, server_side=True,
                                       ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError) as e:
            log.info("imap %s: STARTTLS handshake failed: %s", self.cid, e)
            return False
        if new is None:
            return False
        assert isinstance(new, asyncio.Transport)
        self.transport = new
        self._paused = False
        session.tls_started()
        log.info("imap %s: TLS started", self.cid)
        return True

    async def _next_input(self, wire: ImapWire, session: Session) -> bytes | None:
        """The next bytes from the client; meanwhile, tell an idling client of changes. None at
        end of input, or after the autologout timer ran out (RFC 9051 §5.4)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + session.timeout
        if wire.input_pending:
            # compressed input is inflated a bounded slice per receive(): let others run first
            await asyncio.sleep(0)
            return b""
        while True:
            if self._buf:
                return self._take()
            if self._eof:
                return None
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._write(wire, r.bye("autologout; idle for too long"))
                return None
            self._ready.clear()
            waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._ready.wait())]
            change: asyncio.Future[Any] | None = None
            if session.idle_tag is not None:
                change = asyncio.ensure_future(session.wait_change())
                waiters.append(change)
            done, pending = await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            for p in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await p
            if change is not None and change in done:
                change.result()
                for resp in session.idle_updates():
                    self._write(wire, resp)
                if session.action == "close":
                    return None
                await self._drain()


async def start_imap(
    store: Store,
    host: str,
    port: int,
    *,
    tls_context: ssl.SSLContext | None = None,
    starttls_context: ssl.SSLContext | None = None,
    allow_plaintext_auth: bool = False,
    limits: Limits = Limits(),  # noqa: B008 - frozen, so one shared default is safe
    limiter: LoginLimiter | None = None,
    autologout: float = AUTOLOGOUT,
    preauth_timeout: float = PREAUTH_TIMEOUT,
) -> asyncio.Server:
    """Listen for IMAP on host:port and serve the store's accounts.

    `tls_context`: implicit TLS (port 993, RFC 8314). `starttls_context`: plaintext with STARTTLS
    (port 143). With neither, the port is plaintext only and logins are refused unless
    `allow_plaintext_auth` is set and the client connects from loopback (localserve).
    Give the listeners of one server the same `limiter`, so failed logins count across ports.
    """
    auth = Authenticator(store, allow_plaintext=allow_plaintext_auth, limiter=limiter)
    opts = ServerOptions(store, auth, limits, starttls=starttls_context is not None and tls_context is None,
                         autologout=autologout, preauth_timeout=preauth_timeout)
    # Unknown user names are checked against a dummy credential so they cost what real ones do;
    # build it now rather than during the first such login.
    await get_dummy_password_set()
    loop = asyncio.get_running_loop()
    implicit = tls_context is not None
    return await loop.create_server(
        lambda: _Connection(opts, starttls_context, implicit), host, port, ssl=tls_context,
        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if implicit else None,
    )


__all__ = ["Authenticator", "start_imap"]
