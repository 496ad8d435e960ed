"""Tests for eventmail.mailauth.resolver against the real tests/dnsserver.py process, hostile modes included."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventmail.mailauth.resolver import (
    MAX_RECORDS,
    DnsLookupFailed,
    DnsStatus,
    Resolver,
    ResolverConfig,
)
from tests import dns_fixture
from tests.dns_fixture import DATA_DIR, DnsServer, async_test, txt_rdata, zone_text

from .conftest import count_name_parses

dns_servers = dns_fixture.dns_servers

ZONE = zone_text(
    "res.test",
    [
        '@ TXT "v=spf1 -all"',
        '@ TXT "other"',
        "@ MX 10 mail",
        "@ MX 20 mail2",
        "mail A 192.0.2.1",
        "mail AAAA 2001:db8::1",
        "mail2 A 192.0.2.2",
        "short-ttl 5 A 192.0.2.9",
        f"big TXT {txt_rdata('x' * 3000)}",  # > 1232 octets: UDP truncates, TCP retry
        f"huge TXT {txt_rdata('y' * 5000)}",  # over MAX_TXT_RECORD_OCTETS
        "alias CNAME mail",
        "loop1 CNAME loop2",
        "loop2 CNAME loop1",
        '*.wild TXT "wildcard"',
        "a.b.ent A 192.0.2.3",
        "1.2.0.192.in-addr PTR mail.res.test.",
        *[f"many A 198.51.100.{i}" for i in range(1, MAX_RECORDS + 2)],
    ],
    negative_ttl=30,
)

BEHAVIOURS = {
    "servfail.res.test": "servfail",
    "refused.res.test": "refused",
    "timeout.res.test": "timeout",
    "garbage.res.test": "garbage",
    "short.res.test": "shortheader",
    "wrongid.res.test": "wrongid",
    "badlabel.res.test": "badlabel",
    "truncate.res.test": "truncate",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    with DnsServer.start(
        tmp_path_factory.mktemp("dns"),
        {"res.test": ZONE},
        zone_files=[DATA_DIR / "hostile.test.zone"],
        behaviours=BEHAVIOURS,
    ) as s:
        yield s


def fast(server: DnsServer, clock: Clock | None = None) -> Resolver:
    config = ResolverConfig(nameservers=(server.host,), port=server.port, timeout=0.3, lifetime=0.8)
    return Resolver(config, clock=clock) if clock else Resolver(config)


def test_server_prints_port_and_stops_by_pid(tmp_path: Path) -> None:
    s = DnsServer.start(tmp_path, {"x.test": zone_text("x.test", ["@ A 192.0.2.1"])})
    assert s.port > 0 and s.process.poll() is None
    s.stop()
    assert s.process.returncode is not None


def test_factory_fixture_serves_several_zones(dns_servers: Callable[..., DnsServer]) -> None:
    server = dns_servers(
        {"a.test": zone_text("a.test", ["@ A 192.0.2.1"])}, zone_files=[DATA_DIR / "spf.test.zone"]
    )
    r = server.resolver()
    assert asyncio.run(r.query("a.test", "A")).addresses() == ("192.0.2.1",)
    assert asyncio.run(r.query("ip4.spf.test", "TXT")).txt() == (b"v=spf1 ip4:192.0.2.0/24 -all",)
    assert server.process.poll() is None


def test_server_refuses_bad_zone(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        DnsServer.start(tmp_path, {"bad.test": "$ORIGIN bad.test.\n@ A not-an-address\n"})


@async_test
async def test_basic_records(server: DnsServer) -> None:
    r = fast(server)
    txt = await r.query("res.test", "TXT")
    assert txt.status is DnsStatus.OK and sorted(txt.txt()) == [b"other", b"v=spf1 -all"]
    assert txt.ttl == 300
    mx = await r.query("res.test", "MX")
    assert sorted(mx.mx()) == [(10, "mail.res.test"), (20, "mail2.res.test")]
    assert (await r.query("mail.res.test", "A")).addresses() == ("192.0.2.1",)
    assert (await r.query("mail.res.test", "AAAA")).addresses() == ("2001:db8::1",)
    assert (await r.query("1.2.0.192.in-addr.res.test", "PTR")).targets() == ("mail.res.test",)
    alias = await r.query("alias.res.test", "A")
    assert alias.addresses() == ("192.0.2.1",)
    assert (await r.query("x.wild.res.test", "TXT")).txt() == (b"wildcard",)


@async_test
async def test_negative_answers(server: DnsServer) -> None:
    r = fast(server)
    nx = await r.query("nope.res.test", "A")
    assert nx.status is DnsStatus.NXDOMAIN and nx.void
    nodata = await r.query("mail.res.test", "MX")
    assert nodata.status is DnsStatus.NODATA and nodata.void
    ent = await r.query("b.ent.res.test", "A")  # empty non-terminal: NODATA (RFC 8020)
    assert ent.status is DnsStatus.NODATA
    outside = await r.query("elsewhere.invalid", "A")
    assert outside.status is DnsStatus.NXDOMAIN


@async_test
async def test_large_txt_over_tcp(server: DnsServer) -> None:
    big = await fast(server).query("big.res.test", "TXT")
    assert big.status is DnsStatus.OK and big.txt() == (b"x" * 3000,)
    assert len(big.txt_strings()[0]) == 12  # split into 255-octet strings, joined by txt()


@async_test
async def test_limits_give_permerror(server: DnsServer) -> None:
    r = fast(server)
    huge = await r.query("huge.res.test", "TXT")
    assert huge.status is DnsStatus.PERMERROR and "4096" in huge.error
    many = await r.query("many.res.test", "A")
    assert many.status is DnsStatus.PERMERROR and "records" in many.error
    for name in ("loop1.res.test", "cname-loop1.hostile.test"):
        loop = await r.query(name, "A")
        assert loop.status is DnsStatus.PERMERROR and "CNAME" in loop.error
    assert r.stats.permerrors >= 4


@pytest.mark.parametrize("name", ["a..b.test", "", ".", "bad name.test", "x" * 64 + ".test", "a\nb.test"])
@async_test
async def test_invalid_names_give_permerror(server: DnsServer, name: str) -> None:
    answer = await fast(server).query(name, "TXT")
    assert answer.status is DnsStatus.PERMERROR


@async_test
async def test_unicode_name_is_converted_to_a_labels(server: DnsServer) -> None:
    answer = await fast(server).query("bücher.test", "A")
    assert answer.status is DnsStatus.NXDOMAIN  # asked as xn--bcher-kva.test, which is not served


@pytest.mark.parametrize("label", sorted(BEHAVIOURS))
@async_test
async def test_hostile_servers_give_temperror(server: DnsServer, label: str) -> None:
    r = fast(server)
    answer = await r.query(f"x.{label}", "TXT")
    assert answer.status is DnsStatus.TEMPERROR, answer
    assert answer.error
    # The sync path classifies the same way.
    sync_answer = await asyncio.to_thread(r.query_sync, f"y.{label}", "TXT")
    assert sync_answer.status is DnsStatus.TEMPERROR


@async_test
async def test_unknown_type_is_a_programming_error(server: DnsServer) -> None:
    with pytest.raises(ValueError):
        await fast(server).query("res.test", "HINFO")


@async_test
async def test_cache_respects_ttl(server: DnsServer) -> None:
    clock = Clock()
    r = fast(server, clock)
    first = await r.query("short-ttl.res.test", "A")
    assert first.ttl == 5 and not first.from_cache
    second = await r.query("short-ttl.res.test", "A")
    assert second.from_cache and r.stats.cache_hits == 1 and r.stats.queries == 1
    clock.now += 3
    third = await r.query("short-ttl.res.test", "A")
    assert third.from_cache and third.ttl == 2
    clock.now += 3
    fourth = await r.query("short-ttl.res.test", "A")
    assert not fourth.from_cache and r.stats.queries == 2


@async_test
async def test_negative_cache_uses_soa_minimum(server: DnsServer) -> None:
    clock = Clock()
    r = fast(server, clock)
    await r.query("nope.res.test", "A")
    assert (await r.query("nope.res.test", "A")).from_cache
    clock.now += 31  # SOA MINIMUM is 30 (RFC 2308 §5)
    assert not (await r.query("nope.res.test", "A")).from_cache


@async_test
async def test_errors_are_not_cached(server: DnsServer) -> None:
    r = fast(server)
    await r.query("servfail.res.test", "TXT")
    await r.query("servfail.res.test", "TXT")
    assert r.stats.cache_hits == 0 and r.stats.temperrors == 2


@async_test
async def test_cache_is_bounded(server: DnsServer) -> None:
    config = ResolverConfig(nameservers=(server.host,), port=server.port, cache_entries=2)
    r = Resolver(config)
    for name in ("mail", "mail2", "alias"):
        await r.query(f"{name}.res.test", "A")
    assert r.cache_size() == 2
    r.clear_cache()
    assert r.cache_size() == 0


@async_test
async def test_sync_shims_share_servers_and_cache(server: DnsServer) -> None:
    r = fast(server)
    answer = await asyncio.to_thread(r.query_sync, "res.test", "MX")
    assert answer.ok and r.stats.queries == 1
    assert (await r.query("res.test", "MX")).from_cache
    spf_rows = await asyncio.to_thread(r.pyspf_lookup, "res.test", "TXT")
    assert sorted(v for _, v in spf_rows) == [(b"other",), (b"v=spf1 -all",)]  # type: ignore[type-var]
    assert {k for k, _ in spf_rows} == {("res.test", "TXT")}
    mx_rows = await asyncio.to_thread(r.pyspf_lookup, "res.test", "MX")
    assert sorted(v for _, v in mx_rows) == [(10, "mail.res.test"), (20, "mail2.res.test")]  # type: ignore[type-var]
    assert await asyncio.to_thread(r.pyspf_lookup, "nope.res.test", "A") == []
    assert await asyncio.to_thread(r.pyspf_lookup, "res.test", "SPF") == []
    with pytest.raises(DnsLookupFailed) as info:
        await asyncio.to_thread(r.pyspf_lookup, "x.servfail.res.test", "TXT")
    assert info.value.answer.status is DnsStatus.TEMPERROR
    assert await asyncio.to_thread(r.dkim_txt, b"big.res.test.") == b"x" * 3000
    assert await asyncio.to_thread(r.dkim_txt, b"nope.res.test.") is None


@async_test
async def test_sync_shim_refuses_the_event_loop_thread(server: DnsServer) -> None:
    with pytest.raises(RuntimeError, match="worker thread"):
        fast(server).query_sync("res.test", "TXT")


def test_config_from_system() -> None:
    config = ResolverConfig.from_system(port=5353, timeout=1.5)
    assert config.port == 5353 and config.timeout == 1.5 and config.nameservers


@async_test
async def test_a_name_asked_again_is_parsed_once(server: DnsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every lookup, cached or not, turned its name into a dnspython name and back (the cache's
    key): a name asked message after message is parsed once, and answered the same."""
    from eventmail.mailauth import resolver as resolver_module

    parsed = count_name_parses(monkeypatch)
    resolver_module._cached_name.cache_clear()
    r = fast(server)
    first = await r.query("Mail.Res.Test.", "A")
    again = await r.query("Mail.Res.Test.", "A")
    assert first.addresses() == again.addresses() == ("192.0.2.1",) and again.from_cache
    assert parsed.count("Mail.Res.Test") == 1
