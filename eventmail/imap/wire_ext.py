"""The wire's parsers for GETMETADATA/SETMETADATA (RFC 5464), LIST-METADATA (RFC 9590), NOTIFY (RFC 5465) and ESEARCH (RFC 7377)."""

# Each function takes the command parser of eventmail.imap.wire at the point after the command
# name and returns the command object; a syntax error is raised through `p.error()`, which the
# wire turns into a tagged BAD (or NO with a code). Sans-IO like the rest of the wire; the checks
# on entry names are the mail layer's (eventmail.mail.metadata.check_entry_name), so what the
# wire accepts is what the store may hold.

from __future__ import annotations

from typing import TYPE_CHECKING

from eventmail.imap import commands as c
from eventmail.mail.metadata import MAX_NAME, check_entry_name

if TYPE_CHECKING:
    from eventmail.imap.wire import _Parser

# Entry names in one GETMETADATA or SETMETADATA, and mailbox names in one NOTIFY or ESEARCH
# filter list. A command line is at most 64 KiB anyway; these keep what one command makes the
# server look up (each name a query) small. RFC 5464 and RFC 5465 set no bound.
MAX_ENTRIES_PER_COMMAND = 100
MAX_FILTER_MAILBOXES = 100
# Event groups in one NOTIFY SET: one per filter kind and a few subtrees is what clients send.
MAX_EVENT_GROUPS = 20

# RFC 5465 §5 events in their canonical spelling (matched case-insensitively, §8 ABNF).
MESSAGE_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange")
MAILBOX_EVENTS = ("MailboxName", "SubscriptionChange", "MailboxMetadataChange", "ServerMetadataChange")
_EVENTS = {e.upper(): e for e in (*MESSAGE_EVENTS, *MAILBOX_EVENTS)}
# AnnotationChange is about per-message annotations (ANNOTATE, RFC 5257), which this server does
# not have: RFC 5465 §5 answers an event the server cannot report with NO [BADEVENT (what it can)].
SUPPORTED_EVENTS = tuple(e for e in (*MESSAGE_EVENTS, *MAILBOX_EVENTS) if e != "AnnotationChange")
BADEVENT = "BADEVENT (" + " ".join(SUPPORTED_EVENTS) + ")"

