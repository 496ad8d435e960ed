"""IMAP forms of a parsed message: ENVELOPE, BODY/BODYSTRUCTURE, BODY[section] bytes and BINARY decoding."""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Sequence

from eventmail.proto import events_pb2

from .headers import header_fields
from .structure import MAX_MIME_DEPTH

_NIL = b"NIL"
# RFC 9051 §4.3: a quoted string holds 7-bit text without CR, LF, NUL; '"' and '\' would need
# escaping. We quote only printable ASCII without '"' and '\' and send anything else as a literal,
# which every client parses (Dovecot does the same, so clients are used to it).
_QUOTABLE_RE = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_REPLACEMENT = "\ufffd".encode()  # a literal may not hold NUL (RFC 9051 §4.3 CHAR8)


def imap_string(value: bytes) -> bytes:
    """`value` as an IMAP string: quoted when it can be, a literal otherwise."""
    if _QUOTABLE_RE.fullmatch(value) is not None:
        return b'"' + value + b'"'
    if b"\x00" in value:
        value = value.replace(b"\x00", _REPLACEMENT)
    return b"{%d}\r\n" % len(value) + value


def imap_nstring(value: bytes, present: bool) -> bytes:
    """An nstring: NIL when the header or field is absent, else `value` (possibly "")."""
    return imap_string(value) if present else _NIL


def _opt(value: bytes) -> bytes:
    """An nstring for a proto field where empty means absent (the parts of an address)."""
    return imap_string(value) if value else _NIL


# ---------------------------------------------------------------- ENVELOPE


def _addresses(out: list[bytes], addrs: Sequence[events_pb2.Address]) -> None:
    if not addrs:
        out.append(_NIL)
        return
    out.append(b"(")
    for a in addrs:
        if a.group_end:
            out.append(b"(NIL NIL NIL NIL)")  # RFC 3501 §7.4.2: end of group
            continue
        out.append(b"(%s %s %s %s)" % (_opt(a.name), _opt(a.adl), _opt(a.mailbox), _opt(a.host)))
    out.append(b")")


def _envelope(out: list[bytes], env: events_pb2.Envelope) -> None:
    from_: Sequence[events_pb2.Address] = getattr(env, "from")  # "from" is a Python keyword
    out.append(b"(")
    out.append(imap_nstring(env.date, env.has_date))
    out.append(b" ")
    out.append(imap_nstring(env.subject, env.has_subject))
    out.append(b" ")
    _addresses(out, from_)
    out.append(b" ")
    # RFC 3501 §7.4.2 / RFC 9051 §7.5.2: an absent or empty Sender or Reply-To is sent as From.
    _addresses(out, env.sender or from_)
    out.append(b" ")
    _addresses(out, env.reply_to or from_)
    for addrs in (env.to, env.cc, env.bcc):
        out.append(b" ")
        _addresses(out, addrs)
    out.append(b" ")
    out.append(imap_nstring(env.in_reply_to, env.has_in_reply_to))
    out.append(b" ")
    out.append(imap_nstring(env.message_id, env.has_message_id))
    out.append(b")")


def render_envelope(env: events_pb2.Envelope) -> bytes:
    """The ENVELOPE of RFC 3501 §7.4.2 / RFC 9051 §7.5.2."""
    out: list[bytes] = []
    _envelope(out, env)
    return b"".join(out)


# ---------------------------------------------------------------- BODY / BODYSTRUCTURE

# A multipart with no parts (no boundary, or none found) still needs one part in the grammar
# (RFC 3501 §9 body-type-mpart = 1*body ...): an empty text/plain, as Dovecot sends.
_EMPTY_BODY = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
_EMPTY_BODYSTRUCTURE = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'


def _params(params: Sequence[events_pb2.Param]) -> bytes:
    if not params:
        return _NIL
    return b"(" + b" ".join(imap_string(p.name) + b" " + imap_string(p.value) for p in params) + b")"


def _extension(out: list[bytes], part: events_pb2.MimePart) -> None:
    """body-fld-dsp SP body-fld-lang SP body-fld-loc (RFC 3501 §9, the common tail)."""
    out.append(b" ")
    if part.has_disposition:
        out.append(b"(" + imap_string(part.disposition) + b" " + _params(part.disposition_params) + b")")
    else:
        out.append(_NIL)
    out.append(b" ")
    langs = part.language
    if not part.has_language or not langs:
        out.append(_NIL)
    elif len(langs) == 1:
        out.append(imap_string(langs[0]))
    else:
        out.append(b"(" + b" ".join(imap_string(t) for t in langs) + b")")
    out.append(b" ")
    out.append(imap_nstring(part.location, part.has_location))


