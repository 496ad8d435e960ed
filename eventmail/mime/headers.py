"""The server's one header reader over raw bytes: field scanning, unfolding, MIME values with parameters, RFC 2231.

Every part of the server that reads a header field (MIME structure and ENVELOPE, SEARCH, FETCH
HEADER.FIELDS, the submission From check, DMARC, DKIM's signed-field list, the junk features,
trace-field stripping) reads it through `FIELD_RE` and `read_fields` here, so that no two parts can
disagree on which fields a message has. The author (From) is read by `addresses.read_author`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import NamedTuple

# RFC 5322 §2.2: a field is a name, a colon, and a value that continues on lines starting with WSP.
# RFC 5322 §3.6.8 forbids white space in a name and before the colon, but the obsolete syntax
# allows WSP before the colon (§4.5, obs-optional = field-name *WSP ":" unstructured CRLF), and a
# reader must accept obs- syntax (§4). So "From :" IS a From field, everywhere in this server.
# Lenient: any run of non-space, non-colon bytes is a name. Lines that are not fields (no colon,
# a name containing white space, a stray continuation) are skipped by every reader alike.
FIELD_RE = re.compile(rb"^([^\s:]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.M)

# Header bytes of one entity that are searched for fields (Exim's header_maxsize default is
# 1 MiB). Equal to MimeLimits.max_header_bytes, the window of the stored structure and ENVELOPE.
MAX_HEADER_BYTES = 1 << 20

# End of a header: the blank line (RFC 5322 §2.1); lines may end in CRLF or, leniently, LF.
_BLANK_RE = re.compile(rb"\n\r?\n")

_WSP = b" \t\r\n"


def unfold(value: bytes) -> bytes:
    """RFC 5322 §2.2.3: unfolding removes the CRLF before WSP; the result is also stripped of WSP."""
    if b"\n" in value:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    return value.strip(_WSP)


class Field(NamedTuple):
    """One header field as the server reads it."""

    name: bytes  # lower-cased
    value: bytes  # raw: folded, not stripped
    start: int  # offset of the name
    end: int  # past the line break of its last line
    space_before_colon: bool  # RFC 5322 §4.5 obs-optional: "From :", legal to read, forbidden to write


def read_fields(raw: bytes, start: int, end: int) -> list[Field]:
    """Every field in raw[start:end]; `start` must be at a line start."""
    return [_field(m, raw, end, m.group(1).lower()) for m in FIELD_RE.finditer(raw, start, end)]


def _field(m: re.Match[bytes], raw: bytes, end: int, name: bytes) -> Field:
    """The Field of a FIELD_RE match, through the field's own line break."""
    stop = m.end()
    if stop < end and raw[stop] == 0x0A:
        stop += 1
    return Field(name, m.group(2), m.start(), stop, m.start(2) - 1 > m.end(1))


@functools.lru_cache(maxsize=64)
def _named(name: bytes) -> re.Pattern[bytes]:
    """Where a field `name` starts, as FIELD_RE reads one: at a line start, the name in any case
    (ASCII, as bytes.lower()), optional WSP, a colon. Names are the callers' constants."""
    return re.compile(rb"^" + re.escape(name) + rb"[ \t]*:", re.M | re.I)


def named_fields(raw: bytes, start: int, end: int, name: bytes) -> list[Field]:
    """The fields `name` (lower-case) in raw[start:end], exactly as `read_fields` gives them, found
    by a search in C for the name at a line start instead of reading every field in Python. The
    same fields: a field starts at a line start that is no continuation (a continuation line
    starts with WSP, a name cannot), and FIELD_RE reads it from there whatever came before."""
    out: list[Field] = []
    for found in _named(name).finditer(raw, start, end):
        m = FIELD_RE.match(raw, found.start(), end)
        assert m is not None  # the name, WSP and colon FIELD_RE wants are there
        out.append(_field(m, raw, end, name))
    return out


def header_fields(raw: bytes, start: int, end: int) -> list[tuple[bytes, bytes, int, int]]:
    """Every field in raw[start:end] as (lower-cased name, raw value, field start, field end)."""
    return [(f.name, f.value, f.start, f.end) for f in read_fields(raw, start, end)]


