"""RFC 5322 address lists over raw bytes into IMAP ENVELOPE addresses, and the one definition of a message's author."""

from __future__ import annotations

import re
from dataclasses import dataclass

from eventmail.proto import events_pb2

from .headers import MAX_HEADER_BYTES, comment_end, header_end, named_fields, unfold, unquote

# Placeholders for a missing local part or domain. An empty host with a mailbox would read as a
# group start and an all-empty address as a group end (RFC 3501 §7.4.2), so a broken address
# must not leave them empty. These are the names Dovecot uses, which clients already show.
MISSING_MAILBOX = b"MISSING_MAILBOX"
MISSING_DOMAIN = b"MISSING_DOMAIN"

# One lexical token of RFC 5322 §3.2: WSP, quoted-string (may be unterminated), domain literal,
# comment start, a special, an atom (lenient: any run of non-specials, 8-bit included, RFC 6532).
_TOKEN_RE = re.compile(
    rb'([ \t\r\n]+)|"((?:[^"\\]|\\.)*)"?|(\[(?:[^\]\\]|\\.)*\]?)|(\()|([.,:;<>@])|([^ \t\r\n"(),.:;<>@\[\]\\]+)|(.)',
    re.S,
)

# Token kinds.
_WORD, _QUOTED, _LITERAL, _COMMENT, _SPECIAL = range(5)

_Token = tuple[int, bytes, bool]  # (kind, value, preceded by white space or a comment)


def _tokens(v: bytes) -> list[_Token]:
    out: list[_Token] = []
    i = 0
    n = len(v)
    space = False
    match = _TOKEN_RE.match
    while i < n:
        m = match(v, i)
        if m is None:  # cannot happen: the last alternative takes any byte
            break
        kind = m.lastindex
        if kind == 1:
            space = True
            i = m.end()
            continue
        if kind == 4:
            end = comment_end(v, i)
            body = v[i + 1 : end - 1] if v[end - 1 : end] == b")" else v[i + 1 : end]
            out.append((_COMMENT, body, space))
            space = True
            i = end
            continue
        if kind == 2:
            out.append((_QUOTED, unquote(m.group(2)), space))
        elif kind == 3:
            out.append((_LITERAL, m.group(3), space))
        elif kind == 5:
            out.append((_SPECIAL, m.group(5), space))
        elif kind == 6:
            out.append((_WORD, m.group(6), space))
        else:  # a stray backslash or bracket: keep it as part of a word
            out.append((_WORD, m.group(7), space))
        space = False
        i = m.end()
    return out


def _phrase(toks: list[_Token]) -> bytes:
    """A display name or group name: words joined by one space where the source had WSP.

    RFC 3501 §9 (addr-name): the phrase "after removing [RFC-2822] quoting"; encoded words stay.
    """
    out: list[bytes] = []
    for kind, value, space in toks:
        if kind == _COMMENT or not value:
            continue
        if out and space:
            out.append(b" ")
        out.append(value)
    return b"".join(out)


def _joined(toks: list[_Token]) -> bytes:
    """A local part or domain: tokens joined without the CFWS between them (RFC 5322 §4.4)."""
    return b"".join(value for kind, value, _ in toks if kind != _COMMENT)


def _address(name: bytes, adl: bytes, spec: list[_Token]) -> events_pb2.Address:
    at = -1
    for i, (kind, value, _) in enumerate(spec):
        if kind == _SPECIAL and value == b"@":
            at = i
    if at < 0:
        local, host = _joined(spec), b""
    else:
        local, host = _joined(spec[:at]), _joined(spec[at + 1 :])
    return events_pb2.Address(
        name=name, adl=adl, mailbox=local or MISSING_MAILBOX, host=host or MISSING_DOMAIN
    )


def _mailbox(phrase: list[_Token], angle: list[_Token] | None) -> events_pb2.Address | None:
    comment = b""
    for kind, value, _ in phrase:
        if kind == _COMMENT:
            comment = value  # Dovecot also takes the last comment as the name of a bare addr-spec
    if angle is None:
        words = [t for t in phrase if t[0] != _COMMENT]
        if not words:
            return None  # RFC 5322 §4.4 obs-addr-list: empty list elements are ignored
        return _address(comment.strip(), b"", words)
    name = _phrase(phrase)
    adl = b""
    spec = [t for t in angle if t[0] != _COMMENT]
    if spec and spec[0][0] == _SPECIAL and spec[0][1] == b"@":
        # RFC 5322 §4.4 obs-route: "@a,@b:" before the addr-spec is the source route (adl)
        for i, (kind, value, _) in enumerate(spec):
            if kind == _SPECIAL and value == b":":
                adl = _joined(spec[:i])
                spec = spec[i + 1 :]
                break
    return _address(name or comment.strip(), adl, spec)


