"""Tests for eventmail.mailauth.spf (RFC 7208) against the real tests/dnsserver.py process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import spf as pyspf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventmail.mailauth import spf as mspf
from eventmail.mailauth.resolver import Resolver
from eventmail.mailauth.spf import SpfResult, check_spf, normalise_ip
from tests.dns_fixture import DATA_DIR, DnsServer, async_test, zone_text


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    idn = zone_text("xn--bcher-kva.test", ['@ TXT "v=spf1 ip4:192.0.2.77 -all"'])
    with DnsServer.start(
        tmp_path_factory.mktemp("dns"),
        {"xn--bcher-kva.test": idn},
        zone_files=[DATA_DIR / "spf.test.zone", DATA_DIR / "hostile.test.zone"],
        behaviours={"broken.hostile.test": "servfail", "slow.hostile.test": "timeout"},
    ) as s:
        yield s


@pytest.fixture(scope="module")
def resolver(server: DnsServer) -> Resolver:
    return server.resolver()


CASES = [
    # (remote ip, MAIL FROM, expected result, expected mechanism or "")
    ("192.0.2.5", "a@ip4.spf.test", "pass", "ip4:192.0.2.0/24"),
    ("203.0.113.5", "a@ip4.spf.test", "fail", "-all"),
    ("2001:db8:1::5", "a@ip6.spf.test", "pass", "ip6:2001:db8:1::/48"),
    ("2001:db8:2::5", "a@ip6.spf.test", "fail", "-all"),
    ("192.0.2.10", "a@a.spf.test", "pass", "a"),
    ("2001:db8::10", "a@a.spf.test", "pass", "a"),
    ("203.0.113.9", "a@a.spf.test", "pass", "a:other-host.spf.test/30"),
    ("203.0.113.12", "a@a.spf.test", "fail", "-all"),
    ("192.0.2.20", "a@mx.spf.test", "pass", "mx"),
    ("2001:db8::20", "a@mx.spf.test", "pass", "mx"),
    ("192.0.2.21", "a@mx.spf.test", "fail", "-all"),
    ("198.51.100.3", "a@include.spf.test", "pass", "include:_spf.provider.spf.test"),
    ("192.0.2.3", "a@include.spf.test", "softfail", "~all"),
    ("198.51.100.3", "a@redirect.spf.test", "pass", "ip4:198.51.100.0/24"),
    ("192.0.2.3", "a@redirect.spf.test", "fail", "-all"),
    ("192.0.2.1", "a@softfail.spf.test", "pass", "ip4:192.0.2.1"),
    ("192.0.2.3", "a@softfail.spf.test", "softfail", "~all"),
    ("192.0.2.3", "a@neutral.spf.test", "neutral", "?all"),
    ("192.0.2.3", "a@nospf.spf.test", "none", ""),
    ("192.0.2.3", "a@nxdomain.spf.test", "none", ""),
    ("192.0.2.3", "a@syntax.spf.test", "permerror", ""),
    ("192.0.2.3", "a@unknown-mech.spf.test", "permerror", ""),
    ("192.0.2.3", "a@two-records.spf.test", "permerror", ""),
    ("192.0.2.3", "a@loop.spf.test", "permerror", ""),
    ("192.0.2.3", "a@redirect-loop.spf.test", "permerror", ""),
    ("192.0.2.3", "a@many.spf.test", "permerror", ""),
    ("192.0.2.3", "a@void.spf.test", "permerror", ""),
    ("192.0.2.3", "a@include-none.spf.test", "permerror", ""),
    ("192.0.2.3", "a@temp.spf.test", "temperror", ""),
    ("192.0.2.10", "a@macro.spf.test", "pass", "exists:%{ir}.allow.spf.test"),
    ("192.0.2.11", "a@macro.spf.test", "fail", "-all"),
]


@pytest.mark.parametrize(("ip", "mail_from", "expected", "mechanism"), CASES)
@async_test
async def test_spf_results(
    resolver: Resolver, ip: str, mail_from: str, expected: str, mechanism: str
) -> None:
    result = await check_spf(ip, mail_from, "client.example", resolver)
    assert result.result == expected, result
    assert result.mechanism == mechanism
    assert result.identity == "mailfrom"
    assert result.domain == mail_from.rpartition("@")[2]


@async_test
async def test_reasons_name_the_problem(resolver: Resolver) -> None:
    too_many = await check_spf("192.0.2.3", "a@many.spf.test", "h", resolver)
    assert "Too many DNS lookups" in too_many.reason
    void = await check_spf("192.0.2.3", "a@void.spf.test", "h", resolver)
    assert "Void lookup" in void.reason
    temp = await check_spf("192.0.2.3", "a@temp.spf.test", "h", resolver)
    assert "SERVFAIL" in temp.reason
    explained = await check_spf("192.0.2.11", "a@macro.spf.test", "h", resolver)
    assert explained.reason == "192.0.2.11 is not one of macro.spf.test's designated mail servers"


@pytest.mark.parametrize("null_path", ["", "<>"])
@async_test
async def test_null_sender_checks_helo(resolver: Resolver, null_path: str) -> None:
    # RFC 7208 §2.4: the null reverse-path is checked as postmaster@<HELO>.
    good = await check_spf("192.0.2.50", null_path, "helo.spf.test", resolver)
    assert (good.result, good.identity, good.domain) == ("pass", "helo", "helo.spf.test")
    assert good.sender == "postmaster@helo.spf.test"
    bad = await check_spf("192.0.2.51", null_path, "helo.spf.test", resolver)
    assert bad.result == "fail"


@async_test
async def test_address_forms(resolver: Resolver) -> None:
    mapped = await check_spf("::ffff:192.0.2.5", "<a@ip4.spf.test>", "h", resolver)
    assert mapped.result == "pass"
    assert normalise_ip("[IPv6:2001:db8::1]") == "2001:db8::1"
    no_local = await check_spf("192.0.2.5", "ip4.spf.test", "h", resolver)
    assert no_local.result == "pass" and no_local.sender == "postmaster@ip4.spf.test"
    bad_ip = await check_spf("not-an-ip", "a@ip4.spf.test", "h", resolver)
    assert bad_ip.result == "permerror"
    literal = await check_spf("192.0.2.5", "a@[192.0.2.5]", "h", resolver)
    assert literal.result == "none"  # RFC 7208 §4.3: not a domain name
    single = await check_spf("192.0.2.5", "a@localhost", "h", resolver)
    assert single.result == "none"


@async_test
async def test_idn_mail_from_is_checked_as_a_labels(resolver: Resolver) -> None:
    result = await check_spf("192.0.2.77", "jörg@Bücher.test", "h", resolver)
    assert result.result == "pass", result
    assert result.domain == "xn--bcher-kva.test"
    assert result.sender == "jörg@Bücher.test"  # the recorded sender keeps the UTF-8 form
    utf8_local = await check_spf("192.0.2.5", "用户@ip4.spf.test", "h", resolver)
    assert utf8_local.result == "pass"


@async_test
async def test_timeout_gives_temperror(server: DnsServer) -> None:
    r = server.resolver(timeout=0.2, lifetime=0.4)
    result = await check_spf("192.0.2.3", "a@x.slow.hostile.test", "h", r, timeout=5)
    assert result.result == "temperror"
    bounded = await check_spf("192.0.2.3", "a@x.slow.hostile.test", "h", server.resolver(), timeout=0.3)
    assert bounded.result == "temperror"


@async_test
async def test_concurrent_checks_use_their_own_resolver(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Two servers give opposite records for the same domain; the process-global pyspf hook
    # must route each check to the resolver it was called with.
    allow = zone_text("twin.test", ['@ TXT "v=spf1 +all"'])
    deny = zone_text("twin.test", ['@ TXT "v=spf1 -all"'])
    with (
        DnsServer.start(tmp_path_factory.mktemp("allow"), {"twin.test": allow}) as a,
        DnsServer.start(tmp_path_factory.mktemp("deny"), {"twin.test": deny}) as d,
    ):
        ra, rd = a.resolver(), d.resolver()
        results = await asyncio.gather(
            *(check_spf("192.0.2.1", "x@twin.test", "h", ra if i % 2 == 0 else rd) for i in range(40))
        )
    assert [r.result for r in results] == ["pass" if i % 2 == 0 else "fail" for i in range(40)]


def test_hook_falls_back_to_pyspf_outside_our_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def fake(name: str, qtype: str, strict: object = True, timeout: float = 20) -> list[object]:
        calls.append((name, qtype))
        return []

    monkeypatch.setattr(mspf, "_original_lookup", fake)
    mspf._install_hook()
    assert pyspf.DNSLookup is mspf._dispatch_lookup
    assert pyspf.DNSLookup("example.test", "TXT", True, 5) == []
    assert calls == [("example.test", "TXT")]


def test_result_round_trip() -> None:
    r = SpfResult("softfail", "ex.test", "helo", "postmaster@ex.test", "ex.test", "192.0.2.1", "~all", "why")
    assert SpfResult.from_dict(r.to_dict()) == r
    assert SpfResult.from_dict({"result": "bogus"}).result == "permerror"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.sampled_from(["192.0.2.5", "2001:db8::1", "::ffff:10.0.0.1", "[::1]"]), st.text(max_size=40)
    ),
    st.one_of(
        st.sampled_from(["a@ip4.spf.test", "a@macro.spf.test", "", "<>", "@", "a@", "a@b@c.spf.test"]),
        st.text(max_size=80),
        st.builds(lambda local, d: f"{local}@{d}.spf.test", st.text(max_size=20), st.text(max_size=20)),
    ),
    st.text(max_size=60),
)
def test_hostile_envelopes_never_raise(resolver: Resolver, ip: str, mail_from: str, helo: str) -> None:
    result = asyncio.run(check_spf(ip, mail_from, helo, resolver, timeout=5))
    assert result.result in mspf.SPF_RESULTS
    assert SpfResult.from_dict(result.to_dict()) == result


@async_test
async def test_a_check_from_cached_answers_runs_without_a_thread_and_gives_the_same_result(
    server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender's records are cached after its first message: the next check runs on the event
    loop (no thread's hand-offs) from the cache and decides as the check in a thread did."""
    resolver = server.resolver()
    first = await check_spf("198.51.100.3", "a@include.spf.test", "h", resolver)  # cold: a thread asks the network
    asked = resolver.stats.queries
    threads: list[object] = []
    real_pool = mspf._pool
    monkeypatch.setattr(mspf, "_pool", lambda: threads.append(1) or real_pool())
    again = await check_spf("198.51.100.3", "a@include.spf.test", "h", resolver)
    assert again == first and again.result == "pass"
    assert threads == [] and resolver.stats.queries == asked
    # A lookup the cache cannot answer (another sender) sends the check to a thread.
    other = await check_spf("192.0.2.5", "a@ip4.spf.test", "h", resolver)
    assert other.result == "pass" and threads == [1]


@async_test
async def test_a_lookup_pyspf_swallows_still_sends_the_check_to_a_thread(server: DnsServer) -> None:
    """pyspf ignores a failed lookup of the exp= text: with the record cached and the explanation
    not, the check on the loop would lose the explanation; the missed lookup sends it to a
    thread, which asks for it, and the reason is the domain's own text."""
    resolver = server.resolver()
    await resolver.query("macro.spf.test", "TXT")  # the record and the exists: name, not exp=
    await resolver.query("11.2.0.192.allow.spf.test", "A")
    explained = await check_spf("192.0.2.11", "a@macro.spf.test", "h", resolver)
    assert explained.result == "fail"
    assert explained.reason == "192.0.2.11 is not one of macro.spf.test's designated mail servers"
