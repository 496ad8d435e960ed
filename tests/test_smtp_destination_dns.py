"""Destination policy against the real tests/dnsserver.py process: MX order, implicit and null MX, failures, addresses."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.mailauth.resolver import Resolver
from eventmail.smtp.destination import DeliveryPlan, plan_delivery
from eventmail.smtp.mtasts import PolicyCache
from eventmail.smtp.mxlookup import (
    MAX_ADDRESSES,
    MAX_MX_HOSTS,
    interleave,
    lookup_addresses,
    lookup_mx,
    refused_host,
    rotate,
)
from tests.dns_fixture import DnsServer, async_test, zone_text

ZONE = zone_text(
    "dest.test",
    [
        # preference order with a tie at 20
        "multi MX 30 c.hosts",
        "multi MX 10 a.hosts",
        "multi MX 20 b1.hosts",
        "multi MX 20 b2.hosts",
        "multi MX 20 b3.hosts",
        "a.hosts A 192.0.2.10",
        "b1.hosts A 192.0.2.21",
        "b2.hosts A 192.0.2.22",
        "b3.hosts A 192.0.2.23",
        "c.hosts A 192.0.2.30",
        # implicit MX: no MX, the domain's own addresses
        "implicit A 192.0.2.40",
        "implicit AAAA 2001:db8::40",
        # no MX and no address
        "nothing TXT \"hello\"",
        # null MX (RFC 7505)
        "nullmx MX 0 .",
        # a CNAME'd MX target
        "aliased MX 10 alias.hosts",
        "alias.hosts CNAME real.hosts",
        "real.hosts A 192.0.2.50",
        # dual-stack host with many addresses
        "dual MX 10 dual.hosts",
        *[f"dual.hosts AAAA 2001:db8::{i}" for i in range(1, 4)],
        *[f"dual.hosts A 192.0.2.{i}" for i in range(101, 104)],
        # refused MX targets, then one good host
        "refused MX 5 192.0.2.1",
        "refused MX 6 localhost",
        "refused MX 7 mx.localhost",
        "refused MX 10 good.hosts",
        "good.hosts A 192.0.2.60",
        "onlybad MX 10 localhost",
        # an MX host that does not exist and one without addresses
        "deadhost MX 10 gone.hosts",
        "deadhost MX 20 noaddr.hosts",
        "noaddr.hosts TXT \"x\"",
        # one host fails temporarily, the other does not exist
        "halfbroken MX 10 broken.hosts",
        "halfbroken MX 20 gone.hosts",
        # many MX hosts
        *[f"many MX {i} m{i}.hosts" for i in range(1, 15)],
        *[f"m{i}.hosts A 192.0.2.{150 + i}" for i in range(1, 15)],
        # this server is one of the exchangers
        "backup MX 10 primary.hosts",
        "backup MX 20 me.hosts",
        "backup MX 30 c.hosts",
        "primary.hosts A 192.0.2.70",
        "me.hosts A 192.0.2.71",
        # unusable addresses dropped
        "weird MX 10 weird.hosts",
        "weird.hosts A 0.0.0.0",
        "weird.hosts A 192.0.2.80",
    ],
)
IDN_ZONE = zone_text("xn--bcher-kva.test", ["@ MX 10 mx", "mx A 192.0.2.90"])


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    with DnsServer.start(
        Path(tmp_path_factory.mktemp("dns")),
        {"dest.test": ZONE, "xn--bcher-kva.test": IDN_ZONE},
        behaviours={"servfail.dest.test": "servfail", "timeout.dest.test": "timeout", "broken.hosts.dest.test": "servfail"},
    ) as server:
        yield server


def resolver(dns: DnsServer) -> Resolver:
    return dns.resolver(timeout=0.5, lifetime=1.0)


async def plan(dns: DnsServer, domain: str, attempt: int = 0, seed: int = 1, **kw: object) -> DeliveryPlan:
    return await plan_delivery(
        domain,
        resolver=resolver(dns),
        fetch_policy=None,
        cache=PolicyCache(),
        now=1_000_000.0,
        attempt=attempt,
        rng=random.Random(seed),
        **kw,  # type: ignore[arg-type]
    )


@async_test
async def test_mx_sorted_by_preference_ties_shuffled_by_the_injected_rng(dns: DnsServer) -> None:
    r = resolver(dns)
    orders = set()
    for seed in range(12):
        mx = await lookup_mx(r, "multi.dest.test", random.Random(seed))
        names = [h.name for h in mx.hosts]
        assert names[0] == "a.hosts.dest.test" and names[-1] == "c.hosts.dest.test"
        assert sorted(names[1:4]) == ["b1.hosts.dest.test", "b2.hosts.dest.test", "b3.hosts.dest.test"]
        assert [h.preference for h in mx.hosts] == [10, 20, 20, 20, 30]
        orders.add(tuple(names))
    assert len(orders) > 1  # the tie is shuffled
    again = await lookup_mx(r, "multi.dest.test", random.Random(3))
    assert again == await lookup_mx(r, "multi.dest.test", random.Random(3))  # deterministic per seed


@async_test
async def test_plan_lists_addresses_in_mx_order_within_the_address_limit(dns: DnsServer) -> None:
    p = await plan(dns, "multi.dest.test")
    assert p.ok and len(p.routes) == MAX_ADDRESSES
    assert p.routes[0].host == "a.hosts.dest.test" and p.routes[0].address == "192.0.2.10"
    assert p.routes[-1].host == "c.hosts.dest.test"
    assert all(r.tls.mode == "opportunistic" for r in p.routes)
    assert p.max_sessions == 2


@async_test
async def test_implicit_mx_uses_the_domains_own_addresses(dns: DnsServer) -> None:
    p = await plan(dns, "implicit.dest.test")
    assert p.ok
    assert [(r.host, r.address) for r in p.routes] == [
        ("implicit.dest.test", "2001:db8::40"),
        ("implicit.dest.test", "192.0.2.40"),
    ]
    assert any("implicit MX" in n for n in p.notes)


@async_test
async def test_no_mx_and_no_address_is_permanent(dns: DnsServer) -> None:
    p = await plan(dns, "nothing.dest.test")
    assert p.failure is not None and p.failure.permanent and p.failure.code == "5.1.2"


@async_test
async def test_null_mx_fails_permanently_at_once(dns: DnsServer) -> None:
    p = await plan(dns, "nullmx.dest.test")
    assert p.failure is not None and p.failure.permanent and p.failure.code == "5.1.10"
    assert not p.routes


@async_test
async def test_nxdomain_is_permanent(dns: DnsServer) -> None:
    p = await plan(dns, "no-such-domain.dest.test")
    assert p.failure is not None and p.failure.permanent and "does not exist" in p.failure.reason


@async_test
async def test_servfail_and_timeout_are_temporary(dns: DnsServer) -> None:
    for name in ("servfail.dest.test", "timeout.dest.test"):
        p = await plan(dns, name)
        assert p.failure is not None and not p.failure.permanent and p.failure.code == "4.4.3", name


@async_test
async def test_a_cnamed_mx_target_is_followed(dns: DnsServer) -> None:
    p = await plan(dns, "aliased.dest.test")
    assert p.ok and [(r.host, r.address) for r in p.routes] == [("alias.hosts.dest.test", "192.0.2.50")]
    addrs = await lookup_addresses(resolver(dns), "alias.hosts.dest.test")
    assert addrs.canonical_name == "real.hosts.dest.test"


@async_test
async def test_addresses_interleave_ipv6_first_and_rotate_with_the_attempt(dns: DnsServer) -> None:
    p0 = await plan(dns, "dual.dest.test", attempt=0)
    assert [r.address for r in p0.routes] == [
        "2001:db8::1", "192.0.2.101", "2001:db8::2", "192.0.2.102", "2001:db8::3",
    ]
    starts = {(await plan(dns, "dual.dest.test", attempt=n)).routes[0].address for n in range(6)}
    assert len(starts) == 6  # every retry starts at a different address


@async_test
async def test_ip_literal_and_localhost_mx_targets_are_refused(dns: DnsServer) -> None:
    p = await plan(dns, "refused.dest.test")
    assert p.ok and [r.host for r in p.routes] == ["good.hosts.dest.test"]
    assert sum("refused" in n or "IP address" in n or "localhost" in n for n in p.notes) == 3
    bad = await plan(dns, "onlybad.dest.test")
    assert bad.failure is not None and bad.failure.permanent


@async_test
async def test_hosts_that_do_not_resolve_are_permanent_but_a_temporary_one_makes_it_temporary(dns: DnsServer) -> None:
    dead = await plan(dns, "deadhost.dest.test")
    assert dead.failure is not None and dead.failure.permanent and dead.failure.code == "5.4.4"
    half = await plan(dns, "halfbroken.dest.test")
    assert half.failure is not None and not half.failure.permanent


@async_test
async def test_mx_records_are_bounded(dns: DnsServer) -> None:
    mx = await lookup_mx(resolver(dns), "many.dest.test", random.Random(0))
    assert len(mx.hosts) == MAX_MX_HOSTS and mx.hosts[0].name == "m1.hosts.dest.test"
    p = await plan(dns, "many.dest.test")
    assert len(p.routes) == MAX_ADDRESSES


@async_test
async def test_own_name_among_the_mx_hosts_keeps_only_better_ones(dns: DnsServer) -> None:
    p = await plan(dns, "backup.dest.test", self_names=frozenset({"me.hosts.dest.test"}))
    assert [r.host for r in p.routes] == ["primary.hosts.dest.test"]
    loop = await plan(dns, "backup.dest.test", self_names=frozenset({"primary.hosts.dest.test."}))
    assert loop.failure is not None and loop.failure.code == "5.4.6"


@async_test
async def test_unusable_addresses_are_dropped(dns: DnsServer) -> None:
    p = await plan(dns, "weird.dest.test")
    assert [r.address for r in p.routes] == ["192.0.2.80"]


@async_test
async def test_domain_is_looked_up_in_idna_form(dns: DnsServer) -> None:
    p = await plan(dns, "Bücher.test")
    assert p.domain == "xn--bcher-kva.test" and p.ok
    assert p.routes[0].host == "mx.xn--bcher-kva.test"
    bad = await plan(dns, "not a domain")
    assert bad.failure is not None and bad.failure.permanent


def test_helpers() -> None:
    assert interleave(("a", "b", "c"), ("1",)) == ("a", "1", "b", "c")
    assert rotate(("a", "b", "c"), 4) == ("b", "c", "a") and rotate((), 3) == ()
    assert refused_host("10.0.0.1") and refused_host("::1") and refused_host("LocalHost")
    assert not refused_host("mail.example.com") and not refused_host("localhost.example.com")
