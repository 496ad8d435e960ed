"""FETCH: the data items one message's response holds (RFC 9051 §6.4.5, §7.5.2; RFC 3516 BINARY; RFC 7162 MODSEQ)."""

from __future__ import annotations

import datetime
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from eventmail.imap import responses as r
from eventmail.imap.commands import Fetch, FetchAttr, Section
from eventmail.imap.errors import no
from eventmail.imap.preview import preview
from eventmail.imap.selected import flag_atoms
from eventmail.mime import parse_structure
from eventmail.mime.headers import header_fields
from eventmail.mime.imapform import (
    decode_part,
    extract_section,
    header_subset,
    render_bodystructure,
    render_envelope,
)
from eventmail.proto import events_pb2 as pb
from eventmail.store import Account, Message

# Items that need the parsed structure, and items that need the message bytes.
_STRUCTURE_ITEMS = frozenset({"ENVELOPE", "BODYSTRUCTURE", "BODY", "BINARY", "BINARY.SIZE",
                              "RFC822.HEADER", "RFC822.TEXT"})
_RAW_ITEMS = frozenset({"BINARY", "BINARY.SIZE", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "PREVIEW"})
# RFC 9051 §6.4.5: these set \Seen unless .PEEK (RFC822 and RFC822.TEXT are BODY[] and BODY[TEXT]).
_SEEN_ITEMS = frozenset({"RFC822", "RFC822.TEXT"})

# Rendered ENVELOPE / BODYSTRUCTURE / BODY of recently fetched messages, by blob id (the bytes,
# hence the structure, of a blob never change). A client syncing a mailbox asks for these of
# every message; keeping the renderings spares reparsing them for the next session or command.
_RENDER_CACHE_SIZE = 10_000


