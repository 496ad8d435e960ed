"""Header text as text: RFC 2047 encoded words and the charsets of MIME parts decoded."""

from __future__ import annotations

import base64
import binascii
import codecs
import re

# RFC 2047 §2 encoded-word; whitespace between two adjacent encoded words is dropped (§6.2).
_ENCODED_WORD_RE = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS_RE = re.compile(rb"(\?=)[ \t\r\n]+(=\?)")
_QP_HEX_RE = re.compile(rb"=([0-9A-Fa-f]{2})")


def charset_decode(data: bytes, charset: str) -> str:
    """`data` as text in `charset` (RFC 2231 language suffix dropped; unknown names and
    8-bit under a 7-bit label read as UTF-8, then Latin-1)."""
    name = charset.split("*", 1)[0].strip().lower() or "us-ascii"  # RFC 2231 §5 language suffix
    try:
        codecs.lookup(name)
    except LookupError:
        name = "utf-8"
    if name in ("us-ascii", "ascii"):
        name = "utf-8"  # 8-bit bytes under a 7-bit label are usually UTF-8 in practice
    try:
        return data.decode(name)
    except UnicodeDecodeError:
        if name == "utf-8":
            return data.decode("latin-1")
        try:
            return data.decode(name, errors="replace")
        except (UnicodeError, LookupError):
            return charset_decode(data, "utf-8")
    except (UnicodeError, LookupError):
        # A codec that is not a text encoding (base64, rot13, zlib: LookupError) or that refuses
        # bytes outright (idna): a sender's label must not make a reader raise.
        return charset_decode(data, "utf-8")


def decode_words(value: bytes) -> str:
    """A header value as text: RFC 2047 encoded words decoded, 8-bit bytes read as UTF-8."""
    if b"=?" not in value:  # no encoded word (most values): every replay threads each subject
        try:
            return value.decode()  # charset_decode(value, "utf-8") without its codec lookup
        except UnicodeDecodeError:
            return value.decode("latin-1")
    value = _BETWEEN_WORDS_RE.sub(rb"\1\2", value)
    out: list[str] = []
    pos = 0
    for m in _ENCODED_WORD_RE.finditer(value):
        out.append(charset_decode(value[pos : m.start()], "utf-8"))
        charset, enc, text = m.group(1).decode("ascii", "replace"), m.group(2).upper(), m.group(3)
        try:
            if enc == b"B":
                raw = base64.b64decode(text + b"=" * (-len(text) % 4))
            else:
                raw = _QP_HEX_RE.sub(lambda h: bytes([int(h.group(1), 16)]), text.replace(b"_", b" "))
        except (binascii.Error, ValueError):
            raw = m.group(0)
        out.append(charset_decode(raw, charset))
        pos = m.end()
    out.append(charset_decode(value[pos:], "utf-8"))
    return "".join(out)


__all__ = ["charset_decode", "decode_words"]
