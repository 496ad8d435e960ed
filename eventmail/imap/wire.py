"""Sans-IO IMAP server wire: frames and parses client bytes into commands, encodes responses."""

# One ImapWire per connection. receive() takes whatever bytes arrived and returns the items
# they complete, in order: commands (eventmail.imap.commands), Continuation (send `+ Ready`),
# ProtocolError (answer BAD/NO, or BYE and close), IdleDone, SaslResponse / SaslCancel.
# encode() turns a response (eventmail.imap.responses) into bytes.
#
# Framing (RFC 9051 §2.2, §4.3; RFC 7888): a command is lines ending in CRLF; a line that ends
# with `{n}` (synchronising), `{n+}` (non-synchronising) or `~{n}` (literal8, RFC 3516) is
# followed by n octets of literal data and then the rest of the command. Bytes may arrive split
# anywhere: the items returned over a run of receive() calls do not depend on the split.
#
# Safety: every buffer is bounded by Limits. A synchronising literal over a limit is refused
# at once and its data is not awaited (the client must not send it, RFC 9051 §7.5 and
# RFC 7888 §4); a non-synchronising one is read and thrown away without being kept (or, past
# Limits.max_discard, the wire asks the session to close). Literal octets are never parsed as
# commands. After an error the wire finds the end of the command, so the next one parses.
#
# The grammar below follows RFC 9051 §9 (IMAP4rev2) plus RFC 3501 §9 (IMAP4rev1) and the
# extensions named at each rule.

from __future__ import annotations

import base64
import binascii
import datetime
import enum
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from eventmail.imap import commands as c
from eventmail.imap.responses import Response, StatusResponse, encode_response
from eventmail.imap.wire_ext import HANDLERS as HANDLERS_EXT
from eventmail.imap.wire_ext import list_metadata_option

# ---------------------------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------------------------

# RFC 7888 §4: with LITERAL- a non-synchronising literal may carry at most 4096 octets.
LITERAL_MINUS_MAX = 4096
# RFC 9051 §9 number64: up to 2^63-1; nz-number / number (UIDs, sequence numbers): 2^32-1.
NUMBER64_MAX = 2**63 - 1
NUMBER_MAX = 2**32 - 1
# Deflated input is inflated in pieces of this size, so a small compressed "bomb" never
# becomes one large buffer (RFC 4978 §6 warns of this).
INFLATE_CHUNK = 64 * 1024
# One receive() inflates at most this much; what the client sent beyond it stays compressed in
# the wire (input_pending) until the next receive(), so the server lets other connections run
# in between. 1 MiB is what the server reads from a socket before it pauses reading (its
# READ_HIGH): compressed input then costs one receive() no more than plain input does. Deflate
# expands at most ~1032:1, so a 1 MiB read of a bomb is ~1000 such slices, each bounded.
INFLATE_PER_RECEIVE = 1024 * 1024
# COMPRESS=DEFLATE output level: 1 keeps most of the gain on mail text (headers and bodies
# compress well at any level) for a fraction of level 6's CPU, which a busy server needs more.
DEFLATE_LEVEL = 1
# receive() hands the parser at most this many bytes at a time: a big read never becomes a
# big line buffer before the line limit is checked.
FEED_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """Bounds on what one connection may make the server hold. Defaults and their sources:"""

    # One line of a command, without its CRLF. RFC 7162 §4 (updating RFC 2683 §3.2.1.5):
    # servers should accept command lines of at least 8192 octets; long UID sets from
    # QRESYNC clients need more, and Dovecot accepts 64 KiB.
    max_line: int = 64 * 1024
    # A literal in any command but APPEND (user names, passwords, mailbox names, search
    # strings). Nothing legitimate there comes near 64 KiB.
    max_literal: int = 64 * 1024
    # One APPEND message: the APPENDLIMIT we advertise (RFC 7889). 50 MiB is a common provider
    # limit and matches the SMTP SIZE default of the submission server.
    max_append: int = 50 * 1024 * 1024
    # All messages of one MULTIAPPEND (RFC 3502): two full-size messages.
    max_append_total: int = 100 * 1024 * 1024
    # All lines and non-message literals of one command together.
    max_command: int = 1024 * 1024
    # Literals in one command (MULTIAPPEND of many small messages is the legitimate high end).
    max_literals: int = 1000
    # Nesting of parentheses and of NOT / OR search keys. Real clients use a handful; the
    # parser is recursive, so this also keeps it far from Python's recursion limit.
    max_depth: int = 32
    # A rejected non-synchronising literal up to this size is read and thrown away so the
    # connection stays usable; a larger one makes the wire ask the session to close instead
    # (RFC 7888 §4 allows either). Twice the APPEND limit covers honest oversize APPENDs.
    max_discard: int = 100 * 1024 * 1024
    # Advertise LITERAL- rather than LITERAL+ (RFC 7888 §4): non-synchronising literals over
    # 4096 octets are then refused with BAD.
    literal_minus: bool = False
    # Any literal before login. What a client legitimately sends then is a user name and a
    # password (LOGIN), an ID value (at most 1024 octets, RFC 2971 §3.3) or a mailbox name in a
    # command that will be refused; AUTHENTICATE data comes in lines, not literals. 4096 is the
    # size RFC 7888 §4 (LITERAL-) already holds every client to, and what Dovecot's login
    # process buffers. Over it: a synchronising literal gets BAD [TOOBIG] and no `+`, a
    # non-synchronising one BYE (nothing of it is read into memory).
    max_preauth_literal: int = 4096

    # BAD responses (syntax errors, unknown commands, commands in the wrong state) before
    # `* BYE too many errors` and close: Postfix's smtpd_hard_error_limit, as for SMTP. A real
    # client makes none; each is a log line, so this bounds what one connection can log.
    max_errors: int = 20
    # Changes of the account (other sessions', deliveries) waiting for a session to tell them:
    # a client that sends no command and is not idling is told at its next command, and until
    # then the events are held in memory (up to the 30-minute autologout). One more than this
    # and the session is closed with BYE; the client logs in again and resyncs (its UIDs and
    # MODSEQs are still valid, RFC 7162 §3.2.5). 10,000 is hours of a busy mailbox's changes.
    max_queued_changes: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_line", "max_literal", "max_append", "max_append_total", "max_command",
                     "max_literals", "max_depth", "max_discard", "max_preauth_literal", "max_errors",
                     "max_queued_changes"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be positive")

    @property
    def max_buffered(self) -> int:
        """Upper bound on ImapWire.buffered: one line, one command, its messages, one feed."""
        return self.max_line + 2 + self.max_command + self.max_append_total + FEED_CHUNK


# ---------------------------------------------------------------------------------------------
# Lexical helpers
# ---------------------------------------------------------------------------------------------