def _body(out: list[bytes], part: events_pb2.MimePart, ext: bool, rev2: bool, depth: int = 0) -> None:
    # Past MAX_MIME_DEPTH a container is shown as the opaque leaf the parser makes of one, so a
    # structure from anywhere (a replica, an older store) cannot make this recurse without bound.
    if depth >= MAX_MIME_DEPTH and (part.type == b"multipart" or part.HasField("message")):
        leaf = events_pb2.MimePart()
        leaf.CopyFrom(part)
        leaf.ClearField("parts")
        leaf.ClearField("message")
        leaf.type, leaf.subtype = b"application", b"octet-stream"
        part = leaf
    if part.type == b"multipart":
        out.append(b"(")
        if part.parts:
            for child in part.parts:
                _body(out, child, ext, rev2, depth + 1)
        else:
            out.append(_EMPTY_BODYSTRUCTURE if ext else _EMPTY_BODY)
        out.append(b" ")
        out.append(imap_string(part.subtype))
        if ext:  # body-ext-mpart
            out.append(b" ")
            out.append(_params(part.params))
            _extension(out, part)
        out.append(b")")
        return
    out.append(b"(")
    out.append(imap_string(part.type))
    out.append(b" ")
    out.append(imap_string(part.subtype))
    out.append(b" ")
    out.append(_params(part.params))
    out.append(b" ")
    out.append(imap_nstring(part.id, part.has_id))
    out.append(b" ")
    out.append(imap_nstring(part.description, part.has_description))
    out.append(b" ")
    out.append(imap_string(part.encoding or b"7bit"))
    out.append(b" %d" % max(0, part.end - part.body_start))
    if part.type == b"message" and (part.subtype == b"rfc822" or (rev2 and part.subtype == b"global")):
        # body-type-msg: envelope, body and lines of the encapsulated message. One we could not
        # read in place (say base64-encoded) gets an empty envelope and body, as in Dovecot.
        out.append(b" ")
        if part.HasField("message"):
            _envelope(out, part.envelope)
            out.append(b" ")
            _body(out, part.message, ext, rev2, depth + 1)
        else:
            _envelope(out, events_pb2.Envelope())
            out.append(b" ")
            out.append(_EMPTY_BODYSTRUCTURE if ext else _EMPTY_BODY)
        out.append(b" %d" % part.lines)
    elif part.type == b"text":
        out.append(b" %d" % part.lines)  # body-type-text
    if ext:  # body-ext-1part
        out.append(b" ")
        out.append(imap_nstring(part.md5, part.has_md5))
        _extension(out, part)
    out.append(b")")


def render_bodystructure(part: events_pb2.MimePart, extensible: bool, *, imap4rev2: bool = False) -> bytes:
    """BODYSTRUCTURE (extensible=True) or BODY (False) of RFC 3501 §7.4.2 / RFC 9051 §7.5.2.

    With imap4rev2, message/global parts are shown like message/rfc822 (RFC 9051 §7.5.2
    media-message); IMAP4rev1 clients expect them as basic parts (RFC 9755 §6).
    """
    out: list[bytes] = []
    _body(out, part, extensible, imap4rev2)
    return b"".join(out)


# ---------------------------------------------------------------- BODY[section]

# section-part *("." section-msgtext ...) of RFC 9051 §9, leniently spaced; part numbers are
# capped at 9 digits so that a hostile section cannot make int() raise.
_SECTION_RE = re.compile(r"\s*((?:[0-9]{1,9}\.)*[0-9]{1,9})?\.?([A-Za-z.]*)\s*(?:\((.*)\))?\s*", re.S)
_FIELD_NAME_RE = re.compile(r'"((?:[^"\\]|\\.)*)"|([^\s()"]+)', re.S)
_QPAIR_RE = re.compile(r"\\(.)", re.S)
_TEXT_SPECS = frozenset(("", "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"))


def _is_message(part: events_pb2.MimePart) -> bool:
    # RFC 9051 §6.4.5: HEADER, TEXT and deeper numbers apply to MESSAGE/RFC822 and MESSAGE/GLOBAL.
    return part.type == b"message" and part.subtype in (b"rfc822", b"global") and part.HasField("message")


class _Placeholder:
    """The empty text/plain part 1 of a multipart without parts (see _EMPTY_BODY)."""


def _resolve(
    structure: events_pb2.MessageStructure, nums: list[int]
) -> events_pb2.MimePart | _Placeholder | None:
    """The part named by a numeric section path (RFC 9051 §6.4.5), or None if there is none."""
    node: events_pb2.MimePart | None = None
    last = len(nums) - 1
    for i, n in enumerate(nums):
        if node is None:
            container = structure.body
        elif _is_message(node):
            container = node.message
        elif node.type == b"multipart":
            container = node
        else:
            # A leaf has no sub-parts. (Dovecot answers "1.1" of a leaf inside a multipart with
            # the leaf itself, but "1.1" of a single-part message with nothing.)
            return None
        if container.type == b"multipart":
            if 1 <= n <= len(container.parts):
                node = container.parts[n - 1]
            elif n == 1 and not container.parts and i == last:
                return _Placeholder()
            else:
                return None
        elif n == 1:
            # RFC 9051 §6.4.5: a non-multipart message has only part 1, its body.
            node = container
        else:
            return None
    return node


