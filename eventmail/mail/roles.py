"""Special-use mailboxes found by their role (RFC 6154), never by name: the one place that picks Sent or Junk."""

# A client may rename Sent to "Sent Items" or delete Junk; the attribute moves with the mailbox
# (it is recorded on the mailbox id), so a rename keeps the role. When no mailbox has the role
# any more, the server makes one again rather than failing the message it was filing: a
# submission must not answer 451 because a client tidied up its folder list.

from __future__ import annotations

from eventmail.proto import events_pb2 as pb
from eventmail.store import Account, Conflict, Mailbox

# The name a role's mailbox gets when the server has to make it anew (the defaults of a new
# account, eventmail.store.account.DEFAULT_MAILBOXES).
ROLE_NAMES: dict[int, str] = {
    pb.SPECIAL_USE_SENT: "Sent",
    pb.SPECIAL_USE_JUNK: "Junk",
    pb.SPECIAL_USE_TRASH: "Trash",
    pb.SPECIAL_USE_DRAFTS: "Drafts",
    pb.SPECIAL_USE_ARCHIVE: "Archive",
}
# "Sent", "Sent-2", ... "Sent-9": a name the user already uses for something else is left alone.
MAX_NAME_TRIES = 9


def mailbox_with_role(acct: Account, role: int) -> Mailbox | None:
    """The mailbox with this special-use attribute (the oldest, if a client gave it to several)."""
    found = [m for m in acct.view.mailboxes() if m.special_use == role]
    return min(found, key=lambda m: m.id) if found else None


async def mailbox_for_role(acct: Account, role: int) -> Mailbox:
    """The mailbox to file into for `role`, made with the role when none has it."""
    existing = mailbox_with_role(acct, role)
    if existing is not None:
        return existing
    base = ROLE_NAMES[role]
    for n in range(1, MAX_NAME_TRIES + 1):
        name = base if n == 1 else f"{base}-{n}"
        if acct.view.mailbox(name) is not None:
            continue
        try:
            return await acct.create_mailbox(name, role)
        except Conflict:
            continue  # made by another session meanwhile: try the next name
    raise Conflict(f"no free name for a new {base} mailbox")
