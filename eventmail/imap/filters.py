"""Mailbox filters of NOTIFY (RFC 5465 §6) and ESEARCH (RFC 7377 §2): which mailboxes one names."""

from __future__ import annotations

from collections.abc import Iterable

from eventmail.imap.commands import MailboxFilter
from eventmail.proto import events_pb2 as pb
from eventmail.store import Mailbox

SEP = "/"


def _under(name: str, root: str) -> bool:
    return name == root or name.startswith(root + SEP)


def matches(flt: MailboxFilter, mb: Mailbox, subscribed: set[str], selected_id: int | None) -> bool:
    """Whether `flt` names the mailbox. SELECTED and SELECTED-DELAYED name the selected one;
    INBOXES the ones new mail is delivered to: INBOX (with what is under it) and the Junk
    mailbox the junk filter delivers to (RFC 5465 §6 leaves the set to the server); PERSONAL
    every mailbox (there is one namespace); SUBTREE a mailbox and all below it, SUBTREE-ONE a
    mailbox and its children (RFC 7377 §2); MAILBOXES the named ones."""
    kind = flt.kind
    if kind in ("SELECTED", "SELECTED-DELAYED"):
        return selected_id is not None and mb.id == selected_id
    if kind == "INBOXES":
        return _under(mb.name, "INBOX") or mb.special_use == pb.SPECIAL_USE_JUNK
    if kind == "PERSONAL":
        return True
    if kind == "SUBSCRIBED":
        return mb.name in subscribed
    if kind == "SUBTREE":
        return any(_under(mb.name, root) for root in flt.mailboxes)
    if kind == "SUBTREE-ONE":
        return any(mb.name == root or (mb.name.startswith(root + SEP) and SEP not in mb.name[len(root) + 1:])
                   for root in flt.mailboxes)
    return mb.name in flt.mailboxes  # MAILBOXES


def select(filters: Iterable[MailboxFilter], mailboxes: Iterable[Mailbox], subscribed: set[str],
           selected_id: int | None) -> list[Mailbox]:
    """The mailboxes any filter names, each once, in name order (RFC 7377 §2: a mailbox named
    twice is searched once)."""
    filters = list(filters)
    return sorted((mb for mb in mailboxes if any(matches(f, mb, subscribed, selected_id) for f in filters)),
                  key=lambda m: m.name)


__all__ = ["matches", "select"]
