"""Where mail for a domain goes: MX records, implicit MX, null MX and each host's addresses (RFC 5321 §5.1, RFC 7505)."""

from __future__ import annotations

import asyncio
import ipaddress
import random
from dataclasses import dataclass

import dns.name
import dns.rdatatype

from ..mailauth.domains import DomainError, to_ascii_domain
from ..mailauth.resolver import DnsAnswer, DnsStatus, Resolver

# MX records considered for one domain, after sorting. RFC 5321 sets no bound; a hostile zone can
# publish hundreds. 10 is the bound RFC 7208 §4.6.4 puts on MX lookups, and more than Postfix's
# address limit below can ever use.
MAX_MX_HOSTS = 10
# Addresses one delivery attempt may try: Postfix's smtp_mx_address_limit (default 5).
MAX_ADDRESSES = 5
# Connections one attempt may complete before giving up until the next retry: Postfix's
# smtp_mx_session_limit (default 2). The queue runner applies it; the plan carries it.
MAX_SESSIONS = 2


@dataclass(frozen=True)
class DnsFailure:
    """Why no delivery is possible now: permanent (bounce) or temporary (retry), with an RFC 3463 code."""

    permanent: bool
    code: str
    reason: str


@dataclass(frozen=True)
class MxHost:
    """One mail exchanger, by name (lower-case A-labels, no trailing dot)."""

    name: str
    preference: int
    implicit: bool = False  # RFC 5321 §5.1: no MX, the domain itself is the host


@dataclass(frozen=True)
class MxResult:
    """The domain's exchangers in the order to try them, or why there are none."""

    domain: str
    hosts: tuple[MxHost, ...] = ()
    # RFC 7672 §2.2.1: the MX RRset (or, for an implicit MX, the denial of it) validated.
    secure: bool = False
    failure: DnsFailure | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostAddresses:
    """A host's usable addresses, IPv6 and IPv4 interleaved, and whether the lookups validated."""

    host: str
    addresses: tuple[str, ...] = ()
    secure: bool = False  # every A/AAAA lookup that answered had the AD bit (RFC 7672 §2.2.2)
    canonical_name: str = ""  # the CNAME target, when the host name is an alias
    failure: DnsFailure | None = None
    notes: tuple[str, ...] = ()


def ascii_domain(domain: str) -> str | DnsFailure:
    """The domain as lower-case A-labels (RFC 5890), or a permanent failure for a name that is none."""
    try:
        text = to_ascii_domain(domain.strip().rstrip("."))
    except DomainError as exc:
        return DnsFailure(True, "5.1.2", f"bad destination domain {domain!r}: {exc}")
    if not text:
        return DnsFailure(True, "5.1.2", "empty destination domain")
    return text


def refused_host(name: str) -> str:
    """Why an MX target must not be used, or "" when it may.

    An exchange must be a host name (RFC 5321 §5.1, RFC 1035 §3.3.9), so an IP-address-looking
    target is a misconfiguration or an attempt to steer us; "localhost" and names under it are
    the local machine (RFC 6761 §6.3).
    """
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return f"MX target {name} is an IP address, not a host name"
    parts = name.lower().split(".")
    if parts and parts[-1] == "localhost":
        return f"MX target {name} is localhost (RFC 6761 §6.3)"
    return ""


def _temporary(answer: DnsAnswer, what: str) -> DnsFailure:
    # RFC 3463 4.4.3: directory server failure.
    return DnsFailure(False, "4.4.3", f"{what} lookup failed: {answer.status.value} {answer.error}".rstrip())


async def lookup_mx(
    resolver: Resolver, domain: str, rng: random.Random, self_names: frozenset[str] = frozenset()
) -> MxResult:
    """The exchangers for `domain` in delivery order (RFC 5321 §5.1).

    `rng` orders equal preferences (injected so tests are deterministic); `self_names` are this
    server's own host names, for RFC 5321 §5.1's rule against delivering to ourselves.
    """
    name = ascii_domain(domain)
    if isinstance(name, DnsFailure):
        return MxResult(domain, failure=name)
    answer = await resolver.query(name, "MX")
    if answer.status is DnsStatus.NXDOMAIN:
        return MxResult(name, failure=DnsFailure(True, "5.1.2", f"domain {name} does not exist"))
    if answer.status is DnsStatus.TEMPERROR or answer.status is DnsStatus.PERMERROR:
        # Broken data (a CNAME loop, an oversized set) is retried too: zones get fixed, and the
        # queue's expiry bounds the retries.
        return MxResult(name, failure=_temporary(answer, f"MX {name}"))
    if answer.status is DnsStatus.NODATA:
        # RFC 5321 §5.1: no MX records, the domain is its own implicit MX (its A/AAAA).
        return MxResult(
            name,
            (MxHost(name, 0, implicit=True),),
            secure=answer.authenticated,
            notes=(f"no MX for {name}: implicit MX",),
        )
    records: list[tuple[int, str]] = []
    null_mx = 0
    for rdata in answer.rdatas:
        if rdata.rdtype != dns.rdatatype.MX:
            continue
        exchange = rdata.exchange  # type: ignore[attr-defined]
        if exchange == dns.name.root:
            null_mx += 1
            continue
        records.append((int(rdata.preference), exchange.to_text(omit_final_dot=True).lower()))  # type: ignore[attr-defined]
    if null_mx and not records:
        # RFC 7505 §3: a single MX "0 ." says the domain accepts no mail; §4.1: fail at once,
        # with 5.1.10 (RFC 7505 §4.2 / RFC 3463 as updated).
        return MxResult(name, failure=DnsFailure(True, "5.1.10", f"domain {name} accepts no mail (null MX)"))
    notes: list[str] = []
    if null_mx:
        # RFC 7505 §3: a null MX MUST NOT be mixed with other MX records; the others still
        # name real hosts, so use them and ignore the empty one.
        notes.append(f"null MX mixed with other MX records for {name}: ignored")
    hosts = _order(records, rng, notes)
    own = {n.lower().rstrip(".") for n in self_names}
    mine = [h.preference for h in hosts if h.name in own]
    if mine:
        # RFC 5321 §5.1: when we are one of the exchangers, only hosts more preferred than us
        # may be used; none left means the mail would loop back to us.
        hosts = [h for h in hosts if h.preference < min(mine)]
        if not hosts:
            return MxResult(
                name, failure=DnsFailure(True, "5.4.6", f"mail for {name} loops back to this server")
            )
        notes.append(f"this server is an MX for {name}: only more preferred hosts are used")
    if not hosts:
        return MxResult(
            name, failure=DnsFailure(True, "5.4.4", f"no usable MX host for {name}"), notes=tuple(notes)
        )
    if len(hosts) > MAX_MX_HOSTS:
        notes.append(f"{len(hosts)} MX hosts, only the first {MAX_MX_HOSTS} considered")
        hosts = hosts[:MAX_MX_HOSTS]
    return MxResult(name, tuple(hosts), secure=answer.authenticated, notes=tuple(notes))


