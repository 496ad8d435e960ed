"""SEARCH: whether a message matches a search key (RFC 9051 §6.4.4), reading its text only when a key needs it."""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Callable
from dataclasses import dataclass, field

from eventmail.imap import commands as c
from eventmail.imap.fetch import MessageData, email_object_id, save_date, thread_object_id
from eventmail.imap.text import part_text
from eventmail.mime.addresses import addr_spec
from eventmail.mime.headers import MAX_HEADER_BYTES, header_fields, unfold
from eventmail.mime.structure import MAX_MIME_DEPTH
from eventmail.mime.words import decode_words
from eventmail.proto import events_pb2 as pb
from eventmail.store import Message


@dataclass
class Candidate:
    """One message being searched, with its text worked out at most once."""

    msg: Message
    seq: int
    recent: bool
    data: MessageData
    _headers: list[tuple[str, str]] | None = field(default=None, repr=False)
    _body: str | None = field(default=None, repr=False)

    def headers(self) -> list[tuple[str, str]]:
        """(upper-case name, decoded and case-folded value) of the top-level header fields."""
        if self._headers is None:
            raw = self.data.raw()
            body = self.data.structure().body
            # The window ENVELOPE is read from (MAX_HEADER_BYTES), so SEARCH FROM sees the same From.
            end = min(body.body_start, body.header_start + MAX_HEADER_BYTES)
            self._headers = [
                (name.decode("latin-1").upper(), decode_words(unfold(value)).casefold())
                for name, value, _s, _e in header_fields(raw, body.header_start, end)
            ]
        return self._headers

    def body(self) -> str:
        """The text of the body's text parts, transfer- and charset-decoded, case-folded."""
        if self._body is None:
            raw = self.data.raw()
            chunks: list[str] = []
            _part_text(raw, self.data.structure().body, chunks, top=True)
            self._body = "\n".join(chunks).casefold()
        return self._body


def _part_text(raw: bytes, part: pb.MimePart, out: list[str], top: bool = False, depth: int = 0) -> None:
    if depth >= MAX_MIME_DEPTH and (part.type == b"multipart" or part.HasField("message")):
        return  # deeper than the parser ever descends (a structure from elsewhere): no text
    if part.type == b"multipart":
        for child in part.parts:
            _part_text(raw, child, out, depth=depth + 1)
        return
    if part.type == b"message" and part.HasField("message"):
        inner = part.message
        out.extend(decode_words(unfold(v)) for _n, v, _s, _e in header_fields(raw, inner.header_start, inner.body_start))
        _part_text(raw, inner, out, depth=depth + 1)
        return
    if part.type in (b"text", b""):
        out.append(part_text(raw, part))


_ADDRESS_KEYS = {"FROM": "FROM", "TO": "TO", "CC": "CC", "BCC": "BCC", "SUBJECT": "SUBJECT"}


_ENVELOPE_FIELDS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc"}


def _address_has(cand: Candidate, where: str, needle: str) -> bool:
    """FROM/TO/CC/BCC also match the addresses as ENVELOPE parsed them (eventmail/mime/addresses.py,
    recorded at delivery): `name <local@domain>` with comments and folding gone, so
    `<user (c)@ (c) domain.org>` is found by `user@domain.org` as its ENVELOPE shows it."""
    env = cand.data.structure().envelope
    for a in getattr(env, _ENVELOPE_FIELDS[where]):
        if a.group_end or not a.host:
            continue  # group markers carry no address
        name = decode_words(a.name) if a.name else ""
        text = f"{name} <{addr_spec(a)}>" if name else addr_spec(a)
        if needle in text.casefold():
            return True
    return False


def _header_has(cand: Candidate, name: str, needle: str) -> bool:
    for field_name, value in cand.headers():
        if field_name == name and needle in value:
            return True
    return False


def _sent_date(cand: Candidate) -> datetime.date:
    """The Date: header's calendar date in its own zone (RFC 9051 §6.4.4: "disregarding time and
    timezone"); the internal date when the header is missing or unreadable."""
    env = cand.data.structure().envelope
    if env.has_date:
        parsed = email.utils.parsedate_tz(env.date.decode("latin-1"))
        if parsed is not None:
            try:
                return datetime.date(parsed[0], parsed[1], parsed[2])
            except ValueError:
                pass
    return _internal_date(cand.msg)


def _internal_date(msg: Message) -> datetime.date:
    tz = datetime.timezone(datetime.timedelta(minutes=msg.internal_date_tz))
    return datetime.datetime.fromtimestamp(msg.internal_date, tz).date()