def header_end(raw: bytes) -> int:
    """Where the body of a top-level message starts: past the blank line that ends its header.

    The same rule as the MIME structure's top level: a message that starts with a blank line has
    no header fields; one without a blank line is all header.
    """
    if raw[:1] == b"\n":
        return 1
    if raw[:2] == b"\r\n":
        return 2
    m = _BLANK_RE.search(raw)
    return m.end() if m is not None else len(raw)


def top_fields(raw: bytes, limit: int = MAX_HEADER_BYTES) -> list[Field]:
    """The fields of a top-level message's header, within the window the stored structure reads."""
    return read_fields(raw, 0, min(header_end(raw), limit))


def first_value(raw: bytes, name: bytes) -> bytes | None:
    """The unfolded value of the first top-level field `name` (lower-case), or None."""
    end = min(header_end(raw), MAX_HEADER_BYTES)
    found = _named(name).search(raw, 0, end)
    if found is None:
        return None
    m = FIELD_RE.match(raw, found.start(), end)
    assert m is not None
    return unfold(m.group(2))


# RFC 5322 §3.6.4 msg-id, leniently: whatever is between angle brackets, without white space.
_MSGID_RE = re.compile(rb"<([^<>\s]+)>")


def message_ids(value: bytes) -> list[bytes]:
    """The msg-ids of a Message-ID, In-Reply-To or References value, without their brackets."""
    return _MSGID_RE.findall(unfold(value))


def references(raw: bytes, header_start: int, body_start: int) -> list[bytes]:
    """The messages a message answers, oldest first: its References, or when it has none the
    first msg-id of In-Reply-To (RFC 5256 §3 step 1A; RFC 5322 §3.6.4)."""
    end = min(body_start, header_start + MAX_HEADER_BYTES)
    refs: list[bytes] = []
    reply_to: list[bytes] = []
    for name, value, _s, _e in header_fields(raw, header_start, end):
        lname = name.lower()
        if lname == b"references" and not refs:
            refs = message_ids(value)
        elif lname == b"in-reply-to" and not reply_to:
            reply_to = message_ids(value)[:1]
    return refs or reply_to


def without_fields(raw: bytes, drop: Callable[[Field], bool], names: tuple[bytes, ...] | None = None) -> bytes:
    """The message without the top-level fields for which `drop` is true (each with its folded
    lines). `names`: `drop` is false for every other name, so only fields of these are read."""
    if names is None:
        cut = [f for f in top_fields(raw) if drop(f)]
    else:
        end = min(header_end(raw), MAX_HEADER_BYTES)
        cut = sorted((f for n in names for f in named_fields(raw, 0, end, n) if drop(f)), key=lambda f: f.start)
    return _without(raw, cut)


def _without(raw: bytes, cut: list[Field]) -> bytes:
    """`raw` without the fields `cut` (in order of their start)."""
    if not cut:
        return raw
    out: list[bytes] = []
    pos = 0
    for f in cut:
        out.append(raw[pos : f.start])
        pos = f.end
    out.append(raw[pos:])
    return b"".join(out)


# ---------------------------------------------------------------- MIME values: type/subtype; params


def _skip_quoted(v: bytes, i: int) -> int:
    """Index just past the quoted-string that starts at v[i] == '"' (or len(v) if it never closes)."""
    n = len(v)
    i += 1
    while i < n:
        c = v[i]
        if c == 0x5C:  # backslash: quoted-pair, RFC 5322 §3.2.1
            i += 2
            continue
        if c == 0x22:
            return i + 1
        i += 1
    return n


def comment_end(v: bytes, i: int) -> int:
    """Index just past the (possibly nested) comment starting at v[i] == '(' (RFC 5322 §3.2.2)."""
    n = len(v)
    depth = 0
    while i < n:
        c = v[i]
        if c == 0x5C:
            i += 2
            continue
        if c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


_SEP_RE = re.compile(rb'[;"(]')


def _split_semicolons(v: bytes) -> list[bytes]:
    """Split a MIME header value at ';' that are outside quoted strings and comments."""
    if b'"' not in v and b"(" not in v:
        return v.split(b";")
    out: list[bytes] = []
    seg = 0
    i = 0
    while True:
        m = _SEP_RE.search(v, i)
        if m is None:
            break
        j = m.start()
        c = v[j]
        if c == 0x3B:
            out.append(v[seg:j])
            seg = i = j + 1
        elif c == 0x22:
            i = _skip_quoted(v, j)
        else:
            i = comment_end(v, j)
    out.append(v[seg:])
    return out


