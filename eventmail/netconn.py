"""The socket layer under every listener: accept, connections per network, TLS, bounded input and output.

SMTP and IMAP both serve their connections on this one asyncio Protocol, so each socket-level
rule exists once (docs/security.md, "Connections and the socket"):

- A connection is counted against its network (ConnectionLimiter, keyed like the login limiter)
  from the moment it is accepted, TLS handshake included, until it is closed. Over the cap a
  plaintext port gets the protocol's refusal line; an implicit-TLS port is just closed, as
  there is no TLS yet to speak in.
- Implicit TLS (465, 993; RFC 8314 §3) is started here after accept, with a handshake timeout,
  rather than by create_server(ssl=...), which would run the handshake before anything could
  count the connection.
- Input is held in our own buffer, so that STARTTLS can drop every byte received before the
  handshake whatever its size (RFC 3207 §4.2, RFC 9051 §6.2.1; CVE-2011-0411: a StreamReader
  keeps what it read ahead, and that ran inside TLS). Reading pauses above a high-water mark.
- Output waits in a queue of views of the producer's bytes and goes to the transport only while
  the transport holds less than a high-water mark; the producer awaits drain() while more is
  unsent. A client that reads nothing of it for the given timeout is closed and the memory is
  freed, rather than pinning it for ever.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

from .evloop import start_now
from .sasl.ratelimit import address_key

__all__ = ["Connection", "ConnectionLimiter", "SendTimeout", "Service", "SocketLimits", "TlsFailed", "listen"]

# Octets handed to the transport per write: big responses (a FETCH literal of a 40 MB message)
# go out in slices of this, so the transport never holds a copy of more than its mark plus one.
_SLICE = 64 * 1024


@dataclass(frozen=True, slots=True)
class SocketLimits:
    """What one connection may make the server hold, and how long it may stall it."""

    # Input received but not yet consumed before the socket stops being read (a client pipelining
    # hard while a long command runs). The protocol cores bound what one command may hold.
    read_high: int = 1 << 20
    # Output queued in the transport before the producer waits for the client to read: a few
    # round trips of a fast link, and what the IMAP listener has always used.
    write_high: int = 1 << 20
    # A TLS handshake is a couple of round trips; 30 s leaves a bad mobile link many times that,
    # and frees a stalled handshake's slot within half a minute (asyncio's default is 60 s).
    handshake_timeout: float = 30.0


class ConnectionLimiter:
    """Open connections per network, shared by every listener of one server.

    Keyed by eventmail.sasl.ratelimit.address_key (IPv4 as is, IPv4-mapped IPv6 as IPv4, other
    IPv6 by /64), the networks the failed-login limiter counts: an end site gets a whole /64, so
    counting single IPv6 addresses would let one host open as many connections as it likes.
    """

    def __init__(self, per_network: int) -> None:
        if per_network < 1:
            raise ValueError("per_network must be at least 1")
        self.per_network = per_network
        self._open: dict[str, int] = {}

    def acquire(self, address: str) -> str | None:
        """Count one connection from `address`; its key, or None when the network is at the cap."""
        key = address_key(address)
        n = self._open.get(key, 0)
        if n >= self.per_network:
            return None
        self._open[key] = n + 1
        return key

    def release(self, key: str) -> None:
        n = self._open.get(key, 0) - 1
        if n > 0:
            self._open[key] = n
        else:
            self._open.pop(key, None)

    def count(self, address: str) -> int:
        """Connections open from the network of `address` (for tests and metrics)."""
        return self._open.get(address_key(address), 0)


class SendTimeout(ConnectionError):
    """The client read none of its pending output within the timeout; the connection is closed."""


class TlsFailed(ConnectionError):
    """The TLS handshake failed or timed out; the connection is closed."""


Handler = Callable[["Connection"], Awaitable[None]]


@dataclass(frozen=True)
class Service:
    """What one listener serves: its protocol handler and how it refuses a connection over the cap."""

    name: str  # "smtp", "imap": the first word of every log line of its connections
    handler: Handler  # runs the protocol on an admitted connection; the layer closes it afterwards
    log: logging.Logger
    limiter: ConnectionLimiter
    refusal: bytes  # sent on a plaintext port to a connection over the cap, before closing
    implicit_tls: ssl.SSLContext | None = None  # RFC 8314 §3: TLS from the first octet
    limits: SocketLimits = field(default_factory=SocketLimits)
    id_prefix: str = ""  # IMAP's connection ids read "#12"


_ids = itertools.count(1)


class Connection(asyncio.Protocol):
    """One accepted socket. The handler reads with read()/take(), writes with write() and awaits
    drain(); start_tls() upgrades it. Everything runs on the event loop's thread."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.limits = service.limits
        self.log = service.log
        self.number = next(_ids)
        self.peer = ""
        self.label = f"{service.name} {service.id_prefix}{self.number}"
        self.tls = False
        self.dropped_before_tls = 0  # octets the last start_tls() threw away
        self.transport: asyncio.Transport | None = None
        self._slot: str | None = None  # the limiter key held while open
        self._in = bytearray()
        self._eof = False
        self._lost = False
        self._reading_paused = False
        self._input = asyncio.Event()
        self._out: collections.deque[memoryview] = collections.deque()
        self._out_size = 0
        self._room = asyncio.Event()
        self._room.set()
        self._transport_full = False  # between the transport's pause_writing() and resume_writing()
        self._task: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: uvloop's have asyncio.Transport's methods without being its subclass.
        transport = cast(asyncio.Transport, transport)
        if self.transport is not None:
            return  # the TLS transport of start_tls() does not call this; be safe if one does
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer or "")
        self.label = f"{self.label} {self.peer}"
        svc = self.service
        self._slot = svc.limiter.acquire(self.peer)
        if self._slot is None:
            if svc.implicit_tls is not None:
                svc.log.warning("%s: too many connections (%d from %s), closed before TLS", self.label,
                                svc.limiter.per_network, address_key(self.peer))
                transport.abort()
            else:
                svc.log.warning("%s: too many connections (%d from %s), refused: %s", self.label,
                                svc.limiter.per_network, address_key(self.peer), svc.refusal.decode().strip())
                transport.write(svc.refusal)
                transport.close()
            return
        transport.set_write_buffer_limits(high=self.limits.write_high)
        if svc.implicit_tls is not None:
            # The first octets are the ClientHello, for TLS to read: the socket goes to TLS
            # (_run's first step, start_tls) before this returns and the transport reads.
            self._task = start_now(self._run())
        else:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def data_received(self, data: bytes) -> None:
        self._in += data
        self._input.set()
        if len(self._in) > self.limits.read_high and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._input.set()
        # Keep a half-closed plain socket open: the replies to what the client sent before its
        # FIN still go out, and the handler closes. (TLS cannot keep a half-closed stream.)
        return None if self.tls else True

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        self._input.set()
        self._out.clear()
        self._out_size = 0
        self._room.set()
        self._release()

    def pause_writing(self) -> None:
        self._transport_full = True  # called from inside transport.write(): _pump() stops there

    def resume_writing(self) -> None:
        self._transport_full = False
        self._room.set()
        self._pump()

    # ------------------------------------------------------------------ the connection's life

    async def _run(self) -> None:
        try:
            if self.service.implicit_tls is not None:
                await self.start_tls(self.service.implicit_tls)
            await self.service.handler(self)
        except TlsFailed:
            pass  # logged where it failed
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError) as e:
            self.log.info("%s: connection ended: %s", self.label, e or type(e).__name__)
        except Exception:
            self.log.exception("%s: internal error; closing the connection", self.label)
        finally:
            self.close()

    def _release(self) -> None:
        if self._slot is not None:
            self.service.limiter.release(self._slot)
            self._slot = None

    def close(self, linger: float = 10.0) -> None:
        """Close after the unsent output is out; a client that has not taken it within `linger`
        seconds is cut off (transport.close() alone would wait for a client that never reads)."""
        t = self.transport
        if t is None or self._lost:
            self._release()
            return
        if not t.is_closing():
            while self._out:  # what the handler wrote last (a BYE, a 421) goes out before the FIN
                t.write(self._out.popleft())
            t.close()
        self._out.clear()
        self._out_size = 0
        if t.get_write_buffer_size():
            asyncio.get_running_loop().call_later(linger, self._cut_off, t)

    def _cut_off(self, t: asyncio.Transport) -> None:
        if not self._lost:
            self.log.info("%s: closed with %d octets the client did not read", self.label, t.get_write_buffer_size())
            _reset(t)

    def abort(self) -> None:
        """Close at once, dropping unsent output: ours, the transport's and the kernel's."""
        self._out.clear()
        self._out_size = 0
        if self.transport is not None:
            _reset(self.transport)

    @property
    def closing(self) -> bool:
        return self._lost or self.transport is None or self.transport.is_closing()

    # ------------------------------------------------------------------ input

    @property
    def at_eof(self) -> bool:
        """No more input will come, and none is left."""
        return self._eof and not self._in

    @property
    def has_input(self) -> bool:
        return bool(self._in)

    def take(self) -> bytes:
        """Everything received and not yet taken."""
        data = bytes(self._in)
        self._in.clear()
        if self._reading_paused and self.transport is not None and not self._lost:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def drop_input(self) -> int:
        """Forget everything received and not yet taken; how many octets that was."""
        return len(self.take())

    async def wait_input(self) -> None:
        """Until there is input or the input has ended (cancel-safe)."""
        while not self._in and not self._eof:
            self._input.clear()
            await self._input.wait()

    async def read(self, timeout: float) -> bytes:
        """The input received so far, waiting up to `timeout` seconds for some (TimeoutError if
        none comes); b"" once the input has ended."""
        if not self._in and not self._eof:
            # asyncio.timeout rather than wait_for: no task of its own per read (an SMTP delivery
            # reads about nine times), only a timer that cancels this one's wait.
            async with asyncio.timeout(timeout):
                await self.wait_input()
        return self.take()

    # ------------------------------------------------------------------ output

    @property
    def unsent(self) -> int:
        """Octets written and not yet taken by the kernel: queued here plus held by the transport."""
        held = self.transport.get_write_buffer_size() if self.transport is not None and not self._lost else 0
        return self._out_size + held

    def write(self, data: bytes) -> None:
        """Queue `data` (not copied) and send what the transport has room for; never blocks.
        Producers await drain() to bound how much waits."""
        if not data or self.closing:
            return
        self._out.append(memoryview(data))
        self._out_size += len(data)
        self._pump()

    def _pump(self) -> None:
        t = self.transport
        if t is None or self._lost:
            return
        high = self.limits.write_high
        while self._out and not self._transport_full and not t.is_closing():
            head = self._out[0]
            if len(head) > _SLICE:
                piece, self._out[0] = head[:_SLICE], head[_SLICE:]
            else:
                piece = self._out.popleft()
            self._out_size -= len(piece)
            t.write(piece)
        if self.unsent <= high:
            self._room.set()

    async def drain(self, timeout: float) -> None:
        """Wait while more than the write mark is unsent. A client that takes none of it in
        `timeout` seconds is closed (logged) and SendTimeout raised; one that reads slowly is not,
        as long as each `timeout` sees some of its output go."""
        high = self.limits.write_high
        while self.unsent > high:
            if self._lost:
                raise ConnectionResetError("connection lost")
            before = self.unsent
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), timeout)
            except TimeoutError:
                if self.unsent < before:
                    continue  # slow, not stalled
                unsent = self.unsent
                self.log.warning("%s: client read nothing for %g s with %d octets unsent; closing",
                                 self.label, timeout, unsent)
                self.abort()
                raise SendTimeout(f"client did not read {unsent} octets") from None
        if self._lost:
            raise ConnectionResetError("connection lost")

    def quick_ack(self) -> None:
        """Ask the kernel to ACK the next segment at once (Linux TCP_QUICKACK); see the IMAP
        listener's use after a continuation request."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None and hasattr(socket, "TCP_QUICKACK"):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    # ------------------------------------------------------------------ TLS

    async def start_tls(self, context: ssl.SSLContext) -> int:
        """Hand the socket to TLS (server side) and return how many octets received before the
        handshake were dropped. Nothing received in the clear survives, whatever its size
        (RFC 3207 §4.2, RFC 9051 §6.2.1): what this layer holds is dropped here, what is still in
        the kernel is read by TLS as its own records (and breaks the handshake). Queued output
        goes first, in the clear. TlsFailed (logged) if the handshake fails or times out."""
        assert self.transport is not None
        # A transport paused for output cannot be handed over (its resume_writing() would reach
        # the TLS protocol, which never paused): let the client take its output first.
        while self._transport_full and not self._lost:
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), self.limits.handshake_timeout)
            except TimeoutError:
                self.log.warning("%s: client read nothing for %g s before TLS; closing", self.label,
                                 self.limits.handshake_timeout)
                self.abort()
                raise SendTimeout("client did not read before TLS") from None
        # No await from here to loop.start_tls()'s pause_reading(): no byte can land in between.
        dropped = self.dropped_before_tls = self.drop_input()
        self._reading_paused = False  # start_tls() pauses and resumes reading itself
        while self._out:
            self.transport.write(self._out.popleft())
        self._out_size = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            new = await loop.start_tls(self.transport, self, context, server_side=True,
                                       ssl_handshake_timeout=self.limits.handshake_timeout)
        except (ConnectionError, ssl.SSLError, TimeoutError, OSError) as e:
            self._lost = True
            self._release()
            elapsed = loop.time() - started
            if elapsed >= self.limits.handshake_timeout:
                self.log.info("%s: TLS handshake not done in %g s, closed", self.label, self.limits.handshake_timeout)
            else:
                self.log.info("%s: TLS handshake failed: %s", self.label, e or type(e).__name__)
            raise TlsFailed(str(e)) from None
        if new is None:
            self._lost = True
            self._release()
            raise TlsFailed("connection closed during the TLS handshake")
        self.transport = new
        self._transport_full = False
        new.set_write_buffer_limits(high=self.limits.write_high)
        self.tls = True
        return dropped


def _reset(t: asyncio.Transport) -> None:
    """Abort with a TCP reset: SO_LINGER 0 makes close() drop what the kernel still holds for a
    client that does not read, instead of keeping it as an orphan until TCP gives up."""
    sock = t.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    t.abort()


async def listen(host: str, port: int, service: Service) -> asyncio.Server:
    """Listen on host:port; every accepted socket becomes a Connection of `service`. TLS, when
    implicit, is started by the Connection after accept, not by the server."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: Connection(service), host, port)
