"""The caps on keywords (RFC 9051 §2.3.2 flag-keyword): per message and per mailbox, checked in one place."""

# Every write that gives messages keywords goes through check_keywords: Account.add_message
# (APPEND, delivery), Account.change_flags (STORE) and Account.copy (COPY, MOVE). Without caps a
# client could give one message 5,000 keywords, and every FLAGS, PERMANENTFLAGS and FETCH
# response of the mailbox would carry them. System flags (`\Seen`, ...) never count, nor do
# the keywords the server sets itself ($Junk, $NotJunk), so delivery and junk training never
# fail on a mailbox at its cap.

from __future__ import annotations

from collections.abc import Iterable

from .errors import StoreError
from .projection import MailboxView

# Cyrus allows 128 user flags per mailbox (a fixed-size bitmap in its index); Dovecot and Mox set
# no number. 256 per mailbox is twice what Cyrus users live with, and keeps a SELECT's FLAGS and
# PERMANENTFLAGS a few KB. No client tags one message with more than a handful: 64 per message.
MAX_KEYWORDS_PER_MESSAGE = 64
MAX_KEYWORDS_PER_MAILBOX = 256
SERVER_KEYWORDS = frozenset({"$Junk", "$NotJunk"})  # account.JUNK, account.NOT_JUNK


class LimitExceeded(StoreError):
    """A write would pass a cap (IMAP answers NO [LIMIT], RFC 5530 §3)."""


def counted(flags: Iterable[str]) -> set[str]:
    """The keywords among `flags` that count against the caps."""
    return {f for f in flags if not f.startswith("\\") and f not in SERVER_KEYWORDS}


def keywords_at_cap(keywords: Iterable[str]) -> bool:
    """True when a mailbox holding `keywords` may not take a new one (then PERMANENTFLAGS has no
    `\\*`, RFC 9051 §7.1)."""
    return len(counted(keywords)) >= MAX_KEYWORDS_PER_MAILBOX


def check_keywords(view: MailboxView, mailbox_id: int, results: Iterable[Iterable[str]]) -> None:
    """Raise LimitExceeded unless messages with these resulting flag sets may be in the mailbox:
    each within MAX_KEYWORDS_PER_MESSAGE, and the mailbox within MAX_KEYWORDS_PER_MAILBOX (a
    keyword it already has is always allowed, so a mailbox at its cap keeps working)."""
    wanted: set[str] = set()
    for flags in results:
        mine = counted(flags)
        if len(mine) > MAX_KEYWORDS_PER_MESSAGE:
            raise LimitExceeded(f"at most {MAX_KEYWORDS_PER_MESSAGE} keywords per message")
        wanted |= mine
    if not wanted:
        return
    have = counted(view.keywords(mailbox_id))
    if len(wanted - have) and len(have | wanted) > MAX_KEYWORDS_PER_MAILBOX:
        raise LimitExceeded(f"at most {MAX_KEYWORDS_PER_MAILBOX} keywords per mailbox")