_NOTIFY_FILTERS = ("SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "MAILBOXES")
# RFC 7377 §2: ESEARCH's source mailboxes, with SUBTREE-ONE; not SELECTED-DELAYED.
_ESEARCH_FILTERS = ("SELECTED", "INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "SUBTREE-ONE", "MAILBOXES")


def _mailbox_or_server(p: _Parser) -> str:
    """A mailbox name, or "" for the server (RFC 5464 §4.1)."""
    raw = p.astring()
    if raw == b"":
        return ""
    if raw.upper() == b"INBOX":
        return "INBOX"
    return p.mailbox_text(raw)


def _entry(p: _Parser, strict: bool) -> str:
    """RFC 5464 §5 entry = astring, MUST NOT contain "*" or "%". SETMETADATA names must be full
    entry names; GETMETADATA may name any subtree ("/private", or "/" with DEPTH infinity)."""
    name = p.astring().decode("ascii", errors="replace")
    if strict:
        why = check_entry_name(name)
        if why is not None:
            raise p.error(why)
        return name
    if (not name.startswith("/") or len(name) > MAX_NAME or "*" in name or "%" in name or "//" in name
            or any(ch < " " or ch > "~" for ch in name)):
        raise p.error("invalid entry name")
    return name


def p_getmetadata(p: _Parser, tag: str, uid: bool) -> c.Command:
    # RFC 5464 §5: "GETMETADATA" [SP getmetadata-options] SP mailbox SP entries. The RFC's own
    # examples (§4.2.1, §4.2.2) put the options after the mailbox; both orders are accepted.
    p.sp()
    depth: int | None = 0
    maxsize: int | None = None
    given = False
    if p.peek() == 0x28:
        depth, maxsize = _getmetadata_options(p)
        given = True
        p.sp()
    mailbox = _mailbox_or_server(p)
    p.sp()
    if not given and p.peek() == 0x28 and p.cur[p.pos + 1 : p.pos + 2] != b"/":
        depth, maxsize = _getmetadata_options(p)
        p.sp()
    entries = _entries(p, strict=False)
    return c.GetMetadata(tag, mailbox, entries, depth, maxsize)


def _getmetadata_options(p: _Parser) -> tuple[int | None, int | None]:
    """"(" option *(SP option) ")" with MAXSIZE n (§4.2.1) and DEPTH 0 / 1 / infinity (§4.2.2)."""
    depth: int | None = 0
    maxsize: int | None = None
    p.open()
    seen: set[str] = set()
    while True:
        opt = p.atom("option").upper()
        if opt in seen:
            raise p.error(f"duplicate option {opt}")
        seen.add(opt)
        p.sp()
        if opt == "MAXSIZE":
            maxsize = p.number(what="MAXSIZE")
        elif opt == "DEPTH":
            value = p.atom("depth").upper()
            if value not in ("0", "1", "INFINITY"):
                raise p.error("DEPTH is 0, 1 or infinity")
            depth = None if value == "INFINITY" else int(value)
        else:
            raise p.error(f"unknown GETMETADATA option {opt}")
        if not p.maybe(0x20):
            break
    p.close()
    return depth, maxsize


def _entries(p: _Parser, strict: bool) -> tuple[str, ...]:
    if p.peek() != 0x28:
        return (_entry(p, strict),)
    p.open()
    out = [_entry(p, strict)]
    while p.maybe(0x20):
        if len(out) >= MAX_ENTRIES_PER_COMMAND:
            raise p.error(f"at most {MAX_ENTRIES_PER_COMMAND} entries in one command", code="LIMIT")
        out.append(_entry(p, strict))
    p.close()
    return tuple(out)


def p_setmetadata(p: _Parser, tag: str, uid: bool) -> c.Command:
    # RFC 5464 §5: "SETMETADATA" SP mailbox SP "(" entry SP value *(SP entry SP value) ")",
    # value = nstring / literal8
    p.sp()
    mailbox = _mailbox_or_server(p)
    p.sp()
    p.open()
    out: list[tuple[str, bytes | None]] = []
    while True:
        if len(out) >= MAX_ENTRIES_PER_COMMAND:
            raise p.error(f"at most {MAX_ENTRIES_PER_COMMAND} entries in one command", code="LIMIT")
        name = _entry(p, strict=True)
        p.sp()
        value: bytes | None
        if p.at_literal():
            value = p.literal(binary_ok=True).data
        elif p.keyword(b"NIL"):
            value = None
        else:
            value = p.quoted()
        out.append((name, value))
        if not p.maybe(0x20):
            break
    p.close()
    return c.SetMetadata(tag, mailbox, tuple(out))


def list_metadata_option(p: _Parser) -> tuple[tuple[str, ...], int | None]:
    """RFC 9590 §2: LIST's return option METADATA SP "(" entry *(SP entry) ")" [SP "(" MAXSIZE n ")"]
    (the parser stands after the word METADATA)."""
    p.sp()
    p.open()
    entries = [_entry(p, strict=False)]
    while p.maybe(0x20):
        if len(entries) >= MAX_ENTRIES_PER_COMMAND:
            raise p.error(f"at most {MAX_ENTRIES_PER_COMMAND} entries in one command", code="LIMIT")
        entries.append(_entry(p, strict=False))
    p.close()
    maxsize: int | None = None
    if p.peek() == 0x20 and p.cur[p.pos + 1 : p.pos + 2] == b"(":
        p.sp()
        p.open()
        if p.atom("option").upper() != "MAXSIZE":
            raise p.error("the METADATA return option takes MAXSIZE only")
        p.sp()
        maxsize = p.number(what="MAXSIZE")
        p.close()
    return tuple(entries), maxsize


def _filter(p: _Parser, kinds: tuple[str, ...]) -> c.MailboxFilter:
    """filter-mailboxes (RFC 5465 §8) / source-mbox (RFC 7377 §2)."""
    kind = p.atom("mailbox filter").upper()
    if kind not in kinds:
        raise p.error(f"unknown mailbox filter {kind}")
    if kind not in ("SUBTREE", "SUBTREE-ONE", "MAILBOXES"):
        return c.MailboxFilter(kind)
    p.sp()
    # one-or-more-mailbox = mailbox / "(" mailbox *(SP mailbox) ")"
    if p.peek() != 0x28:
        return c.MailboxFilter(kind, (p.mailbox(),))
    p.open()
    names = [p.mailbox()]
    while p.maybe(0x20):
        if len(names) >= MAX_FILTER_MAILBOXES:
            raise p.error(f"at most {MAX_FILTER_MAILBOXES} mailboxes in one filter", code="LIMIT")
        names.append(p.mailbox())
    p.close()
    return c.MailboxFilter(kind, tuple(names))


def _event(p: _Parser) -> c.NotifyEvent:
    word = p.atom("event").upper()
    name = _EVENTS.get(word)
    if name is None or name not in SUPPORTED_EVENTS:
        raise p.error(f"unsupported event {word}", status="NO", code=BADEVENT)  # RFC 5465 §5
    if name == "MessageNew" and p.peek() == 0x20 and p.cur[p.pos + 1 : p.pos + 2] == b"(":
        # RFC 5465 §5.1: MessageNew [SP "(" fetch-att *(SP fetch-att) ")"]
        p.sp()
        p.open()
        atts = [p.fetch_att()]
        while p.maybe(0x20):
            atts.append(p.fetch_att())
        p.close()
        return c.NotifyEvent(name, tuple(atts))
    return c.NotifyEvent(name)


def _event_group(p: _Parser) -> c.NotifyGroup:
    # RFC 5465 §8: event-group = "(" filter-mailboxes SP events ")"
    p.open()
    flt = _filter(p, _NOTIFY_FILTERS)
    p.sp()
    events: list[c.NotifyEvent] = []
    if not p.keyword(b"NONE"):
        p.open()
        events.append(_event(p))
        while p.maybe(0x20):
            if len(events) >= len(_EVENTS):
                raise p.error("too many events")
            events.append(_event(p))
        p.close()
    p.close()
    names = {e.name for e in events}
    # RFC 5465 §5: MessageNew and MessageExpunge go together, and FlagChange (or
    # AnnotationChange) needs both; otherwise a tagged BAD
    if ("MessageNew" in names) != ("MessageExpunge" in names):
        raise p.error("MessageNew and MessageExpunge must be asked for together")
    if "FlagChange" in names and "MessageNew" not in names:
        raise p.error("FlagChange needs MessageNew and MessageExpunge")
    if flt.kind in ("SELECTED", "SELECTED-DELAYED"):
        # RFC 5465 §6: the selected mailbox takes message events only
        if names - set(MESSAGE_EVENTS):
            raise p.error("selected and selected-delayed take message events only")
    elif any(e.fetch for e in events):
        # RFC 5465 §5.1: new messages of other mailboxes are told with STATUS; FETCH attributes
        # only make sense for the selected one
        raise p.error("MessageNew with FETCH attributes is for the selected mailbox only")
    return c.NotifyGroup(flt, tuple(events))


def p_notify(p: _Parser, tag: str, uid: bool) -> c.Command:
    # RFC 5465 §8: "NOTIFY" SP (notify-none / notify-set)
    p.sp()
    if p.keyword(b"NONE"):
        return c.Notify(tag, None)
    if not p.keyword(b"SET"):
        raise p.error("expected NONE or SET")
    p.sp()
    status = p.keyword(b"STATUS")
    if status:
        p.sp()
    groups = [_event_group(p)]
    while p.maybe(0x20):
        if len(groups) >= MAX_EVENT_GROUPS:
            raise p.error(f"at most {MAX_EVENT_GROUPS} event groups", code="LIMIT")
        groups.append(_event_group(p))
    if sum(1 for g in groups if g.filter.kind in ("SELECTED", "SELECTED-DELAYED")) > 1:
        raise p.error("at most one of selected and selected-delayed")  # RFC 5465 §6
    return c.Notify(tag, tuple(groups), status)


def p_esearch(p: _Parser, tag: str, uid: bool) -> c.Command:
    # RFC 7377 §2: "ESEARCH" [SP esearch-source-opts] [SP search-return-opts] SP search-program
    # esearch-source-opts = "IN" SP "(" source-mbox [SP "(" scope-options ")"] ")"
    p.sp()
    sources: list[c.MailboxFilter] = []
    if p.keyword(b"IN"):
        p.sp()
        p.open()
        sources.append(_filter(p, _ESEARCH_FILTERS))
        while p.maybe(0x20):
            if p.peek() == 0x28:
                raise p.error("no scope options are known")  # none are defined (RFC 7377 §2)
            if len(sources) >= MAX_FILTER_MAILBOXES:
                raise p.error("too many source mailboxes", code="LIMIT")
            sources.append(_filter(p, _ESEARCH_FILTERS))
        p.close()
        p.sp()
    returns, partial = p.search_return()
    if partial is not None or (returns is not None and set(returns) - {"MIN", "MAX", "ALL", "COUNT", "SAVE"}):
        raise p.error("ESEARCH returns MIN, MAX, ALL, COUNT and SAVE only")
    charset = p.charset(required=False)
    keys = [p.search_key()]
    while p.maybe(0x20):
        keys.append(p.search_key())
    key = keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))
    return c.ESearch(tag, tuple(sources), key, charset, returns)


HANDLERS = {
    "GETMETADATA": p_getmetadata,
    "SETMETADATA": p_setmetadata,
    "NOTIFY": p_notify,
    "ESEARCH": p_esearch,
}

__all__ = ["BADEVENT", "HANDLERS", "MAILBOX_EVENTS", "MESSAGE_EVENTS", "SUPPORTED_EVENTS", "list_metadata_option"]
