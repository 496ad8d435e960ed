"""The SMTP listeners (MX and submission): the sans-IO core on the shared socket layer, with policy and logging."""

# The socket layer (eventmail.netconn) counts connections per network, runs implicit TLS (465)
# with a handshake timeout, bounds input and unsent output, and drops every byte received
# before a STARTTLS handshake; this module feeds the core and answers its events.

import asyncio
import dataclasses
import enum
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path

from .. import metrics
from ..cputime import timed
from ..netconn import Connection, ConnectionLimiter, SendTimeout, Service, SocketLimits, TlsFailed, listen
from ..proto import events_pb2 as pb
from ..sasl.channelbinding import TLS_SERVER_END_POINT, tls_server_end_point
from ..sasl.guard import GuardedExchange, guarded, is_loopback
from ..sasl.mechanisms import (
    Challenge,
    Failure,
    SaslBackend,
    Success,
    advertised_mechanisms,
    create_exchange,
)
from ..sasl.ratelimit import LoginLimiter
from ..store import Store
from .config import Limits, SmtpConfig
from .delivery import InboundDelivery, Transaction
from .events import (
    AuthResponse,
    AuthStart,
    DataStart,
    Event,
    Helo,
    MailFrom,
    MessageComplete,
    ProtocolError,
    Quit,
    RcptTo,
    StartTls,
)
from .injected import injected
from .reply import Reply
from .submission import Submission
from .wire import SmtpConnection

log = logging.getLogger(__name__)

# Defaults; eventmail.config.ServerLimits explains them and lets the configuration change them.
MAX_CONNECTIONS_PER_IP = 50
IDLE_TIMEOUT = 300.0
# RFC 5321 §3.1: a server may answer the opening of a connection with 421 and close it.
TOO_MANY_CONNECTIONS = b"421 4.7.0 too many connections from your network\r\n"


class SmtpRole(enum.Enum):
    MX = "mx"
    SUBMISSION = "submission"


def password_lookup(store: Store, username: str) -> pb.PasswordSet | None:
    """Credentials for a login name: an account name or one of its addresses."""
    account = store.system.account_for(username) if "@" in username else username
    info = store.system.accounts.get(account or "")
    return info.password if info is not None else None


# Replies held for one write at most (RFC 2920 §3.1): a group of the 100 recipients RFC 5321
# §4.5.3.1.8 requires a server to take, in one segment; single-line replies of at most 512
# octets (§4.5.3.1.5), so at most 51 KB held before the write and its drain.
HELD_REPLIES = 100


