"""Sans-IO SMTP server connection: client bytes in, typed events out; replies in, bytes out.

One SmtpConnection per TCP connection. It does no I/O, keeps no clock and decides no policy:
the server answers every event (accept_rcpt(), reject_rcpt(reply), auth_succeeded(user), ...,
or send(reply)) and the answer is what moves the state. Events come one at a time: after an
answer, call next_events() for whatever the buffered input holds next (h11's pause).

    conn = SmtpConnection(config)
    writer.write(conn.greeting())
    events = conn.next_events()
    while not conn.closed:
        for event in events:
            writer.write(await answer(conn, event))   # calls one decision method
        if conn.closed:
            break
        events = conn.next_events()
        if not events:
            if not (data := await reader.read(65536)):
                break
            events = conn.receive(data)
    # After accept_starttls(): wrap the socket, drop anything read in the clear and not yet
    # fed, then conn.tls_started().

Framing: RFC 5321 §2.3.8 and §4.1.1: a command line ends only at CRLF; a bare CR or LF in it is
a 500 5.5.2 error (never a line end, so nothing can hide a second command in one line). DATA
content goes through content.DotReader and ContentSink. BDAT (RFC 3030 §2) reads exactly the
announced octets whatever the answer will be, so chunk data is never taken for commands.

Pipelining (RFC 2920 §3.1): EHLO, HELO, DATA, VRFY, EXPN, NOOP, HELP, QUIT, STARTTLS and AUTH
(and each AUTH response line) must be the last command of a group. Input that arrives before
their reply has been sent — behind them in the same read, or in a later read — is thrown away
and the connection is answered `554 5.5.0` and closed once that reply is out (Postfix's
smtpd_forbid_unauth_pipelining). Behind STARTTLS the input is only discarded (RFC 3207 §4.2,
CVE-2011-0411) and tls_started() reports how much. Input before the greeting is treated alike.
"""

from __future__ import annotations

import base64
import enum
import re
from collections.abc import Callable, Sequence
from typing import ClassVar

from eventmail.smtp.address import (
    MailOffer,
    parse_mail_params,
    parse_path,
    parse_rcpt_params,
    split_path_argument,
)
from eventmail.smtp.config import SmtpConfig, ehlo_keywords
from eventmail.smtp.content import ContentSink, DotReader
from eventmail.smtp.events import (
    AuthResponse,
    AuthStart,
    ChunkReceived,
    DataStart,
    Event,
    Expn,
    Helo,
    Help,
    MailFrom,
    MessageComplete,
    Noop,
    ProtocolError,
    Quit,
    RcptTo,
    Reset,
    StartTls,
    Vrfy,
    positive_reply,
)
from eventmail.smtp.reply import Reply, SmtpError, SmtpUsageError

__all__ = ["Phase", "SmtpConnection"]


class Phase(enum.Enum):
    """What the connection is reading now."""

    GREETING = "greeting"  # greeting() not called yet
    COMMAND = "command"
    AUTH = "auth"  # a 334 went out: the next line is an AUTH response (RFC 4954 §4)
    DATA = "data"  # after 354: message content up to CRLF.CRLF
    BDAT = "bdat"  # the octets of a BDAT chunk
    TLS_HANDSHAKE = "tls-handshake"  # 220 to STARTTLS went out; waiting for tls_started()
    CLOSED = "closed"


# RFC 2920 §3.1 (and RFC 3207 §4.2 for STARTTLS, RFC 4954 §4 for AUTH): the client must wait
# for the reply to these before it sends anything else.
_GROUP_END = frozenset(
    {b"EHLO", b"HELO", b"DATA", b"VRFY", b"EXPN", b"NOOP", b"HELP", b"QUIT", b"STARTTLS", b"AUTH"}
)
_MAIL_RCPT = frozenset({b"MAIL", b"RCPT"})
_JUNK = frozenset({b"NOOP", b"RSET", b"VRFY", b"EXPN", b"HELP"})
# RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ]; chunk-size = 1*DIGIT. We take
# at most 20 digits (like SIZE, RFC 1870 §3), more is nonsense we cannot skip over.
_BDAT_RE = re.compile(rb" *([0-9]{1,20})(?: +(LAST))? *", re.IGNORECASE)
_VRFY_UTF8_RE = re.compile(rb"(.*?) +SMTPUTF8", re.IGNORECASE | re.DOTALL)
_HELO_NAME_RE = re.compile(rb"[\x21-\x7e]+")

