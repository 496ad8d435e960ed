"""IMAP server responses as typed values, and their encoding to bytes (RFC 9051 §7, §9)."""

# The session builds Response objects; ImapWire.encode() turns them into bytes through
# encode_response() here (and deflates them once COMPRESS is active). Choosing between atoms,
# quoted strings and literals is done here, in one place, following RFC 9051 §4.3.

from __future__ import annotations

import base64
import datetime
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal as TypingLiteral
from typing import TypeAlias, cast

from eventmail.imap.commands import ProtocolError, SequenceSet, encode_mutf7

# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Atom:
    """Sent verbatim: keywords such as EXISTS, flags (`\\Seen`), item names (`BODY[]`). Must be
    printable US-ASCII without SP; the encoder checks."""

    text: str


@dataclass(frozen=True)
class Literal:
    """Always sent as a literal `{n}`, or as a literal8 `~{n}` when `binary` and the data holds
    NUL (RFC 3516 §4.3); a plain literal never carries NUL (RFC 9051 §4.3: it becomes 0x80)."""

    data: bytes
    binary: bool = False


@dataclass(frozen=True)
class Raw:
    """Pre-rendered protocol bytes inserted as they are (e.g. a cached BODYSTRUCTURE)."""

    data: bytes


@dataclass(frozen=True)
class Mailbox:
    """A mailbox name: modified UTF-7 (RFC 3501 §5.1.3) unless UTF-8 is enabled (RFC 6855 §3,
    RFC 9051 §5.1), then as a string."""

    name: str


# None is NIL, int a number, str / bytes a string (quoted or literal, chosen by content),
# a tuple or list a parenthesised list, a SequenceSet its text form, a datetime a date-time.
Value: TypeAlias = (
    "int | str | bytes | Atom | Literal | Raw | Mailbox | SequenceSet | datetime.datetime"
    " | tuple[Value, ...] | list[Value] | None"
)

NIL = None

# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------

Status: TypeAlias = TypingLiteral["OK", "NO", "BAD", "BYE", "PREAUTH"]


@dataclass(frozen=True)
class ResponseCode:
    """`[NAME args...]`, e.g. ResponseCode("UIDNEXT", (5,)) → `[UIDNEXT 5]`,
    ResponseCode("APPENDUID", (38505, 3955)), ResponseCode("CLOSED") (RFC 9051 §7.1)."""

    name: str
    args: tuple[Value, ...] = ()


@dataclass(frozen=True)
class StatusResponse:
    """OK / NO / BAD / BYE / PREAUTH, tagged when `tag` is set, else untagged (`*`)."""

    status: Status
    text: str = ""
    tag: str | None = None
    code: ResponseCode | None = None


@dataclass(frozen=True)
class Untagged:
    """Untagged data: `* ` and the values separated by SP, e.g. Untagged((5, Atom("EXISTS")))."""

    values: tuple[Value, ...]


@dataclass(frozen=True)
class ContinuationRequest:
    """`+ text`, or `+ base64(challenge)` for an AUTHENTICATE challenge (RFC 9051 §7.5)."""

    text: str = "Ready for literal data"
    challenge: bytes | None = None


@dataclass(frozen=True)
class FetchResponse:
    """`* seq FETCH (name value ...)` (RFC 9051 §7.5.2). Names are sent as given (use
    FetchAttr.response_name()); a BINARY[...] value given as bytes goes out as a literal8 when
    it holds NUL."""

    seq: int
    items: tuple[tuple[str, Value], ...]


Response: TypeAlias = StatusResponse | Untagged | ContinuationRequest | FetchResponse


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------

_ATOM_SAFE = frozenset(range(0x21, 0x7F))


class EncodeError(ValueError):
    """A response value that cannot be put on the wire (a bug in the caller)."""


def _needs_literal(data: bytes, utf8: bool) -> bool:
    """RFC 9051 §4.3: a quoted string cannot hold CR, LF or NUL; we also send other controls as
    literals. 8-bit text is quoted only when UTF-8 is enabled (RFC 6855 §3) and it is valid
    UTF-8; otherwise it goes in a literal (CHAR8, RFC 3501 §4.3)."""
    if any(b < 0x20 or b == 0x7F for b in data):
        return True
    if any(b >= 0x80 for b in data):
        if not utf8:
            return True
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return True
    return False