def _compare(which: str, have: datetime.date, want: datetime.date) -> bool:
    if which.endswith("BEFORE"):
        return have < want
    if which.endswith("ON"):
        return have == want
    return have >= want  # SINCE


@dataclass
class SearchContext:
    """What keys need besides the message: the UID sets `n` and `$` name, and the time."""

    resolve: Callable[[c.SequenceSet, bool], set[int]]
    now: float
    _sets: dict[int, set[int]] = field(default_factory=dict)

    def uids(self, key: c.SearchSeq) -> set[int]:
        got = self._sets.get(id(key))
        if got is None:
            got = self._sets[id(key)] = self.resolve(key.set, key.uid)
        return got


def any_key(key: c.SearchKey, test: Callable[[c.SearchKey], bool]) -> bool:
    """Whether `test` holds for any key in the tree under NOT, OR and AND."""
    if test(key):
        return True
    if isinstance(key, c.SearchNot):
        return any_key(key.key, test)
    if isinstance(key, c.SearchOr):
        return any_key(key.left, test) or any_key(key.right, test)
    if isinstance(key, c.SearchAnd):
        return any(any_key(k, test) for k in key.keys)
    return False


def needs_text(key: c.SearchKey) -> bool:
    """Whether the search reads message bytes (text, headers, or the Date header's SENT* keys)."""
    return any_key(key, lambda k: isinstance(k, c.SearchText | c.SearchHeader)
                   or (isinstance(k, c.SearchDate) and k.which.startswith("SENT")))


def uses_modseq(key: c.SearchKey) -> bool:
    """RFC 7162 §3.1.5: a SEARCH with a MODSEQ key reports the highest mod-sequence it found."""
    return any_key(key, lambda k: isinstance(k, c.SearchModseq))


def matches(key: c.SearchKey, cand: Candidate, ctx: SearchContext) -> bool:
    msg = cand.msg
    if isinstance(key, c.SearchAll):
        return True
    if isinstance(key, c.SearchFlag):
        if key.flag == "\\Recent":
            have = cand.recent
        else:
            want = key.flag.upper()
            have = any(f.upper() == want for f in msg.flags)
        return have == key.present
    if isinstance(key, c.SearchAnd):
        # cheap keys first: flags and numbers decide most messages without reading them
        return all(matches(k, cand, ctx) for k in sorted(key.keys, key=needs_text))
    if isinstance(key, c.SearchOr):
        return matches(key.left, cand, ctx) or matches(key.right, cand, ctx)
    if isinstance(key, c.SearchNot):
        return not matches(key.key, cand, ctx)
    if isinstance(key, c.SearchSeq):
        return msg.uid in ctx.uids(key)
    if isinstance(key, c.SearchSize):
        return msg.size > key.size if key.larger else msg.size < key.size
    if isinstance(key, c.SearchModseq):
        return msg.modseq >= key.modseq
    if isinstance(key, c.SearchAge):  # RFC 5032 §3: OLDER / YOUNGER in seconds
        age = ctx.now - msg.internal_date
        return age >= key.seconds if key.older else age <= key.seconds
    if isinstance(key, c.SearchObjectId):  # RFC 8474 §6
        object_id = email_object_id(msg) if key.which == "EMAILID" else thread_object_id(msg)
        return object_id == key.object_id
    if isinstance(key, c.SearchDate):
        if key.which.startswith("SAVED"):  # RFC 8514 §4.2, the date in UTC as FETCH SAVEDATE shows it
            return _compare(key.which, save_date(msg).date(), key.date)
        if key.which.startswith("SENT"):
            return _compare(key.which, _sent_date(cand), key.date)
        return _compare(key.which, _internal_date(msg), key.date)
    if isinstance(key, c.SearchHeader):
        needle = key.value.casefold()
        if not needle:
            return any(name == key.field for name, _v in cand.headers())  # RFC 9051: empty matches any
        return _header_has(cand, key.field, needle)
    if isinstance(key, c.SearchText):
        needle = key.value.casefold()
        if key.where in _ENVELOPE_FIELDS:
            return _header_has(cand, key.where, needle) or _address_has(cand, key.where, needle)
        if key.where in _ADDRESS_KEYS:
            return _header_has(cand, _ADDRESS_KEYS[key.where], needle)
        if key.where == "BODY":
            return needle in cand.body()
        # TEXT: header and body
        return any(needle in v or needle in n.casefold() for n, v in cand.headers()) or needle in cand.body()
    raise AssertionError(f"unknown search key {key!r}")  # pragma: no cover


__all__ = ["Candidate", "SearchContext", "decode_words", "matches", "needs_text", "uses_modseq"]
