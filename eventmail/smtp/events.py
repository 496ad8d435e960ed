"""What the SMTP protocol core hands the server: one typed event per client command or message.

Every event needs exactly one reply, sent through SmtpConnection (RFC 5321 §4.2: each command
gets one reply; §4.3.2 lists which codes fit which command). The reply decides the outcome:
a 2xx to MailFrom opens the transaction, a 2xx to RcptTo adds a recipient, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eventmail.smtp.address import MailParams, RcptParams
from eventmail.smtp.reply import Reply

__all__ = [
    "AuthResponse",
    "AuthStart",
    "ChunkReceived",
    "DataStart",
    "Event",
    "Expn",
    "Helo",
    "Help",
    "MailFrom",
    "MessageComplete",
    "Noop",
    "ProtocolError",
    "Quit",
    "RcptTo",
    "Reset",
    "StartTls",
    "Vrfy",
    "positive_reply",
]


@dataclass(frozen=True, slots=True)
class Helo:
    """EHLO (extended=True) or HELO (RFC 5321 §4.1.1.1). Accepting it resets the transaction."""

    name: str
    extended: bool


@dataclass(frozen=True, slots=True)
class StartTls:
    """STARTTLS (RFC 3207 §4). Answer 220, run the handshake, then call tls_started()."""


@dataclass(frozen=True, slots=True)
class AuthStart:
    """AUTH (RFC 4954 §4). `initial_response` is the wire form (base64, "=" for empty, or "*"),
    None when the client sent none: exactly what eventmail.sasl's Exchange.start() takes."""

    mechanism: str  # upper case, one of those advertised
    initial_response: bytes | None


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """One client line of an AUTH exchange (RFC 4954 §4), without CRLF: base64 or "*"."""

    data: bytes

    @property
    def cancelled(self) -> bool:
        return self.data == b"*"  # RFC 4954 §4: answer with 501


@dataclass(frozen=True, slots=True)
class MailFrom:
    """MAIL FROM (RFC 5321 §4.1.1.2). `address` is "" for the null reverse-path `<>`."""

    address: str
    params: MailParams = field(default_factory=MailParams)


@dataclass(frozen=True, slots=True)
class RcptTo:
    """RCPT TO (RFC 5321 §4.1.1.3), already within the recipient limit."""

    address: str
    params: RcptParams = field(default_factory=RcptParams)


@dataclass(frozen=True, slots=True)
class DataStart:
    """DATA with at least one recipient accepted (RFC 5321 §4.1.1.4). Answer 354 to receive
    the content, or refuse it."""


@dataclass(frozen=True, slots=True)
class ChunkReceived:
    """A BDAT chunk that is not the last one has been read and stored (RFC 3030 §2)."""

    size: int


@dataclass(frozen=True, slots=True)
class MessageComplete:
    """The whole message: after CRLF.CRLF of DATA (dot-unstuffed, RFC 5321 §4.5.2) or after
    BDAT ... LAST (RFC 3030 §2), CRLF line ends kept. The content checks already passed: no
    bare CR or LF, no over-long line, not over the size limit. The reply ends the transaction."""

    data: bytes = field(repr=False)
    chunked: bool = False  # came by BDAT

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class Reset:
    """RSET (RFC 5321 §4.1.1.5)."""


@dataclass(frozen=True, slots=True)
class Noop:
    """NOOP (RFC 5321 §4.1.1.9)."""


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT (RFC 5321 §4.1.1.10): answer 221; the connection is then closed."""


@dataclass(frozen=True, slots=True)
class Vrfy:
    """VRFY (RFC 5321 §4.1.1.6). `smtputf8`: the reply may carry UTF-8 (RFC 6531 §3.7.4.2)."""

    argument: str
    smtputf8: bool = False


@dataclass(frozen=True, slots=True)
class Expn:
    """EXPN (RFC 5321 §4.1.1.7)."""

    argument: str
    smtputf8: bool = False


@dataclass(frozen=True, slots=True)
class Help:
    """HELP (RFC 5321 §4.1.1.8)."""

    topic: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The core refused something on its own; send `reply` (send() or accept()). With `close`
    the connection must be closed after it (SmtpConnection.closed turns True)."""

    reply: Reply
    close: bool = False


Event = (
    Helo
    | StartTls
    | AuthStart
    | AuthResponse
    | MailFrom
    | RcptTo
    | DataStart
    | ChunkReceived
    | MessageComplete
    | Reset
    | Noop
    | Quit
    | Vrfy
    | Expn
    | Help
    | ProtocolError
)


def positive_reply(event: Event, hostname: str) -> Reply:
    """The usual positive answer to `event` (for ProtocolError: its own reply). EHLO's list of
    extensions and AUTH's answers depend on the connection: see SmtpConnection."""
    if isinstance(event, ProtocolError):
        return event.reply
    if isinstance(event, ChunkReceived):
        return Reply(250, "2.0.0", f"{event.size} octets received")  # RFC 3030 §2
    if isinstance(event, Helo):
        return Reply(250, None, hostname)  # RFC 2034 §3: no enhanced code for HELO/EHLO
    if isinstance(event, Quit):
        return Reply(221, "2.0.0", f"{hostname} closing connection")  # RFC 5321 §4.1.1.10
    if isinstance(event, AuthStart | AuthResponse):
        raise ValueError("AUTH is answered by the SASL exchange, not with a fixed reply")
    return _POSITIVE[type(event)]


_POSITIVE: dict[type, Reply] = {
    StartTls: Reply(220, "2.0.0", "Ready to start TLS"),  # RFC 3207 §4
    MailFrom: Reply(250, "2.1.0", "OK"),  # RFC 3463 §3.2: X.1.0 other address status
    RcptTo: Reply(250, "2.1.5", "OK"),  # X.1.5 destination address valid
    DataStart: Reply(354, None, "End data with <CR><LF>.<CR><LF>"),  # RFC 5321 §4.1.1.4
    MessageComplete: Reply(250, "2.0.0", "OK: queued"),
    Reset: Reply(250, "2.0.0", "OK"),  # RFC 5321 §4.1.1.5
    Noop: Reply(250, "2.0.0", "OK"),  # RFC 5321 §4.1.1.9
    # RFC 5321 §3.5.3 and §7.3: 252 when the server will not say who exists.
    Vrfy: Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"),
    Expn: Reply(252, "2.5.0", "Cannot EXPN list, but will accept message and attempt delivery"),
    Help: Reply(214, "2.0.0", "See RFC 5321 https://www.rfc-editor.org/rfc/rfc5321"),  # §4.1.1.8
}
