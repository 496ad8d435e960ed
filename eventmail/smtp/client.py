"""Sans-IO SMTP client connection: server bytes in, replies matched to our commands out; commands in, bytes out.

The client side of wire.py. One SmtpClient per TCP connection; it does no I/O, keeps no clock
and decides no policy. The driver (attempt.py) asks it for the bytes of each command, writes
them, and feeds whatever the server sends to receive(), which gives back one Answer per
complete reply, matched in order to the command it answers (RFC 2920 §3.1: replies come in the
order of the commands).

    client = SmtpClient()
    answers = client.receive(await reader.read(4096))          # the greeting
    writer.write(client.ehlo("mail.example.org"))
    ...
    plan = plan_transaction(client.capabilities, envelope, prepared, verified_tls=...)
    writer.write(client.mail(...) + client.rcpt(...) + client.data())   # one write: PIPELINING
    ...
    writer.write(client.message(prepared.data))                # after the 354 only

What a hostile server can make it hold is bounded (ClientLimits): the length of one reply
line, the number of lines of one reply, the octets of one reply, and the octets buffered
beyond what the replies outstanding can account for. A reply nobody asked for, a malformed
reply line, or anything sent in the clear behind the 220 to STARTTLS (RFC 3207 §4.2; the
client side of CVE-2011-0411) is a ClientProtocolError: the attempt ends, as a temporary failure.

The content sent is never bare CR or LF (RFC 5321 §2.3.8; SMTP smuggling): prepare_message()
normalises every bare CR, bare LF and CR LF alike to CRLF and counts what it changed, so the
queue can record it; message() dot-stuffs (RFC 5321 §4.5.2) and ends with CRLF "." CRLF.
"""

from __future__ import annotations

import base64
import enum
import re
from dataclasses import dataclass

from eventmail.smtp.reply import ReplyClass, SmtpUsageError

