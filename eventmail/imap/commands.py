"""Typed IMAP command objects, the wire's other items, sequence sets and mailbox-name encoding."""

# Everything here is plain immutable data: the wire (eventmail.imap.wire) builds these objects
# from client bytes and the session consumes them. Nothing here does I/O.
#
# Grammar references are to RFC 9051 §9 (IMAP4rev2 formal syntax) unless said otherwise;
# RFC 3501 §9 is the IMAP4rev1 grammar, which is a subset apart from RECENT/NEW/OLD/LSUB.

from __future__ import annotations

import base64
import binascii
import datetime
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, TypeAlias

# ---------------------------------------------------------------------------------------------
# Sequence sets (RFC 9051 §9 "sequence-set"; "$" from RFC 5182 SEARCHRES, kept in RFC 9051)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeqRange:
    """One element of a sequence set: `n`, `n:m`, `*`, `n:*`. `None` stands for `*`."""

    start: int | None
    end: int | None

    def __str__(self) -> str:
        a = "*" if self.start is None else str(self.start)
        if self.start == self.end:
            return a
        return f"{a}:{'*' if self.end is None else self.end}"

    def bounds(self, largest: int) -> tuple[int, int]:
        """Lowest and highest number this range covers once `*` means `largest` (RFC 9051 §9:
        `n:m` and `m:n` are the same range)."""
        a = largest if self.start is None else self.start
        b = largest if self.end is None else self.end
        return (a, b) if a <= b else (b, a)


@dataclass(frozen=True)
class SequenceSet:
    """A parsed sequence set, unresolved: the session resolves `*` and `$` against its mailbox.

    `saved` is True for the RFC 5182 `$` form (the result saved by SEARCH RETURN (SAVE)); it
    then has no ranges.
    """

    ranges: tuple[SeqRange, ...] = ()
    saved: bool = False

    def __str__(self) -> str:
        return "$" if self.saved else ",".join(str(r) for r in self.ranges)

    @classmethod
    def of(cls, *numbers: int) -> SequenceSet:
        """A set of plain numbers (convenience for builders and tests)."""
        return cls(tuple(SeqRange(n, n) for n in numbers))

    def iter_bounds(self, largest: int) -> Iterator[tuple[int, int]]:
        """(low, high) per range with `*` resolved to `largest`; `$` yields nothing."""
        for r in self.ranges:
            yield r.bounds(largest)

    def contains(self, number: int, largest: int) -> bool:
        return any(lo <= number <= hi for lo, hi in self.iter_bounds(largest))


# ---------------------------------------------------------------------------------------------
# Items other than commands that ImapWire.receive() returns
# ---------------------------------------------------------------------------------------------

ErrorStatus: TypeAlias = Literal["BAD", "NO", "BYE"]


@dataclass(frozen=True)
class ProtocolError:
    """The client sent something the wire rejects. The session answers with `status` tagged
    with `tag` (untagged `* BAD` when the tag is unknown) and, if `close`, then sends BYE and
    closes the connection. `code` is a response code without brackets (e.g. "TOOBIG")."""

    tag: str | None
    status: ErrorStatus
    text: str
    code: str | None = None
    close: bool = False


@dataclass(frozen=True)
class Continuation:
    """A synchronising literal was announced within limits: the session must now send a
    command continuation request (`+ Ready for literal data`, RFC 9051 §7.5)."""

    tag: str


@dataclass(frozen=True)
class IdleDone:
    """The bare `DONE` line that ends IDLE (RFC 2177 §3, RFC 9051 §6.3.13). The wire returns it
    for any first line that is `DONE`; a session that is not idling answers `* BAD`."""


@dataclass(frozen=True)
class SaslResponse:
    """One base64 line of an AUTHENTICATE exchange, decoded (RFC 9051 §6.2.2)."""

    tag: str
    data: bytes


@dataclass(frozen=True)
class SaslCancel:
    """The client cancelled the AUTHENTICATE exchange with `*` (RFC 9051 §6.2.2); the session
    answers with a tagged BAD."""

    tag: str


# ---------------------------------------------------------------------------------------------
# Values that appear inside commands
# ---------------------------------------------------------------------------------------------


class StoreMode(enum.Enum):
    """`FLAGS`, `+FLAGS` or `-FLAGS` (RFC 9051 §6.4.6)."""

    REPLACE = ""
    ADD = "+"
    REMOVE = "-"


