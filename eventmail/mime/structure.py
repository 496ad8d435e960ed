"""MIME structure of a stored message: one forward pass over its raw bytes into events_pb2.MessageStructure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eventmail.proto import events_pb2

from .addresses import parse_address_list
from .headers import FIELD_RE, MAX_HEADER_BYTES, merge_rfc2231, parse_mime_value, strip_comments, unfold

# protobuf's decoder refuses messages nested 100 deep (its default recursion limit). Each MIME
# level costs one level of nesting (MimePart.parts or MimePart.message); MessageStructure, the
# top MimePart, and Envelope -> Address at the bottom add 4. 90 keeps a margin under 100.
MAX_DEPTH_CEILING = 90
# The one MIME nesting limit of the whole server: a part may sit inside at most this many
# multipart or message/rfc822 parts. Structure parsing stops there (deeper containers become
# opaque leaves), every walker of a structure or of raw MIME (IMAP BODYSTRUCTURE, SEARCH, the
# junk tokenizer) stops there too, so none can recurse without bound, and mail coming in over
# SMTP or APPEND that goes deeper is refused (parse_incoming). The 3,000 corpus messages go 3
# deep; Dovecot and Postfix allow 100 (MESSAGE_PARSER_DEFAULT_MAX_NESTED_MIME_PARTS,
# mime_nesting_limit), which protobuf's nesting limit rules out (MAX_DEPTH_CEILING); 30 is ten
# times what real mail uses and was the SMTP limit before it was the server's.
MAX_MIME_DEPTH = 30


@dataclass(frozen=True, slots=True)
class MimeLimits:
    """Bounds on the work one message can cause. Past a limit the rest is an opaque leaf."""

    # Nesting of multiparts and message/rfc822 parts (the top-level body is depth 0): a
    # container at this depth is an opaque leaf. See MAX_MIME_DEPTH.
    max_depth: int = MAX_MIME_DEPTH
    # Total MIME parts. Dovecot's default since CVE-2020-12100 (MESSAGE_PARSER_DEFAULT_MAX_TOTAL_MIME_PARTS).
    max_parts: int = 10_000
    # Header bytes of one part that are searched for fields. Exim's default header_maxsize is
    # 1 MiB; fields after that are ignored (the header's extent is still found exactly).
    max_header_bytes: int = MAX_HEADER_BYTES  # the window every header reader uses (mime.headers)

    def __post_init__(self) -> None:
        if not 0 <= self.max_depth <= MAX_DEPTH_CEILING:
            raise ValueError(f"max_depth must be within 0..{MAX_DEPTH_CEILING}")
        if self.max_parts < 1 or self.max_header_bytes < 0:
            raise ValueError("max_parts must be >= 1 and max_header_bytes >= 0")


DEFAULT_LIMITS = MimeLimits()

# The header fields the structure needs: MIME fields (RFC 2045 §3, RFC 2183, RFC 3282, RFC 2557)
# and the envelope fields (RFC 3501 §7.4.2).
_WANTED = frozenset(
    (
        b"content-type",
        b"content-transfer-encoding",
        b"content-id",
        b"content-description",
        b"content-md5",
        b"content-disposition",
        b"content-language",
        b"content-location",
        b"date",
        b"subject",
        b"from",
        b"sender",
        b"reply-to",
        b"to",
        b"cc",
        b"bcc",
        b"in-reply-to",
        b"message-id",
    )
)
_ADDRESS_FIELDS = ((b"from", "from"), (b"sender", "sender"), (b"reply-to", "reply_to"), (b"to", "to"),
                   (b"cc", "cc"), (b"bcc", "bcc"))  # fmt: skip

# RFC 2045 §5.1 token: CHAR except SPACE, CTLs and tspecials.
_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
# End of a header: the blank line (RFC 5322 §2.1); lines may end in CRLF or, leniently, LF.
_BLANK_RE = re.compile(rb"\n\r?\n")
# Inside a multipart a header also ends at a boundary line: a blank line or a line starting "--".
_HEADER_STOP_RE = re.compile(rb"\n(?:\r?\n|--)")
# RFC 2046 §5.2.1: an encapsulated message is only readable in place under an identity encoding.
_IDENTITY = frozenset((b"7bit", b"8bit", b"binary"))
_MESSAGE_SUBTYPES = frozenset((b"rfc822", b"global"))  # RFC 6532 §3.7: message/global is the same shape

# A boundary line found in the body: (end of the content before it, start of the next line,
# level of the multipart it belongs to, whether it is the close delimiter "--b--").
_Hit = tuple[int, int, int, bool]


class _Boundaries:
    """The boundaries of the open multiparts, one level each (0 = outermost).

    RFC 2046 §5.1.1 note: a boundary matches when it appears at the start of a line after "--";
    the whole line need not match. When several match, the innermost wins. Kept as one table per
    boundary length so that checking a candidate line costs one lookup per distinct length that
    fits on the line (bounded by the line's length, so the whole scan stays linear).
    """

    __slots__ = ("count", "tables")

    def __init__(self, count: int = 0, tables: tuple[tuple[int, dict[bytes, int]], ...] = ()) -> None:
        self.count = count
        self.tables = tables

    def push(self, boundary: bytes) -> _Boundaries:
        level = self.count
        size = len(boundary)
        tables: list[tuple[int, dict[bytes, int]]] = []
        placed = False
        for length, table in self.tables:
            if length == size:
                table = {**table, boundary: level}
                placed = True
            tables.append((length, table))
        if not placed:
            tables.append((size, {boundary: level}))
            tables.sort(key=lambda t: t[0])
        return _Boundaries(level + 1, tuple(tables))


_NO_BOUNDARIES = _Boundaries()


class _Parser:
    __slots__ = ("limits", "n", "parts", "raw", "too_deep")

    def __init__(self, raw: bytes, limits: MimeLimits) -> None:
        self.raw = raw
        self.n = len(raw)
        self.limits = limits
        self.parts = 0
        self.too_deep = False  # a container was made opaque for the depth limit

    # ------------------------------------------------------------ boundary scanning

    def _match(self, bnd: _Boundaries, dash: int) -> tuple[int, bool, int] | None:
        """Whether the line whose "--" starts at `dash` is a boundary line: (level, close, next line)."""
        raw = self.raw
        q = dash + 2
        eol = raw.find(b"\n", q)
        if eol < 0:
            eol = self.n
        avail = eol - q
        best = -1
        size = 0
        for length, table in bnd.tables:
            if length > avail:
                break
            level = table.get(raw[q : q + length])
            if level is not None and level > best:
                best, size = level, length
        if best < 0:
            return None
        # RFC 2046 §5.1.1: "--" right after the boundary makes it the close delimiter.
        close = raw.startswith(b"--", q + size, eol)
        return best, close, (eol + 1 if eol < self.n else self.n)

    def _next_hit(self, pos: int, bnd: _Boundaries) -> _Hit | None:
        """The first boundary line at or after the line start `pos`, or None (runs to the end)."""
        if not bnd.count:
            return None
        raw = self.raw
        if raw.startswith(b"--", pos):
            r = self._match(bnd, pos)
            if r is not None:
                return (pos, r[2], r[0], r[1])
        i = pos
        find = raw.find
        while True:
            j = find(b"\n--", i)
            if j < 0:
                return None
            r = self._match(bnd, j + 1)
            if r is not None:
                # RFC 2046 §5.1.1: the CRLF before "--boundary" belongs to the boundary.
                end = j - 1 if j > pos and raw[j - 1] == 0x0D else j
                return (end, r[2], r[0], r[1])
            i = j + 1

    def _header_end(self, start: int, bnd: _Boundaries) -> tuple[int, _Hit | None]:
        """Where the body starts; with the boundary line that cut the header short, if one did."""
        raw = self.raw
        n = self.n
        if start >= n:
            return n, None
        if bnd.count and raw.startswith(b"--", start):
            r = self._match(bnd, start)
            if r is not None:
                return start, (start, r[2], r[0], r[1])
        first = raw[start]
        if first == 0x0A:
            return start + 1, None  # no header fields at all: the body follows the blank line
        if first == 0x0D and raw.startswith(b"\n", start + 1):
            return start + 2, None
        if not bnd.count:
            m = _BLANK_RE.search(raw, start)
            return (m.end(), None) if m is not None else (n, None)
        i = start
        while True:
            m = _HEADER_STOP_RE.search(raw, i)
            if m is None:
                return n, None
            stop = m.end()
            if raw[stop - 1] == 0x0A:
                return stop, None
            j = m.start()
            r = self._match(bnd, j + 1)
            if r is not None:
                end = j - 1 if raw[j - 1] == 0x0D else j
                return end, (end, r[2], r[0], r[1])
            i = j + 1

    # ------------------------------------------------------------ entities

    def entity(
        self,
        part: events_pb2.MimePart,
        start: int,
        bnd: _Boundaries,
        depth: int,
        digest: bool,
        envelope: events_pb2.Envelope | None,
    ) -> _Hit | None:
        """Fill `part` with the entity (header and body) at `start`; return the boundary line that ended it."""
        self.parts += 1
        raw = self.raw
        body_start, hit = self._header_end(start, bnd)
        part.header_start = start
        part.body_start = body_start

        fields: dict[bytes, bytes] = {}
        stop = min(body_start, start + self.limits.max_header_bytes)
        for m in FIELD_RE.finditer(raw, start, stop):
            name = m.group(1).lower()
            if name in _WANTED and name not in fields:
                fields[name] = m.group(2)  # RFC 3501 §7.4.2 and MIME use the first occurrence

        boundary = _fill_mime_fields(part, fields, digest)
        if envelope is not None:
            _fill_envelope(envelope, fields)
        ctype, subtype = part.type, part.subtype

        if hit is not None:  # the header ran into a boundary line: no body
            part.end = body_start
            return hit
        room = depth < self.limits.max_depth and self.parts < self.limits.max_parts
        if ctype == b"multipart" and boundary:
            if room:
                hit = self._multipart(part, body_start, bnd, boundary, depth, subtype == b"digest")
                return hit
            self.too_deep |= depth >= self.limits.max_depth
            _make_opaque(part)
            ctype = part.type
        elif ctype == b"message" and subtype in _MESSAGE_SUBTYPES and part.encoding.lower() in _IDENTITY:
            if room:
                inner = part.message
                hit = self.entity(inner, body_start, bnd, depth + 1, False, part.envelope)
                part.end = inner.end
                part.lines = raw.count(b"\n", body_start, inner.end)
                return hit
            self.too_deep |= depth >= self.limits.max_depth
            _make_opaque(part)
            ctype = part.type
        # A leaf (or a multipart without a boundary, which RFC 2046 §5.1.1 does not allow: it has
        # no parts and is rendered with an empty text/plain part, as Dovecot does).
        hit = self._next_hit(body_start, bnd)
        end = hit[0] if hit is not None else self.n
        part.end = end
        if ctype == b"text" or ctype == b"message":
            # RFC 3501 §7.4.2: body-fld-lines, the size of the body in text lines.
            part.lines = raw.count(b"\n", body_start, end)
        return hit

    def _multipart(
        self,
        part: events_pb2.MimePart,
        body_start: int,
        bnd: _Boundaries,
        boundary: bytes,
        depth: int,
        digest: bool,
    ) -> _Hit | None:
        inner = bnd.push(boundary)
        level = bnd.count
        hit = self._next_hit(body_start, inner)  # what comes before is the preamble
        while hit is not None and hit[2] == level:
            if hit[3] or self.parts >= self.limits.max_parts:
                # RFC 2046 §5.1.1: after the close delimiter comes the epilogue, which runs to the
                # enclosing multipart's next boundary. Past the part limit, the rest is skipped alike.
                hit = self._next_hit(hit[1], bnd)
                break
            child = part.parts.add()
            hit = self.entity(child, hit[1], inner, depth + 1, digest, None)
        part.end = hit[0] if hit is not None else self.n
        return hit


def _make_opaque(part: events_pb2.MimePart) -> None:
    """A multipart or message past a limit: an application/octet-stream leaf over the same bytes."""
    part.type = b"application"
    part.subtype = b"octet-stream"


def _fill_mime_fields(part: events_pb2.MimePart, fields: dict[bytes, bytes], digest: bool) -> bytes:
    """Set type, params and the other MIME fields of `part`; return the multipart boundary (or b"")."""
    value = fields.get(b"content-type")
    params: list[tuple[bytes, bytes]] = []
    if value is None:
        if digest:
            ctype, subtype = b"message", b"rfc822"  # RFC 2046 §5.1.5: default inside multipart/digest
        else:
            ctype, subtype = b"text", b"plain"  # RFC 2045 §5.2
    else:
        main, params = parse_mime_value(unfold(value))
        params = merge_rfc2231(params)
        ctype, _, subtype = main.lower().partition(b"/")
        if _TOKEN_RE.fullmatch(ctype) is None or _TOKEN_RE.fullmatch(subtype) is None:
            # RFC 2045 §5.2: an invalid Content-Type means text/plain (its parameters are kept).
            ctype, subtype = b"text", b"plain"
    boundary = b""
    has_charset = False
    for name, pvalue in params:
        lname = name.lower()
        if lname == b"boundary":
            boundary = boundary or pvalue
        elif lname == b"charset" or lname == b"charset*":
            has_charset = True
    if ctype == b"text" and subtype == b"plain" and not has_charset:
        params.append((b"charset", b"us-ascii"))  # RFC 2046 §4.1.2: the default charset
    part.type = ctype
    part.subtype = subtype
    if params:
        part.params.extend(events_pb2.Param(name=n, value=v) for n, v in params)

    value = fields.get(b"content-transfer-encoding")
    encoding = strip_comments(unfold(value)) if value is not None else b""
    part.encoding = encoding or b"7bit"  # RFC 2045 §6.1: the default is 7bit
    value = fields.get(b"content-id")
    if value is not None:
        part.has_id = True
        part.id = unfold(value)
    value = fields.get(b"content-description")
    if value is not None:
        part.has_description = True
        part.description = unfold(value)
    value = fields.get(b"content-md5")  # RFC 1864
    if value is not None:
        part.has_md5 = True
        part.md5 = unfold(value)
    value = fields.get(b"content-disposition")  # RFC 2183
    if value is not None:
        main, dparams = parse_mime_value(unfold(value))
        if main:
            part.has_disposition = True
            part.disposition = main.lower()
            part.disposition_params.extend(
                events_pb2.Param(name=n, value=v) for n, v in merge_rfc2231(dparams)
            )
    value = fields.get(b"content-language")  # RFC 3282: a comma-separated list of language tags
    if value is not None:
        tags = [t.strip() for t in strip_comments(unfold(value)).split(b",")]
        tags = [t for t in tags if t]
        if tags:
            part.has_language = True
            part.language.extend(tags)
    value = fields.get(b"content-location")  # RFC 2557 §4.2
    if value is not None:
        part.has_location = True
        part.location = unfold(value)
    return boundary


def _fill_envelope(env: events_pb2.Envelope, fields: dict[bytes, bytes]) -> None:
    """RFC 3501 §7.4.2 / RFC 9051 §7.5.2 ENVELOPE: raw (unfolded) header values, addresses parsed."""
    value = fields.get(b"date")
    if value is not None:
        env.has_date = True
        env.date = unfold(value)
    value = fields.get(b"subject")
    if value is not None:
        env.has_subject = True
        env.subject = unfold(value)
    value = fields.get(b"in-reply-to")
    if value is not None:
        env.has_in_reply_to = True
        env.in_reply_to = unfold(value)
    value = fields.get(b"message-id")
    if value is not None:
        env.has_message_id = True
        env.message_id = unfold(value)
    for header, attr in _ADDRESS_FIELDS:
        value = fields.get(header)
        if value:
            target: Any = getattr(env, attr)  # "from" is a Python keyword
            target.extend(parse_address_list(unfold(value)))


def parse_structure(raw: bytes, limits: MimeLimits = DEFAULT_LIMITS) -> events_pb2.MessageStructure:
    """Parse a stored message (CRLF line endings; bare LF tolerated) into its envelope and MIME tree.

    Every offset is into `raw`: a part spans raw[header_start:end], its body raw[body_start:end].
    Never raises on any input; past a limit the rest is an opaque leaf.
    """
    st = events_pb2.MessageStructure()
    _Parser(raw, limits).entity(st.body, 0, _NO_BOUNDARIES, 0, False, st.envelope)
    return st


class MimeTooDeep(ValueError):
    """A message coming in nests MIME parts deeper than its limits allow (MAX_MIME_DEPTH)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"MIME parts nested deeper than {limit}")
        self.limit = limit


def parse_incoming(raw: bytes, limits: MimeLimits = DEFAULT_LIMITS) -> events_pb2.MessageStructure:
    """parse_structure for mail being accepted (SMTP, APPEND): raises MimeTooDeep when a part is
    nested deeper than limits.max_depth, which those refuse rather than store a truncated tree."""
    st = events_pb2.MessageStructure()
    parser = _Parser(raw, limits)
    parser.entity(st.body, 0, _NO_BOUNDARIES, 0, False, st.envelope)
    if parser.too_deep:
        raise MimeTooDeep(limits.max_depth)
    return st


def structure_depth(part: events_pb2.MimePart) -> int:
    """How deep the parts under `part` nest (a leaf is 0), without recursion."""
    deepest = 0
    stack = [(part, 0)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        stack.extend((p, d + 1) for p in node.parts)
        if node.HasField("message"):
            stack.append((node.message, d + 1))
    return deepest
