"""A message parsed once at ingress: its MIME structure and author, handed to every copy that is stored."""

from __future__ import annotations

from dataclasses import dataclass

from eventmail.proto import events_pb2

from .addresses import Author, read_author
from .structure import DEFAULT_LIMITS, MimeLimits, parse_incoming


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """The bytes of a message and what one parse of them found.

    Made once, off the event loop (see `parse_message`); each recipient's copy gets its structure
    through `prefixed`, without parsing the bytes again.
    """

    raw: bytes
    structure: events_pb2.MessageStructure
    author: Author

    def structure_with_prefix(self, prefix_len: int) -> events_pb2.MessageStructure:
        """The structure of `prefix + raw`, where `prefix` is `prefix_len` bytes of whole header fields
        (trace fields, Authentication-Results, a DKIM-Signature), each ending in CRLF.

        Prepending whole fields moves every offset by the prefix's length, except the start of the
        top-level header (still 0: the prefix is part of it), and changes nothing else: the header
        still ends at the same blank line (a message without one is all header, with or without
        the prefix), and the prepended fields are none of those the structure reads (MIME and
        envelope fields).
        """
        if prefix_len == 0:
            return self.structure
        st = events_pb2.MessageStructure()
        st.CopyFrom(self.structure)
        stack = [st.body]
        while stack:
            part = stack.pop()
            part.header_start += prefix_len
            part.body_start += prefix_len
            part.end += prefix_len
            stack.extend(part.parts)
            if part.HasField("message"):
                stack.append(part.message)
        st.body.header_start = 0
        return st


def parse_message(raw: bytes, limits: MimeLimits = DEFAULT_LIMITS) -> ParsedMessage:
    """Parse `raw` once: its MIME structure and, from the same header window, its author.

    CPU-bound and up to linear in the size of the message (tens of MB): call it through
    `asyncio.to_thread`, never on the event loop. Raises MimeTooDeep past limits.max_depth: mail
    being accepted is refused rather than stored with a truncated tree.
    """
    st = parse_incoming(raw, limits)
    top = st.body
    author = read_author(raw, top.header_start, top.body_start, limits.max_header_bytes)
    return ParsedMessage(raw, st, author)