@dataclass(frozen=True)
class Section:
    """`section-spec` of BODY[...] / BINARY[...] (RFC 9051 §6.4.5, §9).

    `part` is the dotted part number (empty for the whole message); `text` is one of None,
    "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"; `fields` are the header
    field names of HEADER.FIELDS(.NOT), upper-cased.
    """

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        parts = [".".join(str(p) for p in self.part)] if self.part else []
        if self.text is not None:
            parts.append(self.text)
        s = ".".join(parts)
        if self.fields:
            s += " (" + " ".join(self.fields) + ")"
        return s


@dataclass(frozen=True)
class FetchAttr:
    """One FETCH data item (RFC 9051 §6.4.5; RFC 3516 for BINARY; RFC 7162 for MODSEQ).

    `name` is the upper-case item name without section or `.PEEK`: ENVELOPE, FLAGS,
    INTERNALDATE, RFC822, RFC822.HEADER, RFC822.SIZE, RFC822.TEXT, BODY, BODYSTRUCTURE, UID,
    MODSEQ, BINARY, BINARY.SIZE. BODY with a `section` is BODY[...]; `peek` is BODY.PEEK /
    BINARY.PEEK; `partial` is (origin, octet count) of `<origin.count>`.
    """

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False

    def response_name(self) -> str:
        """The item's name in the FETCH response: `.PEEK` dropped and only the origin of a
        partial kept (RFC 9051 §7.5.2, "BODY[<section>]<<origin octet>>")."""
        if self.section is None:
            return self.name
        s = f"{self.name}[{self.section}]"
        if self.partial is not None:
            s += f"<{self.partial[0]}>"
        return s


@dataclass(frozen=True)
class QresyncParams:
    """The QRESYNC select parameter (RFC 7162 §3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    # (known-sequence-set, known-uid-set) pairs a sequence number to a UID
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True)
class CatenatePart:
    """One part of a CATENATE (RFC 4469 §5): TEXT's literal `data`, or the IMAP `url` of a message
    or a part of one on this server."""

    data: bytes = b""
    url: str | None = None


@dataclass(frozen=True)
class AppendMessage:
    """One message of an APPEND (RFC 9051 §6.3.12; MULTIAPPEND RFC 3502 allows several).

    `binary` when sent as literal8 `~{n}` (RFC 3516 §4.4); `utf8` when wrapped in
    `UTF8 (~{n} ...)` (RFC 6855 §4); `parts` when put together by CATENATE (RFC 4469), with
    `data` then empty.
    """

    data: bytes
    flags: tuple[str, ...] = ()
    internal_date: datetime.datetime | None = None
    binary: bool = False
    utf8: bool = False
    parts: tuple[CatenatePart, ...] | None = None


# -- SEARCH keys (RFC 9051 §6.4.4; RFC 3501 §6.4.4 for RECENT/NEW/OLD; RFC 7162 §3.1.5 MODSEQ;
#    RFC 5032 OLDER/YOUNGER) ---------------------------------------------------------------


@dataclass(frozen=True)
class SearchAll:
    """ALL."""


@dataclass(frozen=True)
class SearchFlag:
    """A flag test: ANSWERED is (`\\Answered`, True), UNSEEN is (`\\Seen`, False), KEYWORD k
    is (k, True), RECENT is (`\\Recent`, True), OLD is (`\\Recent`, False)."""

    flag: str
    present: bool


@dataclass(frozen=True)
class SearchText:
    """BCC, BODY, CC, FROM, SUBJECT, TEXT, TO with their string (decoded by CHARSET)."""

    where: str
    value: str


@dataclass(frozen=True)
class SearchHeader:
    """HEADER field-name string; `field` upper-cased."""

    field: str
    value: str


@dataclass(frozen=True)
class SearchDate:
    """BEFORE, ON, SINCE (internal date), SENTBEFORE, SENTON, SENTSINCE (Date: header) and
    SAVEDBEFORE, SAVEDON, SAVEDSINCE (save date, RFC 8514 §4.2)."""

    which: str
    date: datetime.date


@dataclass(frozen=True)
class SearchSize:
    """LARGER n (`larger`) or SMALLER n."""

    larger: bool
    size: int


@dataclass(frozen=True)
class SearchSeq:
    """A sequence set of message numbers, or `UID set` when `uid`."""

    set: SequenceSet
    uid: bool


@dataclass(frozen=True)
class SearchModseq:
    """MODSEQ [entry-name entry-type] n (RFC 7162 §3.1.5). `entry` is the flag of
    "/flags/<flag>", `entry_type` one of "priv", "shared", "all"."""

    modseq: int
    entry: str | None = None
    entry_type: str | None = None


@dataclass(frozen=True)
class SearchAge:
    """OLDER n (`older`) or YOUNGER n, in seconds (RFC 5032 §3)."""

    older: bool
    seconds: int


@dataclass(frozen=True)
class SearchObjectId:
    """EMAILID or THREADID objectid (RFC 8474 §6): `which` is the key's name."""

    which: str
    object_id: str