# ATOM-CHAR: any CHAR except atom-specials "(" ")" "{" SP CTL "%" "*" DQUOTE "\" "]".
_ATOM_RE = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
# ASTRING-CHAR = ATOM-CHAR / "]"
_ASTRING_RE = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')
# list-char = ATOM-CHAR / list-wildcards / resp-specials
_LIST_RE = re.compile(rb'[^\x00-\x20\x7f-\xff(){"\\]+')
# tag = 1*<any ASTRING-CHAR except "+">
_TAG_RE = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')
# quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR excludes CR, LF (and NUL, not a CHAR);
# RFC 9051 adds UTF8-2/3/4 (checked after matching).
_QUOTED_RE = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_UNESCAPE_RE = re.compile(rb'\\(["\\])')
_NUMBER_RE = re.compile(rb"[0-9]+")
_NAME_RE = re.compile(rb"[A-Za-z0-9.]+")
_BASE64_RE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
# A literal announced at the end of a line (RFC 9051 §9 literal, RFC 7888 §3 `+`, RFC 3516
# literal8 `~`); `-` and signs are caught here so they are refused rather than misframed.
_LITERAL_HDR_RE = re.compile(rb"(~?)\{(-?)([0-9]+)([+-]?)\}\Z")
_DATE_RE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATETIME_RE = re.compile(
    rb'"( [0-9]|[0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_MONTHS = {m: i + 1 for i, m in enumerate(
    (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV", b"DEC"))}

_SYSTEM_FLAGS = {f.upper(): f for f in
                 ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")}
# RFC 6154 §2 use-attr
_USE_ATTRS = {f.upper(): f for f in
              ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")}
_STATUS_ITEMS = frozenset({"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE",
                           "RECENT", "HIGHESTMODSEQ", "APPENDLIMIT", "MAILBOXID", "DELETED-STORAGE"})
# Charsets a SEARCH may name: RFC 9051 §6.4.4 requires US-ASCII and UTF-8; the others are the
# common legacy ones Python decodes. Anything else gets NO [BADCHARSET].
_SEARCH_CHARSETS = {
    "US-ASCII": "ascii", "UTF-8": "utf-8", "KOI8-R": "koi8_r", "KOI8-U": "koi8_u",
    "ISO-2022-JP": "iso2022_jp", "SHIFT_JIS": "shift_jis", "EUC-JP": "euc_jp",
    "EUC-KR": "euc_kr", "GB2312": "gb2312", "GBK": "gbk", "GB18030": "gb18030", "BIG5": "big5",
    **{f"ISO-8859-{n}": f"iso8859_{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16)},
    **{f"WINDOWS-{n}": f"cp{n}" for n in range(1250, 1259)},
}
_BADCHARSET = "BADCHARSET (US-ASCII UTF-8)"


class _Syntax(Exception):
    """A command does not parse; becomes a ProtocolError with the command's tag."""

    def __init__(self, text: str, status: c.ErrorStatus = "BAD", code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.status: c.ErrorStatus = status
        self.code = code


@dataclass(frozen=True)
class _Lit:
    data: bytes
    binary: bool


@dataclass(frozen=True)
class _LitHeader:
    start: int  # offset of the header in its line
    size: int | None  # None: not a valid number64 (negative)
    nonsync: bool  # `+` (or the invalid `-`)
    binary: bool
    invalid: bool  # `{n-}` or a sign: not the RFC 7888 grammar


def _literal_header(line: bytes) -> _LitHeader | None:
    if not line.endswith(b"}"):
        return None
    m = _LITERAL_HDR_RE.search(line)
    if m is None:
        return None
    binary, neg, digits, mark = m.group(1), m.group(2), m.group(3), m.group(4)
    size: int | None = None
    if not neg:
        size = int(digits) if len(digits) <= 19 else NUMBER64_MAX + 1
    return _LitHeader(m.start(), size, mark != b"", binary == b"~", bool(neg) or mark == b"-")


def _first_words(line: bytes, partial: bool = False) -> tuple[str | None, str]:
    """The tag (None when not a valid tag) and the upper-cased command name of a first line, or
    of the start of one when `partial` (then a tag not followed by SP is not known)."""
    tag_raw, sp, rest = line.partition(b" ")
    if partial and not sp:
        return None, ""
    tag = tag_raw.decode("ascii") if _TAG_RE.fullmatch(tag_raw) else None
    name_raw = rest.split(b" ", 1)[0]
    m = _ATOM_RE.fullmatch(name_raw)
    return tag, (name_raw.decode("ascii").upper() if m else "")


# ---------------------------------------------------------------------------------------------
# The command parser: recursive descent over the lines and literals of one command
# ---------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, segments: list[bytes], literals: list[_Lit], limits: Limits, utf8: bool) -> None:
        self.segs = segments
        self.lits = literals
        self.limits = limits
        self.utf8 = utf8
        self.i = 0
        self.cur = segments[0]
        self.pos = 0
        self.depth = 0
        self.codec = "utf-8"  # how SEARCH strings decode (set from CHARSET)

    # -- primitives --------------------------------------------------------------------------

    def peek(self) -> int:
        return self.cur[self.pos] if self.pos < len(self.cur) else -1

    def at_literal(self) -> bool:
        return self.pos == len(self.cur) and self.i < len(self.lits)

    def at_end(self) -> bool:
        return self.pos == len(self.cur) and self.i >= len(self.lits)

    def error(self, text: str, status: c.ErrorStatus = "BAD", code: str | None = None) -> Exception:
        """The exception to raise for a syntax error (for parsers outside this module: wire_ext)."""
        return _Syntax(text, status, code)

    def expect_end(self) -> None:
        if not self.at_end():
            raise _Syntax("unexpected characters at end of command")

    def char(self, ch: int, what: str) -> None:
        if self.peek() != ch:
            raise _Syntax(f"expected {what}")
        self.pos += 1

    def sp(self) -> None:
        self.char(0x20, "SP")

    def maybe(self, ch: int) -> bool:
        if self.peek() == ch:
            self.pos += 1
            return True
        return False

    def keyword(self, word: bytes) -> bool:
        """Consume `word` (case-insensitive) when it is followed by SP, ")" or the end."""
        end = self.pos + len(word)
        if self.cur[self.pos:end].upper() != word:
            return False
        if end < len(self.cur) and self.cur[end] not in b" )":
            return False
        self.pos = end
        return True

    def match(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        m = pattern.match(self.cur, self.pos)
        if m is None or m.end() == self.pos:
            raise _Syntax(f"expected {what}")
        self.pos = m.end()
        return m.group(0)

    def atom(self, what: str = "atom") -> str:
        return self.match(_ATOM_RE, what).decode("ascii")

    def number(self, maximum: int = NUMBER_MAX, nonzero: bool = False, what: str = "number") -> int:
        raw = self.match(_NUMBER_RE, what)
        value = int(raw) if len(raw) <= 20 else maximum + 1
        if value > maximum or (nonzero and value == 0):
            raise _Syntax(f"{what} out of range")
        return value

    def open(self) -> None:
        self.char(0x28, '"("')
        self.enter()

    def close(self) -> None:
        self.char(0x29, '")"')
        self.depth -= 1

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise _Syntax("nesting too deep", code="LIMIT")

    # -- strings -----------------------------------------------------------------------------

    def quoted(self) -> bytes:
        m = _QUOTED_RE.match(self.cur, self.pos)
        if m is None:
            rest = self.cur[self.pos:]
            if any(b in rest for b in (0, 0x0A, 0x0D)):
                raise _Syntax("NUL, CR or LF in quoted string")
            raise _Syntax("invalid quoted string")
        self.pos = m.end()
        raw = _UNESCAPE_RE.sub(rb"\1", m.group(1)) if b"\\" in m.group(1) else m.group(1)
        if not raw.isascii():
            # RFC 9051 §4.3 / §9 QUOTED-CHAR =/ UTF8-2 / UTF8-3 / UTF8-4 (RFC 3629)
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _Syntax("invalid UTF-8 in quoted string") from e
        return raw

    def literal(self, binary_ok: bool = False) -> _Lit:
        if not self.at_literal():
            raise _Syntax("expected literal")
        lit = self.lits[self.i]
        self.i += 1
        self.cur = self.segs[self.i]
        self.pos = 0
        if lit.binary and not binary_ok:
            # RFC 3516 §4.4: literal8 is for APPEND data only
            raise _Syntax("literal8 not allowed here")
        if not lit.binary and b"\x00" in lit.data:
            # RFC 9051 §9: literal = ... *CHAR8, and CHAR8 excludes NUL; literal8 allows it
            raise _Syntax("NUL in literal (use literal8)")
        return lit

    def string(self) -> bytes:
        if self.peek() == 0x22:
            return self.quoted()
        if self.at_literal():
            return self.literal().data
        raise _Syntax("expected string")

    def astring(self) -> bytes:
        if self.peek() == 0x22 or self.at_literal():
            return self.string()
        return self.match(_ASTRING_RE, "astring")

    def nstring(self) -> bytes | None:
        if self.keyword(b"NIL"):
            return None
        return self.string()

    def text(self, raw: bytes, what: str = "string") -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _Syntax(f"invalid UTF-8 in {what}") from e

    # -- mailbox names -----------------------------------------------------------------------

    def mailbox_text(self, raw: bytes, allow_empty: bool = False) -> str:
        """A mailbox name (or reference / pattern) as Unicode: UTF-8 when enabled (RFC 6855 §3,
        RFC 9051 §5.1), else modified UTF-7 (RFC 3501 §5.1.3), invalid → BAD."""
        if not raw and not allow_empty:
            raise _Syntax("empty mailbox name")
        if any(b < 0x20 or b == 0x7F for b in raw):
            raise _Syntax("control character in mailbox name")
        name = self.text(raw, "mailbox name")
        if self.utf8:
            if any(0x80 <= ord(ch) <= 0x9F for ch in name):
                raise _Syntax("control character in mailbox name")  # C1 controls, RFC 9051 §5.1
            return name
        if not name.isascii():
            raise _Syntax("8-bit mailbox name without UTF8=ACCEPT; use modified UTF-7")
        try:
            return c.decode_mutf7(name)
        except c.MailboxNameError as e:
            undecodable = c.UndecodableName(name)
            undecodable.reason = str(e)
            return undecodable

    def mailbox(self) -> str:
        raw = self.astring()
        if raw.upper() == b"INBOX":
            return "INBOX"  # RFC 9051 §5.1: INBOX is case-insensitive
        return self.mailbox_text(raw)

    def list_mailbox(self) -> str:
        if self.peek() == 0x22 or self.at_literal():
            raw = self.string()
        else:
            raw = self.match(_LIST_RE, "mailbox pattern")
        return self.mailbox_text(raw, allow_empty=True)

    # -- flags, dates, sets ------------------------------------------------------------------

    def flag(self) -> str:
        """flag = "\\Answered" / ... / flag-keyword / flag-extension (RFC 9051 §9)."""
        if self.maybe(0x5C):
            name = "\\" + self.atom("flag")
            return _SYSTEM_FLAGS.get(name.upper(), name)
        return self.atom("flag")

    def flag_list(self) -> tuple[str, ...]:
        self.open()
        out: list[str] = []
        if self.peek() != 0x29:
            out.append(self.flag())
            while self.maybe(0x20):
                out.append(self.flag())
        self.close()
        return tuple(out)

    def date(self) -> datetime.date:
        """date = date-text / DQUOTE date-text DQUOTE."""
        quoted = self.maybe(0x22)
        m = _DATE_RE.match(self.cur, self.pos)
        if m is None:
            raise _Syntax("expected date (d-Mon-yyyy)")
        self.pos = m.end()
        if quoted:
            self.char(0x22, "closing quote of date")
        month = _MONTHS.get(m.group(2).upper())
        try:
            if month is None:
                raise ValueError("month")
            return datetime.date(int(m.group(3)), month, int(m.group(1)))
        except ValueError as e:
            raise _Syntax("invalid date") from e

    def date_time(self) -> datetime.datetime:
        """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE."""
        m = _DATETIME_RE.match(self.cur, self.pos)
        if m is None:
            raise _Syntax("expected date-time")
        self.pos = m.end()
        g = m.groups()
        month = _MONTHS.get(g[1].upper())
        zh, zm = int(g[7]), int(g[8])
        try:
            if month is None or zh > 23 or zm > 59:
                raise ValueError("field")
            offset = datetime.timedelta(hours=zh, minutes=zm) * (-1 if g[6] == b"-" else 1)
            return datetime.datetime(int(g[2]), month, int(g[0]), int(g[3]), int(g[4]), int(g[5]),
                                     tzinfo=datetime.timezone(offset))
        except ValueError as e:
            raise _Syntax("invalid date-time") from e

    def seq_number(self) -> int | None:
        if self.maybe(0x2A):
            return None
        return self.number(nonzero=True, what="sequence number")

    def sequence_set(self) -> c.SequenceSet:
        """sequence-set (RFC 9051 §9) or "$" (RFC 5182 §2, RFC 9051 seq-last-command)."""
        if self.maybe(0x24):
            return c.SequenceSet(saved=True)
        ranges: list[c.SeqRange] = []
        while True:
            start = self.seq_number()
            end = self.seq_number() if self.maybe(0x3A) else start
            ranges.append(c.SeqRange(start, end))
            if not self.maybe(0x2C):
                return c.SequenceSet(tuple(ranges))

    def modseq(self, zero_ok: bool = False) -> int:
        """mod-sequence-value (1..2^63-1) or mod-sequence-valzer (RFC 7162 §7)."""
        return self.number(NUMBER64_MAX, nonzero=not zero_ok, what="mod-sequence")

    def status_items(self) -> tuple[str, ...]:
        self.open()
        items = [self.atom("status item").upper()]
        while self.maybe(0x20):
            items.append(self.atom("status item").upper())
        self.close()
        for item in items:
            if item not in _STATUS_ITEMS:
                raise _Syntax(f"unknown status item {item}")
        return tuple(items)

    # -- the command -------------------------------------------------------------------------

    def command(self) -> c.Command:
        tag = self.match(_TAG_RE, "tag").decode("ascii")
        self.sp()
        name = self.atom("command name").upper()
        uid = False
        if name == "UID":
            self.sp()
            name = self.atom("command name").upper()
            if name not in _UID_COMMANDS:
                raise _Syntax(f"UID {name} is not a command")
            uid = True
        handler = _HANDLERS.get(name)
        if handler is None:
            raise _Syntax(f"unknown command {name}")
        cmd = handler(self, tag, uid)
        self.expect_end()
        return cmd

    def p_authenticate(self, tag: str, uid: bool) -> c.Command:
        # RFC 9051 §6.2.2; SASL-IR initial response RFC 4959 §3 (`=` is an empty response)
        self.sp()
        mech = self.atom("mechanism").upper()
        initial: bytes | None = None
        if self.maybe(0x20):
            raw = self.match(_BASE64_RE, "initial response")
            initial = b"" if raw == b"=" else _b64decode(raw)
        return c.Authenticate(tag, mech, initial)

    def p_login(self, tag: str, uid: bool) -> c.Command:
        self.sp()
        user = self.text(self.astring(), "user name")
        self.sp()
        password = self.text(self.astring(), "password")
        return c.Login(tag, user, password)

    def p_enable(self, tag: str, uid: bool) -> c.Command:
        # RFC 5161 §3.1: "ENABLE" 1*(SP capability)
        caps = []
        self.sp()
        caps.append(self.atom("capability").upper())
        while self.maybe(0x20):
            caps.append(self.atom("capability").upper())
        return c.Enable(tag, tuple(caps))

    def p_select(self, tag: str, uid: bool, readonly: bool) -> c.Command:
        self.sp()
        mailbox = self.mailbox()
        condstore = False
        qresync: c.QresyncParams | None = None
        if self.maybe(0x20):
            # RFC 4466 §2.1 select-params; CONDSTORE RFC 7162 §3.1.8; QRESYNC §3.2.5
            for param in self.parameters("select parameter"):
                if param == "CONDSTORE":
                    condstore = True
                elif param == "QRESYNC":
                    qresync = self.qresync_param()
                else:
                    raise _Syntax(f"unknown select parameter {param}")
        return c.Select(tag, mailbox, readonly, condstore, qresync)

    def parameters(self, what: str) -> Iterator[str]:
        """A parenthesized list of parameters, each named at most once (RFC 4466 §2.1): yields each
        name upper-cased, after which the caller parses its value, if it has one."""
        self.open()
        seen: set[str] = set()
        while True:
            name = self.atom(what).upper()
            if name in seen:
                raise _Syntax(f"duplicate {what} {name}")
            seen.add(name)
            yield name
            if not self.maybe(0x20):
                break
        self.close()

    def qresync_param(self) -> c.QresyncParams:
        self.sp()
        self.open()
        uidvalidity = self.number(nonzero=True, what="uidvalidity")
        self.sp()
        modseq = self.modseq()
        known: c.SequenceSet | None = None
        match: tuple[c.SequenceSet, c.SequenceSet] | None = None
        if self.maybe(0x20):
            if self.peek() != 0x28:
                known = self.sequence_set()
                if self.maybe(0x20):
                    match = self.seq_match()
            else:
                match = self.seq_match()
        self.close()
        return c.QresyncParams(uidvalidity, modseq, known, match)

    def seq_match(self) -> tuple[c.SequenceSet, c.SequenceSet]:
        self.open()
        seqs = self.sequence_set()
        self.sp()
        uids = self.sequence_set()
        self.close()
        return seqs, uids

    def p_create(self, tag: str, uid: bool) -> c.Command:
        self.sp()
        mailbox = self.mailbox()
        use: list[str] = []
        if self.maybe(0x20):
            # RFC 4466 §2.2 create-params; RFC 6154 §3 "USE" SP "(" [use-attr *(SP use-attr)] ")"
            self.open()
            while True:
                param = self.atom("create parameter").upper()
                if param != "USE":
                    raise _Syntax(f"unknown create parameter {param}")
                self.sp()
                self.open()
                if self.peek() != 0x29:
                    while True:
                        self.char(0x5C, "use attribute")
                        attr = "\\" + self.atom("use attribute")
                        use.append(_USE_ATTRS.get(attr.upper(), attr))
                        if not self.maybe(0x20):
                            break
                self.close()
                if not self.maybe(0x20):
                    break
            self.close()
        return c.Create(tag, mailbox, tuple(use))

    def p_mailbox_only(self, tag: str, cls: Callable[[str, str], c.Command]) -> c.Command:
        self.sp()
        return cls(tag, self.mailbox())

    def p_rename(self, tag: str, uid: bool) -> c.Command:
        self.sp()
        old = self.mailbox()
        self.sp()
        return c.Rename(tag, old, self.mailbox())

    def p_list(self, tag: str, uid: bool) -> c.Command:
        # RFC 9051 §6.3.9; RFC 5258 §3 (LIST-EXTENDED), RFC 5819 (RETURN STATUS), RFC 6154
        self.sp()
        select: list[str] = []
        extended = False
        if self.peek() == 0x28:
            extended = True
            self.open()
            if self.peek() != 0x29:
                while True:
                    opt = self.atom("selection option").upper()
                    if opt not in ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"):
                        raise _Syntax(f"unknown LIST selection option {opt}")
                    select.append(opt)
                    if not self.maybe(0x20):
                        break
            self.close()
            self.sp()
            if "RECURSIVEMATCH" in select and not set(select) - {"RECURSIVEMATCH", "REMOTE"}:
                # RFC 5258 §3: RECURSIVEMATCH needs another selection option that it modifies
                raise _Syntax("RECURSIVEMATCH without a selection option to modify")
        reference = self.mailbox_text(self.astring(), allow_empty=True)
        self.sp()
        patterns: list[str] = []
        if self.peek() == 0x28:
            extended = True
            self.open()
            patterns.append(self.list_mailbox())
            while self.maybe(0x20):
                patterns.append(self.list_mailbox())
            self.close()
        else:
            patterns.append(self.list_mailbox())
        returns: list[str] = []
        status: tuple[str, ...] = ()
        metadata: tuple[str, ...] = ()
        metadata_max: int | None = None
        if self.maybe(0x20):
            if not self.keyword(b"RETURN"):
                raise _Syntax("expected RETURN")
            extended = True
            self.sp()
            self.open()
            if self.peek() != 0x29:
                while True:
                    opt = self.atom("return option").upper()
                    if opt == "STATUS":
                        self.sp()
                        status = self.status_items()
                    elif opt == "METADATA":
                        metadata, metadata_max = list_metadata_option(self)  # RFC 9590 §2
                    elif opt not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"):
                        raise _Syntax(f"unknown LIST return option {opt}")
                    if opt in returns:
                        raise _Syntax(f"duplicate LIST return option {opt}")
                    returns.append(opt)
                    if not self.maybe(0x20):
                        break
            self.close()
        return c.List(tag, reference, tuple(patterns), tuple(select), tuple(returns), status, extended, metadata,
                      metadata_max)

    def p_lsub(self, tag: str, uid: bool) -> c.Command:
        self.sp()
        reference = self.mailbox_text(self.astring(), allow_empty=True)
        self.sp()
        return c.Lsub(tag, reference, self.list_mailbox())

    def p_status(self, tag: str, uid: bool) -> c.Command:
        self.sp()
        mailbox = self.mailbox()
        self.sp()
        return c.Status(tag, mailbox, self.status_items())

    def p_getquota(self, tag: str, uid: bool) -> c.Command:
        self.sp()  # RFC 9208 formal syntax: getquota = "GETQUOTA" SP quota-root-name (an astring)
        return c.GetQuota(tag, self.text(self.astring(), "quota root"))

    def p_setquota(self, tag: str, uid: bool) -> c.Command:
        # RFC 9208 formal syntax: setquota = "SETQUOTA" SP quota-root-name SP setquota-list;
        # setquota-list = "(" [setquota-resource *(SP setquota-resource)] ")";
        # setquota-resource = resource-name SP resource-limit (number64)
        self.sp()
        root = self.text(self.astring(), "quota root")
        self.sp()
        self.open()
        limits: list[tuple[str, int]] = []
        if self.peek() != 0x29:
            while True:
                name = self.atom("resource name").upper()
                self.sp()
                limits.append((name, self.number(NUMBER64_MAX, what="resource limit")))
                if not self.maybe(0x20):
                    break
        self.close()
        return c.SetQuota(tag, root, tuple(limits))

    def p_append(self, tag: str, uid: bool) -> c.Command:
        # RFC 9051 §6.3.12; MULTIAPPEND RFC 3502 §6; literal8 RFC 3516 §4.4; UTF8 RFC 6855 §4
        self.sp()
        mailbox = self.mailbox()
        messages: list[c.AppendMessage] = []
        while True:
            self.sp()
            messages.append(self._append_message())
            if self.at_end():
                return c.Append(tag, mailbox, tuple(messages))

    def _append_message(self) -> c.AppendMessage:
        """[flag-list SP] [date-time SP] then a literal, `UTF8 (literal8)` or `CATENATE (...)`."""
        flags: tuple[str, ...] = ()
        when: datetime.datetime | None = None
        if self.peek() == 0x28:
            flags = self.flag_list()
            self.sp()
        if self.peek() == 0x22:
            when = self.date_time()
            self.sp()
        if self.keyword(b"UTF8"):
            self.sp()
            self.open()
            lit = self.literal(binary_ok=True)
            if not lit.binary:
                raise _Syntax("UTF8 APPEND data must be a literal8")
            self.close()
            return c.AppendMessage(lit.data, flags, when, lit.binary, utf8=True)
        if self.keyword(b"CATENATE"):
            return c.AppendMessage(b"", flags, when, parts=self._catenate())
        if not self.at_literal():
            raise _Syntax("expected message literal")
        lit = self.literal(binary_ok=True)
        return c.AppendMessage(lit.data, flags, when, lit.binary)

    def p_replace(self, tag: str, uid: bool) -> c.Command:
        # RFC 8508 §6: "REPLACE" SP seq-number SP mailbox append-message; UID REPLACE takes a uid
        self.sp()
        number = self.number(nonzero=True, what="message number")
        self.sp()
        mailbox = self.mailbox()
        self.sp()
        message = self._append_message()
        self.expect_end()
        return c.Replace(tag, number, mailbox, message, uid)

    def _catenate(self) -> tuple[c.CatenatePart, ...]:
        # RFC 4469 §5: CATENATE SP "(" cat-part *(SP cat-part) ")", cat-part = "TEXT" SP literal
        # (literal8 with BINARY, RFC 3516 §4.4) / "URL" SP astring
        self.sp()
        self.open()
        parts: list[c.CatenatePart] = []
        while True:
            if self.keyword(b"TEXT"):
                self.sp()
                if not self.at_literal():
                    raise _Syntax("CATENATE TEXT must be a literal")
                parts.append(c.CatenatePart(self.literal(binary_ok=True).data))
            elif self.keyword(b"URL"):
                self.sp()
                parts.append(c.CatenatePart(url=self.astring().decode("utf-8", errors="replace")))
            else:
                raise _Syntax("expected TEXT or URL")
            if not self.maybe(0x20):
                break
        self.close()
        return tuple(parts)

    def p_expunge(self, tag: str, uid: bool) -> c.Command:
        if not uid:
            return c.Expunge(tag)
        self.sp()  # RFC 4315 §2.1 "UID EXPUNGE" SP sequence-set
        return c.Expunge(tag, self.sequence_set())

    def p_sort(self, tag: str, uid: bool) -> c.Command:
        # RFC 5256 §4: SORT [RETURN (...)] (criteria) charset search-key...; RETURN is ESORT
        # (RFC 5267 §3.2); DISPLAYFROM / DISPLAYTO are RFC 5957 §3
        self.sp()
        returns, partial = self._search_return()
        self.open()
        criteria: list[tuple[str, bool]] = []
        reverse = False
        while True:
            name = self.atom("sort key").upper()
            if name == "REVERSE":
                if reverse:
                    raise _Syntax("REVERSE REVERSE")
                reverse = True
            elif name in c.SORT_KEYS:
                criteria.append((name, reverse))
                reverse = False
            else:
                raise _Syntax(f"unknown sort key {name}")
            if not self.maybe(0x20):
                break
        if reverse:
            raise _Syntax("REVERSE without a sort key")
        self.close()
        self.sp()
        charset = self._charset(required=True)
        keys = [self.search_key()]
        while self.maybe(0x20):
            keys.append(self.search_key())
        key = keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))
        if returns is not None and "SAVE" in returns:
            raise _Syntax("SAVE is a SEARCH option")
        return c.Sort(tag, tuple(criteria), key, uid, charset, returns, partial)

    def p_thread(self, tag: str, uid: bool) -> c.Command:
        # RFC 5256 §4: THREAD algorithm charset search-key...
        self.sp()
        algorithm = self.atom("thread algorithm").upper()
        if algorithm not in ("ORDEREDSUBJECT", "REFERENCES"):
            raise _Syntax(f"unknown thread algorithm {algorithm}")
        self.sp()
        charset = self._charset(required=True)
        keys = [self.search_key()]
        while self.maybe(0x20):
            keys.append(self.search_key())
        key = keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))
        return c.Thread(tag, algorithm, key, uid, charset)

    def _search_return(self) -> tuple[tuple[str, ...] | None, tuple[int, int] | None]:
        """RETURN (opts) SP, or None (RFC 4731 §3.1), and the PARTIAL range if one was asked
        (RFC 5267 §4.4: `PARTIAL lo:hi`, two non-zero numbers, either order; `*` is not one)."""
        if not self.keyword(b"RETURN"):
            return None, None
        self.sp()
        self.open()
        opts: list[str] = []
        partial: tuple[int, int] | None = None
        if self.peek() != 0x29:
            while True:
                opt = self.atom("return option").upper()
                if opt not in ("MIN", "MAX", "ALL", "COUNT", "SAVE", "UPDATE", "CONTEXT", "PARTIAL"):
                    raise _Syntax(f"unknown SEARCH return option {opt}")
                if opt == "PARTIAL":
                    self.sp()
                    lo = self.number(nonzero=True, what="partial range")
                    self.char(0x3A, '":"')
                    hi = self.number(nonzero=True, what="partial range")
                    partial = (min(lo, hi), max(lo, hi))
                opts.append(opt)
                if not self.maybe(0x20):
                    break
        self.close()
        self.sp()
        return tuple(opts), partial

    def _charset(self, required: bool) -> str | None:
        """CHARSET name SP (SEARCH: optional, after the word CHARSET; SORT: the bare name)."""
        if not required and not self.keyword(b"CHARSET"):
            return None
        if not required:
            self.sp()
        charset = self.astring().decode("ascii", errors="replace").upper()
        codec = _SEARCH_CHARSETS.get(charset)
        if codec is None:
            raise _Syntax(f"unsupported charset {charset}", status="NO", code=_BADCHARSET)
        self.codec = codec
        self.sp()
        return charset

    def p_search(self, tag: str, uid: bool) -> c.Command:
        # RFC 9051 §6.4.4; RETURN: RFC 4731 §3.1, SAVE: RFC 5182 §2
        self.sp()
        returns, partial = self._search_return()
        charset = self._charset(required=False)
        keys = [self.search_key()]
        while self.maybe(0x20):
            keys.append(self.search_key())
        key = keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))
        return c.Search(tag, key, uid, charset, returns, partial)

    # shared with ESEARCH (wire_ext)
    search_return = _search_return
    charset = _charset

    def p_cancelupdate(self, tag: str, uid: bool) -> c.Command:
        # RFC 5267 §4.3: CANCELUPDATE tag-string *(SP tag-string)
        tags: list[str] = []
        while self.maybe(0x20):
            tags.append(self.string().decode("ascii", errors="replace"))
        if not tags:
            raise _Syntax("CANCELUPDATE needs a tag")
        return c.CancelUpdate(tag, tuple(tags))

    def search_string(self) -> str:
        raw = self.astring()
        try:
            return raw.decode(self.codec)
        except UnicodeDecodeError as e:
            raise _Syntax("search string not valid in its charset") from e

    def search_key(self) -> c.SearchKey:
        self.enter()
        try:
            return self._search_key()
        finally:
            self.depth -= 1

    def _search_key(self) -> c.SearchKey:
        ch = self.peek()
        if ch == 0x28:
            self.open()
            self.depth -= 1  # counted by search_key already
            keys = [self.search_key()]
            while self.maybe(0x20):
                keys.append(self.search_key())
            self.char(0x29, '")"')
            return c.SearchAnd(tuple(keys))
        if ch == 0x2A or ch == 0x24 or 0x30 <= ch <= 0x39:
            return c.SearchSeq(self.sequence_set(), uid=False)
        name = self.atom("search key").upper()
        if name in _SEARCH_FLAGS:
            flag, present = _SEARCH_FLAGS[name]
            return c.SearchFlag(flag, present)
        if name == "ALL":
            return c.SearchAll()
        if name == "SAVEDATESUPPORTED":  # RFC 8514 §4.2: every mailbox keeps save dates
            return c.SearchAll()
        if name == "NEW":  # RFC 3501 §6.4.4: NEW is (RECENT UNSEEN)
            return c.SearchAnd((c.SearchFlag("\\Recent", True), c.SearchFlag("\\Seen", False)))
        self.sp()
        if name in ("BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"):
            return c.SearchText(name, self.search_string())
        if name in ("KEYWORD", "UNKEYWORD"):
            return c.SearchFlag(self.atom("keyword"), name == "KEYWORD")
        if name in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE", "SAVEDBEFORE", "SAVEDON",
                    "SAVEDSINCE"):
            return c.SearchDate(name, self.date())
        if name in ("EMAILID", "THREADID"):
            return c.SearchObjectId(name, self.match(_OBJECTID_RE, "objectid").decode("ascii"))
        if name in ("LARGER", "SMALLER"):
            return c.SearchSize(name == "LARGER", self.number(NUMBER64_MAX, what="size"))
        if name == "UID":
            return c.SearchSeq(self.sequence_set(), uid=True)
        if name == "HEADER":
            field = _header_name(self.astring())
            self.sp()
            return c.SearchHeader(field, self.search_string())
        if name == "NOT":
            return c.SearchNot(self.search_key())
        if name == "OR":
            left = self.search_key()
            self.sp()
            return c.SearchOr(left, self.search_key())
        if name == "MODSEQ":
            # RFC 7162 §3.1.5: MODSEQ [SP entry-name SP entry-type-req] SP mod-sequence-valzer
            entry: str | None = None
            etype: str | None = None
            if self.peek() == 0x22:
                raw = self.quoted().decode("ascii", errors="replace")
                if not raw.lower().startswith("/flags/") or len(raw) <= 7:
                    raise _Syntax("MODSEQ entry name must be /flags/<flag>")
                entry = raw[7:]
                self.sp()
                etype = self.atom("entry type").lower()
                if etype not in ("priv", "shared", "all"):
                    raise _Syntax("MODSEQ entry type must be priv, shared or all")
                self.sp()
            return c.SearchModseq(self.modseq(zero_ok=True), entry, etype)
        if name in ("OLDER", "YOUNGER"):  # RFC 5032 §3
            return c.SearchAge(name == "OLDER", self.number(nonzero=True, what="interval"))
        raise _Syntax(f"unknown search key {name}")

    def p_fetch(self, tag: str, uid: bool) -> c.Command:
        # RFC 9051 §6.4.5; modifiers RFC 4466 §2.4, CHANGEDSINCE RFC 7162 §3.1.4, VANISHED §3.2.6
        self.sp()
        seqset = self.sequence_set()
        self.sp()
        macro: str | None = None
        items: list[c.FetchAttr] = []
        if self.peek() == 0x28:
            self.open()
            items.append(self.fetch_att())
            while self.maybe(0x20):
                items.append(self.fetch_att())
            self.close()
        else:
            for word, expansion in _FETCH_MACROS.items():
                if self.keyword(word.encode("ascii")):
                    macro = word
                    items.extend(c.FetchAttr(n) for n in expansion)
                    break
            else:
                items.append(self.fetch_att())
        changedsince: int | None = None
        vanished = False
        if self.maybe(0x20):
            for mod in self.parameters("fetch modifier"):
                if mod == "CHANGEDSINCE":
                    self.sp()
                    changedsince = self.modseq()
                elif mod == "VANISHED":
                    if not uid:
                        raise _Syntax("VANISHED is only allowed with UID FETCH")
                    vanished = True
                else:
                    raise _Syntax(f"unknown fetch modifier {mod}")
            if vanished and changedsince is None:
                raise _Syntax("VANISHED requires CHANGEDSINCE")
        return c.Fetch(tag, seqset, tuple(items), uid, changedsince, vanished, macro)

    def fetch_att(self) -> c.FetchAttr:
        name = self.match(_NAME_RE, "fetch item").decode("ascii").upper()
        if name in _FETCH_SIMPLE:
            return c.FetchAttr(name)
        if name == "PREVIEW":
            # RFC 8970 §7: "PREVIEW" [SP "(" preview-mod *(SP preview-mod) ")"], preview-mod =
            # "LAZY" (a preview is always made here, so LAZY changes nothing)
            if self.cur[self.pos : self.pos + 2] == b" (":
                self.pos += 1
                self.open()
                while True:
                    if self.atom("preview modifier").upper() != "LAZY":
                        raise _Syntax("unknown PREVIEW modifier")
                    if not self.maybe(0x20):
                        break
                self.close()
            return c.FetchAttr("PREVIEW")
        if name == "BODY" and self.peek() != 0x5B:
            return c.FetchAttr("BODY")
        if name in ("BODY", "BODY.PEEK"):
            section = self.section()
            return c.FetchAttr("BODY", section, self.partial(), peek=name == "BODY.PEEK")
        if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
            # RFC 3516 §4.2: section-binary = "[" [section-part] "]"
            self.char(0x5B, '"["')
            part = self.section_part() if self.peek() != 0x5D else ()
            self.char(0x5D, '"]"')
            section = c.Section(part)
            if name == "BINARY.SIZE":
                return c.FetchAttr(name, section)
            return c.FetchAttr("BINARY", section, self.partial(), peek=name == "BINARY.PEEK")
        raise _Syntax(f"unknown fetch item {name}")

    def section_part(self) -> tuple[int, ...]:
        parts = [self.number(nonzero=True, what="part number")]
        while self.peek() == 0x2E and self.pos + 1 < len(self.cur) and 0x30 <= self.cur[self.pos + 1] <= 0x39:
            self.pos += 1
            parts.append(self.number(nonzero=True, what="part number"))
        return tuple(parts)

    def section(self) -> c.Section:
        """section = "[" [section-spec] "]" (RFC 9051 §9)."""
        self.char(0x5B, '"["')
        if self.maybe(0x5D):
            return c.Section()
        part: tuple[int, ...] = ()
        text: str | None = None
        fields: tuple[str, ...] = ()
        if 0x30 <= self.peek() <= 0x39:
            part = self.section_part()
            if self.maybe(0x2E):
                text, fields = self.section_text(mime_ok=True)
        else:
            text, fields = self.section_text(mime_ok=False)
        self.char(0x5D, '"]"')
        return c.Section(part, text, fields)

    def section_text(self, mime_ok: bool) -> tuple[str, tuple[str, ...]]:
        word = self.match(_NAME_RE, "section text").decode("ascii").upper()
        if word in ("HEADER", "TEXT") or (word == "MIME" and mime_ok):
            return word, ()
        if word in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            self.sp()
            self.open()
            names = [_header_name(self.astring())]
            while self.maybe(0x20):
                names.append(_header_name(self.astring()))
            self.close()
            return word, tuple(names)
        raise _Syntax(f"invalid section {word}")

    def partial(self) -> tuple[int, int] | None:
        # partial = "<" number64 "." nz-number64 ">"
        if not self.maybe(0x3C):
            return None
        origin = self.number(NUMBER64_MAX, what="partial origin")
        self.char(0x2E, '"."')
        count = self.number(NUMBER64_MAX, nonzero=True, what="partial length")
        self.char(0x3E, '">"')
        return origin, count

    def p_store(self, tag: str, uid: bool) -> c.Command:
        # RFC 9051 §6.4.6; UNCHANGEDSINCE RFC 7162 §3.1.3
        self.sp()
        seqset = self.sequence_set()
        self.sp()
        unchangedsince: int | None = None
        if self.peek() == 0x28:
            self.open()
            mod = self.atom("store modifier").upper()
            if mod != "UNCHANGEDSINCE":
                raise _Syntax(f"unknown store modifier {mod}")
            self.sp()
            unchangedsince = self.modseq(zero_ok=True)
            self.close()
            self.sp()
        mode = c.StoreMode.REPLACE
        if self.maybe(0x2B):
            mode = c.StoreMode.ADD
        elif self.maybe(0x2D):
            mode = c.StoreMode.REMOVE
        what = self.match(_NAME_RE, "FLAGS").decode("ascii").upper()
        if what not in ("FLAGS", "FLAGS.SILENT"):
            raise _Syntax("expected FLAGS or FLAGS.SILENT")
        self.sp()
        if self.peek() == 0x28:
            flags = self.flag_list()
        else:
            fl = [self.flag()]
            while self.maybe(0x20):
                fl.append(self.flag())
            flags = tuple(fl)
        return c.Store(tag, seqset, mode, flags, what == "FLAGS.SILENT", uid, unchangedsince)

    def p_copy_move(self, tag: str, uid: bool, cls: type[c.Copy] | type[c.Move]) -> c.Command:
        self.sp()
        seqset = self.sequence_set()
        self.sp()
        return cls(tag, seqset, self.mailbox(), uid)

    def p_id(self, tag: str, uid: bool) -> c.Command:
        # RFC 2971 §4: "ID" SP id-params-list; id-params-list = "(" *(string SP nstring) ")" / nil
        self.sp()
        if self.keyword(b"NIL"):
            return c.Id(tag, None)
        self.open()
        params: list[tuple[str, str | None]] = []
        if self.peek() != 0x29:
            while True:
                key = self.text(self.string(), "ID field")
                self.sp()
                val = self.nstring()
                params.append((key, None if val is None else self.text(val, "ID value")))
                if not self.maybe(0x20):
                    break
        self.close()
        return c.Id(tag, tuple(params))

    def p_compress(self, tag: str, uid: bool) -> c.Command:
        self.sp()  # RFC 4978 §3: "COMPRESS" SP algorithm
        return c.Compress(tag, self.atom("algorithm").upper())


