"""One delivery attempt: one message to one host over a real socket, with the TLS policy given, recorded for the queue.

The queue runner (and the MX/MTA-STS/DANE policy code above it) decides which host, which
address and which TlsRequirement; attempt() carries the message there with the sans-IO client
(client.py) and returns an AttemptResult that says everything the queue puts in its event: where,
how the TLS went and under which policy, every reply, and per recipient delivered / temporary /
permanent with the reason. It never retries later and never decides which host is next.

Plain asyncio streams with bounded reads (4 KiB at a time into the bounded ReplyParser) rather
than netconn.py, whose Connection is the server side of a listener; a deadline per reply
(RFC 5321 §4.5.3.2) bounds a server that trickles one octet at a time.

TLS (RFC 7435, RFC 8461, RFC 7672, RFC 8314):
- opportunistic: STARTTLS when offered, any certificate; plaintext when not offered. If STARTTLS
  is offered but the handshake fails, RFC 7435 §3 (and Postfix, and Mox) try again without TLS:
  a new connection that does not ask for STARTTLS; TlsOutcome.fallback says so.
- pkix: STARTTLS required, the certificate verified against the given trust store and name
  (MTA-STS `enforce`, RFC 8461 §4.2; a smarthost).
- dane: STARTTLS required, the chain checked against the TLSA records (dane.py). Without a usable
  record, TLS is still required but not verified (RFC 7672 §2.2).
- implicit TLS from the first octet (a smarthost on 465, RFC 8314 §3), verified by PKIX.
- plaintext: no TLS at all (tests; a local relay).
A required TLS that fails is a temporary failure for every recipient (RFC 7672 §2.2, RFC 8461 §5).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
from dataclasses import dataclass, field
from typing import Any

from eventmail.smtp.client import (
    Answer,
    ClientLimits,
    ClientProtocolError,
    Command,
    Envelope,
    PreparedMessage,
    Refusal,
    ServerReply,
    SmtpClient,
    plan_transaction,
    prepare_message,
)
from eventmail.smtp.dane import verify_chain
from eventmail.smtp.tlspolicy import TlsMode, TlsRequirement, usable

__all__ = [
    "AttemptResult",
    "Auth",
    "Outcome",
    "RcptResult",
    "RemoteReply",
    "Timeouts",
    "TlsMode",
    "TlsOutcome",
    "TlsRequirement",
    "attempt",
]

# Reading 4 KiB at a time keeps what one read() can hand over small; the parser bounds the rest.
_READ = 4096
# Message content goes to the socket in slices of this, each write's drain under the data-block
# timeout (RFC 5321 §4.5.3.2.5).
_SLICE = 64 * 1024
_DEFAULT_LIMITS = ClientLimits()


@dataclass(frozen=True, slots=True)
class Timeouts:
    """RFC 5321 §4.5.3.2, in seconds; configurable, small in tests."""

    connect: float = 30.0  # not in the RFC: Postfix's smtp_connect_timeout
    greeting: float = 300.0  # §4.5.3.2.1 initial 220: 5 minutes
    command: float = 300.0  # EHLO, STARTTLS, AUTH, RSET, QUIT: as MAIL
    mail: float = 300.0  # §4.5.3.2.2 MAIL: 5 minutes
    rcpt: float = 300.0  # §4.5.3.2.3 RCPT: 5 minutes
    data_init: float = 120.0  # §4.5.3.2.4 DATA initiation: 2 minutes
    data_block: float = 180.0  # §4.5.3.2.5 each data block: 3 minutes
    data_end: float = 600.0  # §4.5.3.2.6 after CRLF.CRLF: 10 minutes
    tls_handshake: float = 60.0  # not in the RFC: as asyncio's default

    @classmethod
    def all(cls, seconds: float) -> Timeouts:
        return cls(*([seconds] * 9))


@dataclass(frozen=True, slots=True)
class Auth:
    """Credentials for a smarthost: PLAIN or LOGIN (whichever the server offers), only over TLS."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"Auth(user={self.user!r}, password=...)"


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class RemoteReply:
    stage: str  # "greeting", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "message", "quit"
    code: int
    enhanced: str | None
    text: str
    rcpt: str | None = None

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced + ' ' if self.enhanced else ''}{self.text}".rstrip()


@dataclass(frozen=True, slots=True)
class RcptResult:
    rcpt: str
    outcome: Outcome
    reason: str
    reply: RemoteReply | None = None  # the reply that decided, when the server gave one