@dataclass(frozen=True)
class SearchNot:
    key: SearchKey


@dataclass(frozen=True)
class SearchOr:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True)
class SearchAnd:
    """A parenthesised list, or several top-level keys (all must match)."""

    keys: tuple[SearchKey, ...]


SearchKey: TypeAlias = (
    SearchAll
    | SearchFlag
    | SearchText
    | SearchHeader
    | SearchDate
    | SearchSize
    | SearchSeq
    | SearchModseq
    | SearchAge
    | SearchObjectId
    | SearchNot
    | SearchOr
    | SearchAnd
)

# ---------------------------------------------------------------------------------------------
# Commands. Every command has `tag` first; the rest follows the grammar order.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capability:
    tag: str


@dataclass(frozen=True)
class Noop:
    tag: str


@dataclass(frozen=True)
class Logout:
    tag: str


@dataclass(frozen=True)
class StartTls:
    """RFC 9051 §6.2.1. The wire discards whatever the client sends after it until the
    session answers it (see ImapWire.start_tls)."""

    tag: str


@dataclass(frozen=True)
class Authenticate:
    """RFC 9051 §6.2.2. `initial_response` is the decoded SASL-IR (RFC 4959; `=` is b"").
    The wire then reads SASL lines until the tagged response to this tag is encoded."""

    tag: str
    mechanism: str
    initial_response: bytes | None = None


@dataclass(frozen=True)
class Login:
    tag: str
    username: str
    password: str


@dataclass(frozen=True)
class Enable:
    """RFC 5161; capability names upper-cased."""

    tag: str
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class Select:
    """SELECT, or EXAMINE when `readonly` (RFC 9051 §6.3.2-3; CONDSTORE and QRESYNC
    parameters RFC 7162 §3.1.8, §3.2.5)."""

    tag: str
    mailbox: str
    readonly: bool = False
    condstore: bool = False
    qresync: QresyncParams | None = None


@dataclass(frozen=True)
class Create:
    """`special_use` from CREATE-SPECIAL-USE `(USE (\\Sent ...))` (RFC 6154 §3)."""

    tag: str
    mailbox: str
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True)
class Delete:
    tag: str
    mailbox: str


@dataclass(frozen=True)
class Rename:
    tag: str
    mailbox: str
    new_name: str


@dataclass(frozen=True)
class Subscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True)
class Unsubscribe:
    tag: str
    mailbox: str


@dataclass(frozen=True)
class List:
    """LIST, basic or extended (RFC 9051 §6.3.9; RFC 5258; RFC 5819 LIST-STATUS; RFC 6154).

    `select_options` / `return_options` are upper-cased names (SUBSCRIBED, REMOTE,
    RECURSIVEMATCH, SPECIAL-USE / SUBSCRIBED, CHILDREN, SPECIAL-USE, STATUS); `status_items`
    holds the items of RETURN (STATUS (...)). `extended` is True when any RFC 5258 syntax was
    used (selection options, several patterns, RETURN), so the session answers in that form.
    """

    tag: str
    reference: str
    patterns: tuple[str, ...]
    select_options: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()
    status_items: tuple[str, ...] = ()
    extended: bool = False
    # RETURN (METADATA (entries) [MAXSIZE n]) of LIST-METADATA (RFC 9590 §2)
    metadata: tuple[str, ...] = ()
    metadata_maxsize: int | None = None


@dataclass(frozen=True)
class Lsub:
    """RFC 3501 §6.3.9 (IMAP4rev1 only)."""

    tag: str
    reference: str
    pattern: str


@dataclass(frozen=True)
class Namespace:
    """RFC 2342, part of RFC 9051 §6.3.10."""

    tag: str