def _b64decode(raw: bytes) -> bytes:
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _Syntax("invalid base64") from e


def _header_name(raw: bytes) -> str:
    """header-fld-name is an astring; RFC 5322 §3.6.8 field names are printable ASCII but ':'."""
    if not raw or any(b < 0x21 or b > 0x7E or b == 0x3A for b in raw):
        raise _Syntax("invalid header field name")
    return raw.decode("ascii").upper()


_SEARCH_FLAGS: dict[str, tuple[str, bool]] = {
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True), "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
    "RECENT": ("\\Recent", True), "OLD": ("\\Recent", False),  # RFC 3501 only
}
_FETCH_SIMPLE = frozenset({"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER",
                           "RFC822.SIZE", "RFC822.TEXT", "BODYSTRUCTURE", "UID", "MODSEQ",
                           "EMAILID", "THREADID", "SAVEDATE"})  # RFC 8474 §7, RFC 8514 §4.1
# RFC 8474 §7: objectid = 1*255(ALPHA / DIGIT / "_" / "-")
_OBJECTID_RE = re.compile(rb"[A-Za-z0-9_-]{1,255}(?![^ )\r\n])")
# RFC 9051 §6.4.5 macros
_FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_UID_COMMANDS = frozenset({"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE", "SORT", "THREAD", "REPLACE"})
# Commands whose literals are messages (held to APPENDLIMIT rather than max_literal): APPEND,
# and REPLACE (RFC 8508), also as UID REPLACE.
_MESSAGE_COMMANDS = frozenset({"APPEND", "REPLACE", "UID REPLACE"})

