"""What the junk projections learn from a message, extracted once when it enters the log (JunkFeatures)."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable

from ..cputime import stage
from ..mailauth.domains import DomainError, to_ascii_domain
from ..mailauth.psl import organizational_domain
from ..mailauth.verdict import AuthVerdict
from ..mime.addresses import Author, addr_spec, parse_address_list, read_author, usable
from ..mime.headers import first_value
from ..mime.parsed import ParsedMessage, parse_message
from ..proto import events_pb2 as pb
from .tokenize import tokenize

# The subnets of the reputation index, narrow to wide, as Mox has them: a /32 is one server,
# a /26 a small hosting block, a /21 a provider's range. IPv6: /64 is one site (RFC 6177), /48 a
# customer allocation, /32 a provider.
IPV4_PREFIXES = (32, 26, 21)
IPV6_PREFIXES = (64, 48, 32)

_LIST_ID = re.compile(r"<([^>]+)>")


def ip_nets(remote_ip: str) -> list[str]:
    """The sending address masked to each prefix, narrow to wide (none for a bad address)."""
    return list(_ip_nets(remote_ip))


@functools.lru_cache(maxsize=4096)
def _ip_nets(remote_ip: str) -> tuple[str, ...]:
    """Cached: `ipaddress` builds several objects per prefix, and a sending server's address
    comes back message after message."""
    try:
        ip = ipaddress.ip_address(remote_ip)
    except ValueError:
        return ()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefixes = IPV4_PREFIXES if ip.version == 4 else IPV6_PREFIXES
    return tuple(str(ipaddress.ip_network(f"{ip}/{p}", strict=False)) for p in prefixes)


def _domain(text: str) -> str:
    try:
        return to_ascii_domain(text)
    except DomainError:
        return ""


def normalize(address: str) -> str:
    """Lower-cased address with an A-label domain ("" when it is not an address)."""
    local, at, domain = address.strip().rpartition("@")
    d = _domain(domain) if at and local else ""
    return f"{local.lower()}@{d}" if d else ""


def from_address(message: bytes, author: Author | None = None) -> str:
    """The first address of the author (the first From field, as ENVELOPE serves it), normalized
    ("" when there is none). `author` is the message's, when its parse already read it."""
    for address in (author if author is not None else read_author(message)).addresses:
        a = normalize(addr_spec(address)) if usable(address) else ""
        if a:
            return a
    return ""


def header_value(message: bytes, name: str) -> str:
    """The unfolded value of the first header field `name` ("" when absent)."""
    value = first_value(message, name.lower().encode())
    return value.decode("utf-8", "replace") if value is not None else ""


def _addresses(message: bytes, names: Iterable[str]) -> list[str]:
    """local@domain of every address in the first field of each of `names`."""
    out: list[str] = []
    for name in names:
        value = first_value(message, name.encode())
        if value:
            out.extend(addr_spec(a) for a in parse_address_list(value) if usable(a))
    return out


def list_id(message: bytes) -> str:
    """RFC 2919 List-Id: the identifier between angle brackets, lower-cased."""
    m = _LIST_ID.search(header_value(message, "List-Id"))
    return m.group(1).strip().lower() if m else ""


def named_addresses(message: bytes) -> tuple[str, ...]:
    """The addresses To and Cc name, normalized: pure, so SMTP's analysis process reads them
    (eventmail.smtp.analysis) and the junk plan on the event loop only compares."""
    return tuple(normalize(a) for a in _addresses(message, ("to", "cc")))


def names_recipient(message: bytes, recipients: Iterable[str], named: Iterable[str] | None = None) -> bool:
    """Whether To or Cc names one of `recipients` (mail that does not is often bulk); `named` is
    `named_addresses(message)` when the caller has it."""
    wanted = {normalize(r) for r in recipients}
    return any(a in wanted for a in (named_addresses(message) if named is None else named))


def org(domain: str) -> str:
    return organizational_domain(domain) if domain else ""


def content_features(message: bytes, structure: pb.MessageStructure | None = None,
                     author: Author | None = None, tokens: list[str] | None = None) -> pb.JunkFeatures:
    """What the message itself says: its tokens, its author (not yet verified) and List-Id. Pure
    and CPU-bound: SMTP delivery computes it in its analysis process (eventmail.smtp.analysis),
    from the one parse (`structure`, `author`) of the message. `tokens`: its `tokenize`, when the
    caller made it (and keeps it: reading the words back out of the message makes each string again)."""
    f = pb.JunkFeatures(words=tokenize(message, structure) if tokens is None else tokens)
    addr = from_address(message, author)
    if addr:
        f.from_address = addr
        f.from_domain = addr.rpartition("@")[2]
        f.from_org_domain = org(f.from_domain)
    f.list_id = list_id(message)
    return f


