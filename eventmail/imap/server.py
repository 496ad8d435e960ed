"""The IMAP listeners: bytes from the socket into the wire, its items through the session, responses back out."""

# The socket layer (eventmail.netconn) owns the connection: the count per network, implicit TLS
# (993) with a handshake timeout, bounded input and unsent output, and STARTTLS, which drops
# whatever plaintext the client pipelined behind the command before the handshake starts
# (RFC 9051 §6.2.1; the bug of CVE-2011-0411). Between writing the OK to STARTTLS and handing
# the socket to TLS nothing awaits, so no byte can land in between. The loop here is the one of
# STYLE §1: read, receive(), handle(), encode(), write; plus the autologout timer and, while a
# client IDLEs or has NOTIFY set (RFC 5465), waiting for the account's next change as well as for input.

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from eventmail import metrics
from eventmail.imap import responses as r
from eventmail.imap.auth import Authenticator
from eventmail.imap.session import AUTOLOGOUT, LOGOUT_BYE, PREAUTH_TIMEOUT, ServerOptions, Session
from eventmail.imap.wire import ImapWire, Limits
from eventmail.mail.ingest import Analyze
from eventmail.netconn import Connection, ConnectionLimiter, Service, SocketLimits, TlsFailed, listen
from eventmail.sasl import LoginLimiter, get_dummy_password_set
from eventmail.store import Store

log = logging.getLogger("eventmail.imap")

# Responses of one command are gathered up to this size before they are written: a FETCH of
# thousands of messages then costs a few send() calls instead of one per message.
BATCH_BYTES = 64 * 1024
# The longest a logged-in client may leave its pending output unread before it is closed: the
# autologout timer (30 min, RFC 9051 §5.4) is for a quiet client, not for one that holds a 40 MB
# FETCH literal in our memory; 5 minutes is the server timeout of RFC 5321 §4.5.3.2.7.
# Before login the (shorter) pre-auth timeout applies. Set by the [limits] idle_timeout.
SEND_TIMEOUT = 300.0
# More connections from one network than this are refused with BYE (the server shares one count
# across its listeners: eventmail.config.ServerLimits.connections_per_ip).
MAX_CONNECTIONS_PER_IP = 50
TOO_MANY_CONNECTIONS = b"* BYE too many connections from your network\r\n"