__all__ = [
    "Answer",
    "Capabilities",
    "ClientLimits",
    "ClientProtocolError",
    "Command",
    "Envelope",
    "PreparedMessage",
    "Refusal",
    "ReplyParser",
    "ServerReply",
    "SmtpClient",
    "TransactionPlan",
    "dot_stuff",
    "parse_ehlo",
    "plan_transaction",
    "prepare_message",
]


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What one server may make the client hold."""

    # RFC 5321 §4.5.3.1.5 says 512 octets per reply line with its CRLF; real servers send
    # longer texts now and then (long EHLO AUTH lists, 5xx with URLs), so we take 4 times that.
    max_line: int = 2048
    # An EHLO reply has one line per extension: a few dozen at most in practice.
    max_lines: int = 200
    # The octets of one reply, all lines together.
    max_reply: int = 64 * 1024


class ClientProtocolError(Exception):
    """The server broke the protocol (malformed, unrequested or oversized reply): end the connection."""


@dataclass(frozen=True, slots=True)
class ServerReply(ReplyClass):
    """One reply from the server: RFC 5321 §4.2 code, RFC 3463 enhanced status code, text lines."""

    code: int
    enhanced: str | None
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " / ".join(line for line in self.lines if line)

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced + ' ' if self.enhanced else ''}{self.text}".rstrip()


# RFC 5321 §4.2: Reply-line = *( Reply-code "-" [ textstring ] CRLF ) Reply-code [ SP textstring ] CRLF.
_REPLY_LINE_RE = re.compile(rb"([2-5][0-9][0-9])([ -]?)(.*)", re.DOTALL)
# RFC 3463 §2: class "." subject "." detail, at the start of the text (RFC 2034 §4).
_ENHANCED_RE = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: |$)")


class ReplyParser:
    """Splits server bytes into replies; bounded by ClientLimits. Raises ClientProtocolError."""

    def __init__(self, limits: ClientLimits = ClientLimits()) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._lines: list[str] = []
        self._code: int | None = None
        self._size = 0

    @property
    def buffered(self) -> int:
        """Octets held: the unfinished line plus the lines of the unfinished reply."""
        return len(self._buf) + self._size

    def feed(self, data: bytes) -> list[ServerReply]:
        self._buf += data
        out: list[ServerReply] = []
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                if len(self._buf) > self._limits.max_line:
                    raise ClientProtocolError(f"reply line longer than {self._limits.max_line} octets")
                return out
            # RFC 5321 §4.2: lines end in CRLF. A bare LF is taken as a line end here: it can
            # only shorten what we read, never smuggle anything into what we send.
            raw = bytes(self._buf[: i + 1])
            del self._buf[: i + 1]
            if len(raw) > self._limits.max_line:
                raise ClientProtocolError(f"reply line longer than {self._limits.max_line} octets")
            reply = self._line(raw.rstrip(b"\r\n"), len(raw))
            if reply is not None:
                out.append(reply)

    def _line(self, line: bytes, size: int) -> ServerReply | None:
        m = _REPLY_LINE_RE.fullmatch(line)
        if m is None or (m.group(2) == b"" and m.group(3)):
            raise ClientProtocolError(f"malformed reply line {line[:80]!r}")
        code = int(m.group(1))
        if self._code is not None and code != self._code:
            # RFC 5321 §4.2.1: every line of a multi-line reply carries the same code.
            raise ClientProtocolError(f"reply code changed inside a multi-line reply: {self._code} then {code}")
        self._code = code
        self._size += size
        self._lines.append(m.group(3).decode("utf-8", "replace"))  # RFC 6531 §3.7.4.2: UTF-8 text
        if len(self._lines) > self._limits.max_lines:
            raise ClientProtocolError(f"reply of more than {self._limits.max_lines} lines")
        if self._size > self._limits.max_reply:
            raise ClientProtocolError(f"reply of more than {self._limits.max_reply} octets")
        if m.group(2) == b"-":
            return None
        lines, self._lines, self._code, self._size = tuple(self._lines), [], None, 0
        return _reply(code, lines)


def _reply(code: int, lines: tuple[str, ...]) -> ServerReply:
    # RFC 3463 §2 / RFC 2034 §4: the enhanced code opens the text, and its class is the reply's
    # first digit; one that does not fit is left in the text rather than trusted.
    m = _ENHANCED_RE.match(lines[0])
    if m is None or m.group(1) != str(code)[0]:
        return ServerReply(code, None, lines)
    enhanced = m.group(0).strip()
    stripped = tuple(
        line[len(enhanced) :].lstrip(" ") if line.startswith(enhanced) else line for line in lines
    )
    return ServerReply(code, enhanced, stripped)


# ---------------------------------------------------------------------------------------------
# EHLO capabilities
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the server's EHLO reply offers (RFC 5321 §4.1.1.1: one keyword per line after the first)."""

    extended: bool = False  # EHLO was answered 250 (else HELO: none of the below)
    pipelining: bool = False  # RFC 2920
    size: int | None = None  # RFC 1870: None = no SIZE; 0 = SIZE without a fixed limit
    eightbitmime: bool = False  # RFC 6152
    smtputf8: bool = False  # RFC 6531
    starttls: bool = False  # RFC 3207
    auth: frozenset[str] = frozenset()  # RFC 4954
    requiretls: bool = False  # RFC 8689
    enhancedstatuscodes: bool = False  # RFC 2034
    chunking: bool = False  # RFC 3030
    keywords: frozenset[str] = frozenset()  # every keyword offered, upper case


def parse_ehlo(reply: ServerReply) -> Capabilities:
    """The capabilities of a 250 EHLO reply; unknown keywords are kept in `keywords` only."""
    if reply.code != 250:
        return Capabilities()
    size: int | None = None
    auth: set[str] = set()
    keywords: set[str] = set()
    for line in reply.lines[1:]:
        words = line.split()
        if not words:
            continue
        kw = words[0].upper()
        keywords.add(kw)
        if kw == "SIZE":
            # RFC 1870 §4: SIZE [ SP number ]; 0 or nothing means no fixed maximum.
            if len(words) > 1 and words[1].isdigit() and len(words[1]) <= 20:
                size = int(words[1])
            else:
                size = 0
        elif kw == "AUTH":
            auth.update(w.upper() for w in words[1:])
    return Capabilities(
        extended=True,
        pipelining="PIPELINING" in keywords,
        size=size,
        eightbitmime="8BITMIME" in keywords,
        smtputf8="SMTPUTF8" in keywords,
        starttls="STARTTLS" in keywords,
        auth=frozenset(auth),
        requiretls="REQUIRETLS" in keywords,
        enhancedstatuscodes="ENHANCEDSTATUSCODES" in keywords,
        chunking="CHUNKING" in keywords,
        keywords=frozenset(keywords),
    )


# ---------------------------------------------------------------------------------------------
# The message and the transaction
# ---------------------------------------------------------------------------------------------

