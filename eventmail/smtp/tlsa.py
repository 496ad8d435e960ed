"""TLSA records of a host from a validating resolver, sorted into usable or not (RFC 7672 §2.2, §3.1.3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import dns.rdatatype

from ..mailauth.resolver import Resolver
from .tlspolicy import Tlsa, is_usable

DaneState = Literal["dane", "unusable", "none", "insecure", "failed"]



@dataclass(frozen=True)
class TlsaLookup:
    """What DANE says about one MX host.

    dane: usable records, authentication required. unusable: secure TLSA records exist but none can be
    used (opportunistic TLS). none: a validated denial, no TLSA. insecure: the answer did not validate,
    so it is ignored (RFC 7672 §2.2). failed: the lookup failed, so the host must be skipped (§2.2).
    """

    state: DaneState
    tlsa: tuple[Tlsa, ...] = ()
    name: str = ""  # the TLSA owner name that answered
    reason: str = ""


def tlsa_name(host: str, port: int = 25) -> str:
    """RFC 7672 §2.2 / RFC 6698 §3: _PORT._tcp.HOST."""
    return f"_{port}._tcp.{host}"


async def _lookup(resolver: Resolver, name: str) -> TlsaLookup:
    answer = await resolver.query(name, "TLSA")
    if answer.failed:
        # RFC 7672 §2.2: a TLSA lookup that fails (SERVFAIL: bogus, or the zone is broken) for a
        # host with secure addresses is a reason not to deliver to that host now.
        return TlsaLookup("failed", name=name, reason=f"TLSA {name}: {answer.status.value} {answer.error}".rstrip())
    if not answer.authenticated:
        # RFC 7672 §2.2: insecure TLSA records (and insecure denials) are treated as absent.
        state: DaneState = "insecure" if answer.ok else "none"
        return TlsaLookup(state, name=name, reason=f"TLSA {name}: {answer.status.value}, not DNSSEC-validated")
    if not answer.ok:
        return TlsaLookup("none", name=name, reason=f"TLSA {name}: validated {answer.status.value}")
    records = tuple(
        Tlsa(int(r.usage), int(r.selector), int(r.mtype), bytes(r.cert))  # type: ignore[attr-defined]
        for r in answer.rdatas
        if r.rdtype == dns.rdatatype.TLSA
    )
    good = tuple(r for r in records if is_usable(r))
    if good:
        return TlsaLookup("dane", good, name, f"TLSA {name}: {len(good)} usable of {len(records)}")
    return TlsaLookup("unusable", (), name, f"TLSA {name}: {len(records)} record(s), none usable (RFC 7672 §3.1.3)")


async def lookup_dane(resolver: Resolver, host: str, canonical_name: str = "", port: int = 25) -> TlsaLookup:
    """TLSA for an MX host whose MX RRset and address records validated (the caller checks that).

    RFC 7672 §2.2.2: when the host name is a secure CNAME alias, TLSA records are looked up at the
    fully expanded name first, and at the original name when there are none there.
    """
    if canonical_name and canonical_name != host:
        first = await _lookup(resolver, tlsa_name(canonical_name, port))
        if first.state in ("dane", "unusable", "failed"):
            return first
    return await _lookup(resolver, tlsa_name(host, port))
