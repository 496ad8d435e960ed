"""The bytes a junk content row keeps for a message's words (`content_row`), and reading them back: pure, without the store, so SMTP's analysis process makes them off the event loop.

A row is a one-byte tag, then the words each once in their order: TEXT when they are joined by
newlines (UTF-8), else (a word holds a newline, or there are none) the JunkFeatures message of
the words; ZSTD set when compressed (Zstandard, level 2), ZLIB in rows of the "junk-4" schema
(zlib level 1: read still, never written). Only lists longer than COMPRESS_FROM bytes are
compressed: the compressor's set-up costs more than a short list's whole fold (the many short
messages of a catch-up each add a content row). Joining is a tenth of building and serializing
a message of the words.

Zstandard against zlib level 1 on the word lists of bench/smtp.py's 20 KB messages (about 1,900
words, 17.8 KB joined): 8.3 KB against 8.3 KB at level 1, 7.9 KB at level 2, at about 80 µs a
list against zlib's 200-270 µs (reading back: 28 against 82 µs). Word lists are high in entropy
(each word once, then word pairs): no level or codec here makes them much smaller than half.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Sequence

import zstandard

from ..proto import events_pb2 as pb

_ZLIB, _TEXT, _ZSTD = 1, 2, 4
COMPRESS_FROM = 1024
ZSTD_LEVEL = 2

# A compressor's context is reused (making one costs about as much as compressing a list), one
# per thread: a ZstdCompressor is not safe to share between threads (the analysis may run in
# several).
_local = threading.local()


def _compress(data: bytes) -> bytes:
    c = getattr(_local, "compressor", None)
    if c is None:
        c = _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c.compress(data)


def _decompress(data: bytes) -> bytes:
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d.decompress(data)


def distinct(words: Iterable[str]) -> list[str]:
    """A message's words, each once, in their order (as its content row keeps them): a tenth of
    the cost of sorting a long message's 2,000 words."""
    return list(dict.fromkeys(words))


def encode(words: Sequence[str]) -> bytes:
    """A content row of `words` (already distinct)."""
    text = "\n".join(words)
    if words and text.count("\n") == len(words) - 1:
        tag, data = _TEXT, text.encode()
    else:
        tag, data = 0, pb.JunkFeatures(words=words).SerializeToString(deterministic=True)
    if len(data) > COMPRESS_FROM:
        tag, data = tag | _ZSTD, _compress(data)
    return bytes([tag]) + data


def content_row(words: Iterable[str]) -> bytes:
    """What the junk projection keeps for a message with these words (JunkFeatures.words)."""
    return encode(distinct(words))


def decode(data: bytes) -> list[str]:
    """The words of a content row."""
    tag, body = data[0], data[1:]
    if tag & _ZSTD:
        body = _decompress(body)
    elif tag & _ZLIB:
        body = zlib.decompress(body)
    if tag & _TEXT:
        return body.decode().split("\n")
    return list(pb.JunkFeatures.FromString(body).words)