_LINE_END_RE = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A message ready for the wire: lines end only in CRLF, and what it needs from the server."""

    data: bytes  # CRLF line ends only, ends with CRLF; not yet dot-stuffed
    normalised: int  # bare CRs and LFs that became CRLF (RFC 5321 §2.3.8)
    eight_bit: bool  # any octet over 127 (RFC 6152)
    utf8_headers: bool  # non-ASCII in the header section (RFC 6532)

    @property
    def size(self) -> int:
        return len(self.data)


def prepare_message(message: bytes) -> PreparedMessage:
    """Normalise line ends to CRLF and find what the message needs.

    RFC 5321 §2.3.8: CR and LF are sent only as CRLF. We normalise rather than refuse: what
    reaches the queue passed our own server, which refuses bare CR/LF on input (content.py), so
    a bare one here comes from an import or a local program, and its sender meant a line end
    (the reading every lenient receiver applies; by sending CRLF we leave no receiver a
    different reading, which is what SMTP smuggling needs). The count goes into the attempt.
    """
    normalised = 0

    def crlf(m: re.Match[bytes]) -> bytes:
        nonlocal normalised
        if m.group(0) != b"\r\n":
            normalised += 1
        return b"\r\n"

    data = _LINE_END_RE.sub(crlf, message)
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"  # RFC 5321 §4.1.1.4: the content ends with CRLF before the final "."
    head_end = data.find(b"\r\n\r\n")
    head = data if head_end < 0 else data[:head_end]
    return PreparedMessage(
        data=data,
        normalised=normalised,
        eight_bit=not data.isascii(),
        utf8_headers=not head.isascii(),
    )


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 §4.5.2: a line that starts with "." gets one more; then CRLF "." CRLF ends it.

    `data` must already be CRLF-only (prepare_message); a bare CR or LF here is a programming error."""
    rest = data.replace(b"\r\n", b"")
    if b"\r" in rest or b"\n" in rest:
        raise SmtpUsageError("dot_stuff() given bare CR or LF: prepare_message() first")
    if data and not data.endswith(b"\r\n"):
        raise SmtpUsageError("content must end with CRLF")
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str  # "" for the null reverse-path (a DSN)
    rcpts: tuple[str, ...]
    requiretls: bool = False  # RFC 8689: the message was submitted with REQUIRETLS


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a transaction must not be started with this server: a permanent failure for every recipient."""

    code: int
    enhanced: str
    reason: str


@dataclass(frozen=True, slots=True)
class TransactionPlan:
    mail_params: tuple[str, ...]  # ESMTP parameters for MAIL FROM
    smtputf8: bool


def _ascii(address: str) -> bool:
    return address.isascii()


def plan_transaction(
    caps: Capabilities, envelope: Envelope, message: PreparedMessage, *, verified_tls: bool
) -> TransactionPlan | Refusal:
    """Decide, before MAIL FROM, whether this server can take this message, and with which parameters.

    Every refusal here is permanent: the server said what it is, and it will not change by retrying
    the same host (the queue runner may still try another MX of the domain).
    """
    params: list[str] = []
    needs_utf8 = not all(map(_ascii, (envelope.mail_from, *envelope.rcpts)))
    if needs_utf8 and not caps.smtputf8:
        # RFC 6531 §3.2: never downgrade an address; RFC 3463 X.6.7 (RFC 6531 §3.6).
        return Refusal(553, "5.6.7", "a non-ASCII address needs SMTPUTF8, which the server does not offer")
    if message.utf8_headers and not caps.smtputf8:
        # RFC 6532 §3 headers may only travel to an SMTPUTF8 server; RFC 6531 X.6.9.
        return Refusal(554, "5.6.9", "UTF-8 header fields need SMTPUTF8, which the server does not offer")
    if message.eight_bit and not caps.eightbitmime:
        # RFC 6152 §3 allows downgrading or returning the message. We return it: downgrading means
        # rewriting the MIME structure after it was DKIM-signed (the signature would break), and a
        # server without 8BITMIME in 2026 is rare enough that a clear bounce serves the sender
        # better than silently changed bytes, or than Postfix's "send it anyway", which breaks the
        # rule the server announced. RFC 3463 X.6.3: conversion required but not supported.
        return Refusal(554, "5.6.3", "8-bit message and the server does not offer 8BITMIME")
    if caps.size is not None and caps.size > 0 and message.size > caps.size:
        # RFC 1870 §6.1: a message over the announced SIZE is not sent; X.3.4 (RFC 3463).
        return Refusal(552, "5.3.4", f"message of {message.size} octets over the server's SIZE {caps.size}")
    if envelope.requiretls:
        # RFC 8689 §4.2.1: only over TLS verified by DANE or MTA-STS/PKIX, to a server that offers
        # REQUIRETLS; otherwise the message is not sent to it. X.7.30 is RFC 8689 §6's code.
        if not verified_tls:
            return Refusal(550, "5.7.30", "REQUIRETLS message and the TLS to this server is not verified")
        if not caps.requiretls:
            return Refusal(550, "5.7.30", "REQUIRETLS message and the server does not offer REQUIRETLS")
    if caps.size is not None:
        params.append(f"SIZE={message.size}")  # RFC 1870 §6
    if message.eight_bit and caps.eightbitmime:
        params.append("BODY=8BITMIME")  # RFC 6152 §2
    smtputf8 = caps.smtputf8 and (needs_utf8 or message.utf8_headers)
    if smtputf8:
        params.append("SMTPUTF8")  # RFC 6531 §3.4
    if envelope.requiretls:
        params.append("REQUIRETLS")  # RFC 8689 §4.1
    return TransactionPlan(tuple(params), smtputf8)


# ---------------------------------------------------------------------------------------------
# The connection
# ---------------------------------------------------------------------------------------------


class Command(enum.Enum):
    """What a reply answers."""

    GREETING = "greeting"
    EHLO = "EHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"  # AUTH and each response line to a 334 (RFC 4954 §4)
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    MESSAGE = "message"  # the content, ended by CRLF.CRLF: the final reply
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"


# RFC 2920 §3.1: only these may be followed by another command before their reply.
_PIPELINABLE = frozenset({Command.MAIL, Command.RCPT, Command.RSET})


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply, with the command it answers."""

    command: Command
    reply: ServerReply
    rcpt: str | None = None  # for RCPT
    capabilities: Capabilities | None = None  # for EHLO