@dataclass(frozen=True)
class Status:
    """Items upper-cased: MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT
    HIGHESTMODSEQ (RFC 7162) APPENDLIMIT (RFC 7889) MAILBOXID (RFC 8474) DELETED-STORAGE (RFC 9208)."""

    tag: str
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class GetQuota:
    """GETQUOTA quota-root (RFC 9208 §4.1.1)."""

    tag: str
    root: str


@dataclass(frozen=True)
class GetQuotaRoot:
    """GETQUOTAROOT mailbox (RFC 9208 §4.1.2)."""

    tag: str
    mailbox: str


@dataclass(frozen=True)
class SetQuota:
    """SETQUOTA quota-root (resource limit ...) (RFC 9208 §4.1.3): upper-cased resource names."""

    tag: str
    root: str
    limits: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Append:
    tag: str
    mailbox: str
    messages: tuple[AppendMessage, ...]


@dataclass(frozen=True)
class Replace:
    """REPLACE / UID REPLACE (RFC 8508): `number` is a sequence number, or a UID when `uid`."""

    tag: str
    number: int
    mailbox: str
    message: AppendMessage
    uid: bool = False


@dataclass(frozen=True)
class Idle:
    tag: str


@dataclass(frozen=True)
class Check:
    tag: str


@dataclass(frozen=True)
class Close:
    tag: str


@dataclass(frozen=True)
class Unselect:
    tag: str


@dataclass(frozen=True)
class Expunge:
    """EXPUNGE, or UID EXPUNGE uid-set when `uids` is set (RFC 4315 §2.1, RFC 9051 §6.4.9)."""

    tag: str
    uids: SequenceSet | None = None


@dataclass(frozen=True)
class Search:
    """SEARCH / UID SEARCH (RFC 9051 §6.4.4).

    `charset` is the CHARSET argument upper-cased, None when absent; string values in `key` are
    already decoded from it. `return_options` is None without RETURN (answer with SEARCH in
    IMAP4rev1), else the upper-cased options (RFC 4731 MIN MAX ALL COUNT, RFC 5182 SAVE, RFC
    5267 UPDATE CONTEXT PARTIAL); an empty tuple means RETURN () which RFC 4731 §3.1 treats as
    ALL. `partial` is PARTIAL's range (low, high), 1-based positions in the result.
    """

    tag: str
    key: SearchKey
    uid: bool = False
    charset: str | None = None
    return_options: tuple[str, ...] | None = None
    partial: tuple[int, int] | None = None


@dataclass(frozen=True)
class Thread:
    """THREAD / UID THREAD (RFC 5256 §4): `algorithm` upper-cased, ORDEREDSUBJECT or REFERENCES."""

    tag: str
    algorithm: str
    key: SearchKey
    uid: bool = False
    charset: str | None = None


SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO"})


@dataclass(frozen=True)
class Sort:
    """SORT / UID SORT (RFC 5256 §3; DISPLAYFROM / DISPLAYTO RFC 5957; RETURN: ESORT, RFC 5267 §3).

    `criteria` holds (key, reverse) pairs in the order given, keys upper-cased from SORT_KEYS."""

    tag: str
    criteria: tuple[tuple[str, bool], ...]
    key: SearchKey
    uid: bool = False
    charset: str | None = None
    return_options: tuple[str, ...] | None = None
    partial: tuple[int, int] | None = None


@dataclass(frozen=True)
class CancelUpdate:
    """CANCELUPDATE (RFC 5267 §4.3): stop the live results of the searches with these tags."""

    tag: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Fetch:
    """FETCH / UID FETCH. Macros are expanded (RFC 9051 §6.4.5: ALL, FAST, FULL) and
    `macro` keeps which was used. `changedsince` / `vanished` are RFC 7162 §3.1.4, §3.2.6."""

    tag: str
    sequence_set: SequenceSet
    items: tuple[FetchAttr, ...]
    uid: bool = False
    changedsince: int | None = None
    vanished: bool = False
    macro: str | None = None


@dataclass(frozen=True)
class Store:
    """STORE / UID STORE (RFC 9051 §6.4.6; UNCHANGEDSINCE RFC 7162 §3.1.3)."""

    tag: str
    sequence_set: SequenceSet
    mode: StoreMode
    flags: tuple[str, ...]
    silent: bool = False
    uid: bool = False
    unchangedsince: int | None = None


