"""Junk training by placement: the flags a copy or move between two mailboxes records (issue 6 item 3)."""

from ..proto import events_pb2 as pb
from ..store import Mailbox
from .projection import JUNK, NOT_JUNK

# The junk filter's fixed-size mailbox of rejected mail (eventmail/junk/delivery.py).
REJECTS = "Rejects"


def junk_training_flags(source: Mailbox, dest: Mailbox, move: bool) -> tuple[list[str], list[str]]:
    """(flags to add, flags to remove) on messages moved (`move`) or copied from `source` to `dest`.

    Where the owner puts a message says what they think of it: into Junk means junk; into
    Archive, Trash or a mailbox of their own, or from Junk or Rejects back to INBOX, means
    wanted. Junk (or Rejects) → Trash is how junk is thrown away and says nothing. Registered
    with the store as its copy hook (eventmail.opening), so every copy and move of every writer
    (IMAP, webmail) records the same signal in the same event.

    A COPY keeps the message's flags (RFC 9051 §6.4.7: "The flags ... SHOULD be preserved in the
    copy") except where the copy is itself a statement about junk: into Junk, or out of Junk or
    Rejects (clients without MOVE move that way, and it is the user overruling the filter). Filing
    a copy of ordinary mail into Archive, Trash or a mailbox of the user's own leaves the original
    where it was, so it says nothing about where the message belongs; only a MOVE says that.
    """
    from_junk = source.special_use == pb.SPECIAL_USE_JUNK or source.name == REJECTS
    if dest.special_use == pb.SPECIAL_USE_JUNK:
        return [JUNK], [NOT_JUNK]
    if not move and not from_junk:
        return [], []
    if dest.special_use == pb.SPECIAL_USE_ARCHIVE or (dest.special_use == pb.SPECIAL_USE_TRASH and not from_junk):
        return [NOT_JUNK], [JUNK]
    if from_junk and dest.name == "INBOX":
        return [NOT_JUNK], [JUNK]
    # The junk issue's rule: a mailbox of the user's own is where wanted mail is kept; INBOX and
    # Rejects are where mail lands unsorted, so putting something there says nothing. Moving a
    # message out of Rejects says it was wanted (Rejects counts as Junk above).
    if dest.special_use == pb.SPECIAL_USE_NONE and dest.name not in ("INBOX", REJECTS):
        return [NOT_JUNK], [JUNK]
    return [], []