_SYNC_ERROR = Reply(554, "5.5.0", "Error: SMTP protocol synchronization")  # RFC 2920 §3.1
_TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
_BAD_SEQUENCE = "5.5.1"  # RFC 3463 §3.6: X.5.1 invalid command (in this state)


class _TooLong:
    """What _next_line gives for a line that was over the limit and has been skipped."""


TOO_LONG = _TooLong()


def _seq(text: str) -> SmtpError:
    return SmtpError(Reply(503, _BAD_SEQUENCE, text))  # RFC 5321 §4.2.4: bad sequence


def _syntax(text: str) -> SmtpError:
    return SmtpError(Reply(501, "5.5.4", text))  # RFC 5321 §4.2.2 / RFC 3463 §3.6


class SmtpConnection:
    """The server side of one SMTP connection, without I/O. See the module docstring."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._limits = config.limits
        self._line_cap = max(
            self._limits.max_command_line, self._limits.max_mail_rcpt_line, self._limits.max_auth_line
        )
        self._buf = bytearray()
        self._scan = 0  # where the CRLF search resumes in _buf
        self._discarding_line = False  # inside an over-long line, looking for its CRLF
        self._phase = Phase.GREETING
        self._pending: Event | None = None
        self._pending_effect: Callable[[Reply], None] | None = None
        self._strict = False  # the pending reply belongs to a command that ends a group
        self._doom: Reply | None = None  # sent (then close) once the pending reply is out
        self._refused = False  # greeted with 554: only QUIT is served (RFC 5321 §3.1)
        self._tls = config.implicit_tls
        self._mechanisms = tuple(m.upper() for m in config.auth_mechanisms)
        self._helo: str | None = None
        self._extended = False
        self._user: str | None = None
        self._discarded = 0  # plaintext octets dropped behind STARTTLS
        self._errors = 0
        self._unknown = 0
        self._junk = 0
        # The mail transaction (RFC 5321 §3.3).
        self._mail: MailFrom | None = None
        self._rcpts = 0
        self._sink: ContentSink | None = None
        self._dot: DotReader | None = None
        self._bdat_used = False  # RFC 3030 §2: no DATA in a transaction that used BDAT
        self._data_used = False  # ... and no BDAT in one that tried DATA
        self._bdat_failed: Reply | None = None  # a chunk was refused: refuse the rest alike
        self._bdat_size = 0
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_refusal: Reply | None = None  # the answer to the chunk being read, if a refusal

    # -----------------------------------------------------------------------------------------
    # State, for the server and for logs
    # -----------------------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def closed(self) -> bool:
        """True once a reply that ends the connection (221, 421, a closing error) went out."""
        return self._phase is Phase.CLOSED

    @property
    def tls(self) -> bool:
        return self._tls

    @property
    def helo_name(self) -> str | None:
        return self._helo

    @property
    def extended(self) -> bool:
        return self._extended

    @property
    def authenticated_user(self) -> str | None:
        return self._user

    @property
    def mail_from(self) -> MailFrom | None:
        """The accepted MAIL FROM of the open transaction."""
        return self._mail

    @property
    def recipients(self) -> int:
        """Recipients accepted in the open transaction."""
        return self._rcpts

    @property
    def awaiting(self) -> Event | None:
        """The event whose reply is outstanding."""
        return self._pending

    @property
    def auth_offered(self) -> bool:
        """AUTH is advertised now: mechanisms configured, and TLS or plaintext allowed (RFC 4954 §4)."""
        return bool(self._mechanisms) and (self._tls or self.config.allow_plaintext_auth)

    @property
    def buffered(self) -> int:
        """Octets this connection holds: unparsed input plus stored message content."""
        return len(self._buf) + (self._sink.stored if self._sink is not None else 0)

    # -----------------------------------------------------------------------------------------
    # Input
    # -----------------------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes from the client; returns the next event if one is complete (at most one)."""
        if self._phase is Phase.CLOSED:
            return []
        if data:
            if self._phase is Phase.TLS_HANDSHAKE or isinstance(self._pending, StartTls):
                # RFC 3207 §4.2, CVE-2011-0411: nothing sent in the clear after STARTTLS counts.
                self._discarded += len(data)
            elif self._doom is not None or self._closing:
                pass  # the connection ends after the outstanding reply; nothing more is read
            elif self._phase is Phase.GREETING or (self._pending is not None and self._strict):
                self._violation()  # RFC 2920 §3.1: sent before the reply it had to wait for
            elif self._pending is not None and len(self._buf) + len(data) > self._limits.max_buffered_input:
                self._drop_input()
                self._doom = Reply(421, "4.7.0", "Too much pipelined input, closing connection")
            else:
                self._buf += data
        return self.next_events()

    def next_events(self) -> list[Event]:
        """The next event from input already received, once the last one has been answered."""
        if self._pending is not None or self._phase in (Phase.GREETING, Phase.TLS_HANDSHAKE, Phase.CLOSED):
            return []
        return self._advance()

    @property
    def _closing(self) -> bool:
        return isinstance(self._pending, Quit) or (
            isinstance(self._pending, ProtocolError) and self._pending.close
        )

    def _drop_input(self) -> int:
        dropped = len(self._buf)
        self._buf.clear()
        self._scan = 0
        self._discarding_line = False
        return dropped

    def _violation(self) -> None:
        self._drop_input()
        self._doom = _SYNC_ERROR

    def _emit(
        self, event: Event, *, strict: bool = False, effect: Callable[[Reply], None] | None = None
    ) -> list[Event]:
        self._pending = event
        self._pending_effect = effect
        self._strict = strict
        if strict and self._buf:
            if isinstance(event, StartTls):
                self._discarded += self._drop_input()  # RFC 3207 §4.2 / CVE-2011-0411
            elif isinstance(event, Quit):
                self._drop_input()
            else:
                self._violation()
        return [event]

    def _advance(self) -> list[Event]:
        if self._doom is not None:
            return self._emit(ProtocolError(self._doom, close=True))
        if self._phase is Phase.DATA:
            return self._advance_data()
        if self._phase is Phase.BDAT:
            return self._advance_bdat()
        if self._errors >= self._limits.max_errors:
            return self._emit(ProtocolError(_TOO_MANY_ERRORS, close=True))
        auth = self._phase is Phase.AUTH
        line = self._next_line(self._limits.max_auth_line if auth else self._line_cap)
        if line is None:
            return []
        if auth:
            return self._auth_line(line)
        return self._command(line)

    def _next_line(self, cap: int) -> bytes | _TooLong | None:
        """The next CRLF-terminated line without its CRLF; TOO_LONG for one that was over `cap`
        octets (CRLF included) and has now been skipped; None if none is complete yet."""
        buf = self._buf
        i = buf.find(b"\r\n", self._scan)
        if self._discarding_line:
            if i < 0:
                keep = 1 if buf[-1:] == b"\r" else 0
                del buf[: len(buf) - keep]
                self._scan = 0
                return None
            del buf[: i + 2]
            self._scan = 0
            self._discarding_line = False
            return TOO_LONG
        if i < 0:
            if len(buf) > cap:
                self._discarding_line = True  # RFC 5321 §4.5.3.1.4: read on to the CRLF, then 500
                return self._next_line(cap)
            self._scan = max(len(buf) - 1, 0)
            return None
        line = bytes(buf[:i])
        del buf[: i + 2]
        self._scan = 0
        if i + 2 > cap:
            return TOO_LONG
        return line

    # -----------------------------------------------------------------------------------------
    # Commands
    # -----------------------------------------------------------------------------------------

    def _command(self, line: bytes | _TooLong) -> list[Event]:
        if isinstance(line, _TooLong):
            return self._emit(ProtocolError(Reply(500, "5.5.2", "Line too long")))
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        if b"\r" in line or b"\n" in line:
            # RFC 5321 §2.3.8: CR and LF only as CRLF. A bare one never ends a command.
            return self._emit(ProtocolError(Reply(500, "5.5.2", "Bare CR or LF in command line")))
        limit = (
            self._limits.max_auth_line
            if verb == b"AUTH"
            else self._limits.max_mail_rcpt_line
            if verb in _MAIL_RCPT
            else self._limits.max_command_line
        )
        if len(line) + 2 > limit:
            return self._emit(ProtocolError(Reply(500, "5.5.2", "Line too long")))
        # A malformed line above is no command, so it cannot end a group; this one can.
        strict = verb in _GROUP_END
        if self._refused and verb != b"QUIT":
            return self._emit(ProtocolError(Reply(503, _BAD_SEQUENCE, "No SMTP service here")), strict=strict)
        if verb.decode("latin-1") in self.config.forbidden_commands:
            return self._emit(
                ProtocolError(Reply(421, "4.7.0", "This is an SMTP server, closing connection"), close=True)
            )
        handler = self._handlers.get(verb)
        if handler is None:
            self._unknown += 1
            if self._unknown > self._limits.max_unknown_commands:
                return self._emit(
                    ProtocolError(Reply(421, "4.7.0", "Too many unrecognized commands, closing"), close=True)
                )
            return self._emit(ProtocolError(Reply(500, "5.5.1", "Command not recognized")))
        if verb in _JUNK:
            self._junk += 1
            if self._junk > self._limits.max_junk_commands:
                return self._emit(
                    ProtocolError(Reply(421, "4.7.0", "Too many commands without mail, closing"), close=True)
                )
        try:
            event = handler(self, arg)
        except SmtpError as exc:
            return self._emit(ProtocolError(exc.reply, close=exc.close), strict=strict)
        if event is None:  # BDAT: the chunk's octets come first
            return self._advance_bdat()
        return self._emit(event, strict=strict)

    def _helo_cmd(self, arg: bytes, extended: bool) -> Helo:
        name = arg.strip(b" ")
        verb = "EHLO" if extended else "HELO"
        # RFC 5321 §4.1.1.1: one Domain or address-literal; RFC 6531 §3.7.1: ASCII only.
        # RFC 2034 §3: no enhanced status code in replies to HELO/EHLO.
        if not _HELO_NAME_RE.fullmatch(name):
            raise SmtpError(Reply(501, None, f"Syntax: {verb} hostname"))
        return Helo(name.decode("ascii"), extended)

    def _ehlo(self, arg: bytes) -> Helo:
        return self._helo_cmd(arg, True)

    def _helo_plain(self, arg: bytes) -> Helo:
        return self._helo_cmd(arg, False)

    def _starttls(self, arg: bytes) -> StartTls:
        if arg.strip(b" "):
            raise _syntax("Syntax: STARTTLS")  # RFC 3207 §4: no parameters
        if not self.config.starttls or self._tls:
            # RFC 3207 §4: offered only before TLS; once in TLS it is not a command any more.
            raise SmtpError(Reply(503 if self._tls else 502, _BAD_SEQUENCE, "STARTTLS not available"))
        if not self._extended:
            raise _seq("Send EHLO first")  # the extension exists only after EHLO (RFC 3207 §4)
        return StartTls()

    def _auth(self, arg: bytes) -> AuthStart:
        parts = arg.strip(b" ").split(b" ")
        if not parts[0] or len(parts) > 2:
            raise _syntax("Syntax: AUTH mechanism [initial-response]")
        if not self._extended:
            raise _seq("Send EHLO first")
        if not self._mechanisms:
            raise SmtpError(Reply(502, _BAD_SEQUENCE, "AUTH not available"))
        if not self.auth_offered:
            # RFC 4954 §6: 538 5.7.11 encryption required for requested authentication mechanism.
            raise SmtpError(
                Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
            )
        if self._user is not None:
            raise _seq("Already authenticated")  # RFC 4954 §4: further AUTH gets 503
        if self._mail is not None:
            raise _seq("AUTH not permitted during a mail transaction")  # RFC 4954 §4
        mechanism = parts[0].decode("latin-1").upper()
        if not parts[0].isascii() or mechanism not in self._mechanisms:
            raise SmtpError(Reply(504, "5.5.4", "Unrecognized authentication type"))  # RFC 4954 §4
        return AuthStart(mechanism, parts[1] if len(parts) == 2 else None)

    def _mail_cmd(self, arg: bytes) -> MailFrom:
        if arg[:5].upper() != b"FROM:":
            raise _syntax("Syntax: MAIL FROM:<address>")
        if self._helo is None:
            raise _seq("Send HELO/EHLO first")  # RFC 5321 §4.1.4
        if self._mail is not None:
            raise _seq("Nested MAIL command")  # RFC 5321 §4.1.4: MAIL only outside a transaction
        path, items = split_path_argument(arg[5:], reverse=True)
        params = parse_mail_params(items, self._offer())
        address = parse_path(path, reverse=True, utf8=params.smtputf8)
        return MailFrom(address, params)

    def _offer(self) -> MailOffer:
        cfg = self.config
        return MailOffer(
            extended=self._extended,
            max_size=self._limits.max_message_size,
            eightbitmime=cfg.eightbitmime,
            smtputf8=cfg.smtputf8,
            requiretls=cfg.requiretls and self._tls,
            auth=self.auth_offered,
        )

    def _rcpt_cmd(self, arg: bytes) -> RcptTo:
        if arg[:3].upper() != b"TO:":
            raise _syntax("Syntax: RCPT TO:<address>")
        if self._mail is None:
            raise _seq("Need MAIL command")  # RFC 5321 §4.1.4
        if self._bdat_used:
            raise _seq("RCPT after BDAT")  # RFC 3030 §2: the envelope is complete by then
        if self._rcpts >= self._limits.max_recipients:
            # RFC 5321 §4.5.3.1.10 and RFC 3463 §3.6: 452 4.5.3 too many recipients.
            raise SmtpError(Reply(452, "4.5.3", "Too many recipients"))
        path, items = split_path_argument(arg[3:], reverse=False)
        params = parse_rcpt_params(items)
        address = parse_path(path, reverse=False, utf8=self._mail.params.smtputf8)
        return RcptTo(address, params)

    def _data_cmd(self, arg: bytes) -> DataStart:
        if arg.strip(b" "):
            raise _syntax("Syntax: DATA")
        if self._mail is None:
            raise _seq("Need MAIL command")
        if self._bdat_used:
            raise _seq("DATA cannot follow BDAT in one transaction")  # RFC 3030 §2
        if not self._rcpts:
            # RFC 5321 §3.3: no valid recipients: 503 or 554; 554 tells the client why.
            raise SmtpError(Reply(554, _BAD_SEQUENCE, "No valid recipients"))
        return DataStart()

    def _bdat_cmd(self, arg: bytes) -> None:
        m = _BDAT_RE.fullmatch(arg)
        if m is None:
            # We cannot know how many octets follow, so nothing after this can be trusted as
            # a command: refuse and close.
            raise SmtpError(
                Reply(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]; closing connection"), close=True
            )
        size, last = int(m.group(1)), m.group(2) is not None
        # RFC 3030 §2 and §4.2: the chunk follows the command without waiting, so its octets are
        # read whatever the answer; a refused chunk is read and thrown away.
        refusal: Reply | None = None
        if not (self.config.chunking and self._extended):
            refusal = Reply(502, _BAD_SEQUENCE, "BDAT not available")
        elif self._mail is None:
            refusal = Reply(503, _BAD_SEQUENCE, "Need MAIL command")
        elif self._data_used:
            refusal = Reply(503, _BAD_SEQUENCE, "BDAT cannot follow DATA in one transaction")
        elif not self._rcpts:
            refusal = Reply(554, _BAD_SEQUENCE, "No valid recipients")
        elif self._bdat_failed is not None:
            refusal = self._bdat_failed  # RFC 3030 §2: after a failed chunk the rest are discarded
        else:
            sink = self._sink or ContentSink(self._limits)
            if sink.size + size > self._limits.max_message_size:
                # RFC 1870 §6.3 / RFC 3030 §2: refuse; the data is still read and dropped.
                refusal = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
                self._sink = None
            else:
                self._sink = sink
                self._bdat_used = True
        self._phase = Phase.BDAT
        self._bdat_size = self._bdat_left = size
        self._bdat_last, self._bdat_refusal = last, refusal
        return None

    def _rset(self, arg: bytes) -> Reset:
        if arg.strip(b" "):
            raise _syntax("Syntax: RSET")  # RFC 5321 §4.1.1.5
        return Reset()

    def _noop(self, arg: bytes) -> Noop:
        return Noop()  # RFC 5321 §4.1.1.9: a parameter is allowed and ignored

    def _quit(self, arg: bytes) -> Quit:
        return Quit()

    def _vrfy_arg(self, arg: bytes, verb: str) -> tuple[str, bool]:
        arg = arg.strip(b" ")
        utf8 = False
        m = _VRFY_UTF8_RE.fullmatch(arg)
        if m is not None and self.config.smtputf8 and self._extended:
            arg, utf8 = m.group(1), True  # RFC 6531 §3.7.4.2: VRFY/EXPN ... SMTPUTF8
        if not arg:
            raise _syntax(f"Syntax: {verb} string")
        try:
            return arg.decode("utf-8"), utf8
        except UnicodeDecodeError:
            raise SmtpError(Reply(501, "5.5.2", "Invalid UTF-8")) from None

    def _vrfy(self, arg: bytes) -> Vrfy:
        return Vrfy(*self._vrfy_arg(arg, "VRFY"))

    def _expn(self, arg: bytes) -> Expn:
        return Expn(*self._vrfy_arg(arg, "EXPN"))

    def _help(self, arg: bytes) -> Help:
        return Help(arg.strip(b" ").decode("ascii", "replace"))

    _handlers: ClassVar[dict[bytes, Callable[[SmtpConnection, bytes], Event | None]]] = {
        b"EHLO": _ehlo,
        b"HELO": _helo_plain,
        b"STARTTLS": _starttls,
        b"AUTH": _auth,
        b"MAIL": _mail_cmd,
        b"RCPT": _rcpt_cmd,
        b"DATA": _data_cmd,
        b"BDAT": _bdat_cmd,
        b"RSET": _rset,
        b"NOOP": _noop,
        b"QUIT": _quit,
        b"VRFY": _vrfy,
        b"EXPN": _expn,
        b"HELP": _help,
    }

    # -----------------------------------------------------------------------------------------
    # AUTH lines, DATA content, BDAT chunks
    # -----------------------------------------------------------------------------------------

    def _end_auth(self, reply: Reply) -> None:
        self._phase = Phase.COMMAND

    def _auth_line(self, line: bytes | _TooLong) -> list[Event]:
        if isinstance(line, _TooLong):
            # RFC 4954 §4 and §6: 500 5.5.6 authentication exchange line is too long; it ends AUTH.
            reply = Reply(500, "5.5.6", "Authentication Exchange line is too long")
            return self._emit(ProtocolError(reply), effect=self._end_auth)
        if b"\r" in line or b"\n" in line:
            return self._emit(
                ProtocolError(Reply(501, "5.5.2", "Bare CR or LF in AUTH response")),
                strict=True,
                effect=self._end_auth,
            )
        return self._emit(AuthResponse(line), strict=True)

    def _advance_data(self) -> list[Event]:
        assert self._dot is not None and self._sink is not None
        if not self._dot.feed(self._buf):
            return []
        self._scan = 0
        self._phase = Phase.COMMAND
        result = self._sink.finish()
        self._dot = None
        self._sink = None
        if isinstance(result, Reply):
            return self._emit(ProtocolError(result), effect=self._end_transaction)
        return self._emit(MessageComplete(result))

    def _advance_bdat(self) -> list[Event]:
        take = min(self._bdat_left, len(self._buf))
        if take:
            if self._bdat_refusal is None and self._sink is not None:
                self._sink.feed(bytes(self._buf[:take]))
            del self._buf[:take]
            self._bdat_left -= take
        if self._bdat_left:
            return []
        self._phase = Phase.COMMAND
        self._scan = 0
        refusal, self._bdat_refusal = self._bdat_refusal, None
        if refusal is not None:
            if self._mail is None:
                return self._emit(ProtocolError(refusal))
            return self._emit(
                ProtocolError(refusal), effect=self._end_transaction if self._bdat_last else self._fail_bdat
            )
        if not self._bdat_last:
            return self._emit(ChunkReceived(self._bdat_size))
        assert self._sink is not None
        result = self._sink.finish()
        self._sink = None
        if isinstance(result, Reply):
            return self._emit(ProtocolError(result), effect=self._end_transaction)
        return self._emit(MessageComplete(result, chunked=True))

    # -----------------------------------------------------------------------------------------
    # Output: answering events
    # -----------------------------------------------------------------------------------------

    def greeting(self, reply: Reply | None = None) -> bytes:
        """The 220 banner (RFC 5321 §4.3.1); a 554 serves only QUIT (§3.1), a 421 closes."""
        if self._phase is not Phase.GREETING:
            raise SmtpUsageError("greeting() was already sent")
        reply = reply or Reply(220, None, f"{self.config.hostname} ESMTP")
        if reply.code not in (220, 421, 554):
            raise SmtpUsageError(f"a greeting is 220, 421 or 554, not {reply.code}")
        self._phase = Phase.COMMAND
        self._refused = reply.code == 554
        if reply.code == 421:
            self._close()
        return reply.encode(enhanced=False)  # RFC 2034 §3: none in the greeting

    def send(self, reply: Reply) -> bytes:
        """Answer the outstanding event with `reply`; returns the bytes to write.

        The reply is the decision: 2xx to MailFrom opens the transaction, 2xx to RcptTo counts
        a recipient, 354 to DataStart starts reading content, 220 to StartTls waits for
        tls_started(), 334 to AUTH expects another line. 421 always closes (RFC 5321 §3.8)."""
        event = self._require()
        if isinstance(event, AuthStart | AuthResponse) and reply.positive:
            raise SmtpUsageError("use auth_succeeded(user) to end AUTH with success")
        if isinstance(event, StartTls) and reply.positive and reply.code != 220:
            raise SmtpUsageError("STARTTLS is accepted with 220 (RFC 3207 §4)")
        if isinstance(event, DataStart) and reply.intermediate and reply.code != 354:
            raise SmtpUsageError("DATA is accepted with 354 (RFC 5321 §4.1.1.4)")
        return self._answer(event, reply)

    def _answer(self, event: Event, reply: Reply) -> bytes:
        self._pending = None
        effect, self._pending_effect = self._pending_effect, None
        self._strict = False
        if reply.error:
            self._errors += 1
        if isinstance(event, Helo):
            if reply.positive:
                self._helo, self._extended = event.name, event.extended
                self._reset_transaction()  # RFC 5321 §4.1.4: EHLO/HELO imply RSET
        elif isinstance(event, StartTls):
            if reply.code == 220:
                self._phase = Phase.TLS_HANDSHAKE
                self._discarded += self._drop_input()
            else:
                self._discarded = 0  # refused: the client goes on in the clear
        elif isinstance(event, AuthStart | AuthResponse):
            self._phase = Phase.AUTH if reply.code == 334 else Phase.COMMAND
        elif isinstance(event, MailFrom):
            if reply.positive:
                self._mail = event
        elif isinstance(event, RcptTo):
            if reply.positive:
                self._rcpts += 1
        elif isinstance(event, DataStart):
            self._data_used = True
            if reply.code == 354:
                self._sink = ContentSink(self._limits)
                self._dot = DotReader(self._sink)
                self._phase = Phase.DATA
        elif isinstance(event, ChunkReceived):
            if reply.error:
                self._fail_bdat(reply)
        elif isinstance(event, MessageComplete):
            self._reset_transaction()  # RFC 5321 §4.1.1.4: the reply ends the transaction
        elif isinstance(event, Reset):
            if reply.positive:
                self._reset_transaction()
        elif isinstance(event, Quit):
            self._close()
        elif isinstance(event, ProtocolError) and event.close:
            self._close()
        if effect is not None:
            effect(reply)
        if reply.code == 421:
            self._close()  # RFC 5321 §3.8
        utf8 = isinstance(event, Vrfy | Expn) and event.smtputf8
        enhanced = self.config.enhanced_status_codes and not isinstance(event, Helo)
        return reply.encode(enhanced=enhanced, utf8=utf8)

    def _require(self) -> Event:
        if self._pending is None:
            raise SmtpUsageError("no event is waiting for a reply")
        return self._pending

    def _expect(self, *kinds: type) -> Event:
        event = self._require()
        if not isinstance(event, kinds):
            names = "/".join(k.__name__ for k in kinds)
            raise SmtpUsageError(f"the outstanding event is {type(event).__name__}, not {names}")
        return event

    def _close(self) -> None:
        self._phase = Phase.CLOSED
        self._drop_input()
        self._sink = None
        self._dot = None

    def _reset_transaction(self) -> None:
        self._mail = None
        self._rcpts = 0
        self._bdat_used = False
        self._data_used = False
        self._bdat_failed = None
        # Content is never being read while an event waits for its answer, so this drops only
        # what a BDAT transaction had stored.
        self._sink = None
        self._dot = None

    def _end_transaction(self, reply: Reply) -> None:
        self._reset_transaction()

    def _fail_bdat(self, reply: Reply) -> None:
        self._bdat_failed = reply
        self._sink = None

    # -----------------------------------------------------------------------------------------
    # Decisions: typed ways to answer
    # -----------------------------------------------------------------------------------------

    def default_reply(self, event: Event) -> Reply:
        """The positive answer to `event` (for ProtocolError: its reply; for EHLO: the list of
        extensions as they stand now)."""
        if isinstance(event, Helo) and event.extended:
            return self.ehlo_reply()
        if isinstance(event, AuthStart | AuthResponse):
            raise SmtpUsageError("AUTH is answered with auth_challenge/auth_succeeded/auth_failed")
        return positive_reply(event, self.config.hostname)

    def ehlo_reply(self) -> Reply:
        """The EHLO reply for the connection's state now (RFC 5321 §4.1.1.1, one keyword a line)."""
        keywords = ehlo_keywords(
            self.config, tls=self._tls, auth=self._mechanisms if self.auth_offered else ()
        )
        return Reply(250, None, (self.config.hostname, *keywords))

    def accept(self, reply: Reply | None = None) -> bytes:
        """Answer the outstanding event positively (default_reply unless `reply` is given)."""
        event = self._require()
        return self.send(reply or self.default_reply(event))

    def reject(self, reply: Reply) -> bytes:
        """Answer the outstanding event with a 4xx/5xx reply."""
        if not reply.error:
            raise SmtpUsageError(f"reject() needs a 4xx/5xx reply, not {reply.code}")
        return self.send(reply)

    def accept_helo(self, reply: Reply | None = None) -> bytes:
        event = self._expect(Helo)
        return self.send(reply or self.default_reply(event))

    def accept_mail(self, reply: Reply | None = None) -> bytes:
        event = self._expect(MailFrom)
        return self.send(reply or self.default_reply(event))

    def reject_mail(self, reply: Reply) -> bytes:
        self._expect(MailFrom)
        return self.reject(reply)

    def accept_rcpt(self, reply: Reply | None = None) -> bytes:
        event = self._expect(RcptTo)
        return self.send(reply or self.default_reply(event))

    def reject_rcpt(self, reply: Reply) -> bytes:
        self._expect(RcptTo)
        return self.reject(reply)

    def accept_data(self, reply: Reply | None = None) -> bytes:
        event = self._expect(DataStart)
        return self.send(reply or self.default_reply(event))

    def accept_chunk(self, reply: Reply | None = None) -> bytes:
        event = self._expect(ChunkReceived)
        return self.send(reply or self.default_reply(event))

    def accept_message(self, reply: Reply | None = None) -> bytes:
        event = self._expect(MessageComplete)
        return self.send(reply or self.default_reply(event))

    def reject_message(self, reply: Reply) -> bytes:
        self._expect(MessageComplete)
        return self.reject(reply)

    def accept_starttls(self, reply: Reply | None = None) -> bytes:
        event = self._expect(StartTls)
        return self.send(reply or self.default_reply(event))

    def tls_started(self, auth_mechanisms: Sequence[str] | None = None) -> int:
        """The TLS handshake after our 220 succeeded. Everything read in the clear since the
        STARTTLS line is dropped and the session starts over (RFC 3207 §4.2: forget EHLO, any
        transaction and authentication). Returns how many plaintext octets were dropped; the
        server must also drop anything it read but did not feed. `auth_mechanisms` replaces the
        configured list from now on (say, -PLUS mechanisms once channel binding exists)."""
        if self._phase is not Phase.TLS_HANDSHAKE:
            raise SmtpUsageError("tls_started() without an accepted STARTTLS")
        dropped = self._discarded + self._drop_input()
        self._discarded = 0
        self._tls = True
        self._phase = Phase.COMMAND
        self._helo, self._extended, self._user = None, False, None
        self._reset_transaction()
        if auth_mechanisms is not None:
            self._mechanisms = tuple(m.upper() for m in auth_mechanisms)
        return dropped

    def auth_challenge(self, data: bytes) -> bytes:
        """Send a 334 challenge (`data` raw; it goes out in base64, RFC 4954 §4)."""
        self._expect(AuthStart, AuthResponse)
        return self.send(Reply(334, None, base64.b64encode(data).decode("ascii")))

    def auth_succeeded(self, user: str, reply: Reply | None = None) -> bytes:
        """AUTH succeeded as `user`: 235 2.7.0 (RFC 4954 §6)."""
        event = self._expect(AuthStart, AuthResponse)
        reply = reply or Reply(235, "2.7.0", "Authentication successful")
        if reply.code != 235:
            raise SmtpUsageError("AUTH success is 235 (RFC 4954 §4)")
        self._user = user
        return self._answer(event, reply)

    def auth_failed(self, reply: Reply | None = None) -> bytes:
        """AUTH failed: 535 5.7.8 by default (RFC 4954 §6); 501 for "*" or bad base64 (§4)."""
        self._expect(AuthStart, AuthResponse)
        return self.reject(reply or Reply(535, "5.7.8", "Authentication credentials invalid"))