class SmtpSession:
    """One connection: feeds the core, answers its events with the policy of the role."""

    def __init__(
        self, io: Connection, role: SmtpRole, config: SmtpConfig,
        tls_context: ssl.SSLContext | None, inbound: InboundDelivery, submission: Submission,
        backend: SaslBackend, limiter: LoginLimiter, store: Store, plaintext_auth: bool,
        idle_timeout: float = IDLE_TIMEOUT, channel_bindings: Mapping[str, bytes] | None = None,
        inject_errors: bool = False,
    ) -> None:
        self.io = io
        self.inject_errors = inject_errors  # localserve: local parts ask for failures (smtp.injected)
        self.role = role
        self.conn = SmtpConnection(config)
        self.tls_context = tls_context
        self.inbound, self.submission = inbound, submission
        self.backend, self.limiter = backend, limiter
        self.store = store
        self.remote_ip = io.peer
        # Passwords in the clear only from this machine, as for IMAP (sasl.guard.may_send_password).
        self.plaintext_auth = plaintext_auth and is_loopback(self.remote_ip)
        if config.allow_plaintext_auth and not self.plaintext_auth:
            self.conn = SmtpConnection(dataclasses.replace(config, allow_plaintext_auth=False))
        self.id = io.number
        self.tx: Transaction | None = None
        self.exchange: GuardedExchange | None = None
        self.tls = config.implicit_tls
        self.idle_timeout = idle_timeout
        self.tls_bindings = dict(channel_bindings or {})

    async def run(self) -> None:
        # Replies wait here while the input holds more commands (RFC 2920 §3.1: a server may
        # hold them while commands are in its input buffer), and go out in one write before the
        # next read: a pipelining client (Postfix, Exim, Mox: MAIL, RCPT and DATA in one packet)
        # gets its replies in one segment, one send system call rather than one per command.
        held = [self.conn.greeting()]
        events = self.conn.next_events()
        while not self.conn.closed:
            for event in events:
                held.append(await self.answer(event))
                if len(held) >= HELD_REPLIES:
                    await self._send(held)  # output stays bounded by the drain, as unheld
                if isinstance(event, StartTls) and self.conn.phase.name == "TLS_HANDSHAKE":
                    await self._send(held)  # the 220 in the clear, then the handshake
                    await self._start_tls()
                    break
            if not self.conn.closed and (events := self.conn.next_events()):
                continue
            await self._send(held)
            if self.conn.closed:
                break
            data = await self.io.read(self.idle_timeout)
            if not data:
                break
            events = self.conn.receive(data)
        if held:
            await self._send(held)

    async def _send(self, held: list[bytes]) -> None:
        """Write the held replies at once. A client that does not read its replies is closed
        after the idle timeout (RFC 5321 §4.5.3.2.7 gives the server's 5 minutes for either
        direction)."""
        if held:
            self.io.write(b"".join(held))
            held.clear()
        await self.io.drain(self.idle_timeout)

    async def _start_tls(self) -> None:
        assert self.tls_context is not None
        try:
            await self.io.start_tls(self.tls_context)
            self.tls = True
        finally:
            # RFC 3207 §4.2 (CVE-2011-0411): what came in the clear behind STARTTLS, held by the
            # socket layer or by the core, is gone; logged whether or not the handshake worked.
            dropped = self.io.dropped_before_tls + self.conn.tls_started(self._mechanisms())
            if dropped:
                log.warning("smtp %d %s: dropped %d octets pipelined behind STARTTLS", self.id, self.remote_ip,
                            dropped)

    def _mechanisms(self) -> tuple[str, ...]:
        if self.role is not SmtpRole.SUBMISSION:
            return ()
        return advertised_mechanisms(tls=self.tls or self.plaintext_auth, channel_bindings=self._bindings())

    def _bindings(self) -> Mapping[str, bytes] | None:
        """Channel-binding data of this connection's TLS (RFC 5802 §6), for SCRAM-SHA-256-PLUS."""
        return self.tls_bindings if self.tls else None

    async def answer(self, event: Event) -> bytes:
        c = self.conn
        if isinstance(event, ProtocolError):
            log.info("smtp %d %s: %d %s", self.id, self.remote_ip, event.reply.code, event.reply.lines[0])
            if self.exchange is not None:
                # the core refused a line of the exchange and ended it: a failed attempt
                self.exchange.abandon(event.reply.lines[0])
                self.exchange = None
            return c.send(event.reply)
        if isinstance(event, Helo):
            return c.accept_helo()
        if isinstance(event, StartTls):
            if self.tls_context is None:
                return c.reject(Reply(454, "4.7.0", "TLS not available"))
            return c.accept_starttls()
        if isinstance(event, AuthStart):
            return await self._auth_start(event)
        if isinstance(event, AuthResponse):
            return await self._auth_step(event)
        if isinstance(event, MailFrom):
            return await self._mail(event)
        if isinstance(event, RcptTo):
            return await self._rcpt(event)
        if isinstance(event, DataStart):
            return c.accept_data()
        if isinstance(event, MessageComplete):
            return await self._message(event)
        if isinstance(event, Quit):
            return c.send(c.default_reply(event))
        return c.send(c.default_reply(event))

    # ------------------------------------------------------------ AUTH (submission only)

    async def _auth_start(self, event: AuthStart) -> bytes:
        exchange = create_exchange(event.mechanism, self.backend, tls=self.tls or self.plaintext_auth,
                                   channel_bindings=self._bindings())
        if exchange is None:
            return self.conn.auth_failed(self._tag(Reply(504, "5.5.4", "mechanism not available")))
        # The failed-login limits, per address and per account, are the guard's (sasl.guard).
        self.exchange = guarded(exchange, self.limiter, peer=self.remote_ip, conn=f"smtp {self.id} {self.remote_ip}",
                                protocol="smtp")
        return self._auth_result(await self.exchange.start(event.initial_response))

    async def _auth_step(self, event: AuthResponse) -> bytes:
        assert self.exchange is not None
        return self._auth_result(await self.exchange.step(event.data))

    def _auth_result(self, result: object) -> bytes:
        if isinstance(result, Challenge):
            return self.conn.auth_challenge(result.data)
        self.exchange = None
        if isinstance(result, Success):
            log.info("smtp %d %s: authenticated as %s", self.id, self.remote_ip, result.username)
            return self.conn.auth_succeeded(result.username)
        assert isinstance(result, Failure)
        log.warning("smtp %d %s: authentication failed for %r: %s (%s)", self.id, self.remote_ip, result.authcid,
                    result.reason.value, result.detail)
        return self.conn.auth_failed(self._tag(Reply(*result.reason.smtp_reply)))

    # ------------------------------------------------------------ transaction

    def _tag(self, reply: Reply) -> Reply:
        """A refusal names its connection as the log does ("smtp 12"), so that the text a sender
        quotes from its bounce finds the log lines of that connection."""
        if reply.positive or not isinstance(reply.text, str):
            return reply
        return dataclasses.replace(reply, text=f"{reply.text} (smtp {self.id})")

    async def _injected(self, address: str, stage: str) -> Reply | None:
        """localserve's failure for `address` at `stage`, if its local part asks for one; for a
        timeout, no answer until the idle timeout, then the connection is given up (421)."""
        hit = injected(address.rpartition("@")[0], stage) if self.inject_errors else None
        if hit is None:
            return None
        log.info("smtp %d %s: failure injected for %s at %s", self.id, self.remote_ip, address, stage)
        if hit.reply is not None:
            return dataclasses.replace(hit.reply, reason="injected")
        await asyncio.sleep(self.idle_timeout)
        return Reply(421, "4.4.2", "timed out on request (localserve: local part timeout)", reason="injected")

    async def _mail(self, event: MailFrom) -> bytes:
        refused = await self._injected(event.address, "mail")
        if refused is not None:
            return self._refuse_mail(refused)
        user = self.conn.authenticated_user
        if self.role is SmtpRole.SUBMISSION:
            if user is None:
                log.info("smtp %d %s: MAIL without authentication refused", self.id, self.remote_ip)
                return self._refuse_mail(Reply(530, "5.7.0", "authentication required", reason="auth_required"))
            if event.address and not self.submission.owns(user, event.address):
                log.info("smtp %d %s: %s may not send as %s", self.id, self.remote_ip, user, event.address)
                return self._refuse_mail(Reply(553, "5.7.1", "that sender address is not yours",
                                                reason="sender_not_yours"))
            limited = self.submission.mail_refusal(user)
            if limited is not None:
                log.info("smtp %d %s: %s: %s", self.id, self.remote_ip, user, limited.text)
                return self._refuse_mail(limited)
        self.tx = Transaction(
            remote_ip=self.remote_ip, helo=self.conn.helo_name or "", tls=self.tls, mail_from=event.address,
            authenticated=user, smtputf8=event.params.smtputf8, requiretls=event.params.requiretls,
        )
        return self.conn.accept_mail()

    async def _rcpt(self, event: RcptTo) -> bytes:
        assert self.tx is not None
        refused = await self._injected(event.address, "rcpt")
        if refused is not None:
            return self._refuse_rcpt(refused)
        if self.role is SmtpRole.SUBMISSION:
            user = self.conn.authenticated_user or ""
            refused = self.submission.rcpt_refusal(user, event.address, self.tx)
            if refused is not None:
                log.info("smtp %d %s: %s: %s", self.id, self.remote_ip, user, refused.text)
                return self._refuse_rcpt(refused)
            self.tx.recipients[event.address] = ""
            return self.conn.accept_rcpt()
        account = self.inbound.recipient_account(event.address)
        if account is None:
            _, at, domain = event.address.rpartition("@")
            if at and not self.inbound.is_local_domain(domain):
                # RFC 5321 §3.6.2: no open relaying; RFC 3463 §3.8 (5.7.1: not authorized).
                log.warning("smtp %d %s: relaying to %s denied", self.id, self.remote_ip, event.address)
                return self._refuse_rcpt(Reply(550, "5.7.1", "relaying denied", reason="relaying_denied"))
            log.info("smtp %d %s: unknown recipient %s", self.id, self.remote_ip, event.address)
            return self._refuse_rcpt(Reply(550, "5.1.1", "no such user here", reason="unknown_recipient"))
        if await self.inbound.full(account):
            # RFC 3463 §3.3 X.2.2 mailbox full, temporary (RFC 5321 §4.2.2 452 at RCPT)
            log.info("smtp %d %s: %s over quota", self.id, self.remote_ip, event.address)
            return self._refuse_rcpt(Reply(452, "4.2.2", "mailbox full, try again later", reason="over_quota"))
        self.tx.recipients[event.address] = account
        return self.conn.accept_rcpt()

    async def _message(self, event: MessageComplete) -> bytes:
        assert self.tx is not None
        tx, self.tx = self.tx, None
        for address in tx.recipients:
            refused = await self._injected(address, "data")
            if refused is not None:
                metrics.smtp_rejected(self.role.value, refused.reason)
                return self.conn.reject_message(self._tag(refused))
        if self.role is SmtpRole.SUBMISSION:
            reply = await self.submission.submit(tx, event.data)
        else:
            reply = await self.inbound.deliver(tx, event.data)
        if reply.positive:
            metrics.smtp_delivered(self.role.value)
            return self.conn.accept_message(reply)
        metrics.smtp_rejected(self.role.value, reply.reason)
        return self.conn.reject_message(self._tag(reply))

    def _refuse_mail(self, reply: Reply) -> bytes:
        metrics.smtp_rejected(self.role.value, reply.reason)
        return self.conn.reject_mail(self._tag(reply))

    def _refuse_rcpt(self, reply: Reply) -> bytes:
        metrics.smtp_rejected(self.role.value, reply.reason)
        return self.conn.reject_rcpt(self._tag(reply))