_Handler = Callable[[_Parser, str, bool], c.Command]
_HANDLERS: dict[str, _Handler] = {
    "CAPABILITY": lambda p, t, u: c.Capability(t),
    "NOOP": lambda p, t, u: c.Noop(t),
    "LOGOUT": lambda p, t, u: c.Logout(t),
    "STARTTLS": lambda p, t, u: c.StartTls(t),
    "AUTHENTICATE": _Parser.p_authenticate,
    "LOGIN": _Parser.p_login,
    "ENABLE": _Parser.p_enable,
    "SELECT": lambda p, t, u: p.p_select(t, u, readonly=False),
    "EXAMINE": lambda p, t, u: p.p_select(t, u, readonly=True),
    "CREATE": _Parser.p_create,
    "DELETE": lambda p, t, u: p.p_mailbox_only(t, c.Delete),
    "RENAME": _Parser.p_rename,
    "SUBSCRIBE": lambda p, t, u: p.p_mailbox_only(t, c.Subscribe),
    "UNSUBSCRIBE": lambda p, t, u: p.p_mailbox_only(t, c.Unsubscribe),
    "LIST": _Parser.p_list,
    "LSUB": _Parser.p_lsub,
    "NAMESPACE": lambda p, t, u: c.Namespace(t),
    "STATUS": _Parser.p_status,
    "APPEND": _Parser.p_append,
    "REPLACE": _Parser.p_replace,
    "IDLE": lambda p, t, u: c.Idle(t),
    "CHECK": lambda p, t, u: c.Check(t),
    "CLOSE": lambda p, t, u: c.Close(t),
    "UNSELECT": lambda p, t, u: c.Unselect(t),
    "EXPUNGE": _Parser.p_expunge,
    "SEARCH": _Parser.p_search,
    "SORT": _Parser.p_sort,
    "CANCELUPDATE": _Parser.p_cancelupdate,
    "THREAD": _Parser.p_thread,
    "FETCH": _Parser.p_fetch,
    "STORE": _Parser.p_store,
    "COPY": lambda p, t, u: p.p_copy_move(t, u, c.Copy),
    "MOVE": lambda p, t, u: p.p_copy_move(t, u, c.Move),
    "ID": _Parser.p_id,
    "COMPRESS": _Parser.p_compress,
    **HANDLERS_EXT,  # GETMETADATA, SETMETADATA, NOTIFY, ESEARCH
    "GETQUOTA": _Parser.p_getquota,
    "GETQUOTAROOT": lambda p, t, u: p.p_mailbox_only(t, c.GetQuotaRoot),
    "SETQUOTA": _Parser.p_setquota,
}


