"""NOTIFY (RFC 5465): which of the account's committed events a session tells, and as what responses."""

# A session that has sent NOTIFY SET hears of changes as they are committed, between commands
# too (the server waits for the account's events as it does during IDLE). The selected mailbox
# is told as without NOTIFY (EXISTS, EXPUNGE, FETCH of flags: eventmail/imap/selected.py), and
# also between commands when a "selected" or "selected-delayed" filter names it; with "selected",
# expunges are told at once (RFC 5465 §5.2 lifts RFC 9051 §7.5.1's rule for it), with
# "selected-delayed" they wait for a command that allows them. MessageNew's FETCH attributes
# follow the EXISTS of new messages. Other mailboxes are told with STATUS (messages arrived, left
# or changed flags: §5.1-5.3), LIST (created, deleted, renamed: §5.4; subscribed or not: §5.5)
# and METADATA naming changed entries (§5.6, §5.7).
#
# Bounded: a batch of more than MAX_PENDING events (a client that reads nothing while mail
# pours in) ends notifications with `* OK [NOTIFICATIONOVERFLOW]`, as if NOTIFY NONE had been
# sent (RFC 5465 §5.8); the selected mailbox goes on as without NOTIFY.

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eventmail.imap import commands as c
from eventmail.imap import filters, mailboxes
from eventmail.imap import metadata as imap_metadata
from eventmail.imap import responses as r
from eventmail.imap.errors import no
from eventmail.imap.fetch import MessageData, make_plan, render
from eventmail.imap.selected import Selected
from eventmail.mail.metadata import SERVER, MetadataUpdated
from eventmail.proto import events_pb2 as pb
from eventmail.store import Account, Committed, Mailbox, MailboxView

if TYPE_CHECKING:
    from eventmail.imap.session import Session

# Committed events waiting to be told in one batch before notifications stop (RFC 5465 §5.8).
MAX_PENDING = 1000
# Mailbox names in all filters of one NOTIFY together: each is matched against every event.
MAX_WATCHED = 1000
_MESSAGE_KINDS = ("MessageNew", "MessageExpunge", "FlagChange")


@dataclass
class NotifyState:
    """A session's NOTIFY SET: its event groups, and the mailbox names as the session last saw
    them (a deleted or renamed mailbox is told by its old name)."""

    groups: tuple[c.NotifyGroup, ...]
    names: dict[int, str] = field(default_factory=dict)
    told_seq: int = 0  # events up to this log seq have been told (between commands)

    @property
    def selected_filter(self) -> c.NotifyGroup | None:
        return next((g for g in self.groups if g.filter.kind in ("SELECTED", "SELECTED-DELAYED")), None)

    def event(self, mb: Mailbox, kind: str, subscribed: set[str], selected_id: int | None) -> c.NotifyEvent | None:
        """The event of the first group that decides for this mailbox and kind (RFC 5465 §6):
        the selected mailbox's message events only through selected filters; a group whose
        filter matches with NONE stops the search."""
        for g in self.groups:
            is_selected_filter = g.filter.kind in ("SELECTED", "SELECTED-DELAYED")
            if is_selected_filter:
                if selected_id is None or mb.id != selected_id or kind not in _MESSAGE_KINDS:
                    continue
            elif selected_id is not None and mb.id == selected_id and kind in _MESSAGE_KINDS:
                continue
            if not filters.matches(g.filter, mb, subscribed, selected_id):
                continue
            if not g.events:
                return None
            for e in g.events:
                if e.name == kind:
                    return e
        return None


def status_items(s: Session, flags: bool) -> tuple[str, ...]:
    """What a STATUS notification holds (RFC 5465 §5.1-5.3): counts, UIDNEXT and UIDVALIDITY, and
    HIGHESTMODSEQ when FlagChange is asked for (a flag change in a mailbox that is not selected
    shows in nothing else; Dovecot does the same) or CONDSTORE is on."""
    items = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN")
    return (*items, "HIGHESTMODSEQ") if flags or s.condstore else items


def _status(s: Session, view: MailboxView, mb: Mailbox, flags: bool) -> r.Response:
    values = mailboxes.status_values(view, mb, status_items(s, flags), appendlimit=s.opts.limits.max_append)
    return mailboxes.status_response(mb.name, values)


