"""Message content as it arrives: DATA de-framing and dot-unstuffing, and the checks every message gets.

RFC 5321 §4.1.1.4 (DATA ends only at CRLF "." CRLF), §4.5.2 (transparency: a leading dot is
removed), §2.3.8 (CR and LF appear in mail only as the CRLF pair: a bare CR or LF is refused
with 550 5.6.0, as Postfix's smtpd_forbid_bare_newline does, so no smuggled end-of-data can
reach a downstream server), §4.5.3.1.6 (a text line is at most 1000 octets with its CRLF),
§4.5.3.1.10 and RFC 1870 §6.3 (552 5.3.4 when the content passes the size limit; the rest is
read and thrown away so the stream stays in step, and nothing past the limit is kept).
NUL is refused with 554 5.6.0 (RFC 5322 §2.1 and RFC 5321 §4.5.2: mail is text without NUL; a
NUL byte stored would reach IMAP, where RFC 9051 §4.3 allows it in no literal but literal8).
"""

from __future__ import annotations

from eventmail.smtp.config import Limits
from eventmail.smtp.reply import Reply

__all__ = ["NUL_BYTE", "PARTIAL_FLUSH", "ContentSink", "DotReader"]

# A DATA line with no CRLF yet is handed on in pieces once it passes this many octets, so an
# endless line never becomes an endless buffer. Must stay > 3 so ".\r\n" is always seen whole.
PARTIAL_FLUSH = 8192

TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")  # RFC 1870 §6.3
BARE_NEWLINE = Reply(550, "5.6.0", "Message contains bare CR or LF; lines must end with CRLF")
# RFC 3463 §3.7 X.6.0 "other or undefined media error": the content cannot be carried as mail.
NUL_BYTE = Reply(554, "5.6.0", "Message contains NUL bytes")
# §4.5.3.1.10's "500 Line too long"; the text is ASCII, as replies go out (a "§" would arrive as "?").
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long (RFC 5321 section 4.5.3.1.6)")


class ContentSink:
    """Takes a message's (unstuffed) content in pieces, checks it, and keeps at most the limit.

    The checks run on the stream, so a CRLF split between two pieces is still one CRLF."""

    def __init__(self, limits: Limits) -> None:
        self._max = limits.max_message_size
        # Octets of a line other than its LF: the content plus the CR of the CRLF.
        self._line_max = max(limits.max_text_line - 1, 1)
        self._data = bytearray()
        self._size = 0
        self._line = 0  # non-LF octets of the current, unfinished line
        self._last_cr = False  # the previous piece ended with CR (its LF may come next)
        self.oversize = False
        self.bare_newline = False
        self.long_line = False
        self.nul = False

    @property
    def size(self) -> int:
        """Octets received so far (stored or not)."""
        return self._size

    @property
    def stored(self) -> int:
        return len(self._data)

    def feed(self, piece: bytes) -> None:
        if not piece:
            return
        self._size += len(piece)
        if not self.bare_newline:
            # RFC 5321 §2.3.8: every CR is followed by LF and every LF preceded by CR.
            joined = 1 if self._last_cr and piece[0] == 0x0A else 0
            ends_cr = 1 if piece[-1] == 0x0D else 0
            crlf = piece.count(b"\r\n")
            if (
                (self._last_cr and not joined)
                or piece.count(b"\r") - crlf - ends_cr
                or piece.count(b"\n") - crlf - joined
            ):
                self.bare_newline = True
            self._last_cr = bool(ends_cr)
        if not self.nul and b"\x00" in piece:
            self.nul = True
        if not self.long_line:
            first = piece.find(b"\n")
            if first < 0:
                self._line += len(piece)
            else:
                last = piece.rfind(b"\n")
                # The whole lines between the first and the last LF: the longest, by a split (a
                # regex scan for a long run re-scans each line from every octet: 20x slower).
                if self._line + first > self._line_max or (
                    last > first + self._line_max + 1
                    and max(map(len, piece[first + 1 : last].split(b"\n"))) > self._line_max
                ):
                    self.long_line = True
                self._line = len(piece) - last - 1
            if self._line > self._line_max:
                self.long_line = True
        if not self.oversize:
            if self._size > self._max:
                self.oversize = True
                self._data = bytearray()  # RFC 1870 §6.3: refuse, but never hold the excess
            else:
                self._data += piece

    def finish(self) -> bytes | Reply:
        """The content, or the reply that refuses it (size first, then line endings, then NUL,
        then length)."""
        if self._last_cr:
            self.bare_newline = True  # a CR as the very last octet
        if self.oversize:
            return TOO_BIG
        if self.bare_newline:
            return BARE_NEWLINE
        if self.nul:
            return NUL_BYTE
        if self.long_line:
            return LINE_TOO_LONG
        data = bytes(self._data)
        self._data = bytearray()
        return data


class DotReader:
    """Reads DATA content from a buffer: finds the end, removes dot-stuffing, feeds a sink.

    Lines end only at CRLF. The end is a line that is exactly "." (RFC 5321 §4.1.1.4), which
    is never `\\n.\\n`, `\\r.\\r`, `\\n.\\r\\n`, `\\r\\n.\\n`, `\\r\\n.\\r` or `.\\r\\r\\n`; those stay in
    the content, where the sink flags their bare CR or LF."""

    def __init__(self, sink: ContentSink) -> None:
        self._sink = sink
        self._line_start = True  # the buffer starts at the beginning of a line

    def feed(self, buf: bytearray) -> bool:
        """Consume what can be consumed from `buf`; True once the end of data was read."""
        while True:
            if self._line_start:
                if buf[:3] == b".\r\n":
                    del buf[:3]
                    return True
                if len(buf) < 3 and b".\r\n".startswith(buf):
                    return False  # could still become the end line
            end = buf.find(b"\r\n.\r\n")
            if end >= 0:
                self._emit(bytes(buf[: end + 2]))  # the content keeps its last CRLF
                del buf[: end + 5]
                return True
            last = buf.rfind(b"\r\n")
            if last >= 0:
                self._emit(bytes(buf[: last + 2]))
                del buf[: last + 2]
                self._line_start = True
                continue  # what is left has no CRLF: handled below on the next pass
            if len(buf) > PARTIAL_FLUSH:
                cut = len(buf) - 1 if buf[-1] == 0x0D else len(buf)  # a CR may pair with the next LF
                self._emit(bytes(buf[:cut]))
                del buf[:cut]
                self._line_start = False
            return False

    def _emit(self, block: bytes) -> None:
        # RFC 5321 §4.5.2: a line starting with "." loses that first dot.
        if self._line_start:
            data = (b"\r\n" + block).replace(b"\r\n.", b"\r\n")[2:]
        else:
            data = block.replace(b"\r\n.", b"\r\n")
        self._sink.feed(data)
