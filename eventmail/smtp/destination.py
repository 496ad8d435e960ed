"""The destination policy: for a recipient domain, the hosts and addresses to try, in order, and the TLS each requires.

The queue runner asks `plan_delivery` before each attempt. The answer is a `DeliveryPlan` value:
routes (MX host, address, `TlsRequirement`) in the order to try, or a permanent/temporary failure,
with notes saying why each host was used or dropped, and the MTA-STS cache entry fetched on the
way (for the queue to record as an event, so a replay never fetches again).

Precedence, per MX host (RFC 8461 §2, RFC 7672 §1.3):
1. DANE: MX RRset and the host's addresses validated, and TLSA records usable -> "dane".
   A secure host whose TLSA lookup fails is skipped (temporary, RFC 7672 §2.2).
2. MTA-STS "enforce": hosts matching the policy -> "pkix"; others are not used (RFC 8461 §4.2).
3. MTA-STS "testing": every host, "opportunistic" with the host name for checks and reports (§5).
4. Otherwise "opportunistic" (RFC 3207 STARTTLS when offered; RFC 7435).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..mailauth.resolver import DnsStatus, Resolver
from .mtasts import CachedPolicy, PolicyCache, StsError, StsPolicy, select_record
from .mxlookup import (
    MAX_ADDRESSES,
    MAX_SESSIONS,
    DnsFailure,
    lookup_addresses,
    lookup_mx,
    rotate,
)
from .tlsa import lookup_dane
from .tlspolicy import TlsMode, TlsRequirement

# The HTTPS fetch, injected: production passes `mtastsfetch.fetch_policy` bound to its resolver and
# config; it raises any Exception (PolicyFetchError) when no policy can be had.
PolicyFetcher = Callable[[str], Awaitable[StsPolicy]]

PlanFailure = DnsFailure


@dataclass(frozen=True)
class Route:
    """One address to try: the MX host it belongs to, its preference and the TLS it requires."""

    host: str
    address: str
    preference: int
    tls: TlsRequirement


@dataclass(frozen=True)
class DeliveryPlan:
    """What to try for one domain in one attempt, or why nothing can be tried."""

    domain: str
    routes: tuple[Route, ...] = ()
    failure: PlanFailure | None = None
    policy: str = ""  # the policies that applied, e.g. "dane", "mta-sts:enforce id=...", "opportunistic"
    notes: tuple[str, ...] = ()
    # A policy fetched during this plan: record it as an event, then fold it into the cache.
    mta_sts_update: CachedPolicy | None = None
    # RFC 5321 §5.1 / Postfix smtp_mx_session_limit: connections one attempt may complete.
    max_sessions: int = MAX_SESSIONS

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class StsOutcome:
    """The MTA-STS policy that applies now (None: none), an entry to record, and why."""

    entry: CachedPolicy | None
    update: CachedPolicy | None = None
    note: str = ""


async def discover_sts(
    domain: str, resolver: Resolver, fetch: PolicyFetcher | None, cache: PolicyCache, now: float
) -> StsOutcome:
    """RFC 8461 §3 and §5.1: TXT record, cache, fetch when the id changed, cache on fetch failure."""
    cached = cache.get(domain, now)
    txt = await resolver.query(f"_mta-sts.{domain}", "TXT")
    if txt.status is not DnsStatus.OK:
        # RFC 8461 §5.1: no (valid) TXT record but an unexpired cached policy -> the cached one.
        if cached is not None:
            return StsOutcome(cached, note=f"_mta-sts TXT {txt.status.value}: cached policy id={cached.policy_id}")
        return StsOutcome(None, note=f"no MTA-STS policy (_mta-sts TXT {txt.status.value})")
    try:
        record = select_record(txt.txt())
    except StsError as exc:
        if cached is not None:
            return StsOutcome(cached, note=f"_mta-sts TXT invalid ({exc}): cached policy id={cached.policy_id}")
        return StsOutcome(None, note=f"no MTA-STS policy: {exc}")
    if cached is not None and cached.policy_id == record.id:
        # RFC 8461 §5.1: the id is unchanged, so the cached policy is current; no fetch.
        return StsOutcome(cached, note=f"cached MTA-STS policy id={record.id}")
    if fetch is None:
        return StsOutcome(cached, note="MTA-STS fetching disabled")
    try:
        policy = await fetch(domain)
    except Exception as exc:  # any fetch failure: fall back (RFC 8461 §5.1)
        if cached is not None:
            return StsOutcome(cached, note=f"MTA-STS fetch failed ({exc}): cached policy id={cached.policy_id}")
        # RFC 8461 §5.1: no policy and no cache -> deliver as if the domain had no MTA-STS.
        return StsOutcome(None, note=f"MTA-STS fetch failed, no cached policy: {exc}")
    entry = CachedPolicy(domain, record.id, policy, now)
    return StsOutcome(entry, update=entry, note=f"fetched MTA-STS policy id={record.id} mode={policy.mode}")


async def plan_delivery(
    domain: str,
    *,
    resolver: Resolver,
    fetch_policy: PolicyFetcher | None,
    cache: PolicyCache,
    now: float,
    attempt: int = 0,
    rng: random.Random | None = None,
    self_names: frozenset[str] = frozenset(),
    max_addresses: int = MAX_ADDRESSES,
    dane: bool = True,
) -> DeliveryPlan:
    """Plan one delivery attempt to `domain` (U-labels or A-labels).

    `now` is wall-clock seconds (for the MTA-STS cache); `attempt` rotates each host's addresses
    so retries start elsewhere; `rng` orders equal MX preferences.
    """
    rng = rng or random.Random()
    mx = await lookup_mx(resolver, domain, rng, self_names)
    notes: list[str] = list(mx.notes)
    if mx.failure is not None:
        return DeliveryPlan(mx.domain, failure=mx.failure, notes=tuple(notes))
    sts = await discover_sts(mx.domain, resolver, fetch_policy, cache, now)
    notes.append(sts.note)
    policy = sts.entry.policy if sts.entry is not None else None
    sts_label = f"mta-sts:{policy.mode} id={sts.entry.policy_id}" if sts.entry and policy else ""
    if dane and not mx.secure:
        # RFC 7672 §2.2.1 allows DANE for hosts of an insecure MX RRset, but an attacker who can
        # forge that MX RRset can name a host of their own with valid TLSA; we follow Postfix and
        # use DANE only below a validated MX RRset (or validated denial, for an implicit MX).
        notes.append(f"MX RRset of {mx.domain} not DNSSEC-validated: no DANE")
    routes: list[Route] = []
    temporary: list[DnsFailure] = []
    permanent: list[DnsFailure] = []
    excluded = 0
    for host in mx.hosts:
        if len(routes) >= max_addresses:
            break
        addrs = await lookup_addresses(resolver, host.name)
        notes.extend(addrs.notes)
        if addrs.failure is not None:
            notes.append(addrs.failure.reason)
            (permanent if addrs.failure.permanent else temporary).append(addrs.failure)
            continue
        requirement: TlsRequirement | None = None
        if dane and mx.secure and addrs.secure:
            result = await lookup_dane(resolver, host.name, addrs.canonical_name)
            notes.append(result.reason)
            if result.state == "failed":
                # RFC 7672 §2.2: skip this host; try it again on a later attempt.
                temporary.append(DnsFailure(False, "4.7.5", f"{host.name} skipped: {result.reason}"))
                continue
            if result.state == "dane":
                requirement = TlsRequirement.dane(host.name, result.tlsa)
            elif result.state == "unusable" and policy is None:
                # RFC 7672 §2.2: secure TLSA records exist but none is usable: TLS is still
                # mandatory, without authentication (no plaintext fallback), as Postfix does. The
                # client encrypts and verifies nothing when no record is usable.
                requirement = TlsRequirement(TlsMode.DANE, host_name=host.name, tlsa=result.tlsa,
                                             policy="dane:unusable")
        elif dane and mx.secure:
            notes.append(f"addresses of {host.name} not DNSSEC-validated: no DANE (RFC 7672 §2.2.2)")
        if requirement is None and policy is not None and policy.mode == "enforce":
            if policy.matches(host.name):
                # RFC 8461 §4.2: TLS with a PKIX-valid certificate for the MX host name.
                requirement = TlsRequirement.pkix(host.name, policy=sts_label)
            else:
                # RFC 8461 §4.1: an MX host not matching an enforced policy is not used.
                notes.append(f"{host.name} does not match the MTA-STS policy: not used")
                excluded += 1
                continue
        if requirement is None and policy is not None and policy.mode == "testing":
            label = sts_label if policy.matches(host.name) else f"{sts_label} mx-mismatch"
            requirement = TlsRequirement(TlsMode.OPPORTUNISTIC, host_name=host.name, policy=label)
        if requirement is None:
            requirement = TlsRequirement.opportunistic()
        for address in rotate(addrs.addresses, attempt):
            routes.append(Route(host.name, address, host.preference, requirement))
    routes = routes[:max_addresses]
    summary = "+".join(dict.fromkeys(r.tls.policy for r in routes))
    if routes:
        return DeliveryPlan(
            mx.domain, tuple(routes), policy=summary, notes=tuple(notes), mta_sts_update=sts.update
        )
    failure = _no_route_failure(mx.domain, mx.hosts[0].implicit, temporary, permanent, excluded)
    return DeliveryPlan(mx.domain, failure=failure, policy=sts_label, notes=tuple(notes), mta_sts_update=sts.update)


def _no_route_failure(
    domain: str, implicit: bool, temporary: list[DnsFailure], permanent: list[DnsFailure], excluded: int
) -> DnsFailure:
    if temporary:
        # Any host that may work later makes the whole attempt temporary.
        return DnsFailure(False, temporary[0].code, "; ".join(f.reason for f in temporary))
    if excluded:
        # RFC 8461 §4.2/§5.1: no MX host matches the enforced policy. Temporary: the policy may be
        # updated (a new id), and the queue re-plans before giving up.
        return DnsFailure(False, "4.7.5", f"no MX host of {domain} matches its MTA-STS policy")
    if implicit:
        return DnsFailure(True, "5.1.2", f"{domain} has no MX and no address records")
    return DnsFailure(True, "5.4.4", "; ".join(f.reason for f in permanent) or f"no usable host for {domain}")


@dataclass
class DestinationPolicy:
    """Convenience holder for the queue runner: a resolver, a fetcher and the cache value it keeps.

    `plan` applies `mta_sts_update` to `cache` in memory; the queue will instead record the update
    as an event and rebuild `cache` from its stream.
    """

    resolver: Resolver
    fetch_policy: PolicyFetcher | None
    cache: PolicyCache = field(default_factory=PolicyCache)
    rng: random.Random = field(default_factory=random.Random)
    self_names: frozenset[str] = frozenset()

    async def plan(self, domain: str, now: float, attempt: int = 0) -> DeliveryPlan:
        result = await plan_delivery(
            domain,
            resolver=self.resolver,
            fetch_policy=self.fetch_policy,
            cache=self.cache,
            now=now,
            attempt=attempt,
            rng=self.rng,
            self_names=self.self_names,
        )
        if result.mta_sts_update is not None:
            self.cache = self.cache.put(result.mta_sts_update)
        return result
