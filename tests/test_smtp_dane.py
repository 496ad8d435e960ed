"""DANE in the destination policy against unbound validating a DNSSEC-signed local zone (the AD bit; RFC 7672)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.smtp.destination import DeliveryPlan, plan_delivery
from eventmail.smtp.mtasts import PolicyCache, StsPolicy
from eventmail.smtp.tlsa import lookup_dane
from eventmail.smtp.tlspolicy import Tlsa, is_usable
from tests.dns_fixture import async_test, zone_text
from tests.unbound_fixture import ValidatingDns, missing_tools

pytestmark = pytest.mark.skipif(
    bool(missing_tools()), reason=f"needs {', '.join(missing_tools())} (tools/install-debian-packages)"
)

EE = "3 1 1 " + "ab" * 32
TA = "2 0 1 " + "cd" * 32
PKIX_EE = "1 1 1 " + "ef" * 32
PKIX_TA = "0 0 1 " + "12" * 32
# A SHA2-256 association of 20 octets is unusable (RFC 6698 §2.1.3). It is not served: dnspython
# refuses to parse such a reply at all, so the lookup fails and the host would be skipped.
BAD_LEN = "3 1 1 " + "34" * 20
BOGUS_DATA = "56" * 32

SIGNED = zone_text(
    "dane.test",
    [
        "secure MX 10 mx.secure",
        "mx.secure A 192.0.2.1",
        "mx.secure AAAA 2001:db8::1",
        f"_25._tcp.mx.secure TLSA {EE}",
        f"_25._tcp.mx.secure TLSA {TA}",
        f"_25._tcp.mx.secure TLSA {PKIX_TA}",
        "pkixonly MX 10 mx.pkixonly",
        "mx.pkixonly A 192.0.2.2",
        f"_25._tcp.mx.pkixonly TLSA {PKIX_EE}",
        f"_25._tcp.mx.pkixonly TLSA {PKIX_TA}",
        "notlsa MX 10 mx.notlsa",
        "mx.notlsa A 192.0.2.3",
        "bogus MX 10 mx.bogus",
        "mx.bogus A 192.0.2.4",
        f"_25._tcp.mx.bogus TLSA 3 1 1 {BOGUS_DATA}",
        "fallback MX 10 mx.bogus",
        "fallback MX 20 mx.notlsa",
        "cname MX 10 alias.cname",
        "alias.cname CNAME mx.secure",
        "sts MX 10 mx.secure",
        "sts MX 20 mx.notlsa",
        '_mta-sts.sts TXT "v=STSv1; id=1;"',
        "implicit A 192.0.2.5",
        f"_25._tcp.implicit TLSA {EE}",
    ],
)
UNSIGNED = zone_text(
    "plain.test",
    [
        "insecure MX 10 mx.insecure",
        "mx.insecure A 192.0.2.6",
        f"_25._tcp.mx.insecure TLSA {EE}",
        "tosecure MX 10 mx.secure.dane.test.",
    ],
)


@pytest.fixture(scope="module")
def unbound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValidatingDns]:
    with ValidatingDns.start(
        Path(tmp_path_factory.mktemp("unbound")),
        signed={"dane.test": SIGNED},
        unsigned={"plain.test": UNSIGNED},
        # The TLSA data changed after signing: its RRSIG fails, the validator answers SERVFAIL.
        corrupt=[("_25._tcp.mx.bogus", BOGUS_DATA, "78" * 32)],
    ) as server:
        yield server


async def plan(unbound: ValidatingDns, domain: str, policy: StsPolicy | None = None) -> DeliveryPlan:
    async def fetch(d: str) -> StsPolicy:
        if policy is None:
            raise RuntimeError("no policy server in this test")
        return policy

    return await plan_delivery(
        domain,
        resolver=unbound.resolver(),
        fetch_policy=fetch,
        cache=PolicyCache(),
        now=1_700_000_000.0,
        rng=random.Random(0),
    )


def tlsa(text: str) -> Tlsa:
    u, s, m, data = text.split()
    return Tlsa(int(u), int(s), int(m), bytes.fromhex(data))


@async_test
async def test_secure_mx_with_tlsa_gives_a_dane_requirement(unbound: ValidatingDns) -> None:
    p = await plan(unbound, "secure.dane.test")
    assert p.ok and {r.address for r in p.routes} == {"192.0.2.1", "2001:db8::1"}
    req = p.routes[0].tls
    assert req.mode == "dane" and req.required and req.host_name == "mx.secure.dane.test"
    # PKIX-TA(0) is unusable for SMTP (RFC 7672 §3.1.3): only DANE-EE and DANE-TA are kept.
    assert set(req.tlsa) == {tlsa(EE), tlsa(TA)}
    assert p.policy == "dane"


@async_test
async def test_an_implicit_mx_with_a_validated_denial_gets_dane(unbound: ValidatingDns) -> None:
    p = await plan(unbound, "implicit.dane.test")
    assert p.ok and p.routes[0].tls.mode == "dane" and p.routes[0].tls.tlsa == (tlsa(EE),)


@async_test
async def test_only_pkix_usages_means_tls_without_authentication(unbound: ValidatingDns) -> None:
    p = await plan(unbound, "pkixonly.dane.test")
    tls = p.routes[0].tls
    # RFC 7672 §2.2: TLS stays mandatory (no plaintext fallback) but nothing can be authenticated.
    assert p.ok and tls.mode == "dane" and tls.required and not tls.verifies and tls.policy == "dane:unusable"
    result = await lookup_dane(unbound.resolver(), "mx.pkixonly.dane.test")
    assert result.state == "unusable" and "none usable" in result.reason


@async_test
async def test_secure_denial_of_tlsa_means_no_dane(unbound: ValidatingDns) -> None:
    p = await plan(unbound, "notlsa.dane.test")
    assert p.ok and p.routes[0].tls.mode == "opportunistic"
    assert (await lookup_dane(unbound.resolver(), "mx.notlsa.dane.test")).state == "none"


@async_test
async def test_an_unsigned_zone_gives_no_dane_even_with_tlsa_records(unbound: ValidatingDns) -> None:
    p = await plan(unbound, "insecure.plain.test")
    assert p.ok and p.routes[0].tls.mode == "opportunistic"
    assert any("not DNSSEC-validated: no DANE" in n for n in p.notes)
    assert (await lookup_dane(unbound.resolver(), "mx.insecure.plain.test")).state == "insecure"


@async_test
async def test_an_insecure_mx_rrset_means_no_dane_for_its_secure_hosts(unbound: ValidatingDns) -> None:
    # RFC 7672 §2.2.1: the host has valid TLSA records, but the MX RRset naming it did not validate.
    p = await plan(unbound, "tosecure.plain.test")
    assert p.ok and p.routes[0].host == "mx.secure.dane.test"
    assert all(r.tls.mode == "opportunistic" for r in p.routes)


@async_test
async def test_a_bogus_tlsa_answer_skips_the_host_temporarily(unbound: ValidatingDns) -> None:
    p = await plan(unbound, "bogus.dane.test")
    assert p.failure is not None and not p.failure.permanent and "skipped" in p.failure.reason
    result = await lookup_dane(unbound.resolver(), "mx.bogus.dane.test")
    assert result.state == "failed"
    # with a second MX, the bogus host is skipped and the other one used
    q = await plan(unbound, "fallback.dane.test")
    assert [r.host for r in q.routes] == ["mx.notlsa.dane.test"]
    assert any("mx.bogus.dane.test skipped" in n or "TLSA _25._tcp.mx.bogus" in n for n in q.notes)


@async_test
async def test_a_cname_mx_host_finds_tlsa_at_the_target(unbound: ValidatingDns) -> None:
    # RFC 7672 §2.2.2: TLSA at the expanded (CNAME target) name first.
    p = await plan(unbound, "cname.dane.test")
    assert p.ok and p.routes[0].host == "alias.cname.dane.test"
    assert p.routes[0].tls.mode == "dane" and tlsa(EE) in p.routes[0].tls.tlsa


@async_test
async def test_dane_takes_precedence_over_mta_sts(unbound: ValidatingDns) -> None:
    # The enforced policy names only mx.notlsa; mx.secure has DANE, which comes first (RFC 8461 §2).
    policy = StsPolicy("enforce", 86400, ("mx.notlsa.dane.test",))
    p = await plan(unbound, "sts.dane.test", policy)
    modes = [(r.host, r.tls.mode) for r in p.routes]
    assert ("mx.secure.dane.test", "dane") in modes and ("mx.notlsa.dane.test", "pkix") in modes
    assert modes[0][0] == "mx.secure.dane.test"
    assert p.mta_sts_update is not None


def test_usable_records() -> None:
    assert is_usable(tlsa(EE)) and is_usable(tlsa(TA))
    assert not is_usable(tlsa(PKIX_EE)) and not is_usable(tlsa(PKIX_TA)) and not is_usable(tlsa(BAD_LEN))
    assert is_usable(Tlsa(3, 0, 0, b"\x30\x82")) and not is_usable(Tlsa(3, 2, 1, b"x" * 32))
    assert is_usable(Tlsa(2, 1, 2, b"x" * 64)) and not is_usable(Tlsa(3, 1, 3, b"x" * 32))
