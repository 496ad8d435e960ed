"""Helpers for the SMTP wire tests: a scripted server that answers every event, and transcripts."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from eventmail.smtp import (
    AuthResponse,
    AuthStart,
    ChunkReceived,
    DataStart,
    Event,
    Expn,
    Helo,
    Help,
    Limits,
    MailFrom,
    MessageComplete,
    Noop,
    ProtocolError,
    Quit,
    RcptTo,
    Reply,
    Reset,
    SmtpConfig,
    SmtpConnection,
    StartTls,
    Vrfy,
)

HOST = "mx.example.org"
PASSWORD = "secret"


def config(**kwargs: object) -> SmtpConfig:
    """A test listener: small limits so tests can reach them, STARTTLS and AUTH PLAIN on."""
    limits = kwargs.pop("limits", None) or Limits(max_message_size=10_000, max_recipients=5)
    base: dict[str, object] = {"hostname": HOST, "starttls": True, "auth_mechanisms": ("PLAIN", "LOGIN")}
    base.update(kwargs)
    return SmtpConfig(limits=limits, **base)  # type: ignore[arg-type]


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def plain(user: str, password: str = PASSWORD) -> bytes:
    return b64(b"\0" + user.encode() + b"\0" + password.encode())


@dataclass
class Server:
    """The policy layer, scripted: what a real server decides, reduced to fixed rules.

    MAIL from `reject-*` is refused; RCPT to `unknown*` is refused; AUTH PLAIN/LOGIN accept any
    user with PASSWORD; after a 220 to STARTTLS the handshake "succeeds" at once."""

    conn: SmtpConnection
    events: list[Event] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    dropped_at_tls: list[int] = field(default_factory=list)
    _mechanism: str = ""
    _login_user: str | None = None

    def answer(self, event: Event) -> bytes:
        conn = self.conn
        self.events.append(event)
        if isinstance(event, ProtocolError):
            return conn.send(event.reply)
        if isinstance(event, MailFrom) and event.address.startswith("reject-"):
            return conn.reject_mail(Reply(550, "5.7.1", "Sender refused"))
        if isinstance(event, RcptTo) and event.address.startswith("unknown"):
            return conn.reject_rcpt(Reply(550, "5.1.1", "No such user"))
        if isinstance(event, MessageComplete):
            self.messages.append(event.data)
            return conn.accept_message(Reply(250, "2.0.0", f"OK: queued as {len(self.messages)}"))
        if isinstance(event, StartTls):
            out = conn.accept_starttls()
            self.dropped_at_tls.append(conn.tls_started())
            return out
        if isinstance(event, AuthStart):
            return self._auth(event.mechanism, event.initial_response)
        if isinstance(event, AuthResponse):
            return self._auth_step(event.data)
        assert isinstance(
            event,
            Helo | MailFrom | RcptTo | DataStart | ChunkReceived | Reset | Noop | Quit | Vrfy | Expn | Help,
        ), event
        return conn.accept()

    def _auth(self, mechanism: str, initial: bytes | None) -> bytes:
        self._mechanism, self._login_user = mechanism, None
        if initial is None:
            return self.conn.auth_challenge(b"Username:" if mechanism == "LOGIN" else b"")
        return self._auth_step(initial)

    def _auth_step(self, data: bytes) -> bytes:
        if data == b"*":
            return self.conn.auth_failed(Reply(501, "5.7.0", "Authentication cancelled"))  # RFC 4954 §4
        if self._mechanism != "LOGIN":
            return self._check_plain(data)
        try:
            text = base64.b64decode(data, validate=True).decode()
        except ValueError:
            return self.conn.auth_failed(Reply(501, "5.5.2", "Cannot Base64-decode client response"))
        if self._login_user is None:
            self._login_user = text
            return self.conn.auth_challenge(b"Password:")
        if text == PASSWORD:
            return self.conn.auth_succeeded(self._login_user)
        return self.conn.auth_failed()

    def _check_plain(self, data: bytes) -> bytes:
        try:
            _, user, password = base64.b64decode(data, validate=True).split(b"\0")
        except ValueError:
            return self.conn.auth_failed(Reply(501, "5.5.2", "Cannot Base64-decode client response"))
        if password == PASSWORD.encode():
            return self.conn.auth_succeeded(user.decode("utf-8", "replace"))
        return self.conn.auth_failed()


@dataclass
class Session:
    """A client talking to a SmtpConnection driven by Server. `write()` is one client write."""

    cfg: SmtpConfig = field(default_factory=config)
    greet: bool = True

    def __post_init__(self) -> None:
        self.conn = SmtpConnection(self.cfg)
        self.server = Server(self.conn)
        self.output = bytearray()
        if self.greet:
            self.output += self.conn.greeting()

    @property
    def events(self) -> list[Event]:
        return self.server.events

    def write(self, data: bytes, chunks: Sequence[int] = (), *, eager: bool = False) -> bytes:
        """Feed one client write, cut at the offsets in `chunks`. By default every piece is fed
        before anything is answered (the client sent it all before any reply could come back);
        `eager` answers after each piece, as a server that reads small pieces would."""
        start = len(self.output)
        cuts = [0, *sorted(set(chunks)), len(data)]
        pending: list[Event] = []
        for a, b in itertools.pairwise(cuts):
            pending += self.conn.receive(data[a:b])
            if eager:
                self._drain(pending)
                pending = []
        self._drain(pending)
        return bytes(self.output[start:])

    def _drain(self, events: list[Event]) -> None:
        while events and not self.conn.closed:
            for event in events:
                self.output += self.server.answer(event)
            events = self.conn.next_events()

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


def replay(
    writes: Sequence[bytes],
    *,
    cfg: SmtpConfig | None = None,
    cuts: Sequence[Sequence[int]] | None = None,
    eager: bool = False,
) -> Session:
    s = Session(cfg or config())
    for i, w in enumerate(writes):
        s.write(w, cuts[i] if cuts else (), eager=eager)
    return s


def codes(output: bytes) -> list[int]:
    """The reply codes of the final line of each reply in `output`."""
    return [int(line[:3]) for line in output.split(b"\r\n") if line[3:4] == b" " or len(line) == 3]
