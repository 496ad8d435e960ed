"""The text of MIME parts for SEARCH and PREVIEW: transfer- and charset-decoded."""

from __future__ import annotations

import codecs

from eventmail.mime.imapform import decode_part
from eventmail.proto import events_pb2 as pb


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
        return data.decode("latin-1") if name == "utf-8" else data.decode(name, errors="replace")


def _param(part: pb.MimePart, name: bytes) -> str:
    for p in part.params:
        if p.name.lower() == name:
            return p.value.decode("ascii", "replace")
    return ""


def part_text(raw: bytes, part: pb.MimePart) -> str:
    """The text of one text part: transfer-decoded (as sent when the encoding is unknown), then
    charset-decoded (8-bit under a 7-bit label read as UTF-8)."""
    decoded = decode_part(raw, part)
    data = raw[part.body_start : part.end] if decoded is None else decoded
    return charset_decode(data, _param(part, b"charset"))


__all__ = ["charset_decode", "part_text"]