# RFC 9051 §4.3 / §9: a literal is CHAR8, which excludes NUL; only literal8 (RFC 3516 §4.3)
# carries it. A message stored with NUL (APPEND of a literal8, or an older store) is sent in a
# plain literal with each NUL as 0x80, as Dovecot does ("IMAP literals must not contain NULs.
# change them to 0x80 characters", lib-imap-storage/imap-msgpart.c); the size is unchanged.
_NO_NUL = bytes.maketrans(b"\x00", b"\x80")


def _literal(raw: bytes, binary: bool) -> bytes:
    """`{n}` with NUL as 0x80, or `~{n}` as it is when `binary` and the data holds NUL."""
    if b"\x00" not in raw:
        return b"{%d}\r\n" % len(raw) + raw
    if binary:
        return b"~{%d}\r\n" % len(raw) + raw
    return b"{%d}\r\n" % len(raw) + raw.translate(_NO_NUL)


def encode_string(data: bytes | str, *, utf8: bool = False, binary: bool = False) -> bytes:
    """A string as quoted or literal. With `binary`, content with NUL is sent as literal8
    (RFC 3516 §4.3); without it every NUL goes out as 0x80 (see _NO_NUL)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if _needs_literal(raw, utf8):
        return _literal(raw, binary)
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def encode_astring(data: str, *, utf8: bool = False) -> bytes:
    """An astring: a bare atom when every character allows it (RFC 9051 §9 ASTRING-CHAR), else a
    string."""
    raw = data.encode("utf-8")
    if raw and all(b in _ATOM_SAFE and b not in b'(){%*"\\' for b in raw):
        return raw
    return encode_string(raw, utf8=utf8)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_datetime(value: datetime.datetime) -> str:
    """RFC 9051 §9 date-time: `dd-Mon-yyyy hh:mm:ss +zzzz` (day padded with a space)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    off = value.utcoffset() or datetime.timedelta(0)
    minutes = int(off.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return (
        f"{value.day:2d}-{_MONTHS[value.month - 1]}-{value.year:04d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"
    )


@functools.lru_cache(maxsize=4096)
def _atom(text: str) -> bytes:
    # cached: flags and keywords repeat on every FETCH response of a mailbox
    raw = text.encode("ascii", errors="strict") if text.isascii() else b""
    if not raw or any(b not in _ATOM_SAFE for b in raw):
        raise EncodeError(f"not an atom: {text!r}")
    return raw


def encode_value(value: Value, *, utf8: bool = False, binary: bool = False) -> bytes:
    """One value (see Value). `binary` lets bytes with NUL become literal8."""
    # The types of FETCH responses first, by exact type (a FETCH of a whole mailbox encodes
    # thousands of them; bool, an int subclass, takes the checks below)
    kind = type(value)
    if kind is int:
        if cast(int, value) < 0:
            raise EncodeError("IMAP numbers are unsigned")
        return b"%d" % cast(int, value)
    if kind is Raw:
        return cast(Raw, value).data
    if kind is Atom:
        return _atom(cast(Atom, value).text)
    if kind is tuple:
        items = cast(tuple[Atom, ...], value)
        if all(type(v) is Atom for v in items):
            return b"(" + b" ".join([_atom(v.text) for v in items]) + b")"
    if value is None:
        return b"NIL"
    if isinstance(value, bool):
        raise EncodeError("booleans have no IMAP form")
    if isinstance(value, int):
        if value < 0:
            raise EncodeError("IMAP numbers are unsigned")
        return str(value).encode("ascii")
    if isinstance(value, str | bytes):
        return encode_string(value, utf8=utf8, binary=binary)
    if isinstance(value, Atom):
        return _atom(value.text)
    if isinstance(value, Literal):
        return _literal(value.data, value.binary)
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, Mailbox):
        name = value.name if utf8 else encode_mutf7(value.name)
        return encode_string(name, utf8=utf8)
    if isinstance(value, SequenceSet):
        return _atom(str(value))
    if isinstance(value, datetime.datetime):
        return b'"' + format_datetime(value).encode("ascii") + b'"'
    return b"(" + b" ".join(encode_value(v, utf8=utf8, binary=binary) for v in value) + b")"


@functools.lru_cache(maxsize=1024)
def _item_name(name: str) -> bytes:
    """A FETCH item name such as `BODY[HEADER.FIELDS (FROM TO)]<0>`: printable ASCII, with SP
    allowed only inside the brackets."""
    raw = name.encode("ascii", errors="replace")
    head, bracket, _ = raw.partition(b"[")
    if not raw or any(b < 0x20 or b > 0x7E for b in raw) or b" " in head or (b" " in raw and not bracket):
        raise EncodeError(f"not a FETCH item name: {name!r}")
    return raw