def parse_address_list(value: bytes) -> list[events_pb2.Address]:
    """The address-list of an unfolded header value, with groups, per RFC 5322 §3.4.

    Lenient: never raises. Groups become a start marker (mailbox = group name, host empty) and an
    end marker (all empty), as RFC 3501 §7.4.2 renders them.
    """
    out: list[events_pb2.Address] = []
    phrase: list[_Token] = []
    angle: list[_Token] | None = None
    in_angle = False
    in_group = False

    def flush() -> None:
        nonlocal phrase, angle
        addr = _mailbox(phrase, angle)
        if addr is not None:
            out.append(addr)
        phrase = []
        angle = None

    for tok in _tokens(value):
        kind, val, _ = tok
        if in_angle:
            if kind == _SPECIAL and val == b">":
                in_angle = False
            elif angle is not None:
                angle.append(tok)
            continue
        if kind != _SPECIAL:
            if angle is None or kind == _COMMENT:
                phrase.append(tok)
            continue  # words after "<...>" are junk
        if val == b"<":
            if angle is None:
                angle = []
                in_angle = True
            continue
        if val == b",":
            flush()
        elif val == b":" and angle is None:
            # RFC 5322 §3.4 group. A nameless or nested one has no place in the IMAP form: only
            # its members are kept.
            name = _phrase(phrase)
            if name and not in_group:
                out.append(events_pb2.Address(mailbox=name))
                in_group = True
            phrase = []
        elif val == b";":
            flush()
            if in_group:
                out.append(events_pb2.Address(group_end=True))
                in_group = False
        elif angle is None:
            phrase.append(tok)  # "." and "@" of an addr-spec; a stray ">"
    flush()
    if in_group:
        out.append(events_pb2.Address(group_end=True))  # a group without its ";"
    return out


# ---------------------------------------------------------------- the author


def usable(address: events_pb2.Address) -> bool:
    """Whether an address of a list is a mailbox with a local part and a domain (not a group
    marker, not a placeholder for a missing part)."""
    return (
        not address.group_end and bool(address.host) and address.mailbox != MISSING_MAILBOX
        and address.host != MISSING_DOMAIN
    )


def addr_spec(address: events_pb2.Address) -> str:
    """local@domain of an address, as text (RFC 6532: 8-bit read as UTF-8)."""
    return (address.mailbox + b"@" + address.host).decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Author:
    """Who wrote a message (RFC 5322 §3.6.2 From), as every part of the server reads it.

    The author is unambiguous when the header has exactly one From field (RFC 5322 §3.6 allows
    one; several are only the obsolete syntax of §4.5, with no meaning given) whose address list
    is one or more mailboxes with a local part and a domain. Then `addresses` is exactly what IMAP
    ENVELOPE serves as its from, what SEARCH FROM matches, what the submission check allows and
    what DMARC aligns with.
    """

    # The addresses of the first From field: what ENVELOPE serves (RFC 3501 §7.4.2 takes the first).
    addresses: tuple[events_pb2.Address, ...]
    # The addresses of every From field (DMARC checks them all, so adding one cannot dodge a policy).
    every_address: tuple[events_pb2.Address, ...]
    fields: int  # how many From fields the header has
    space_before_colon: bool  # some From field is written "From :" (RFC 5322 §4.5 obs-optional)
    problem: str  # why the author is ambiguous; "" when it is not

    @property
    def ambiguous(self) -> bool:
        return bool(self.problem)

    def mailboxes(self) -> list[str]:
        """local@domain of each address of the (first) From field."""
        return [addr_spec(a) for a in self.addresses if usable(a)]


def read_author(raw: bytes, start: int = 0, end: int | None = None, limit: int = MAX_HEADER_BYTES) -> Author:
    """The author of the message whose top-level header is raw[start:end] (by default: found here).

    Reads the same window of the header as the stored MIME structure (`limit` bytes), so a From
    field past it is seen by neither.
    """
    if end is None:
        end = header_end(raw) if start == 0 else len(raw)
    froms = named_fields(raw, start, min(end, start + limit), b"from")
    lists = [tuple(parse_address_list(unfold(f.value))) for f in froms]
    first = lists[0] if lists else ()
    every = tuple(a for lst in lists for a in lst)
    if not froms:
        problem = "no From field"
    elif len(froms) > 1:
        problem = f"{len(froms)} From fields (RFC 5322 §3.6 allows one)"
    elif not first:
        problem = "no address in From"
    elif not all(usable(a) for a in first):
        problem = "an address in From without a local part or domain, or a group"
    else:
        problem = ""
    return Author(first, every, len(froms), any(f.space_before_colon for f in froms), problem)