def _wants_flags(state: NotifyState, mb: Mailbox, subscribed: set[str], selected_id: int | None) -> bool:
    return state.event(mb, "FlagChange", subscribed, selected_id) is not None


async def notify(s: Session, cmd: c.Notify) -> AsyncIterator[r.Response]:
    acct = s.need_acct()
    if cmd.groups is None:
        s.notify = None  # RFC 5465 §3 NOTIFY NONE
        yield r.ok(cmd.tag, "NOTIFY completed")
        return
    watched = sum(len(g.filter.mailboxes) for g in cmd.groups)
    if watched > MAX_WATCHED:
        raise no(f"at most {MAX_WATCHED} mailbox names in one NOTIFY", "LIMIT")
    # What happened before this command was told by it (session._sync): from here on, the new filters.
    state = NotifyState(cmd.groups, {mb.id: mb.name for mb in acct.view.mailboxes()}, acct.view.seq)
    s.notify = state
    if cmd.status:
        # RFC 5465 §3: STATUS for each mailbox (but the selected one) a message event is asked for
        view = acct.view
        subscribed = set(view.subscriptions())
        selected_id = s.selected.mailbox_id if s.selected is not None else None
        for mb in view.mailboxes():
            if mb.id != selected_id and any(state.event(mb, k, subscribed, selected_id) for k in _MESSAGE_KINDS):
                yield _status(s, view, mb, _wants_flags(state, mb, subscribed, selected_id))
    yield r.ok(cmd.tag, "NOTIFY completed")


def _list(name: str, attrs: Sequence[str], oldname: str | None = None) -> r.Response:
    ext: list[tuple[str, r.Value]] = [("OLDNAME", (r.Mailbox(oldname),))] if oldname is not None else []
    return r.list_response(attrs, mailboxes.SEP, name, ext)


def updates(s: Session, acct: Account, events: Iterable[Committed]) -> list[r.Response]:
    """The notifications for events of mailboxes other than the selected one (and for server
    metadata), in log order; one STATUS per mailbox per batch, after the rest."""
    state = s.notify
    if state is None:
        return []
    view = acct.view
    subscribed = set(view.subscriptions())
    selected_id = s.selected.mailbox_id if s.selected is not None else None
    out: list[r.Response] = []
    status_of: dict[int, Mailbox] = {}

    def ghost(mid: int, name: str) -> Mailbox:
        return Mailbox(mid, name, 0, 0, 0, 0)  # a mailbox gone since: only its id and name count

    for ev in events:
        if ev.seq <= state.told_seq:
            continue
        state.told_seq = ev.seq
        e = ev.event
        kind = e.WhichOneof("kind")
        touched: list[tuple[int, str]] = []  # (mailbox id, message event kind)
        if kind == "message_added":
            touched.append((e.message_added.mailbox_id, "MessageNew"))
        elif kind == "messages_copied":
            touched.append((e.messages_copied.dest_mailbox_id, "MessageNew"))
            if e.messages_copied.move:
                touched.append((e.messages_copied.source_mailbox_id, "MessageExpunge"))
        elif kind == "messages_expunged":
            touched.append((e.messages_expunged.mailbox_id, "MessageExpunge"))
        elif kind == "flags_changed":
            touched.append((e.flags_changed.mailbox_id, "FlagChange"))
        elif kind in ("mailbox_created", "mailbox_renamed", "mailbox_deleted"):
            out.extend(_mailbox_name(state, view, e, subscribed, selected_id))
        elif kind == "mailbox_subscription":
            name = e.mailbox_subscription.name
            named = view.mailbox(name) or ghost(-1, name)
            if state.event(named, "SubscriptionChange", subscribed, selected_id) is not None:
                attrs = [] if view.mailbox(name) is not None else ["\\NonExistent"]
                if e.mailbox_subscription.subscribed:
                    attrs.append("\\Subscribed")
                out.append(_list(name, attrs))
        for change in ev.changes:
            if isinstance(change, MetadataUpdated) and change.names:
                out.extend(_metadata(state, view, change, subscribed, selected_id))
        for mid, what in touched:
            box = view.mailbox_by_id(mid)
            if box is not None and box.id != selected_id and state.event(box, what, subscribed, selected_id):
                status_of[box.id] = box
    out.extend(_status(s, view, mb, _wants_flags(state, mb, subscribed, selected_id)) for mb in status_of.values()
               if view.mailbox_by_id(mb.id) is not None)  # deleted later in the batch: LIST says so
    return out