@dataclass(frozen=True)
class Copy:
    tag: str
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True)
class Move:
    """RFC 6851."""

    tag: str
    sequence_set: SequenceSet
    mailbox: str
    uid: bool = False


@dataclass(frozen=True)
class Id:
    """RFC 2971. `params` is None for `ID NIL`; values may be None (NIL)."""

    tag: str
    params: tuple[tuple[str, str | None], ...] | None = None


@dataclass(frozen=True)
class Compress:
    """RFC 4978; mechanism upper-cased (only DEFLATE is defined)."""

    tag: str
    mechanism: str


# METADATA (RFC 5464), MULTISEARCH (RFC 7377) and NOTIFY (RFC 5465); parsed by imap/wire_ext.py


@dataclass(frozen=True)
class GetMetadata:
    """GETMETADATA (RFC 5464 §4.2). `mailbox` "" names the server; `depth` is 0, 1 or None for
    infinity; `maxsize` None when not given. Entry names as sent (checked by the wire)."""

    tag: str
    mailbox: str
    entries: tuple[str, ...]
    depth: int | None = 0
    maxsize: int | None = None


@dataclass(frozen=True)
class SetMetadata:
    """SETMETADATA (RFC 5464 §4.3): (entry, value) pairs; value None (NIL) removes the entry."""

    tag: str
    mailbox: str
    entries: tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True)
class MailboxFilter:
    """One filter-mailboxes of NOTIFY (RFC 5465 §6) or source-mbox of ESEARCH (RFC 7377 §2):
    `kind` upper-cased (SELECTED, SELECTED-DELAYED, INBOXES, PERSONAL, SUBSCRIBED, SUBTREE,
    SUBTREE-ONE, MAILBOXES), `mailboxes` the names of SUBTREE, SUBTREE-ONE and MAILBOXES."""

    kind: str
    mailboxes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NotifyEvent:
    """One event of a NOTIFY event group, with MessageNew's FETCH attributes (RFC 5465 §5)."""

    name: str  # canonical spelling: MessageNew, MessageExpunge, FlagChange, ...
    fetch: tuple[FetchAttr, ...] = ()


@dataclass(frozen=True)
class NotifyGroup:
    """A mailbox filter and its events; no events is the NONE of RFC 5465 §3."""

    filter: MailboxFilter
    events: tuple[NotifyEvent, ...]


@dataclass(frozen=True)
class Notify:
    """NOTIFY NONE (`groups` None) or NOTIFY SET [STATUS] groups (RFC 5465 §3)."""

    tag: str
    groups: tuple[NotifyGroup, ...] | None
    status: bool = False


@dataclass(frozen=True)
class ESearch:
    """ESEARCH (RFC 7377 §2): SEARCH over the mailboxes `sources` name (none: the selected one),
    always answered by UID; return options as Search's."""

    tag: str
    sources: tuple[MailboxFilter, ...]
    key: SearchKey
    charset: str | None = None
    return_options: tuple[str, ...] | None = None


Command: TypeAlias = (
    Capability
    | Noop
    | Logout
    | StartTls
    | Authenticate
    | Login
    | Enable
    | Select
    | Create
    | Delete
    | Rename
    | Subscribe
    | Unsubscribe
    | List
    | Lsub
    | Namespace
    | Status
    | Append
    | Replace
    | Idle
    | Check
    | Close
    | Unselect
    | Expunge
    | Search
    | Sort
    | CancelUpdate
    | Thread
    | Fetch
    | Store
    | Copy
    | Move
    | Id
    | Compress
    | GetMetadata
    | SetMetadata
    | Notify
    | ESearch
    | GetQuota
    | GetQuotaRoot
    | SetQuota
)

Item: TypeAlias = Command | Continuation | ProtocolError | IdleDone | SaslResponse | SaslCancel

# ---------------------------------------------------------------------------------------------
# Modified UTF-7 mailbox names (RFC 3501 §5.1.3)
# ---------------------------------------------------------------------------------------------


class MailboxNameError(ValueError):
    """A mailbox name is not valid modified UTF-7."""


class UndecodableName(str):
    """A mailbox name (or pattern) that is a valid atom or string but not valid modified UTF-7
    (RFC 3501 §5.1.3), kept as sent: no mailbox can have it, so SELECT, STATUS and the like say
    NO and LIST matches nothing (as Dovecot does) instead of a BAD for well-formed syntax;
    CREATE and RENAME refuse it (mailboxes.check_name)."""

    reason: str = ""