def parse_command(segments: list[bytes], literals: list[_Lit], limits: Limits, utf8: bool) -> c.Command:
    """Parse one framed command (raises _Syntax)."""
    return _Parser(segments, literals, limits, utf8).command()


# ---------------------------------------------------------------------------------------------
# The wire
# ---------------------------------------------------------------------------------------------


class _Mode(enum.Enum):
    LINE = "line"  # reading a line of a command
    LITERAL = "literal"  # reading literal octets into the command
    SKIP = "skip"  # reading literal octets of a rejected command and dropping them
    DISCARD = "discard"  # dropping the rest of an over-long line
    SASL = "sasl"  # reading a base64 line of an AUTHENTICATE exchange (RFC 9051 §6.2.2)
    HOLD = "hold"  # after STARTTLS / COMPRESS: dropping input until the session answers
    CLOSED = "closed"  # after a fatal error: dropping everything


class ImapWire:
    """IMAP server-side framing and parsing for one connection; does no I/O.

    What the session does with each item of receive():
      Command        handle it and encode its responses;
      Continuation   encode ContinuationRequest() (`+ Ready for literal data`);
      ProtocolError  encode error_response(item); if item.close, then BYE and close;
      IdleDone       end IDLE (answer BAD if not idling);
      SaslResponse / SaslCancel  continue / abort the AUTHENTICATE exchange.
    And the calls that switch modes: enable_utf8() after ENABLE of UTF8=ACCEPT or IMAP4rev2;
    start_tls() when the TLS handshake starts after OK to STARTTLS; start_compression() right
    after encoding OK to COMPRESS. Encoding the tagged answer to AUTHENTICATE ends SASL mode.
    """

    def __init__(self, limits: Limits | None = None, *, authenticated: bool = False) -> None:
        self.limits = limits if limits is not None else Limits()
        # Before login every literal is held to Limits.max_preauth_literal (see authenticated())
        self._authenticated = authenticated
        self._buf = bytearray()
        self._pos = 0  # consumed prefix of _buf
        self._scan = 0  # where to resume looking for CRLF in _buf
        self._mode = _Mode.LINE
        self._utf8 = False
        self._uidonly = False
        # the command being framed
        self._segments: list[bytes] = []
        self._literals: list[_Lit] = []
        self._lit = bytearray()
        self._lit_binary = False
        self._need = 0
        self._tag: str | None = None
        self._name = ""
        self._size = 0
        self._append_size = 0
        self._rejected = False
        # over-long line being discarded
        self._tail = b""
        self._pending: c.ProtocolError | None = None
        self._discard_sasl = False
        # exchanges waiting for the session's answer
        self._sasl_tag: str | None = None
        self._hold_tag: str | None = None
        self._held_dropped = 0  # octets dropped while holding after STARTTLS (for start_tls())
        # RFC 4978 COMPRESS=DEFLATE
        self._inflater: zlib._Decompress | None = None
        self._deflater: zlib._Compress | None = None
        self._zin = b""  # compressed input not inflated yet (over INFLATE_PER_RECEIVE)
        self._zmore = False  # the inflater may hold output for input already given

    # -- public API --------------------------------------------------------------------------

    @property
    def utf8(self) -> bool:
        """True once UTF-8 mailbox names and strings are on (see enable_utf8)."""
        return self._utf8

    @property
    def compressing(self) -> bool:
        return self._deflater is not None

    @property
    def closed(self) -> bool:
        """True after a fatal error: the session must close; input is ignored."""
        return self._mode is _Mode.CLOSED

    @property
    def input_pending(self) -> bool:
        """True when compressed input is left over from receive(): call receive(b"") again
        (after letting other connections run) even if the client sends nothing more."""
        return self._inflater is not None and (bool(self._zin) or self._zmore) \
            and self._mode not in (_Mode.CLOSED, _Mode.HOLD)

    @property
    def buffered(self) -> int:
        """Octets currently held for this connection (for tests and metrics)."""
        held = len(self._buf) - self._pos + len(self._lit) + len(self._tail)
        return held + sum(len(s) for s in self._segments) + sum(len(x.data) for x in self._literals)

    def receive(self, data: bytes) -> list[c.Item]:
        """Feed bytes from the client; return the items they complete, in order."""
        out: list[c.Item] = []
        if self._inflater is None:
            self._feed(data, out)
            return out
        # Inflate a piece at a time and frame each piece at once, so the line, literal and
        # command limits see inflated octets as they appear (and close on a command that passes
        # them, see _overlong and _after_rejected_line); stop after INFLATE_PER_RECEIVE.
        self._zin += data
        budget = INFLATE_PER_RECEIVE
        while budget > 0 and (self._zin or self._zmore) and self._mode not in (_Mode.CLOSED, _Mode.HOLD):
            want = min(INFLATE_CHUNK, budget)
            try:
                plain = self._inflater.decompress(self._zin, want)
            except zlib.error:
                self._fatal(out, None, "invalid compressed data")
                break
            self._zin = self._inflater.unconsumed_tail
            self._zmore = len(plain) == want
            budget -= len(plain)
            self._feed(plain, out)
        return out

    def encode(self, response: Response, flush: bool = True) -> bytes:
        """The bytes for one response (deflated once compression is on). Encoding the tagged
        answer to AUTHENTICATE ends the SASL exchange; to STARTTLS or COMPRESS ends the hold
        on input those commands put in place. With `flush=False` deflated output may stay in
        the compressor until flush() (one sync flush for a run of responses, not one each)."""
        data = encode_response(response, utf8=self._utf8, uidonly=self._uidonly)
        if isinstance(response, StatusResponse) and response.tag is not None:
            if response.tag == self._sasl_tag:
                self.end_authentication()
            if response.tag == self._hold_tag:
                self._release_hold()
        if self._deflater is not None:
            data = self._deflater.compress(data)
            if flush:
                data += self._deflater.flush(zlib.Z_SYNC_FLUSH)
        return data

    def flush(self) -> bytes:
        """What the compressor still holds, ending on a byte boundary (RFC 4978 §4: the
        client can then read every response sent so far); b"" without compression."""
        return self._deflater.flush(zlib.Z_SYNC_FLUSH) if self._deflater is not None else b""

    def enable_utf8(self) -> None:
        """Switch to UTF-8 mailbox names and strings: after ENABLE UTF8=ACCEPT (RFC 6855 §3) or
        ENABLE IMAP4rev2 (RFC 9051 §5.1). Commands already returned were parsed before it."""
        self._utf8 = True

    def enable_uidonly(self) -> None:
        """FETCH responses as UIDFETCH from now on: after ENABLE UIDONLY (RFC 9586 §3)."""
        self._uidonly = True

    def authenticated(self) -> None:
        """Call when a login succeeds: literals may now be as large as Limits allows. Items
        already returned (pipelined behind the login) were framed under the pre-login limit."""
        self._authenticated = True

    def end_authentication(self) -> None:
        """The AUTHENTICATE exchange is over: read commands again."""
        self._sasl_tag = None
        if self._mode is _Mode.SASL:
            self._mode = _Mode.LINE

    def start_tls(self) -> int:
        """Call when the TLS handshake starts after `OK` to STARTTLS: any plaintext still
        buffered is dropped (RFC 9051 §6.2.1: nothing sent before TLS may count after it).
        Returns how many octets received after the STARTTLS line were dropped, for the log."""
        dropped = self._held_dropped + self.buffered
        self._held_dropped = 0
        self._drop_input()
        self._hold_tag = None
        self._mode = _Mode.LINE
        return dropped

    def start_compression(self) -> None:
        """Call right after encoding the tagged OK to COMPRESS DEFLATE: from now on input is
        inflated and output deflated, raw DEFLATE with a sync flush per response (RFC 4978 §4)."""
        if self._deflater is not None:
            return
        self._drop_input()
        self._hold_tag = None
        if self._mode is _Mode.HOLD:
            self._mode = _Mode.LINE
        self._inflater = zlib.decompressobj(-15)
        self._deflater = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -15)

    # -- framing -----------------------------------------------------------------------------

    def _feed(self, data: bytes, out: list[c.Item]) -> None:
        for off in range(0, len(data), FEED_CHUNK):
            if self._mode in (_Mode.CLOSED, _Mode.HOLD):
                if self._mode is _Mode.HOLD:
                    self._held_dropped += len(data) - off
                return
            self._buf += data[off:off + FEED_CHUNK]
            self._run(out)
            if self._pos:
                del self._buf[:self._pos]
                self._scan = max(0, self._scan - self._pos)
                self._pos = 0

    def _run(self, out: list[c.Item]) -> None:
        buf = self._buf
        while True:
            mode = self._mode
            if mode is _Mode.LINE or mode is _Mode.SASL:
                idx = buf.find(b"\r\n", max(self._scan, self._pos))
                if idx < 0:
                    if len(buf) - self._pos > self.limits.max_line + 1:
                        self._overlong(out)
                        continue
                    self._scan = max(self._pos, len(buf) - 1)
                    return
                line = bytes(buf[self._pos:idx])
                self._pos = idx + 2
                self._scan = self._pos
                if len(line) > self.limits.max_line:
                    self._pos -= len(line) + 2
                    self._overlong(out)
                    continue
                if mode is _Mode.SASL:
                    self._sasl_line(line, out)
                else:
                    self._line(line, out)
            elif mode is _Mode.LITERAL or mode is _Mode.SKIP:
                take = min(self._need, len(buf) - self._pos)
                if mode is _Mode.LITERAL:
                    self._lit += buf[self._pos:self._pos + take]
                self._pos += take
                self._need -= take
                if self._need:
                    return
                if mode is _Mode.LITERAL:
                    self._literals.append(_Lit(bytes(self._lit), self._lit_binary))
                    self._lit = bytearray()
                self._mode = _Mode.LINE
                self._scan = self._pos
            elif mode is _Mode.DISCARD:
                idx = buf.find(b"\r\n", self._pos)
                if idx < 0:
                    end = max(self._pos, len(buf) - 1)  # a CR at the end may start CRLF
                    self._tail = (self._tail + buf[self._pos:end])[-64:]
                    self._pos = end
                    return
                self._tail = (self._tail + buf[self._pos:idx])[-64:]
                self._pos = idx + 2
                self._scan = self._pos
                self._end_discard(out)
            else:  # HOLD, CLOSED
                if mode is _Mode.HOLD:
                    self._held_dropped += len(buf) - self._pos
                self._pos = len(buf)
                return

    def _overlong(self, out: list[c.Item]) -> None:
        """A line passed max_line: drop it to its CRLF, then answer BAD (and keep framing: its
        end may still announce a literal that must be skipped). With compression on, closes:
        a few compressed octets may inflate to an endless line, and discarding it would cost
        the server CPU without bound (RFC 4978 §6)."""
        if self._inflater is not None:
            tag = self._sasl_tag if self._mode is _Mode.SASL else self._tag
            if self._mode is not _Mode.SASL and not self._segments and not self._rejected:
                tag, _ = _first_words(bytes(self._buf[self._pos:self._pos + 1024]), partial=True)
            self._fatal(out, tag, "command line too long in compressed input")
            return
        if self._mode is _Mode.SASL:
            self._discard_sasl = True
            self._pending = c.ProtocolError(self._sasl_tag, "BAD", "SASL response line too long")
            self._sasl_tag = None
        else:
            self._discard_sasl = False
            if not self._segments and not self._rejected:
                # the same prefix however the line arrived, so the tag does not depend on the split
                head = min(1024, self.limits.max_line)
                self._tag, self._name = _first_words(bytes(self._buf[self._pos:self._pos + head]), partial=True)
            self._reject("BAD", "command line too long", "TOOBIG")
        self._tail = b""
        self._mode = _Mode.DISCARD

    def _end_discard(self, out: list[c.Item]) -> None:
        tail, self._tail = self._tail, b""
        self._mode = _Mode.LINE
        if self._discard_sasl:
            self._discard_sasl = False
            self._flush(out)
            return
        self._after_rejected_line(tail, out)

    def _line(self, line: bytes, out: list[c.Item]) -> None:
        first = not self._segments and not self._rejected
        if first:
            if line.upper() == b"DONE":
                out.append(c.IdleDone())  # RFC 2177 §3: ends IDLE
                return
            self._tag, self._name = _first_words(line)
            if self._tag is None:
                self._reject("BAD", "empty command line" if not line else "invalid tag")
            elif self._name == "UID":
                if _first_words(line.split(b" ", 1)[1])[1] == "REPLACE":
                    self._name = "UID REPLACE"  # its literal is a message
            elif self._name not in _HANDLERS:
                self._reject("BAD", f"unknown command {self._name}" if self._name else "missing command")
            if self._rejected:
                self._after_rejected_line(line, out)
                return
        elif self._rejected:
            self._after_rejected_line(line, out)
            return
        self._size += len(line) + 2
        if self._size > self.limits.max_command:
            self._reject("BAD", "command too long", "TOOBIG")
            self._after_rejected_line(line, out)
            return
        hdr = _literal_header(line)
        if hdr is None:
            self._segments.append(line)
            self._finish(out)
            return
        self._segments.append(line[:hdr.start])
        self._literal_start(hdr, line, out)

    def _literal_start(self, hdr: _LitHeader, line: bytes, out: list[c.Item]) -> None:
        limits = self.limits
        n = hdr.size
        # before login nothing is a message: every literal counts against max_command
        is_append = self._name in _MESSAGE_COMMANDS and self._authenticated
        if n is None or hdr.invalid:
            # RFC 9051 §9 literal = "{" number64 ["+"] "}"; RFC 7888 has no `{n-}` form
            self._reject("BAD", "invalid literal")
        elif len(self._literals) >= limits.max_literals:
            self._reject("BAD", "too many literals in one command", "LIMIT")
        elif not self._authenticated and n > limits.max_preauth_literal:
            if hdr.nonsync:
                # its octets are on their way and are not worth reading: close (RFC 7888 §4)
                self._fatal(out, self._tag, "literal too big before login")
                return
            # RFC 9051 §7.5: no `+`, so the client does not send it; RFC 5530 §3 TOOBIG
            self._reject("BAD", "literal too big before login", "TOOBIG")
        elif hdr.nonsync and limits.literal_minus and n > LITERAL_MINUS_MAX:
            # RFC 7888 §4: LITERAL- servers refuse larger non-synchronising literals with BAD
            self._reject("BAD", "non-synchronizing literal over 4096 octets", "TOOBIG")
        elif is_append and (n > limits.max_append or self._append_size + n > limits.max_append_total):
            # RFC 7889 §3 APPENDLIMIT; RFC 5530 §3 TOOBIG
            self._reject("NO", "message too big", "TOOBIG")
        elif not is_append and (n > limits.max_literal or self._size + n > limits.max_command):
            self._reject("BAD", "literal too big", "TOOBIG")
        if self._rejected:
            self._after_rejected_line(line, out)
            return
        assert n is not None
        if is_append:
            self._append_size += n
        else:
            self._size += n
        if not hdr.nonsync:
            out.append(c.Continuation(self._tag or ""))  # RFC 9051 §7.5: `+` before the data
        self._need = n
        self._lit_binary = hdr.binary
        self._mode = _Mode.LITERAL

    def _after_rejected_line(self, line: bytes, out: list[c.Item]) -> None:
        """A line of a command that has been refused. A non-synchronising literal it announces
        is on its way: it is skipped, octet by octet, and framing goes on. Anything else ends
        the command, since a client must not send a synchronising literal that was not invited
        (RFC 9051 §7.5, RFC 7888 §4); only then is the refusal returned, so the session answers
        after the client has finished sending the command."""
        hdr = _literal_header(line)
        if hdr is None or hdr.size is None or not hdr.nonsync:
            self._flush(out)
            self._reset()
            return
        if self._inflater is not None and hdr.size > self.limits.max_literal:
            # compressed: skipping would inflate up to max_discard for nothing (RFC 4978 §6)
            self._fatal(out, self._tag, "literal too big to skip in compressed input")
            return
        if hdr.size > (self.limits.max_discard if self._authenticated else self.limits.max_preauth_literal):
            self._fatal(out, self._tag, "literal too big to skip")
            return
        self._need = hdr.size
        self._mode = _Mode.SKIP

    def _finish(self, out: list[c.Item]) -> None:
        tag = self._tag
        try:
            cmd = parse_command(self._segments, self._literals, self.limits, self._utf8)
        except _Syntax as e:
            out.append(c.ProtocolError(tag, e.status, e.text, e.code))
            self._reset()
            return
        out.append(cmd)
        self._reset()
        if isinstance(cmd, c.Authenticate):
            self._sasl_tag = cmd.tag
            self._mode = _Mode.SASL
        elif isinstance(cmd, c.StartTls | c.Compress):
            # RFC 9051 §6.2.1, RFC 4978 §3: the client sends nothing more until the tagged
            # answer; anything it did send (pipelined plaintext) is dropped, never run.
            self._hold_tag = cmd.tag
            self._mode = _Mode.HOLD

    def _sasl_line(self, line: bytes, out: list[c.Item]) -> None:
        tag = self._sasl_tag or ""
        if line == b"*":
            out.append(c.SaslCancel(tag))  # RFC 9051 §6.2.2: the exchange is cancelled
            self.end_authentication()
            return
        if _BASE64_RE.fullmatch(line) is None or len(line) % 4:
            out.append(c.ProtocolError(tag, "BAD", "invalid base64 in SASL response"))
            self.end_authentication()
            return
        out.append(c.SaslResponse(tag, _b64decode(line)))

    # -- state helpers -----------------------------------------------------------------------

    def _reject(self, status: c.ErrorStatus, text: str, code: str | None = None) -> None:
        """Refuse the command being framed (the first reason wins); it is returned by _flush
        once the command's framing ends."""
        if not self._rejected:
            self._pending = c.ProtocolError(self._tag, status, text, code)
        self._rejected = True
        self._segments = []
        self._literals = []

    def _flush(self, out: list[c.Item]) -> None:
        if self._pending is not None:
            out.append(self._pending)
            self._pending = None

    def _fatal(self, out: list[c.Item], tag: str | None, text: str) -> None:
        self._flush(out)
        out.append(c.ProtocolError(tag, "BYE", text, close=True))
        self._reset()
        self._drop_input()
        self._mode = _Mode.CLOSED

    def _reset(self) -> None:
        self._segments = []
        self._literals = []
        self._lit = bytearray()
        self._tag = None
        self._name = ""
        self._size = 0
        self._append_size = 0
        self._rejected = False
        self._mode = _Mode.LINE

    def _drop_input(self) -> None:
        self._zin = b""
        self._zmore = False
        self._pos = len(self._buf)
        self._scan = self._pos
        self._tail = b""
        self._pending = None

    def _release_hold(self) -> None:
        self._hold_tag = None
        if self._mode is _Mode.HOLD:
            self._drop_input()
            self._mode = _Mode.LINE


__all__ = ["FEED_CHUNK", "INFLATE_CHUNK", "INFLATE_PER_RECEIVE", "LITERAL_MINUS_MAX", "ImapWire", "Limits",
           "parse_command"]