def strip_comments(v: bytes) -> bytes:
    """Remove RFC 5322 comments outside quoted strings, then surrounding WSP."""
    if b"(" not in v:
        return v.strip(_WSP)
    parts: list[bytes] = []
    i = 0
    n = len(v)
    seg = 0
    while i < n:
        c = v[i]
        if c == 0x22:
            i = _skip_quoted(v, i)
        elif c == 0x28:
            parts.append(v[seg:i])
            i = seg = comment_end(v, i)
            parts.append(b" ")
        elif c == 0x5C:
            i += 2
        else:
            i += 1
    parts.append(v[seg:])
    return b"".join(parts).strip(_WSP)


_QPAIR_RE = re.compile(rb"\\(.)", re.S)


def unquote(v: bytes) -> bytes:
    """The content of a quoted-string without its quoted-pairs (RFC 5322 §3.2.4)."""
    if b"\\" in v:
        return _QPAIR_RE.sub(rb"\1", v)
    return v


def _param_value(v: bytes) -> bytes:
    v = v.strip(_WSP)
    if v[:1] == b'"':
        stop = _skip_quoted(v, 0)
        inner = v[1 : stop - 1] if stop <= len(v) and v[stop - 1 : stop] == b'"' and stop > 1 else v[1:]
        return unquote(inner)
    # RFC 2045 §5.1 allows comments here ("charset=us-ascii (Plain text)").
    return strip_comments(v)


def parse_mime_value(value: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A Content-Type/Content-Disposition value: (main value without comments/WSP, params as sent).

    RFC 2045 §5.1 syntax, read leniently: a parameter value that should have been quoted (a
    boundary with '=', a filename with spaces) runs to the next ';'. Parameters without '=' are
    dropped. RFC 2231 continuations are merged by `merge_rfc2231`.
    """
    segs = _split_semicolons(value)
    main = strip_comments(segs[0])
    if b" " in main or b"\t" in main:
        main = main.replace(b" ", b"").replace(b"\t", b"")
    params: list[tuple[bytes, bytes]] = []
    for seg in segs[1:]:
        eq = seg.find(b"=")
        if eq < 0:
            continue
        name = strip_comments(seg[:eq])
        if not name:
            continue
        params.append((name, _param_value(seg[eq + 1 :])))
    return main, params


_ATTR_CHARS = frozenset(b"!#$&+-.0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~")


def _pct(v: bytes) -> bytes:
    """RFC 2231 §7 extended-other-values: %-encode everything that is not an attribute-char."""
    return b"".join(bytes((c,)) if c in _ATTR_CHARS else b"%%%02X" % c for c in v)


_SECTION_RE = re.compile(rb"^(.*?)\*([0-9]{1,9})(\*?)$", re.S)


def merge_rfc2231(params: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Join RFC 2231 §3 continuations (name*0, name*1*, ...) into one parameter.

    Values are not charset-decoded: a merged extended value keeps the §4 form
    `charset'language'%XX...` under the name `name*`, which IMAP clients decode (this is also
    what Dovecot sends). Plain sections joined with extended ones are %-encoded (§4.1). The
    merged parameter takes the place of its first section.
    """
    if not any(b"*" in name for name, _ in params):
        return params
    out: list[tuple[bytes, bytes]] = []
    slots: dict[bytes, tuple[int, bytes, list[tuple[int, bool, bytes]]]] = {}
    for name, value in params:
        m = _SECTION_RE.match(name)
        if m is None:
            out.append((name, value))
            continue
        key = m.group(1).lower()
        entry = slots.get(key)
        if entry is None:
            entry = slots[key] = (len(out), m.group(1), [])
            out.append((b"", b""))
        entry[2].append((int(m.group(2)), m.group(3) == b"*", value))
    for slot, base, sections in slots.values():
        seen: set[int] = set()
        ordered: list[tuple[bool, bytes]] = []
        for index, ext, val in sorted(sections, key=lambda s: s[0]):
            if index not in seen:  # a repeated section number: the first one wins
                seen.add(index)
                ordered.append((ext, val))
        if any(ext for ext, _ in ordered):
            pieces = [
                val if ext else (b"''" if i == 0 else b"") + _pct(val) for i, (ext, val) in enumerate(ordered)
            ]
            out[slot] = (base + b"*", b"".join(pieces))
        else:
            out[slot] = (base, b"".join(val for _, val in ordered))
    return out