def _b64_utf16(text: str) -> str:
    raw = text.encode("utf-16-be")
    return base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")


def encode_mutf7(name: str) -> str:
    """Encode a Unicode mailbox name in modified UTF-7 (RFC 3501 §5.1.3): printable ASCII
    stands for itself except `&` which is `&-`; other runs are `&` + modified BASE64 of UTF-16BE
    (`,` for `/`, no padding) + `-`."""
    out: list[str] = []
    run: list[str] = []
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            if run:
                out.append("&" + _b64_utf16("".join(run)) + "-")
                run = []
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    if run:
        out.append("&" + _b64_utf16("".join(run)) + "-")
    return "".join(out)


def decode_mutf7(name: str) -> str:
    """Decode a modified UTF-7 mailbox name; raise MailboxNameError when it is not valid
    (RFC 3501 §5.1.3: 8-bit or control characters, `&` not closed by `-`, bad BASE64, padding,
    a shift sequence that encodes only printable ASCII, or adjacent shifted runs)."""
    out: list[str] = []
    i = 0
    n = len(name)
    prev_shift_end = -1
    while i < n:
        ch = name[i]
        o = ord(ch)
        if o < 0x20 or o > 0x7E:
            raise MailboxNameError("mailbox name has a character outside printable US-ASCII")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = name.find("-", i + 1)
        if end < 0:
            raise MailboxNameError("unterminated & shift in mailbox name")
        chunk = name[i + 1 : end]
        if not chunk:
            out.append("&")
            i = end + 1
            continue
        if prev_shift_end == i:
            # RFC 3501 §5.1.3: two shifted runs must be one ("&AGE-&AGE-" is not canonical)
            raise MailboxNameError("adjacent encoded runs in mailbox name")
        if any(c not in _MB64 for c in chunk):
            raise MailboxNameError("invalid modified BASE64 in mailbox name")
        if len(chunk) % 4 == 1:
            raise MailboxNameError("truncated modified BASE64 in mailbox name")
        padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
        try:
            raw = base64.b64decode(padded, validate=True)
        except binascii.Error as e:
            raise MailboxNameError("invalid modified BASE64 in mailbox name") from e
        if len(raw) % 2:
            raise MailboxNameError("odd UTF-16 length in mailbox name")
        # non-zero leftover bits mean the sender did not encode canonically
        if base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") != chunk:
            raise MailboxNameError("non-canonical modified BASE64 in mailbox name")
        try:
            text = raw.decode("utf-16-be")
        except UnicodeDecodeError as e:
            raise MailboxNameError("invalid UTF-16 in mailbox name") from e
        if any(0x20 <= ord(c) <= 0x7E for c in text):
            raise MailboxNameError("printable ASCII must not be BASE64-encoded in mailbox names")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            # RFC 9051 §5.1: mailbox names do not contain control characters
            raise MailboxNameError("control character in mailbox name")
        out.append(text)
        i = end + 1
        prev_shift_end = i
    return "".join(out)


_MB64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")


__all__ = [
    "SORT_KEYS",
    "Append",
    "AppendMessage",
    "Authenticate",
    "Capability",
    "Check",
    "Close",
    "Command",
    "Compress",
    "Continuation",
    "Copy",
    "Create",
    "Delete",
    "Enable",
    "ErrorStatus",
    "Expunge",
    "Fetch",
    "FetchAttr",
    "Id",
    "Idle",
    "IdleDone",
    "Item",
    "List",
    "Login",
    "Logout",
    "Lsub",
    "MailboxNameError",
    "Move",
    "Namespace",
    "Noop",
    "ProtocolError",
    "QresyncParams",
    "Rename",
    "SaslCancel",
    "SaslResponse",
    "Search",
    "SearchAge",
    "SearchAll",
    "SearchAnd",
    "SearchDate",
    "SearchFlag",
    "SearchHeader",
    "SearchKey",
    "SearchModseq",
    "SearchNot",
    "SearchOr",
    "SearchSeq",
    "SearchSize",
    "SearchText",
    "Section",
    "Select",
    "SeqRange",
    "SequenceSet",
    "Sort",
    "StartTls",
    "Status",
    "Store",
    "StoreMode",
    "Subscribe",
    "Thread",
    "Unselect",
    "Unsubscribe",
    "decode_mutf7",
    "encode_mutf7",
]