def analyze_message(message: bytes) -> tuple[ParsedMessage, pb.JunkFeatures]:
    """The message parsed once and its content features: the pure, CPU-bound work of a message
    coming in (SMTP delivery's analysis processes, IMAP APPEND). Raises MimeTooDeep as
    parse_message does."""
    parsed, features, _tokens = analyze_message_tokens(message)
    return parsed, features


def analyze_message_tokens(message: bytes) -> tuple[ParsedMessage, pb.JunkFeatures, list[str]]:
    """`analyze_message`, and the features' words as the list `tokenize` made."""
    with stage("parse"):
        parsed = parse_message(message)
    with stage("junk features"):
        tokens = tokenize(message, parsed.structure)
        features = content_features(message, parsed.structure, parsed.author, tokens)
    return parsed, features, tokens


def with_identities(
    content: pb.JunkFeatures,
    *,
    auth: AuthVerdict | None = None,
    remote_ip: str = "",
    sent_to: Iterable[str] = (),
    forwarder: bool = False,
    in_place: bool = False,
) -> pb.JunkFeatures:
    """`content` and the sender identities that were verified: a copy, or with `in_place` (the
    caller owns `content` and keeps no other use of it) `content` itself, its up to MAX_TOKENS
    words not copied.

    Only what was verified counts as an identity: the From address and domain when DMARC
    passed, DKIM domains of passing signatures, the SPF domain when SPF passed. For mail from
    a configured forwarder the forwarder's IP and SPF domain are left out (they say nothing
    about the author, and the forwarder must not gather reputation from what it forwards).
    """
    if in_place:
        f = content
    else:
        f = pb.JunkFeatures()
        f.CopyFrom(content)
    if auth is not None:
        f.from_validated = (auth.dmarc.result == "pass" and bool(f.from_address)
                            and auth.dmarc.from_domain == f.from_domain)
        f.dkim_domains.extend(sorted({s.domain.lower() for s in auth.dkim if s.passed and s.domain}))
        if auth.spf.result == "pass" and not forwarder:
            f.spf_domain = auth.spf.domain.lower()
    if remote_ip and not forwarder:
        f.ip_nets.extend(ip_nets(remote_ip))
    f.sent_to.extend(sorted({a for a in (normalize(r) for r in sent_to) if a}))
    return f


def message_features(
    message: bytes,
    *,
    structure: pb.MessageStructure | None = None,
    auth: AuthVerdict | None = None,
    remote_ip: str = "",
    sent_to: Iterable[str] = (),
    forwarder: bool = False,
    content: pb.JunkFeatures | None = None,
) -> pb.JunkFeatures:
    """Tokens and sender identities of a message: `content_features` (or `content`, when the
    message's analysis already gave them) then `with_identities`."""
    if content is None:
        content = content_features(message, structure)
    return with_identities(content, auth=auth, remote_ip=remote_ip, sent_to=sent_to, forwarder=forwarder)


def origin_features(message: bytes, origin: pb.Origin | None, sent_to: Iterable[str] = (),
                    content: pb.JunkFeatures | None = None) -> pb.JunkFeatures:
    """Features of a message stored without them (hand-off from a backup MX, restore): the sender's
    verified identities come back from the authentication verdict its delivery event recorded."""
    auth: AuthVerdict | None = None
    remote_ip = ""
    if origin is not None and origin.kind == "smtp" and origin.verdict:
        try:
            auth = AuthVerdict.from_json(origin.verdict)
        except (ValueError, TypeError, KeyError):
            auth = None
        remote_ip = origin.remote_ip
    return message_features(message, auth=auth, remote_ip=remote_ip, sent_to=sent_to, content=content)


def sent_recipients(message: bytes, origin: pb.Origin | None) -> list[str]:
    """The addresses a Sent copy went to: the SMTP recipients of a submission, else To, Cc and Bcc."""
    if origin is not None and origin.kind == "submission" and origin.rcpt_to:
        return list(origin.rcpt_to)
    return _addresses(message, ("to", "cc", "bcc"))


def stored_features(message: bytes, origin: pb.Origin | None, special_use: int,
                    content: pb.JunkFeatures | None = None) -> pb.JunkFeatures:
    """What the junk projections learn from a message stored without features (APPEND, import,
    hand-off): a Sent copy also records whom the user wrote to. `content`: the message's
    content features when its analysis already computed them (IMAP APPEND), not tokenized again."""
    sent_to = sent_recipients(message, origin) if special_use == pb.SPECIAL_USE_SENT else ()
    return origin_features(message, origin, sent_to, content)