@dataclass(slots=True)
class _Sent:
    command: Command
    rcpt: str | None = None


_SAFE_ARG_RE = re.compile(r"[^\x00-\x1f\x7f<>]*")


class SmtpClient:
    """The client side of one SMTP connection, without I/O. See the module docstring."""

    def __init__(self, limits: ClientLimits = ClientLimits()) -> None:
        self._parser = ReplyParser(limits)
        self._outstanding: list[_Sent] = [_Sent(Command.GREETING)]
        self._capabilities = Capabilities()
        self._tls = False
        self._awaiting_tls = False
        self._content_allowed = False
        self._closed = False
        self._auth_login: list[bytes] = []  # the LOGIN responses still to send
        self.history: list[Answer] = []  # every answer so far, for the attempt's record

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def outstanding(self) -> tuple[Command, ...]:
        """Commands sent whose reply has not come yet, oldest first."""
        return tuple(s.command for s in self._outstanding)

    @property
    def tls(self) -> bool:
        return self._tls

    @property
    def awaiting_tls(self) -> bool:
        """STARTTLS was answered 220: the driver starts the handshake, then calls tls_started()."""
        return self._awaiting_tls

    @property
    def buffered(self) -> int:
        return self._parser.buffered

    # -----------------------------------------------------------------------------------------
    # Input
    # -----------------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Answer]:
        """Feed server bytes; the replies completed by them, matched to their commands."""
        if self._awaiting_tls and data:
            # RFC 3207 §4.2: nothing from before the handshake counts; a server (or a man in the
            # middle) that sends more behind its 220 is trying to inject replies (CVE-2011-0411's
            # client side): refuse, rather than read them after TLS as if they came through it.
            raise ClientProtocolError("data in the clear after the 220 to STARTTLS")
        answers: list[Answer] = []
        for reply in self._parser.feed(data):
            if self._awaiting_tls:
                raise ClientProtocolError("reply in the clear after the 220 to STARTTLS")
            if not self._outstanding:
                raise ClientProtocolError(f"reply nobody asked for: {reply}")
            sent = self._outstanding.pop(0)
            answers.append(self._answer(sent, reply))
        if self._awaiting_tls and self._parser.buffered:
            raise ClientProtocolError("data in the clear after the 220 to STARTTLS")
        self.history.extend(answers)
        return answers

    def _answer(self, sent: _Sent, reply: ServerReply) -> Answer:
        caps: Capabilities | None = None
        if sent.command is Command.EHLO:
            caps = self._capabilities = parse_ehlo(reply)
        elif sent.command is Command.HELO:
            self._capabilities = Capabilities()
        elif sent.command is Command.STARTTLS and reply.code == 220:
            self._awaiting_tls = True
        elif sent.command is Command.DATA and reply.code == 354:
            self._content_allowed = True
        elif sent.command is Command.QUIT or reply.code == 421:
            self._closed = True  # RFC 5321 §3.8: 421 closes the channel
        return Answer(sent.command, reply, sent.rcpt, caps)

    def tls_started(self) -> None:
        """The TLS handshake after STARTTLS succeeded. RFC 3207 §4.2: forget everything learnt
        in the clear; the next command must be EHLO."""
        if not self._awaiting_tls:
            raise SmtpUsageError("tls_started() without a 220 to STARTTLS")
        self._awaiting_tls = False
        self._tls = True
        self._capabilities = Capabilities()

    def implicit_tls(self) -> None:
        """The connection is TLS from its start (RFC 8314 §3)."""
        self._tls = True

    # -----------------------------------------------------------------------------------------
    # Commands
    # -----------------------------------------------------------------------------------------

    def _send(self, command: Command, line: str | bytes, rcpt: str | None = None) -> bytes:
        if self._closed:
            raise SmtpUsageError("connection closed")
        if self._awaiting_tls:
            raise SmtpUsageError("STARTTLS accepted: start TLS first")
        if self._outstanding:
            last = self._outstanding[-1].command
            # RFC 2920 §3.1: without PIPELINING wait for every reply; with it, only MAIL, RCPT
            # and RSET may have a command behind them before their reply.
            if not self._capabilities.pipelining or last not in _PIPELINABLE:
                raise SmtpUsageError(f"{command.value} while the reply to {last.value} is outstanding")
        raw = line.encode("utf-8") if isinstance(line, str) else line
        if b"\r" in raw or b"\n" in raw:
            raise SmtpUsageError("CR or LF inside a command")  # RFC 5321 §2.3.8
        self._outstanding.append(_Sent(command, rcpt))
        return raw + b"\r\n"

    def ehlo(self, name: str) -> bytes:
        return self._send(Command.EHLO, f"EHLO {name}")

    def helo(self, name: str) -> bytes:
        return self._send(Command.HELO, f"HELO {name}")

    def starttls(self) -> bytes:
        if self._tls:
            raise SmtpUsageError("already in TLS")
        return self._send(Command.STARTTLS, "STARTTLS")

    def auth_plain(self, user: str, password: str) -> bytes:
        """RFC 4616 with the initial response (RFC 4954 §4)."""
        self._require_tls_for_auth()
        token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
        return self._send(Command.AUTH, f"AUTH PLAIN {token}")

    def auth_login(self, user: str, password: str) -> bytes:
        """The LOGIN mechanism (draft-murchison-sasl-login): user and password each after a 334."""
        self._require_tls_for_auth()
        self._auth_login = [base64.b64encode(user.encode()), base64.b64encode(password.encode())]
        return self._send(Command.AUTH, "AUTH LOGIN")

    def auth_continue(self) -> bytes:
        """The next LOGIN response after a 334; '*' cancels (RFC 4954 §4) if none is left."""
        return self._send(Command.AUTH, self._auth_login.pop(0) if self._auth_login else b"*")

    def _require_tls_for_auth(self) -> None:
        # RFC 4954 §4 / RFC 8314 §5: PLAIN and LOGIN carry the password; never in the clear.
        if not self._tls:
            raise SmtpUsageError("AUTH PLAIN/LOGIN only over TLS")

    def mail(self, mail_from: str, params: tuple[str, ...] = ()) -> bytes:
        self._check_path(mail_from)
        return self._send(Command.MAIL, " ".join((f"MAIL FROM:<{mail_from}>", *params)))

    def rcpt(self, address: str, params: tuple[str, ...] = ()) -> bytes:
        self._check_path(address)
        return self._send(Command.RCPT, " ".join((f"RCPT TO:<{address}>", *params)), rcpt=address)

    def data(self) -> bytes:
        self._content_allowed = False
        return self._send(Command.DATA, "DATA")

    def message(self, data: bytes) -> bytes:
        """The content after a 354 (RFC 5321 §4.1.1.4), dot-stuffed and ended."""
        if not self._content_allowed:
            raise SmtpUsageError("message content before a 354 to DATA")
        self._content_allowed = False
        self._outstanding.append(_Sent(Command.MESSAGE))
        return dot_stuff(data)

    def rset(self) -> bytes:
        self._content_allowed = False
        return self._send(Command.RSET, "RSET")

    def noop(self) -> bytes:
        return self._send(Command.NOOP, "NOOP")

    def quit(self) -> bytes:
        return self._send(Command.QUIT, "QUIT")

    @staticmethod
    def _check_path(address: str) -> None:
        # The queue hands validated addresses; anything that could close the path or the line
        # is a programming error, never sent.
        if not _SAFE_ARG_RE.fullmatch(address):
            raise SmtpUsageError(f"unsafe address {address!r}")
