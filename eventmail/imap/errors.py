"""The typed failure a command handler raises: it carries the tagged reply it becomes."""

from __future__ import annotations

from typing import Literal

from eventmail.imap.responses import ResponseCode, Value


class ImapError(Exception):
    """A command fails: the session answers `tag <status> [code] text` and logs it (STYLE §5).

    `code` is a response code name (RFC 5530, RFC 9051 §7.1) with optional arguments."""

    def __init__(
        self, status: Literal["NO", "BAD"], text: str, code: str | None = None, args: tuple[Value, ...] = ()
    ) -> None:
        super().__init__(text)
        self.status: Literal["NO", "BAD"] = status
        self.text = text
        self.code = ResponseCode(code, args) if code is not None else None


class MailboxGone(Exception):
    """The selected mailbox was deleted by another session: the session must end (BYE)."""


def no(text: str, code: str | None = None, *args: Value) -> ImapError:
    return ImapError("NO", text, code, args)


def bad(text: str, code: str | None = None, *args: Value) -> ImapError:
    return ImapError("BAD", text, code, args)