def _order(records: list[tuple[int, str]], rng: random.Random, notes: list[str]) -> list[MxHost]:
    """Sort by preference, shuffle equal preferences (RFC 5321 §5.1), drop refused and repeated names."""
    by_preference: dict[int, list[str]] = {}
    for preference, host in sorted(records):
        by_preference.setdefault(preference, []).append(host)
    hosts: list[MxHost] = []
    seen: set[str] = set()
    for preference in sorted(by_preference):
        group = by_preference[preference]
        # RFC 5321 §5.1: equal preferences are tried in random order, to spread the load.
        rng.shuffle(group)
        for host in group:
            why = refused_host(host)
            if why:
                notes.append(why)
                continue
            if host in seen:
                continue  # the same host at a worse preference adds nothing
            seen.add(host)
            hosts.append(MxHost(host, preference))
    return hosts


def usable_address(text: str) -> bool:
    """Whether an A/AAAA value can be a mail server: not unspecified, multicast or reserved.

    Loopback stays usable: tests and single-machine setups use it, and the SMTP client detects a
    loop to itself by its greeting, as Postfix does ("loops back to myself").
    """
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if ip.is_unspecified or ip.is_multicast:
        return False
    return not (isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"))


def interleave(v6: tuple[str, ...], v4: tuple[str, ...]) -> tuple[str, ...]:
    """IPv6 first, then alternate families (RFC 8305 §4): a broken IPv6 path costs one address
    of the attempt's budget, not all of it (Postfix's smtp_balance_inet_protocols has the same aim)."""
    out: list[str] = []
    for i in range(max(len(v6), len(v4))):
        if i < len(v6):
            out.append(v6[i])
        if i < len(v4):
            out.append(v4[i])
    return tuple(out)


def rotate(addresses: tuple[str, ...], attempt: int) -> tuple[str, ...]:
    """Start at a different address on each retry, so one dead address does not hold every attempt."""
    if not addresses:
        return addresses
    k = attempt % len(addresses)
    return addresses[k:] + addresses[:k]


async def lookup_addresses(resolver: Resolver, host: str) -> HostAddresses:
    """AAAA and A of one host (CNAMEs followed by the resolver), interleaved, with their DNSSEC state."""
    v6_answer, v4_answer = await asyncio.gather(resolver.query(host, "AAAA"), resolver.query(host, "A"))
    answers = (v6_answer, v4_answer)
    notes: list[str] = []
    answered = [a for a in answers if a.status in (DnsStatus.OK, DnsStatus.NODATA)]
    failed = [a for a in answers if a.failed]
    # Sorted, so that `rotate` by attempt number really starts each retry elsewhere: resolvers
    # hand out round-robin orders that would make the rotation meaningless.
    v6 = tuple(sorted((a for a in v6_answer.addresses() if usable_address(a)), key=ipaddress.ip_address))
    v4 = tuple(sorted((a for a in v4_answer.addresses() if usable_address(a)), key=ipaddress.ip_address))
    dropped = len(v6_answer.addresses()) + len(v4_answer.addresses()) - len(v6) - len(v4)
    if dropped:
        notes.append(f"{host}: {dropped} unusable address(es) dropped")
    addresses = interleave(v6, v4)
    canonical = next((a.canonical_name for a in answers if a.canonical_name), "")
    # A lookup that failed while the other answered leaves the host usable with what we have: the
    # TLSA lookup (keyed by the name, not the address) still decides DANE.
    secure = bool(answered) and all(a.authenticated for a in answered)
    if addresses:
        for a in failed:
            notes.append(f"{host} {a.rdtype}: {a.status.value} {a.error}".rstrip())
        return HostAddresses(host, addresses, secure, canonical, notes=tuple(notes))
    if failed:
        return HostAddresses(
            host, secure=False, failure=_temporary(failed[0], f"{failed[0].rdtype} {host}"), notes=tuple(notes)
        )
    if all(a.status is DnsStatus.NXDOMAIN for a in answers):
        reason = f"MX host {host} does not exist"
    else:
        reason = f"MX host {host} has no usable address"
    # RFC 3463 5.4.4: unable to route.
    return HostAddresses(host, secure=secure, failure=DnsFailure(True, "5.4.4", reason), notes=tuple(notes))