def _header_subset(raw: bytes, msg: events_pb2.MimePart, names: set[bytes], exclude: bool) -> bytes:
    hs, bs = msg.header_start, msg.body_start
    return header_subset(raw, hs, bs, [(f[0], f[2], f[3]) for f in header_fields(raw, hs, bs)], names, exclude)


def header_subset(raw: bytes, hs: int, bs: int, fields: Iterable[tuple[bytes, int, int]], names: set[bytes],
                  exclude: bool) -> bytes:
    """HEADER.FIELDS (`exclude`: .NOT) of the header raw[hs:bs] from its fields as `header_fields`
    read them, (lower-cased name, start, end) each: a caller that keeps them (FETCH's cache of
    header fields, imap/fetch.py) does not read the header again for each request."""
    out: list[bytes] = []
    for name, start, stop in fields:
        if (name in names) != exclude:
            field = raw[start:stop]
            out.append(field if field.endswith(b"\n") else field + b"\r\n")
    block = raw[hs:bs]
    # RFC 9051 §6.4.5: the blank line is included in all header fetches, except for a message
    # with no body and no blank line.
    if block in (b"\r\n", b"\n") or block.endswith((b"\n\r\n", b"\n\n")):
        out.append(b"\r\n")
    return b"".join(out)


def extract_section(raw: bytes, structure: events_pb2.MessageStructure, section: str) -> bytes | None:
    """The bytes of BODY[section] (RFC 9051 §6.4.5), without any <partial>; None if there is no such part.

    `section` is what is between the brackets: "", "HEADER", "TEXT", "1.2", "1.2.MIME", "2.HEADER",
    "2.TEXT", "HEADER.FIELDS (A B)", "3.HEADER.FIELDS.NOT (A B)" (case-insensitive).
    """
    m = _SECTION_RE.fullmatch(section)
    if m is None:
        return None
    path, text, names = m.group(1), m.group(2).upper(), m.group(3)
    if text not in _TEXT_SPECS or (names is not None) != text.startswith("HEADER.FIELDS"):
        return None
    nums = [int(x) for x in path.split(".")] if path else []
    if any(x == 0 for x in nums):
        return None
    if not nums:
        if text == "":
            return raw
        if text == "MIME":
            return None  # RFC 9051 §6.4.5: MIME needs a part number
        msg = structure.body
    else:
        node = _resolve(structure, nums)
        if node is None:
            return None
        if isinstance(node, _Placeholder):
            return b"" if text in ("", "MIME") else None
        if text == "":
            return raw[node.body_start : node.end]
        if text == "MIME":
            return raw[node.header_start : node.body_start]
        if not _is_message(node):
            return None
        msg = node.message
    if text == "HEADER":
        return raw[msg.header_start : msg.body_start]
    if text == "TEXT":
        return raw[msg.body_start : msg.end]
    wanted: set[bytes] = set()
    for quoted, atom in _FIELD_NAME_RE.findall(names or ""):
        name = _QPAIR_RE.sub(r"\1", quoted) if quoted else atom
        wanted.add(name.lower().encode("utf-8", "surrogatepass"))  # never raises; field names are ASCII
    return _header_subset(raw, msg, wanted, text.endswith(".NOT"))


# ---------------------------------------------------------------- BINARY (RFC 3516)

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_JUNK = bytes(c for c in range(256) if c not in _B64_ALPHABET)
_QP_TRAILING_WS_RE = re.compile(rb"[ \t]+(?=\r?\n|\Z)")


def _decode_base64(body: bytes) -> bytes:
    """RFC 2045 §6.8, leniently: characters outside the alphabet are ignored, data ends at "="."""
    pad = body.find(b"=")
    if pad >= 0:
        body = body[:pad]
    data = body.translate(None, _B64_JUNK)
    extra = len(data) % 4
    if extra == 1:
        data = data[:-1]  # a lone sextet carries no whole byte
    elif extra:
        data += b"=" * (4 - extra)
    return binascii.a2b_base64(data)


def _decode_qp(body: bytes) -> bytes:
    """RFC 2045 §6.7: trailing white space on a line is dropped (rule 3), "=" CRLF is a soft break."""
    return binascii.a2b_qp(_QP_TRAILING_WS_RE.sub(b"", body))


def decode_part(raw: bytes, part: events_pb2.MimePart) -> bytes | None:
    """The decoded body of `part` for BINARY[...] (RFC 3516 §4.2); None for an unknown encoding."""
    body = raw[part.body_start : part.end]
    encoding = part.encoding.strip().lower()
    if encoding in (b"", b"7bit", b"8bit", b"binary"):
        return body
    if encoding == b"base64":
        return _decode_base64(body)
    if encoding == b"quoted-printable":
        return _decode_qp(body)
    return None  # RFC 3516 §4.3: the server answers NO [UNKNOWN-CTE]