K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """At most `size` entries, the least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self.entries.get(key)
        if value is not None:
            self.entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self.entries[key] = value
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()


RENDERED: _Lru[tuple[bytes, str], bytes] = _Lru(_RENDER_CACHE_SIZE)


class HeaderFields:
    """Where a message's top-level header is (raw[start:end]) and where each of its fields is,
    as mime.headers reads them: names and offsets, no values (those are read from the bytes)."""

    __slots__ = ("end", "names", "offsets", "start")

    def __init__(self, start: int, end: int, fields: list[tuple[bytes, bytes, int, int]]) -> None:
        self.start, self.end = start, end
        self.names = tuple(_name(f[0]) for f in fields)
        self.offsets = array("Q", [x for f in fields for x in (f[2], f[3])])  # 16 octets a field

    def fields(self) -> Iterator[tuple[bytes, int, int]]:
        return zip(self.names, self.offsets[0::2], self.offsets[1::2], strict=True)


def _name(name: bytes) -> bytes:
    """One shared object per common field name, so that cached entries do not each hold a copy;
    past _NAMES_SIZE names (a mailbox of made-up field names) new ones are not shared."""
    shared = _NAMES.get(name)
    if shared is None:
        shared = name
        if len(_NAMES) < _NAMES_SIZE:
            _NAMES[name] = name
    return shared


# Field offsets of recently fetched messages' headers, by blob id (a blob's bytes never change).
# Clients ask for a few header fields of every message they list (imaptest: HEADER.FIELDS of up
# to 100 messages a FETCH; Thunderbird, K-9 and Apple Mail do alike): with the offsets kept, such
# a FETCH neither reads the header again nor queries the stored structure for where it ends.
# About 0.9 KiB an entry (corpus messages: 29 fields): 10,000 entries are about 9 MiB.
_HEADER_CACHE_SIZE = 10_000
_NAMES_SIZE = 1_000
_NAMES: dict[bytes, bytes] = {}
HEADERS: _Lru[bytes, HeaderFields] = _Lru(_HEADER_CACHE_SIZE)


@dataclass(frozen=True)
class FetchPlan:
    """What a FETCH command asks of each message, worked out once per command."""

    items: tuple[FetchAttr, ...]
    sets_seen: bool  # some item implicitly sets \Seen (RFC 9051 §6.4.5)
    wants_flags: bool
    reads_bytes: bool  # some item needs the message's bytes: read them off the loop first
    names: tuple[str, ...] = ()  # each item's name in the response (worked out once, not per message)


def make_plan(cmd: Fetch, condstore: bool = False) -> FetchPlan:
    items = list(cmd.items)
    names = {i.name for i in items}
    if cmd.uid and "UID" not in names:
        items.insert(0, FetchAttr("UID"))  # RFC 9051 §6.4.9: UID FETCH always returns the UID
    if "MODSEQ" not in names and (cmd.changedsince is not None or (condstore and "FLAGS" in names)):
        # RFC 7162 §3.1.4.1: CHANGEDSINCE implies MODSEQ; once CONDSTORE is on, flags go with
        # their mod-sequence (§3.1.3 for STORE; Dovecot does the same for FETCH FLAGS)
        items.append(FetchAttr("MODSEQ"))
    sets_seen = any(
        (i.name in ("BODY", "BINARY") and i.section is not None and not i.peek) or i.name in _SEEN_ITEMS
        for i in items
    )
    reads_bytes = any(i.name in _RAW_ITEMS or (i.name in ("BODY", "BINARY") and i.section is not None) for i in items)
    return FetchPlan(tuple(items), sets_seen, "FLAGS" in names, reads_bytes, tuple(i.response_name() for i in items))


class MessageData:
    """One message's bytes and structure, read when an item first needs them."""

    def __init__(self, acct: Account, msg: Message) -> None:
        self.acct = acct
        self.msg = msg
        self._raw: bytes | None = None
        self._structure: pb.MessageStructure | None = None

    async def load(self) -> None:
        """Read and decrypt the bytes off the event loop, before a rendering needs them."""
        if self._raw is None:
            self._raw = await self.acct.read_message(self.msg.blob_id)

    @staticmethod
    async def load_all(datas: Sequence[MessageData]) -> None:
        """`load` for several messages of one account, in one trip off the event loop."""
        todo = [d for d in datas if d._raw is None]
        if todo:
            for d, raw in zip(todo, await todo[0].acct.read_messages([d.msg.blob_id for d in todo]), strict=True):
                d._raw = raw

    def raw(self) -> bytes:
        if self._raw is None:
            # Only when `load` was not awaited (a message expunged since, parsed for its structure).
            self._raw = self.acct.read_message_sync(self.msg.blob_id)
        return self._raw

    def structure(self) -> pb.MessageStructure:
        if self._structure is None:
            st = self.acct.view.structure(self.msg.mailbox_id, self.msg.uid)
            # A message expunged since (still held for this session) has no row: parse its bytes.
            self._structure = st if st is not None else parse_structure(self.raw())
        return self._structure

    def header(self) -> HeaderFields:
        """Where the top-level header and its fields are: from the cache, else read once."""
        blob_id = self.msg.blob_id
        found = HEADERS.get(blob_id)
        if found is not None:
            return found
        body = self.structure().body
        hs, bs = body.header_start, body.body_start
        found = HeaderFields(hs, bs, header_fields(self.raw(), hs, bs))
        HEADERS.put(blob_id, found)
        return found

    def header_section(self, section: Section) -> bytes:
        """BODY[HEADER], BODY[HEADER.FIELDS (...)] or BODY[HEADER.FIELDS.NOT (...)] of the
        message itself (no part number), as extract_section gives them (RFC 9051 §6.4.5)."""
        h = self.header()
        raw = self.raw()
        if section.text == "HEADER":
            return raw[h.start : h.end]
        names = {f.lower().encode("ascii") for f in section.fields}  # the wire allows ASCII only
        return header_subset(raw, h.start, h.end, h.fields(), names, section.text == "HEADER.FIELDS.NOT")

    def rendered(self, what: str, rev2: bool) -> bytes:
        key = (self.msg.blob_id, what + ("2" if rev2 else ""))
        cached = RENDERED.get(key)
        if cached is not None:
            return cached
        st = self.structure()
        if what == "ENVELOPE":
            value = render_envelope(st.envelope)
        else:
            value = render_bodystructure(st.body, what == "BODYSTRUCTURE", imap4rev2=rev2)
        RENDERED.put(key, value)
        return value


def email_object_id(msg: Message) -> str:
    """RFC 8474 §5.1 EMAILID: the same for a message and its copies, never reused in the account."""
    return f"E{msg.email_id}"


def thread_object_id(msg: Message) -> str:
    """RFC 8474 §5.2 THREADID: the email id of the thread's first message (eventmail/mail/threads.py)."""
    return f"T{msg.thread_id}"


