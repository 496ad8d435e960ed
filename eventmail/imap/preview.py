"""PREVIEW (RFC 8970): a short plain-text preview of a message, from its first text part."""

from __future__ import annotations

from eventmail.imap.text import part_text
from eventmail.junk.tokenize import html_to_text
from eventmail.mime.structure import MAX_MIME_DEPTH
from eventmail.proto import events_pb2 as pb

# RFC 8970 §3.1: at most 256 characters.
MAX_PREVIEW_CHARS = 256
# Characters of a part's text looked at: enough for 256 once white space is collapsed, and a
# bound on the work for a part of megabytes.
_WINDOW = 64 * 1024


def _text_parts(part: pb.MimePart, depth: int = 0) -> tuple[pb.MimePart | None, pb.MimePart | None]:
    """The first text/plain and the first text/html part that are not attachments, walking
    multiparts in order (not into attached messages: their text is not this message's)."""
    if part.type == b"multipart":
        plain = html = None
        if depth < MAX_MIME_DEPTH:
            for child in part.parts:
                p, h = _text_parts(child, depth + 1)
                plain, html = plain or p, html or h
                if plain is not None:
                    break
        return plain, html
    if part.disposition == b"attachment":
        return None, None
    if part.type in (b"text", b"") and part.subtype in (b"plain", b""):
        return part, None
    if part.type == b"text" and part.subtype == b"html":
        return None, part
    return None, None


def preview(raw: bytes, structure: pb.MessageStructure) -> str:
    """RFC 8970 §3.1: the start of the message's text, markup removed and white space collapsed,
    at most MAX_PREVIEW_CHARS characters; empty when the message has no text."""
    plain, html = _text_parts(structure.body)
    if plain is not None:
        text = part_text(raw, plain)
    elif html is not None:
        text = html_to_text(part_text(raw, html))
    else:
        return ""
    return " ".join(text[:_WINDOW].split())[:MAX_PREVIEW_CHARS]


__all__ = ["MAX_PREVIEW_CHARS", "preview"]
