"""The text of MIME parts for SEARCH and PREVIEW: transfer- and charset-decoded."""

from __future__ import annotations

from eventmail.mime.imapform import decode_part
from eventmail.mime.words import charset_decode
from eventmail.proto import events_pb2 as pb


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