def save_date(msg: Message) -> datetime.datetime:
    """RFC 8514 §3: when the message was saved into its mailbox (its event was recorded), in UTC."""
    return datetime.datetime.fromtimestamp(msg.saved_us // 1_000_000, datetime.UTC)


def internal_date(msg: Message) -> datetime.datetime:
    tz = datetime.timezone(datetime.timedelta(minutes=msg.internal_date_tz))
    return datetime.datetime.fromtimestamp(msg.internal_date, tz)


def _partial(data: bytes, partial: tuple[int, int] | None) -> bytes:
    if partial is None:
        return data
    origin, count = partial
    return data[origin : origin + count]  # RFC 9051 §6.4.5: past the end gives an empty string


def find_part(structure: pb.MessageStructure, path: tuple[int, ...]) -> pb.MimePart | None:
    """The MIME part a section number names (RFC 9051 §6.4.5): numbers go into multiparts and
    through message/rfc822 parts; a non-multipart message has only part 1, its body."""
    node: pb.MimePart | None = None
    for n in path:
        if node is None:
            container = structure.body
        elif node.type == b"message" and node.subtype in (b"rfc822", b"global") and node.HasField("message"):
            container = node.message
        elif node.type == b"multipart":
            container = node
        else:
            return None
        if container.type == b"multipart":
            if not 1 <= n <= len(container.parts):
                return None
            node = container.parts[n - 1]
        elif n == 1:
            node = container
        else:
            return None
    return node


def _binary(data: MessageData, section: Section) -> bytes | None:
    """The decoded content of BINARY[part] (RFC 3516 §4.2); None when there is no such part."""
    if not section.part:
        return data.raw()
    part = find_part(data.structure(), section.part)
    if part is None:
        return None
    decoded = decode_part(data.raw(), part)
    if decoded is None:
        raise no("unknown content-transfer-encoding", "UNKNOWN-CTE")  # RFC 3516 §4.3
    return decoded


_TOP_HEADER = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})
_HEADER = Section(text="HEADER")


def _body_section(data: MessageData, section: Section) -> bytes | None:
    if not section.part and section.text in _TOP_HEADER:
        return data.header_section(section)
    if section.part or section.text is not None:
        return extract_section(data.raw(), data.structure(), str(section))
    return data.raw()


def render(
    plan: FetchPlan, seq: int, msg: Message, data: MessageData, *, recent: bool, rev2: bool, seen_now: bool
) -> r.FetchResponse:
    """The FETCH response of one message. `seen_now` when this fetch just set \\Seen: the new
    flags then go with it even if not asked for (RFC 9051 §6.4.5)."""
    out: list[tuple[str, r.Value]] = []
    for item, response_name in zip(plan.items, plan.names, strict=True):
        name = item.name
        value: r.Value
        if name == "UID":
            value = msg.uid
        elif name == "FLAGS":
            value = flag_atoms(msg.flags, recent)
        elif name == "RFC822.SIZE":
            value = msg.size
        elif name == "INTERNALDATE":
            value = internal_date(msg)
        elif name == "MODSEQ":
            value = (msg.modseq,)
        elif name == "EMAILID":
            value = (r.Atom(email_object_id(msg)),)
        elif name == "THREADID":
            value = (r.Atom(thread_object_id(msg)),)
        elif name == "SAVEDATE":  # RFC 8514 §4.1: never NIL here, every message has one
            value = save_date(msg)
        elif name in ("ENVELOPE", "BODYSTRUCTURE") or (name == "BODY" and item.section is None):
            value = r.Raw(data.rendered(name, rev2))
        elif name == "BODY":
            assert item.section is not None
            body = _body_section(data, item.section)
            value = None if body is None else r.Literal(_partial(body, item.partial))
        elif name == "BINARY":
            assert item.section is not None
            body = _binary(data, item.section)
            if body is None:
                value = None
            else:
                piece = _partial(body, item.partial)
                # RFC 3516 §4.2: literal8 only when the octets sent hold NUL
                value = r.Literal(piece, binary=b"\x00" in piece)
        elif name == "BINARY.SIZE":
            assert item.section is not None
            body = _binary(data, item.section)
            value = None if body is None else len(body)
        elif name == "RFC822":
            value = r.Literal(data.raw())
        elif name == "RFC822.HEADER":
            value = r.Literal(data.header_section(_HEADER))
        elif name == "RFC822.TEXT":
            value = r.Literal(extract_section(data.raw(), data.structure(), "TEXT") or b"")
        elif name == "PREVIEW":
            value = preview(data.raw(), data.structure()).encode("utf-8")  # RFC 8970 §3
        else:  # pragma: no cover - the wire only produces the names above
            raise no(f"unsupported fetch item {name}")
        out.append((response_name, value))
    if seen_now and not plan.wants_flags:
        out.append(("FLAGS", flag_atoms(msg.flags, recent)))
    return r.FetchResponse(seq, tuple(out))


__all__ = [
    "HEADERS",
    "RENDERED",
    "FetchPlan",
    "HeaderFields",
    "MessageData",
    "email_object_id",
    "find_part",
    "internal_date",
    "make_plan",
    "render",
    "save_date",
    "thread_object_id",
]
