"""Log output: one record, one line, whatever a client put into its message.

Client-supplied text (IMAP ID values, user names, addresses, mailbox names, error details) reaches
log messages in many places. Rather than escape it at each of them, the formatter the CLI installs
escapes the whole formatted record: CR, LF and every other control character (C0, DEL, C1, and
the Unicode line and paragraph separators) become visible escapes, so a record never spans two
lines and no client can forge one. The message is also bounded in length, so one record cannot
flood the log. A traceback stays part of its record, escaped onto the same line.
"""

from __future__ import annotations

import datetime
import json
import logging
import re

__all__ = ["MAX_MESSAGE", "EscapingFormatter", "JsonFormatter", "bound", "escape"]


# Characters that would start a new line in a terminal, a file or a log viewer, or hide text:
# C0 controls (tab too: it cannot forge a line, but makes fields ambiguous), DEL, C1 controls
# (U+0085 NEL is a line end to some readers), U+2028 / U+2029 (line / paragraph separator).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# A message longer than this is cut (with a note of how much): enough for any line a client can
# make us log (an SMTP line is at most 12 KiB, and is never logged whole), small enough that a
# flood of records stays a bounded amount of disk.
MAX_MESSAGE = 2000
# A traceback is ours, not a client's, but its exception text may quote client input.
MAX_TRACEBACK = 20000


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def bound(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def escape(text: str) -> str:
    """`text` on one line: every control character escaped."""
    return _UNSAFE.sub(_escape_char, text)


class EscapingFormatter(logging.Formatter):
    """A Formatter whose every record is one line: the message escaped and bounded (see module)."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = bound(record.getMessage(), MAX_MESSAGE)
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        extra = []
        if record.exc_info:
            extra.append(self.formatException(record.exc_info))
        elif record.exc_text:
            extra.append(record.exc_text)
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for text in extra:
            line += " | " + bound(text, MAX_TRACEBACK)
        # Escaped as a whole: the message, the traceback, and names in the format string alike.
        return escape(line)


class JsonFormatter(logging.Formatter):
    """One JSON object a line (`[log] format = "json"`): time (RFC 3339, UTC), level, logger,
    message, and the traceback when there is one. json.dumps with ensure_ascii escapes every
    control character and every non-ASCII one, so a record is one line whatever a client sent."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": bound(record.getMessage(), MAX_MESSAGE),
        }
        if record.exc_info:
            out["exception"] = bound(self.formatException(record.exc_info), MAX_TRACEBACK)
        return json.dumps(out, ensure_ascii=True)