def _mailbox_name(state: NotifyState, view: MailboxView, e: pb.Event, subscribed: set[str],
                  selected_id: int | None) -> list[r.Response]:
    """RFC 5465 §5.4 MailboxName: LIST for a new mailbox, LIST with OLDNAME for a renamed one, LIST
    (\\NonExistent) for a deleted one."""
    kind = e.WhichOneof("kind")
    if kind == "mailbox_created":
        mid, old = e.mailbox_created.mailbox_id, None
    elif kind == "mailbox_renamed":
        mid = e.mailbox_renamed.mailbox_id
        old = state.names.get(mid)
    else:
        mid = e.mailbox_deleted.mailbox_id
        old = state.names.pop(mid, None)
        if old is None:
            return []
        gone = Mailbox(mid, old, 0, 0, 0, 0)
        if state.event(gone, "MailboxName", subscribed, selected_id) is None:
            return []
        return [_list(old, ["\\NonExistent"])]
    mb = view.mailbox_by_id(mid)
    if mb is None:
        return []  # deleted again since: its own event says so
    state.names[mid] = mb.name
    if state.event(mb, "MailboxName", subscribed, selected_id) is None:
        return []
    return [_list(mb.name, [], old if old != mb.name else None)]


def _metadata(state: NotifyState, view: MailboxView, change: MetadataUpdated, subscribed: set[str],
              selected_id: int | None) -> list[r.Response]:
    """RFC 5465 §5.6 MailboxMetadataChange / §5.7 ServerMetadataChange: the changed entries' names."""
    if change.mailbox_id == SERVER:
        # server entries belong to no mailbox: any group asking for ServerMetadataChange
        if any(ev.name == "ServerMetadataChange" for g in state.groups for ev in g.events):
            return [imap_metadata.changed_response("", change.names)]
        return []
    mb = view.mailbox_by_id(change.mailbox_id)
    name = mb.name if mb is not None else state.names.get(change.mailbox_id)
    if name is None:
        return []
    target = mb or Mailbox(change.mailbox_id, name, 0, 0, 0, 0)
    if state.event(target, "MailboxMetadataChange", subscribed, selected_id) is None:
        return []
    return [imap_metadata.changed_response(name, change.names)]


def new_message_fetches(s: Session, acct: Account, sel: Selected, events: Sequence[Committed]) -> list[r.Response]:
    """RFC 5465 §5.1: the FETCH attributes of MessageNew for the messages these events brought
    into the selected mailbox (after their EXISTS). Always with PEEK: telling must not set
    \\Seen."""
    state = s.notify
    group = state.selected_filter if state is not None else None
    if group is None:
        return []
    attrs = next((ev.fetch for ev in group.events if ev.name == "MessageNew"), ())
    if not attrs:
        return []
    arrived: list[int] = []
    for ev in events:
        e = ev.event
        kind = e.WhichOneof("kind")
        if kind == "message_added" and e.message_added.mailbox_id == sel.mailbox_id:
            arrived.append(e.message_added.uid)
        elif kind == "messages_copied" and e.messages_copied.dest_mailbox_id == sel.mailbox_id:
            arrived.extend(e.messages_copied.dest_uids)
    new = [u for u in dict.fromkeys(arrived) if sel.seq(u) is not None and u not in sel.gone]
    if not new:
        return []
    items = tuple(c.FetchAttr(a.name, a.section, a.partial, peek=True) for a in attrs)
    plan = make_plan(c.Fetch("", c.SequenceSet.of(*new), items, uid=True), s.condstore)
    out: list[r.Response] = []
    for uid in new:
        msg = acct.view.message(sel.mailbox_id, uid)
        seq = sel.seq(uid)
        if msg is None or seq is None:
            continue
        # bytes, if an item needs them, are read here on the loop: a notification is one message
        out.append(render(plan, seq, msg, MessageData(acct, msg), recent=uid in sel.recent, rev2=s.rev2,
                          seen_now=False))
    return out


__all__ = ["MAX_PENDING", "MAX_WATCHED", "NotifyState", "new_message_fetches", "notify", "status_items", "updates"]