@dataclass(slots=True)
class TlsOutcome:
    policy: str
    started: bool = False
    version: str | None = None
    cipher: str | None = None
    verified: bool = False
    verified_by: str | None = None  # "pkix", "dane-ee", "dane-ta"
    failure: str | None = None  # why TLS failed or was not used
    fallback: bool = False  # opportunistic: the handshake failed, delivered by a second, plaintext connection


@dataclass(slots=True)
class AttemptResult:
    host: str
    ip: str
    port: int
    tls: TlsOutcome
    rcpts: list[RcptResult] = field(default_factory=list)
    replies: list[RemoteReply] = field(default_factory=list)
    error: str | None = None  # what ended the attempt early (timeout, protocol error, TLS, ...)
    pipelined: bool = False  # MAIL, the RCPTs and DATA went in one write (RFC 2920)
    writes: int = 0  # command writes: the round trips this attempt took
    normalised: int = 0  # bare CR/LF made CRLF before sending (RFC 5321 §2.3.8)

    def outcome(self, rcpt: str) -> Outcome:
        return next(r.outcome for r in self.rcpts if r.rcpt == rcpt)

    @property
    def delivered(self) -> list[str]:
        return [r.rcpt for r in self.rcpts if r.outcome is Outcome.DELIVERED]


class _Stop(Exception):
    """Ends the attempt: every recipient not yet decided gets `outcome` with `reason`."""

    def __init__(self, reason: str, outcome: Outcome = Outcome.TEMPORARY, reply: RemoteReply | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcome = outcome
        self.reply = reply


class _HandshakeFailed(_Stop):
    """The STARTTLS handshake failed: under opportunistic TLS, try again in plaintext."""


_STAGE = {
    Command.GREETING: "greeting",
    Command.EHLO: "ehlo",
    Command.HELO: "helo",
    Command.STARTTLS: "starttls",
    Command.AUTH: "auth",
    Command.MAIL: "mail",
    Command.RCPT: "rcpt",
    Command.DATA: "data",
    Command.MESSAGE: "message",
    Command.RSET: "rset",
    Command.NOOP: "noop",
    Command.QUIT: "quit",
}


def _remote(answer: Answer) -> RemoteReply:
    r = answer.reply
    return RemoteReply(_STAGE[answer.command], r.code, r.enhanced, r.text, answer.rcpt)


def _classify(reply: ServerReply) -> Outcome:
    if reply.positive:
        return Outcome.DELIVERED
    return Outcome.PERMANENT if reply.permanent else Outcome.TEMPORARY


async def attempt(
    host: str,
    ip: str,
    port: int,
    mail_from: str,
    rcpts: list[str] | tuple[str, ...],
    message: bytes,
    *,
    tls: TlsRequirement,
    helo: str,
    auth: Auth | None = None,
    timeouts: Timeouts = Timeouts(),
    requiretls: bool = False,
    limits: ClientLimits = _DEFAULT_LIMITS,
) -> AttemptResult:
    """Carry `message` to `ip`:`port` (the server `host`) for `rcpts`; never raises for the peer's faults."""
    envelope = Envelope(mail_from, tuple(rcpts), requiretls)
    prepared = prepare_message(message)
    if requiretls and not tls.verifies:
        # RFC 8689 §4.2.1: without a verifying policy (DANE or MTA-STS) the message does not go.
        result = AttemptResult(host, ip, port, TlsOutcome(tls.policy), normalised=prepared.normalised)
        reason = "REQUIRETLS message and no verified TLS policy for this host (RFC 8689 §4.2.1)"
        result.rcpts = [RcptResult(r, Outcome.PERMANENT, reason) for r in rcpts]
        result.error = reason
        return result
    run = _Attempt(host, ip, port, envelope, prepared, tls, helo, auth, timeouts, limits)
    result = await run.run(starttls=True)
    if run.handshake_failed is not None and tls.mode is TlsMode.OPPORTUNISTIC and not tls.implicit:
        # RFC 7435 §3: opportunistic security falls back to cleartext rather than not delivering.
        reason = run.handshake_failed
        retry = _Attempt(host, ip, port, envelope, prepared, tls, helo, auth, timeouts, limits)
        result = await retry.run(starttls=False)
        result.tls.failure = reason
        result.tls.fallback = True
        result.replies = run.result.replies + result.replies
        result.writes += run.result.writes
    return result


class _Attempt:
    def __init__(
        self,
        host: str,
        ip: str,
        port: int,
        envelope: Envelope,
        prepared: PreparedMessage,
        tls: TlsRequirement,
        helo: str,
        auth: Auth | None,
        timeouts: Timeouts,
        limits: ClientLimits,
    ) -> None:
        self.host, self.ip, self.port = host, ip, port
        self.envelope, self.prepared = envelope, prepared
        self.req, self.helo, self.auth, self.timeouts = tls, helo, auth, timeouts
        self.client = SmtpClient(limits)
        self.result = AttemptResult(host, ip, port, TlsOutcome(tls.policy), normalised=prepared.normalised)
        self.decided: dict[str, RcptResult] = {}
        self.handshake_failed: str | None = None
        self._answers: list[Answer] = []
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def run(self, *, starttls: bool) -> AttemptResult:
        try:
            await self._session(starttls)
        except _Stop as stop:
            self.result.error = stop.reason
            if isinstance(stop, _HandshakeFailed):
                self.handshake_failed = stop.reason
            self._decide_rest(stop.outcome, stop.reason, stop.reply)
        except TimeoutError:
            self._stop_temporary("timed out waiting for the server")
        except ClientProtocolError as exc:
            self._stop_temporary(f"protocol error: {exc}")
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
            self._stop_temporary(f"connection: {exc.__class__.__name__}: {exc}".rstrip(": "))
        finally:
            await self._close()
        self.result.rcpts = [self.decided[r] for r in self.envelope.rcpts]
        return self.result

    def _stop_temporary(self, reason: str) -> None:
        self.result.error = reason
        self._decide_rest(Outcome.TEMPORARY, reason, None)

    def _decide_rest(self, outcome: Outcome, reason: str, reply: RemoteReply | None) -> None:
        for r in self.envelope.rcpts:
            self.decided.setdefault(r, RcptResult(r, outcome, reason, reply))

    # -----------------------------------------------------------------------------------------
    # I/O
    # -----------------------------------------------------------------------------------------

    async def _write(self, data: bytes, timeout: float) -> None:
        assert self._writer is not None
        self.result.writes += 1
        async with asyncio.timeout(timeout):
            for i in range(0, len(data), _SLICE):
                if self._writer.is_closing():
                    # the server went away: uvloop's write would raise RuntimeError here (asyncio's
                    # drops the bytes and its drain raises this), so both loops end the same way
                    raise ConnectionResetError("connection closed by the server")
                self._writer.write(data[i : i + _SLICE])
                await self._writer.drain()

    async def _next(self, timeout: float) -> Answer:
        """The next reply, within `timeout` for the whole of it (not per read)."""
        assert self._reader is not None
        async with asyncio.timeout(timeout):
            while not self._answers:
                data = await self._reader.read(_READ)
                if not data:
                    raise EOFError("server closed the connection")
                self._answers.extend(self.client.receive(data))
        answer = self._answers.pop(0)
        self.result.replies.append(_remote(answer))
        if answer.reply.code == 421 and answer.command is not Command.QUIT:
            # RFC 5321 §3.8: the server is closing the channel; everything open is temporary.
            raise _Stop(f"server closing: {answer.reply}", Outcome.TEMPORARY, _remote(answer))
        return answer

    async def _command(self, data: bytes, timeout: float) -> Answer:
        await self._write(data, timeout)
        return await self._next(timeout)

    async def _close(self) -> None:
        writer = self._writer
        if writer is None:
            return
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()

    # -----------------------------------------------------------------------------------------
    # The session
    # -----------------------------------------------------------------------------------------

    async def _session(self, starttls: bool) -> None:
        t = self.timeouts
        ctx = self._context() if self.req.implicit else None
        async with asyncio.timeout(t.connect + (t.tls_handshake if ctx else 0)):
            self._reader, self._writer = await asyncio.open_connection(
                self.ip,
                self.port,
                ssl=ctx,
                server_hostname=self.req.host_name or self.host if ctx else None,
                ssl_handshake_timeout=t.tls_handshake if ctx else None,
                limit=_READ * 4,
            )
        if ctx is not None:
            self.client.implicit_tls()
            self._tls_done()
        greeting = await self._next(t.greeting)
        if not greeting.reply.positive:
            # RFC 5321 §3.1: 554 greeting: no service here; 4xx: come back later.
            raise _Stop(f"greeting: {greeting.reply}", _classify(greeting.reply), _remote(greeting))
        await self._hello()
        if not self.req.implicit and self.req.mode is not TlsMode.PLAINTEXT:
            await self._starttls(starttls)
        if self.auth is not None:
            await self._authenticate(self.auth)
        plan = plan_transaction(
            self.client.capabilities, self.envelope, self.prepared, verified_tls=self.result.tls.verified
        )
        if isinstance(plan, Refusal):
            raise _Stop(f"{plan.code} {plan.enhanced} {plan.reason}", Outcome.PERMANENT)
        await self._transaction(plan.mail_params)
        with contextlib.suppress(_Stop, TimeoutError, OSError, EOFError, ClientProtocolError):
            await self._command(self.client.quit(), min(t.command, 5.0))

    async def _hello(self) -> None:
        answer = await self._command(self.client.ehlo(self.helo), self.timeouts.command)
        if answer.reply.positive:
            return
        if answer.reply.permanent and not self.client.tls:
            # RFC 5321 §3.2: a server that does not know EHLO gets HELO.
            answer = await self._command(self.client.helo(self.helo), self.timeouts.command)
            if answer.reply.positive:
                return
        raise _Stop(f"EHLO: {answer.reply}", _classify(answer.reply), _remote(answer))

    def _context(self) -> ssl.SSLContext:
        req = self.req
        if req.mode is TlsMode.PKIX or req.implicit:
            ctx = ssl.create_default_context(cafile=req.cafile)
        else:
            # Opportunistic and DANE: the handshake takes any certificate; DANE checks the chain
            # itself afterwards (RFC 7672 §3: PKIX trust anchors play no part).
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8996, RFC 7525 §3.1.1
        return ctx

    async def _starttls(self, allowed: bool) -> None:
        req, tls = self.req, self.result.tls
        if not allowed:
            tls.failure = "not attempted: the handshake failed on the previous connection"
            return
        if not self.client.capabilities.starttls:
            if req.required:
                # RFC 7672 §2.2, RFC 8461 §5: no TLS, no delivery to this host.
                raise _Stop(f"STARTTLS not offered and {req.policy} requires TLS")
            tls.failure = "STARTTLS not offered"
            return
        answer = await self._command(self.client.starttls(), self.timeouts.command)
        if answer.reply.code != 220:
            if req.required:
                raise _Stop(f"STARTTLS refused: {answer.reply}", Outcome.TEMPORARY, _remote(answer))
            tls.failure = f"STARTTLS refused: {answer.reply}"
            return  # RFC 3207 §4: the session goes on in the clear
        assert self._writer is not None
        self._nothing_in_the_clear()
        try:
            async with asyncio.timeout(self.timeouts.tls_handshake):
                await self._writer.start_tls(
                    self._context(), server_hostname=req.host_name or self.host, ssl_handshake_timeout=self.timeouts.tls_handshake
                )
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            reason = f"TLS handshake failed: {exc.__class__.__name__}: {exc}"
            tls.failure = reason
            if req.required:
                raise _Stop(reason) from exc
            raise _HandshakeFailed(reason) from exc
        self._nothing_in_the_clear()
        self.client.tls_started()
        self._tls_done()
        answer = await self._command(self.client.ehlo(self.helo), self.timeouts.command)
        if not answer.reply.positive:
            raise _Stop(f"EHLO after STARTTLS: {answer.reply}", _classify(answer.reply), _remote(answer))

    def _nothing_in_the_clear(self) -> None:
        """RFC 3207 §4.2: plaintext that arrived behind the 220 to STARTTLS, after our last read,
        waits in the StreamReader's buffer, and would be read after the handshake as if it had come
        through TLS (STARTTLS response injection). asyncio has no public way to see that buffer."""
        if getattr(self._reader, "_buffer", b""):
            raise ClientProtocolError("data in the clear after the 220 to STARTTLS")

    def _tls_done(self) -> None:
        """Record the handshake and check DANE."""
        assert self._writer is not None
        req, tls = self.req, self.result.tls
        sslobj: Any = self._writer.get_extra_info("ssl_object")
        tls.started = True
        tls.version = sslobj.version() if sslobj is not None else None
        cipher = sslobj.cipher() if sslobj is not None else None
        tls.cipher = cipher[0] if cipher else None
        if req.mode is TlsMode.PKIX or req.implicit:
            tls.verified, tls.verified_by = True, "pkix"  # the handshake verified it (RFC 6125)
        elif req.mode is TlsMode.DANE:
            records = usable(req.tlsa)
            if not records:
                tls.failure = "no usable TLSA records: encrypted, not authenticated (RFC 7672 §2.2)"
                return
            check = verify_chain(_peer_chain(sslobj), records, (req.host_name or self.host, *req.names))
            if not check.verified:
                tls.failure = f"DANE: {check.reason}"
                raise _Stop(tls.failure)  # RFC 7672 §2.2: authentication failure: defer
            tls.verified, tls.verified_by = True, check.method

    async def _authenticate(self, auth: Auth) -> None:
        caps = self.client.capabilities
        if not self.client.tls:
            raise _Stop("AUTH configured but the connection is not TLS: credentials not sent")
        if "PLAIN" in caps.auth:
            answer = await self._command(self.client.auth_plain(auth.user, auth.password), self.timeouts.command)
        elif "LOGIN" in caps.auth:
            answer = await self._command(self.client.auth_login(auth.user, auth.password), self.timeouts.command)
            while answer.reply.code == 334:
                answer = await self._command(self.client.auth_continue(), self.timeouts.command)
        else:
            raise _Stop(f"server offers neither AUTH PLAIN nor LOGIN (offers: {' '.join(sorted(caps.auth)) or 'none'})")
        if not answer.reply.positive:
            # As Postfix's smtp_sasl_auth_soft_bounce: a failed login is the operator's to fix, so
            # the mail waits rather than bounces.
            raise _Stop(f"authentication failed: {answer.reply}", Outcome.TEMPORARY, _remote(answer))

    async def _transaction(self, params: tuple[str, ...]) -> None:
        c, t, env = self.client, self.timeouts, self.envelope
        accepted: list[str] = []
        if c.capabilities.pipelining:
            # RFC 2920 §3.1: MAIL, every RCPT and DATA in one write; replies in the same order.
            self.result.pipelined = True
            batch = c.mail(env.mail_from, params) + b"".join(c.rcpt(r) for r in env.rcpts) + c.data()
            await self._write(batch, t.mail)
            mail = await self._next(t.mail)
            for _ in env.rcpts:
                answer = await self._next(t.rcpt)
                self._rcpt_answer(answer, mail, accepted)
            data = await self._next(t.data_init)
            if not mail.reply.positive:
                raise _Stop(f"MAIL FROM: {mail.reply}", _classify(mail.reply), _remote(mail))
        else:
            mail = await self._command(c.mail(env.mail_from, params), t.mail)
            if not mail.reply.positive:
                raise _Stop(f"MAIL FROM: {mail.reply}", _classify(mail.reply), _remote(mail))
            for r in env.rcpts:
                self._rcpt_answer(await self._command(c.rcpt(r), t.rcpt), mail, accepted)
            if not accepted:
                return
            data = await self._command(c.data(), t.data_init)
        if data.reply.code != 354:
            if accepted:
                raise _Stop(f"DATA: {data.reply}", _classify(data.reply), _remote(data))
            return
        # RFC 2920 §3.1: DATA accepted though every RCPT was refused: send an empty message
        # ("." alone) to keep in step, and deliver nothing.
        content = self.prepared.data if accepted else b""
        await self._write(c.message(content), t.data_block)
        final = await self._next(t.data_end)
        if accepted:
            outcome = _classify(final.reply)
            for r in accepted:
                self.decided[r] = RcptResult(r, outcome, f"message: {final.reply}", _remote(final))

    def _rcpt_answer(self, answer: Answer, mail: Answer, accepted: list[str]) -> None:
        r = answer.rcpt
        assert r is not None
        if not mail.reply.positive:
            return  # the MAIL reply decides every recipient (their 503s say nothing)
        if answer.reply.positive:
            accepted.append(r)
        else:
            self.decided[r] = RcptResult(r, _classify(answer.reply), f"RCPT TO: {answer.reply}", _remote(answer))


def _peer_chain(sslobj: Any) -> list[bytes]:
    """The certificates the server presented, leaf first, DER.

    ssl.SSLObject.get_unverified_chain() is public from Python 3.13; 3.11 and 3.12 have it on the
    private _sslobj. Without either, only the leaf (enough for DANE-EE)."""
    if sslobj is None:
        return []
    get = getattr(sslobj, "get_unverified_chain", None) or getattr(
        getattr(sslobj, "_sslobj", None), "get_unverified_chain", None
    )
    if get is not None:
        chain = get() or []
        out: list[bytes] = []
        for cert in chain:
            der = cert if isinstance(cert, bytes) else cert.public_bytes(2)  # _ssl.ENCODING_DER
            out.append(bytes(der))
        return out
    leaf = sslobj.getpeercert(binary_form=True)
    return [leaf] if leaf else []