class _Connection:
    """One IMAP session on a socket-layer connection."""

    def __init__(self, opts: ServerOptions, starttls_context: ssl.SSLContext | None, io: Connection,
                 send_timeout: float) -> None:
        self.opts = opts
        self.starttls_context = starttls_context
        self.io = io
        self.send_timeout = send_timeout
        self.cid = f"{io.label.split(' ', 1)[1]}"  # "#12 192.0.2.1", as the session logs it
        # responses of the command being run, written together (None: write at once)
        self._batch: list[bytes] | None = None
        self._batch_size = 0

    # ------------------------------------------------------------------ I/O helpers

    def _write(self, wire: ImapWire, resp: r.Response) -> None:
        if isinstance(resp, r.StatusResponse) and resp.status in ("NO", "BAD", "BYE") and resp is not LOGOUT_BYE:
            code = f" [{resp.code.name}]" if resp.code is not None else ""
            log.info("imap %s: %s %s%s %s", self.cid, resp.tag or "*", resp.status, code, resp.text)
        batching = self._batch is not None and not isinstance(resp, r.ContinuationRequest)
        try:
            data = wire.encode(resp, flush=not batching)
        except r.EncodeError:
            log.exception("imap %s: cannot encode a response", self.cid)
            data = wire.encode(r.no(None, "a response could not be sent", r.ResponseCode("SERVERBUG")),
                               flush=not batching)
        if self.io.closing:
            return
        if batching:
            assert self._batch is not None
            self._batch.append(data)
            self._batch_size += len(data)
            if self._batch_size >= BATCH_BYTES:
                self._flush(wire)
            return
        self._flush(wire)
        self.io.write(data)
        if isinstance(resp, r.ContinuationRequest) and resp.challenge is None:
            # After `+ Ready` the client sends the literal and, in a second write, the CRLF that
            # ends the command; with Nagle on its side that CRLF waits for our ACK of the
            # literal, which Linux delays (up to 40 ms) because we just sent data and look
            # interactive. A quick ACK avoids that stall on every synchronising literal.
            self.io.quick_ack()

    def _flush(self, wire: ImapWire) -> None:
        """Write the responses batched so far in one go (one send() rather than one per FETCH)."""
        if self._batch:
            self._batch.append(wire.flush())
            data = b"".join(self._batch)
            self._batch.clear()
            self._batch_size = 0
            self.io.write(data)

    async def _drain(self, session: Session) -> None:
        """Wait while too much output is unsent; a client that reads none of it within the
        session's timeout (the pre-auth one before login, at most SEND_TIMEOUT after) is closed."""
        await self.io.drain(min(session.timeout, self.send_timeout))

    # ------------------------------------------------------------------ the connection

    async def run(self) -> None:
        wire = ImapWire(self.opts.limits)
        session = Session(self.opts, wire, conn=self.cid, peer=self.io.peer, tls=self.io.tls)
        log.info("imap %s: connected%s", self.cid, " (TLS)" if self.io.tls else "")
        metrics.IMAP_SESSIONS.inc()
        try:
            self._write(wire, session.greeting())
            while not self.io.closing:
                data = await self._next_input(wire, session)
                if data is None:
                    break
                if await self._feed(wire, session, data):
                    break
                await self._drain(session)
        except (ConnectionError, ssl.SSLError, TimeoutError) as e:
            if not isinstance(e, TlsFailed):  # the socket layer logged those, and write stalls
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
            metrics.IMAP_SESSIONS.dec()
            log.info("imap %s: disconnected", self.cid)

    async def _feed(self, wire: ImapWire, session: Session, data: bytes) -> bool:
        """Run what `data` completes; True when the connection is to close.

        The responses of commands that arrived together (a client pipelining, RFC 9051 §5.5)
        go out in one write after the last of them: one send() instead of one per command."""
        items = wire.receive(data)
        for n, item in enumerate(items, 1):
            if self._batch is None:
                self._batch = []
            try:
                async for resp in session.handle(item):
                    self._write(wire, resp)
                    if session.action is None and self.io.unsent > self.io.limits.write_high:
                        self._flush(wire)
                        await self._drain(session)
                if n == len(items) or session.action is not None or self.io.closing:
                    self._flush(wire)
                    self._batch = None
            except BaseException:
                with contextlib.suppress(Exception):  # what earlier commands answered still goes out
                    self._flush(wire)
                self._batch = None
                raise
            action, session.action = session.action, None
            if action == "close":
                await self._drain(session)
                return True
            if action == "starttls":
                return not await self._start_tls(wire, session)
            if action == "compress":
                self.io.drop_input()  # RFC 4978 §3: the client sends nothing uncompressed after COMPRESS
                wire.start_compression()
            if self.io.closing:
                return True
        if wire.closed:
            # the wire gave up on the input (its last item says why, with BYE): nothing more to read
            await self._drain(session)
            return True
        return False

    async def _start_tls(self, wire: ImapWire, session: Session) -> bool:
        # Nothing has been awaited since the OK was written: the plaintext that came with or
        # after the command, in the wire or in the socket layer, is dropped; then the handshake.
        held = wire.start_tls()
        assert self.starttls_context is not None
        try:
            await self.io.start_tls(self.starttls_context)
        except TlsFailed:
            return False
        finally:
            dropped = held + self.io.dropped_before_tls
            if dropped:
                log.warning("imap %s: dropped %d octets pipelined behind STARTTLS", self.cid, dropped)
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
            if self.io.has_input:
                return self.io.take()
            if self.io.at_eof:
                return None
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._write(wire, r.bye("autologout; idle for too long"))
                return None
            waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.io.wait_input())]
            change: asyncio.Future[Any] | None = None
            if session.idle_tag is not None or session.notifying:  # RFC 2177 IDLE, RFC 5465 NOTIFY
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
                for resp in session.idle_updates(between=session.idle_tag is None):
                    self._write(wire, resp)
                if session.action != "close":
                    for resp in await session.live_updates():  # RFC 5267 §4.3, during IDLE too
                        self._write(wire, resp)
                if session.action == "close":
                    return None
                await self._drain(session)


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
    connections: ConnectionLimiter | None = None,
    autologout: float = AUTOLOGOUT,
    preauth_timeout: float = PREAUTH_TIMEOUT,
    send_timeout: float = SEND_TIMEOUT,
    socket_limits: SocketLimits = SocketLimits(),  # noqa: B008 - frozen
    analyze: Analyze | None = None,
) -> asyncio.Server:
    """Listen for IMAP on host:port and serve the store's accounts.

    `tls_context`: implicit TLS (port 993, RFC 8314). `starttls_context`: plaintext with STARTTLS
    (port 143). With neither, the port is plaintext only and logins are refused unless
    `allow_plaintext_auth` is set and the client connects from loopback (localserve).
    `analyze`: where APPENDed messages are parsed and tokenized (the server's analyser).
    Give the listeners of one server the same `limiter` and `connections`, so failed logins and
    open connections count across ports (without `connections` this listener counts alone).
    """
    auth = Authenticator(store, allow_plaintext=allow_plaintext_auth, limiter=limiter)
    opts = ServerOptions(store, auth, limits, starttls=starttls_context is not None and tls_context is None,
                         autologout=autologout, preauth_timeout=preauth_timeout, analyze=analyze)
    # Unknown user names are checked against a dummy credential so they cost what real ones do;
    # build it now rather than during the first such login.
    await get_dummy_password_set()

    async def handle(io: Connection) -> None:
        await _Connection(opts, starttls_context, io, send_timeout).run()

    service = Service(
        name="imap", handler=handle, log=log, limiter=connections or ConnectionLimiter(MAX_CONNECTIONS_PER_IP),
        refusal=TOO_MANY_CONNECTIONS, implicit_tls=tls_context, limits=socket_limits, id_prefix="#",
    )
    return await listen(host, port, service)


__all__ = ["Authenticator", "start_imap"]