def _text(text: str, utf8: bool) -> bytes:
    """resp-text: no CR, LF or NUL (RFC 9051 §9 TEXT-CHAR); 8-bit only with UTF-8 enabled."""
    clean = "".join(" " if c in "\r\n\x00" else c for c in text)
    if utf8:
        return clean.encode("utf-8", errors="replace")
    return clean.encode("ascii", errors="replace")


def _code(code: ResponseCode, utf8: bool) -> bytes:
    out = _atom(code.name)
    for arg in code.args:
        out += b" " + encode_value(arg, utf8=utf8)
    return b"[" + out + b"]"


def encode_response(response: Response, *, utf8: bool = False, uidonly: bool = False) -> bytes:
    """The bytes of one response, CRLF included. With `uidonly` (RFC 9586, enabled) a FETCH
    response goes out as `* uid UIDFETCH (...)`: it must carry its UID."""
    if isinstance(response, StatusResponse):
        out = (response.tag.encode("ascii") if response.tag is not None else b"*") + b" "
        out += response.status.encode("ascii")
        if response.code is not None:
            out += b" " + _code(response.code, utf8)
        if response.text:
            out += b" " + _text(response.text, utf8)
        return out + b"\r\n"
    if isinstance(response, Untagged):
        values = response.values
        if len(values) == 2:
            number, word = values
            if type(number) is int and type(word) is Atom and number >= 0:
                # `* n EXISTS`, `* n EXPUNGE`, `* n RECENT`: every session is told each of them
                return b"* %d " % number + _atom(word.text) + b"\r\n"
        return b"* " + b" ".join(encode_value(v, utf8=utf8) for v in values) + b"\r\n"
    if isinstance(response, ContinuationRequest):
        if response.challenge is not None:
            return b"+ " + base64.b64encode(response.challenge) + b"\r\n"
        return b"+ " + _text(response.text, utf8) + b"\r\n"
    parts: list[bytes] = []
    uid: Value | None = None
    for name, value in response.items:
        parts.append(_item_name(name))
        parts.append(encode_value(value, utf8=utf8, binary=name[:7].upper() == "BINARY["))
        if name == "UID":
            uid = value
    if uidonly:
        # RFC 9586 §3: no message sequence numbers; the UID names the message (and stays among
        # the items, which the msg-att syntax allows, so the list is never empty)
        if not isinstance(uid, int):
            raise EncodeError("a FETCH response without its UID under UIDONLY")
        return b"* %d UIDFETCH (" % uid + b" ".join(parts) + b")\r\n"
    return b"* %d FETCH (" % response.seq + b" ".join(parts) + b")\r\n"


# ---------------------------------------------------------------------------------------------
# Builders for common responses
# ---------------------------------------------------------------------------------------------


def ok(tag: str | None, text: str = "done", code: ResponseCode | None = None) -> StatusResponse:
    return StatusResponse("OK", text, tag, code)


def no(tag: str | None, text: str, code: ResponseCode | None = None) -> StatusResponse:
    return StatusResponse("NO", text, tag, code)


def bad(tag: str | None, text: str, code: ResponseCode | None = None) -> StatusResponse:
    return StatusResponse("BAD", text, tag, code)


def bye(text: str, code: ResponseCode | None = None) -> StatusResponse:
    return StatusResponse("BYE", text, None, code)


def error_response(error: ProtocolError) -> StatusResponse:
    """The response to a ProtocolError item: tagged when the tag is known. For `close`, send
    this and then bye()."""
    code = None
    if error.code is not None:
        name, _, rest = error.code.partition(" ")
        code = ResponseCode(name, (Raw(rest.encode("ascii")),) if rest else ())
    status: Status = error.status
    if status == "BYE":
        return StatusResponse("BYE", error.text, None, code)
    return StatusResponse(status, error.text, error.tag, code)


def capability(capabilities: Iterable[str]) -> Untagged:
    return Untagged((Atom("CAPABILITY"), *(Atom(c) for c in capabilities)))


def capability_code(capabilities: Iterable[str]) -> ResponseCode:
    return ResponseCode("CAPABILITY", tuple(Atom(c) for c in capabilities))


def exists(count: int) -> Untagged:
    return Untagged((count, Atom("EXISTS")))


def expunge(seq: int) -> Untagged:
    return Untagged((seq, Atom("EXPUNGE")))


def flags(names: Iterable[str]) -> Untagged:
    return Untagged((Atom("FLAGS"), tuple(Atom(f) for f in names)))


def enabled(capabilities: Iterable[str]) -> Untagged:
    """RFC 5161 §3.2."""
    return Untagged((Atom("ENABLED"), *(Atom(c) for c in capabilities)))


