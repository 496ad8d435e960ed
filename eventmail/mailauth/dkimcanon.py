"""DKIM's canonicalisation and hash inputs (RFC 6376 §3.4, §3.5 b=/bh=, §3.7) over a message's header fields, as the server's one header reader finds them.

dkimpy split the whole message into lines and joined them again, and ran its canonicalisation
on every verification: about a fifth of the server's CPU per delivery went to DKIM (bench/smtp.py).
Here the header comes from `mime.headers.top_fields` (so "From :" is a From field here as
everywhere in the server), the body is the bytes after the blank line, untouched unless it has
bare LFs, and each canonicalisation step runs only when the body has something it would change
(a bytes `in` test, in C), so a 20 KB body costs a few substring scans and one SHA-256.

What is computed is what dkimpy 1.1.8 computes (tests/test_mailauth_dkimcanon.py checks both on
the same messages): relaxed header fields lower-case the name, unfold, compress WSP runs and
strip the value; the relaxed body compresses WSP runs and drops WSP before each line end;
both body forms drop empty lines at the end (an empty relaxed body hashes as nothing, RFC 6376
errata 3192); `l=` cuts the canonical body; the signature field is hashed with its b= value
emptied and no trailing CRLF; h= selects fields bottom-up, a name listed more often than it
occurs selecting nothing the extra times (§5.4.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..mime.headers import MAX_HEADER_BYTES, header_end, top_fields

CANONICALIZATIONS = frozenset({b"simple", b"relaxed"})

_LINE_END = re.compile(rb"\r?\n")
_WSP_RUN = re.compile(rb"[\t ]+")
_SPACE_RUN = re.compile(rb"  +")
# RFC 6376 §3.5: the b= tag's value, removed (with folding white space) before hashing the
# signature field. The same expression as dkimpy's RE_BTAG: a final line break goes with it.
_FWS = rb"(?:\r?\n\s+)?"
_B_TAG = re.compile(rb"([;\s]b" + _FWS + rb"=)(?:" + _FWS + rb"[a-zA-Z0-9+/=])*(?:\r?\n\Z)?")


class CanonicalizationError(ValueError):
    """A c= value that names no canonicalisation (RFC 6376 §3.5: a PERMFAIL)."""


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One top-level header field as a DKIM verifier hashes it."""

    key: bytes  # the lower-cased name, by which h= selects it
    name: bytes  # as written, with any WSP before the colon (RFC 5322 §4.5 obs-optional)
    value: bytes  # everything after the colon, folding and the final CRLF included


@dataclass(frozen=True, slots=True)
class SplitMessage:
    fields: tuple[HeaderField, ...]
    body: bytes  # after the blank line, lines ending in CRLF


def _crlf(data: bytes) -> bytes:
    """Line ends as CRLF (a bare LF counts as one, as dkimpy reads them)."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return _LINE_END.sub(b"\r\n", data)


def split_message(message: bytes) -> SplitMessage:
    """The top-level header fields and the body of `message`."""
    fields = []
    for f in top_fields(message, MAX_HEADER_BYTES):
        raw = _crlf(message[f.start:f.end])
        colon = raw.index(b":")
        value = raw[colon + 1:]
        if not value.endswith(b"\r\n"):
            value += b"\r\n"  # the last field of a message that is all header
        fields.append(HeaderField(f.name, raw[:colon], value))
    return SplitMessage(tuple(fields), _crlf(message[header_end(message):]))


def canonicalizations(c: bytes | None) -> tuple[bytes, bytes]:
    """(header, body) canonicalisation of a c= value; "simple" for what it leaves out (§3.5)."""
    parts = (c if c is not None else b"simple/simple").split(b"/")
    if len(parts) == 1:
        parts.append(b"simple")
    if len(parts) != 2 or parts[0] not in CANONICALIZATIONS or parts[1] not in CANONICALIZATIONS:
        raise CanonicalizationError(f"invalid c= value: {c!r}")
    return parts[0], parts[1]


def _strip_trailing_lines(body: bytes) -> bytes:
    """RFC 6376 §3.4.3/§3.4.4: empty lines at the end are ignored; a body that does not end in
    CRLF gets one."""
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    if end == len(body):
        return body + b"\r\n"
    return body[:end + 2]  # one line end kept


def canonical_body(body: bytes, method: bytes) -> bytes:
    """The body as the bh= hash covers it (before any l= cut)."""
    if method == b"relaxed":
        # §3.4.4 (a) WSP at line ends removed, (b) WSP runs made one space: done as (b) then (a),
        # with C-speed scans for two spaces rather than a regex that stops at every space
        # ([\t ]+): after (b) a line end has at most one space before it, and removing it makes
        # no new run.
        if b"\t" in body:
            body = body.replace(b"\t", b" ")
        if b"  " in body:
            body = _SPACE_RUN.sub(b" ", body)  # a literal prefix: the engine jumps from run to run
        if b" \r\n" in body:
            body = body.replace(b" \r\n", b"\r\n")
        body = _strip_trailing_lines(body)
        return b"" if body == b"\r\n" else body
    return _strip_trailing_lines(body)


def _canonical_field(name: bytes, value: bytes, method: bytes) -> tuple[bytes, bytes]:
    if method == b"relaxed":
        return name.lower().rstrip(), _WSP_RUN.sub(b" ", _LINE_END.sub(b"", value)).strip() + b"\r\n"
    return name, value


def select_fields(fields: tuple[HeaderField, ...], names: list[bytes]) -> list[HeaderField]:
    """RFC 6376 §5.4.2: for each h= name the last field of that name not selected yet."""
    out: list[HeaderField] = []
    last: dict[bytes, int] = {}
    for name in names:
        i = last.get(name, len(fields))
        while i > 0:
            i -= 1
            if fields[i].key == name:
                out.append(fields[i])
                break
        last[name] = i
    return out


def header_hash_input(msg: SplitMessage, names: list[bytes], signature: HeaderField, method: bytes) -> bytes:
    """What the signature's b= signs (RFC 6376 §3.7): the h= fields, canonicalised, then the
    signature field itself with b= empty and without its final CRLF."""
    parts: list[bytes] = []
    for f in select_fields(msg.fields, names):
        n, v = _canonical_field(f.name, f.value, method)
        parts += (n, b":", v)
    n, v = _canonical_field(signature.name, _B_TAG.sub(rb"\1", signature.value), method)
    parts += (n, b":", v.rstrip())
    return b"".join(parts)