def tls_channel_bindings(cert_file: Path) -> dict[str, bytes]:
    """Channel-binding data our TLS certificate gives every connection: tls-server-end-point
    (RFC 5929 §4.1, the hash of the end-entity certificate, the first in the file). Python's ssl
    module cannot export keying material, so tls-exporter (RFC 9266) is not offered. Empty when
    the RFC leaves the certificate's signature algorithm undefined (then no -PLUS is offered)."""
    text = cert_file.read_text()
    end = text.find("-----END CERTIFICATE-----")
    if end < 0:
        return {}
    try:
        der = ssl.PEM_cert_to_DER_cert(text[: end + len("-----END CERTIFICATE-----")].strip() + "\n")
        return {TLS_SERVER_END_POINT: tls_server_end_point(der)}
    except ValueError:
        return {}


async def start_smtp(
    host: str, port: int, *, role: SmtpRole, hostname: str, store: Store, inbound: InboundDelivery,
    submission: Submission, limiter: LoginLimiter, tls_context: ssl.SSLContext | None, implicit_tls: bool = False,
    allow_plaintext_auth: bool = False, max_message_bytes: int = 50 << 20,
    connections: ConnectionLimiter | None = None, idle_timeout: float = IDLE_TIMEOUT,
    channel_bindings: Mapping[str, bytes] | None = None, max_errors: int = 20,
    socket_limits: SocketLimits = SocketLimits(),  # noqa: B008
    inject_errors: bool = False,
) -> asyncio.Server:
    """Listen for SMTP. MX: STARTTLS offered, no AUTH. Submission: AUTH after TLS (465 implicit, 587 STARTTLS).

    Give every listener of one server the same `connections` (and `limiter`): the cap on
    connections per network then holds across ports. Without one this listener counts alone.
    """
    backend = SaslBackend(lookup=lambda name: password_lookup(store, name))
    config = SmtpConfig(
        hostname=hostname,
        limits=Limits(max_message_size=max_message_bytes, max_errors=max_errors),
        starttls=tls_context is not None and not implicit_tls,
        implicit_tls=implicit_tls,
        auth_mechanisms=(
            advertised_mechanisms(tls=True, channel_bindings=channel_bindings if implicit_tls else None)
            if role is SmtpRole.SUBMISSION else ()
        ),
        allow_plaintext_auth=allow_plaintext_auth,
    )

    async def handle(io: Connection) -> None:
        session = SmtpSession(io, role, config, tls_context, inbound, submission, backend, limiter,
                              store, allow_plaintext_auth, idle_timeout, channel_bindings, inject_errors)
        try:
            await timed("smtp session", session.run())
        except TimeoutError:
            log.info("smtp %d %s: idle timeout", session.id, io.peer)
            io.write(b"421 4.4.2 idle timeout\r\n")
        except (SendTimeout, TlsFailed):
            pass  # the socket layer logged it and closed the connection
        except (ConnectionError, ssl.SSLError) as e:
            log.info("smtp %d %s: connection ended: %s", session.id, io.peer, e)
        except Exception:
            log.exception("smtp %d %s: internal error", session.id, io.peer)
            io.write(b"421 4.3.0 internal error\r\n")

    service = Service(
        name="smtp", handler=handle, log=log, limiter=connections or ConnectionLimiter(MAX_CONNECTIONS_PER_IP),
        refusal=TOO_MANY_CONNECTIONS, implicit_tls=tls_context if implicit_tls else None, limits=socket_limits,
    )
    return await listen(host, port, service)
