"""SMTP replies: the Reply value, its wire form, and the exception that carries one.

RFC 5321 §4.2 (reply syntax, one or more lines, the last one `code SP text`), §4.2.1 (the
first digit is the class), §4.5.3.1.5 (a reply line is at most 512 octets with its CRLF);
RFC 2034 §3 / RFC 3463 §2 (an enhanced status code `class.subject.detail` opens the text of
every line, and its class matches the first digit of the reply).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["MAX_REPLY_LINE", "Reply", "ReplyClass", "SmtpError", "SmtpUsageError"]

# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets including the code and the CRLF.
MAX_REPLY_LINE = 512

# RFC 3463 §2: class "." subject "." detail; class is 2, 4 or 5; subject and detail 1*3digit.
_ENHANCED_RE = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")
# Anything that could end or split a reply line, or is not text: RFC 5321 §4.2 textstring is
# HT, SP and printable US-ASCII (RFC 6531 §3.7.4.2 allows UTF-8 where SMTPUTF8 is in use).
_UNSAFE_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class ReplyClass:
    """A reply's class by its first digit (RFC 5321 §4.2.1), for the replies we send (Reply) and
    the ones we read as a client (smtp.client.ServerReply)."""

    __slots__ = ()
    code: int

    @property
    def positive(self) -> bool:
        """2xx: positive completion."""
        return 200 <= self.code < 300

    @property
    def intermediate(self) -> bool:
        """3xx: positive intermediate (354 for DATA, 334 for an AUTH challenge)."""
        return 300 <= self.code < 400

    @property
    def transient(self) -> bool:
        """4xx: transient negative completion; the client may try again."""
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        """5xx: permanent negative completion."""
        return self.code >= 500

    @property
    def error(self) -> bool:
        return self.code >= 400


@dataclass(frozen=True, slots=True)
class Reply(ReplyClass):
    """One SMTP reply. `text` is one line, or a tuple of lines for a multi-line reply."""

    code: int
    enhanced: str | None = None  # RFC 3463 status code, e.g. "5.1.1"; None for 220/354/334/EHLO
    text: str | tuple[str, ...] = ""
    # Why policy refused, as one word of eventmail.metrics.SMTP_REJECT_REASONS (for the metrics;
    # never on the wire, never client text); "" for replies that are not policy refusals.
    reason: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code out of range: {self.code}")
        if self.enhanced is not None:
            # RFC 3463 §2: the class of the enhanced code repeats the reply's first digit.
            if not _ENHANCED_RE.fullmatch(self.enhanced) or self.enhanced[0] != str(self.code)[0]:
                raise ValueError(f"enhanced status code {self.enhanced!r} does not fit {self.code}")

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else (self.text or ("",))

    def encode(self, *, enhanced: bool = True, utf8: bool = False) -> bytes:
        """The reply on the wire. `enhanced=False` leaves the status codes out (the server did
        not advertise ENHANCEDSTATUSCODES); `utf8=True` keeps non-ASCII text (RFC 6531)."""
        lines = self.lines
        out = bytearray()
        for i, line in enumerate(lines):
            sep = "-" if i < len(lines) - 1 else " "
            text = _UNSAFE_RE.sub(" ", line)  # never let reply text break the line framing
            if enhanced and self.enhanced is not None:
                text = f"{self.enhanced} {text}" if text else self.enhanced
            raw = text.encode("utf-8") if utf8 else text.encode("ascii", "replace")
            raw = raw[: MAX_REPLY_LINE - 6]  # 3 digits, separator, CRLF
            if utf8:
                raw = raw.decode("utf-8", "ignore").encode("utf-8")  # no split UTF-8 sequence
            if raw or sep == "-" or self.code == 334:  # RFC 4954 §4: "334" SP [base64]
                out += b"%d%s%s\r\n" % (self.code, sep.encode(), raw)
            else:
                out += b"%d\r\n" % self.code  # RFC 5321 §4.2: Reply-code [ SP textstring ] CRLF
        return bytes(out)


class SmtpError(Exception):
    """Raised inside the SMTP layers with the reply it should become (STYLE §5)."""

    def __init__(self, reply: Reply, *, close: bool = False) -> None:
        super().__init__(f"{reply.code} {reply.enhanced or ''} {' / '.join(reply.lines)}".replace("  ", " "))
        self.reply = reply
        self.close = close


class SmtpUsageError(Exception):
    """The layer above used the protocol core wrongly (answered twice, wrong decision, ...).

    A programming error in the server, like h11's LocalProtocolError: never caused by a peer."""