def vanished(uids: SequenceSet, earlier: bool = False) -> Untagged:
    """RFC 7162 §3.2.10: `* VANISHED (EARLIER) 41,43:116`."""
    head: tuple[Value, ...] = (Atom("VANISHED"), (Atom("EARLIER"),)) if earlier else (Atom("VANISHED"),)
    return Untagged((*head, uids))


def list_response(
    attributes: Iterable[str],
    delimiter: str | None,
    name: str,
    extended: Sequence[tuple[str, Value]] = (),
    command: str = "LIST",
) -> Untagged:
    """`* LIST (\\HasNoChildren) "/" INBOX` with RFC 5258 extended items such as
    ("CHILDINFO", (b"SUBSCRIBED",)) or ("OLDNAME", (Mailbox(...),)). `command` may be LSUB."""
    values: list[Value] = [Atom(command), tuple(Atom(a) for a in attributes), delimiter, Mailbox(name)]
    if extended:
        ext: list[Value] = []
        for tag, val in extended:
            ext.append(tag.encode("ascii"))
            ext.append(val)
        values.append(tuple(ext))
    return Untagged(tuple(values))


def status_response(mailbox: str, items: Sequence[tuple[str, int]]) -> Untagged:
    """`* STATUS name (MESSAGES 3 UIDNEXT 4)` (RFC 9051 §7.2.4)."""
    flat: list[Value] = []
    for key, val in items:
        flat.extend((Atom(key), val))
    return Untagged((Atom("STATUS"), Mailbox(mailbox), tuple(flat)))


def search_response(numbers: Iterable[int], modseq: int | None = None) -> Untagged:
    """IMAP4rev1 `* SEARCH 2 3 6` with the RFC 7162 §3.1.5 `(MODSEQ n)` when given."""
    values: list[Value] = [Atom("SEARCH"), *numbers]
    if modseq is not None:
        values.append((Atom("MODSEQ"), modseq))
    return Untagged(tuple(values))


def esearch_response(
    tag: str | None, uid: bool, results: Sequence[tuple[str, Value]]
) -> Untagged:
    """`* ESEARCH (TAG "a1") UID MIN 2 COUNT 3` (RFC 4731 §3.1, RFC 9051 §7.3.4). Results are
    (name, value) pairs such as ("MIN", 2), ("ALL", SequenceSet), ("MODSEQ", 917)."""
    values: list[Value] = [Atom("ESEARCH")]
    if tag is not None:
        values.append((Atom("TAG"), tag.encode("ascii")))
    if uid:
        values.append(Atom("UID"))
    for name, val in results:
        values.extend((Atom(name), val))
    return Untagged(tuple(values))


def id_response(params: Sequence[tuple[str, str | None]] | None) -> Untagged:
    """RFC 2971 §3.2: `* ID ("name" "eventmail")` or `* ID NIL`."""
    if params is None:
        return Untagged((Atom("ID"), None))
    flat: list[Value] = []
    for key, val in params:
        flat.extend((key.encode("utf-8"), None if val is None else val.encode("utf-8")))
    return Untagged((Atom("ID"), tuple(flat)))


def namespace_response(
    personal: Sequence[tuple[str, str | None]] | None,
    other: Sequence[tuple[str, str | None]] | None = None,
    shared: Sequence[tuple[str, str | None]] | None = None,
) -> Untagged:
    """RFC 9051 §7.3.5: `* NAMESPACE (("" "/")) NIL NIL`; each namespace is (prefix, delimiter)."""

    def one(ns: Sequence[tuple[str, str | None]] | None) -> Value:
        if ns is None:
            return None
        return tuple((Mailbox(prefix), delim) for prefix, delim in ns)

    return Untagged((Atom("NAMESPACE"), one(personal), one(other), one(shared)))


__all__ = [
    "NIL",
    "Atom",
    "ContinuationRequest",
    "EncodeError",
    "FetchResponse",
    "Literal",
    "Mailbox",
    "Raw",
    "Response",
    "ResponseCode",
    "Status",
    "StatusResponse",
    "Untagged",
    "Value",
    "bad",
    "bye",
    "capability",
    "capability_code",
    "enabled",
    "encode_astring",
    "encode_response",
    "encode_string",
    "encode_value",
    "error_response",
    "esearch_response",
    "exists",
    "expunge",
    "flags",
    "format_datetime",
    "id_response",
    "list_response",
    "namespace_response",
    "no",
    "ok",
    "search_response",
    "status_response",
    "vanished",
]
