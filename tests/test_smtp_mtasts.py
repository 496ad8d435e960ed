"""MTA-STS against a real HTTPS server (aiohttp on loopback, a throwaway CA) and the real tests/dnsserver.py process."""

from __future__ import annotations

import contextlib
import datetime
import random
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from eventmail.mailauth.resolver import Resolver
from eventmail.smtp.destination import DeliveryPlan, DestinationPolicy, discover_sts, plan_delivery
from eventmail.smtp.mtasts import CachedPolicy, PolicyCache, StsPolicy
from eventmail.smtp.mtastsfetch import FetchConfig, PolicyFetchError, fetch_policy
from tests.dns_fixture import DnsServer, async_test, zone_text

DOMAINS = ("enf", "wild", "testing", "none", "nomatch", "gone", "big", "bigchunked", "redirect", "html", "twotxt", "nocert")

ZONE = zone_text(
    "sts.test",
    [
        *[f"mta-sts.{d} A 127.0.0.1" for d in DOMAINS],
        *[f'_mta-sts.{d} TXT "v=STSv1; id=one;"' for d in DOMAINS if d != "twotxt"],
        '_mta-sts.twotxt TXT "v=STSv1; id=a;"',
        '_mta-sts.twotxt TXT "v=STSv1; id=b;"',
        "mx1.hosts A 192.0.2.1",
        "mx2.hosts A 192.0.2.2",
        "a.pat.hosts A 192.0.2.3",
        "x.y.pat.hosts A 192.0.2.4",
        "enf MX 10 mx1.hosts",
        "enf MX 20 mx2.hosts",
        "wild MX 10 a.pat.hosts",
        "wild MX 20 x.y.pat.hosts",
        "testing MX 10 mx1.hosts",
        "testing MX 20 mx2.hosts",
        "none MX 10 mx2.hosts",
        "nomatch MX 10 mx2.hosts",
        "gone MX 10 mx1.hosts",
        "gone MX 20 mx2.hosts",
        "twotxt MX 10 mx2.hosts",
        "nocert MX 10 mx2.hosts",
    ],
)

POLICIES = {
    "enf": b"version: STSv1\r\nmode: enforce\r\nmx: mx1.hosts.sts.test\r\nmax_age: 86400\r\n",
    "wild": b"version: STSv1\nmode: enforce\nmx: *.pat.hosts.sts.test\nmax_age: 600\n",
    "testing": b"version: STSv1\r\nmode: testing\r\nmx: mx1.hosts.sts.test\r\nmax_age: 86400\r\n",
    "none": b"version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n",
    "nomatch": b"version: STSv1\r\nmode: enforce\r\nmx: elsewhere.example\r\nmax_age: 86400\r\n",
    "twotxt": b"version: STSv1\r\nmode: enforce\r\nmx: mx1.hosts.sts.test\r\nmax_age: 86400\r\n",
    "nocert": b"version: STSv1\r\nmode: enforce\r\nmx: mx1.hosts.sts.test\r\nmax_age: 86400\r\n",
}
NOW = 1_700_000_000.0


@dataclass
class Pki:
    ca_pem: bytes
    cert_path: Path
    key_path: Path
    client: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        self.client = ssl.create_default_context(cadata=self.ca_pem.decode())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and one server certificate for every mta-sts.*.sts.test name except "nocert"."""
    tmp = Path(tmp_path_factory.mktemp("pki"))
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("throwaway test CA"))
        .issuer_name(_name("throwaway test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(f"mta-sts.{d}.sts.test") for d in DOMAINS if d != "nocert"]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("mta-sts.enf.sts.test"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Pki(ca.public_bytes(serialization.Encoding.PEM), cert_path, key_path)


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    with DnsServer.start(Path(tmp_path_factory.mktemp("dns")), {"sts.test": ZONE}) as server:
        yield server


@dataclass
class HttpsServer:
    port: int
    hits: dict[str, int]


@contextlib.asynccontextmanager
async def https_server(pki: Pki) -> AsyncIterator[HttpsServer]:
    """The policy host for every test domain, on 127.0.0.1 with the throwaway CA's certificate."""
    hits: dict[str, int] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        host = (request.host or "").split(":")[0]
        domain = host.removeprefix("mta-sts.").removesuffix(".sts.test")
        hits[domain] = hits.get(domain, 0) + 1
        if request.path != "/.well-known/mta-sts.txt":
            return web.Response(status=404)
        if domain in POLICIES:
            return web.Response(body=POLICIES[domain], content_type="text/plain", charset="utf-8")
        if domain == "big":
            return web.Response(body=b"version: STSv1\n" + b"x: y\n" * 14000, content_type="text/plain")
        if domain == "bigchunked":
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(20):
                await resp.write(b"ext: " + b"y" * 4090 + b"\n")
            await resp.write_eof()
            return resp
        if domain == "redirect":
            raise web.HTTPFound(f"https://mta-sts.enf.sts.test:{request.url.port}/.well-known/mta-sts.txt")
        if domain == "html":
            return web.Response(body=POLICIES["enf"], content_type="text/html")
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert_path, pki.key_path)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield HttpsServer(port, hits)
    finally:
        await runner.cleanup()


def config(pki: Pki, server: HttpsServer, context: ssl.SSLContext | None = None) -> FetchConfig:
    return FetchConfig(port=server.port, timeout=5.0, ssl_context=context or pki.client)


async def plan(
    domain: str, resolver: Resolver, cfg: FetchConfig, cache: PolicyCache | None = None, now: float = NOW
) -> DeliveryPlan:
    async def fetch(d: str) -> StsPolicy:
        return await fetch_policy(d, resolver, cfg)

    return await plan_delivery(
        domain, resolver=resolver, fetch_policy=fetch, cache=cache or PolicyCache(), now=now, rng=random.Random(0)
    )


@async_test
async def test_enforce_uses_only_matching_hosts_with_pkix(dns: DnsServer, pki: Pki) -> None:
    r = dns.resolver()
    async with https_server(pki) as server:
        p = await plan("enf.sts.test", r, config(pki, server))
    assert p.ok and [x.host for x in p.routes] == ["mx1.hosts.sts.test"]
    tls = p.routes[0].tls
    assert tls.mode == "pkix" and tls.host_name == "mx1.hosts.sts.test" and tls.required
    assert tls.policy == "mta-sts:enforce id=one" and p.policy == "mta-sts:enforce id=one"
    assert any("mx2.hosts.sts.test does not match" in n for n in p.notes)
    assert p.mta_sts_update is not None and p.mta_sts_update.policy.mx == ("mx1.hosts.sts.test",)
    assert p.mta_sts_update.fetched_at == NOW and p.mta_sts_update.policy_id == "one"


@async_test
async def test_wildcard_pattern_matches_one_label_only(dns: DnsServer, pki: Pki) -> None:
    async with https_server(pki) as server:
        p = await plan("wild.sts.test", dns.resolver(), config(pki, server))
    assert [x.host for x in p.routes] == ["a.pat.hosts.sts.test"]
    assert p.routes[0].tls.mode == "pkix"


@async_test
async def test_testing_mode_reports_but_does_not_enforce(dns: DnsServer, pki: Pki) -> None:
    async with https_server(pki) as server:
        p = await plan("testing.sts.test", dns.resolver(), config(pki, server))
    assert [x.host for x in p.routes] == ["mx1.hosts.sts.test", "mx2.hosts.sts.test"]
    assert all(x.tls.mode == "opportunistic" and not x.tls.required for x in p.routes)
    assert p.routes[0].tls.host_name == "mx1.hosts.sts.test"
    assert p.routes[0].tls.policy == "mta-sts:testing id=one"
    assert p.routes[1].tls.policy == "mta-sts:testing id=one mx-mismatch"


@async_test
async def test_mode_none_is_no_policy_but_is_cached(dns: DnsServer, pki: Pki) -> None:
    async with https_server(pki) as server:
        p = await plan("none.sts.test", dns.resolver(), config(pki, server))
    assert p.ok and p.routes[0].tls.mode == "opportunistic" and p.routes[0].tls.host_name == ""
    assert p.mta_sts_update is not None and p.mta_sts_update.policy.mode == "none"


@async_test
async def test_enforce_without_a_matching_host_is_a_temporary_failure(dns: DnsServer, pki: Pki) -> None:
    async with https_server(pki) as server:
        p = await plan("nomatch.sts.test", dns.resolver(), config(pki, server))
    assert p.failure is not None and not p.failure.permanent and "MTA-STS" in p.failure.reason


@async_test
async def test_cache_is_used_until_max_age_and_refreshed_when_the_id_changes(dns: DnsServer, pki: Pki) -> None:
    r = dns.resolver()
    async with https_server(pki) as server:
        cfg = config(pki, server)
        first = await plan("enf.sts.test", r, cfg)
        assert first.mta_sts_update is not None and server.hits == {"enf": 1}
        cache = PolicyCache().put(first.mta_sts_update)
        # The cache is a value that survives serialisation (the queue records it as events).
        cache = PolicyCache.from_json(cache.to_json())
        again = await plan("enf.sts.test", r, cfg, cache, now=NOW + 3600)
        assert again.mta_sts_update is None and server.hits == {"enf": 1}  # same id: no fetch
        assert again.routes[0].tls.mode == "pkix"
        expired = await plan("enf.sts.test", r, cfg, cache, now=NOW + 86400)
        assert expired.mta_sts_update is not None and server.hits == {"enf": 2}  # max_age passed
        old = CachedPolicy("enf.sts.test", "zero", StsPolicy("testing", 86400, ("mx2.hosts.sts.test",)), NOW)
        changed = await plan("enf.sts.test", r, cfg, PolicyCache().put(old), now=NOW + 10)
        assert server.hits == {"enf": 3}  # the TXT id differs from the cached one: fetched again
        assert changed.mta_sts_update is not None and changed.mta_sts_update.policy_id == "one"
        assert changed.routes[0].tls.mode == "pkix"


@async_test
async def test_fetch_failure_uses_the_cached_policy_or_none(dns: DnsServer, pki: Pki) -> None:
    r = dns.resolver()
    async with https_server(pki) as server:
        cfg = config(pki, server)
        # "gone" serves 404: no cache -> as if no MTA-STS (RFC 8461 §5.1)
        p = await plan("gone.sts.test", r, cfg)
        assert p.ok and all(x.tls.mode == "opportunistic" for x in p.routes) and p.mta_sts_update is None
        assert any("fetch failed, no cached policy" in n for n in p.notes)
        # with an unexpired cached policy for an older id: the cached policy applies
        cached = CachedPolicy("gone.sts.test", "older", StsPolicy("enforce", 86400, ("mx2.hosts.sts.test",)), NOW)
        q = await plan("gone.sts.test", r, cfg, PolicyCache().put(cached), now=NOW + 60)
        assert [x.host for x in q.routes] == ["mx2.hosts.sts.test"] and q.routes[0].tls.mode == "pkix"
        assert q.mta_sts_update is None
    # the server is gone altogether (connection refused): the cache still applies
    gone_cfg = FetchConfig(port=server.port, timeout=2.0, ssl_context=pki.client)
    q2 = await plan("gone.sts.test", r, gone_cfg, PolicyCache().put(cached), now=NOW + 60)
    assert q2.routes[0].tls.mode == "pkix"
    # and an expired cache is not used
    q3 = await plan("gone.sts.test", r, gone_cfg, PolicyCache().put(cached), now=NOW + 86400)
    assert all(x.tls.mode == "opportunistic" for x in q3.routes)


@pytest.mark.parametrize(
    ("domain", "why"),
    [
        ("big", "octets"),
        ("bigchunked", "octets"),
        ("redirect", "HTTP 302"),
        ("html", "media type"),
        ("gone", "HTTP 404"),
        ("nocert", "SSLCertVerificationError"),
    ],
)
@async_test
async def test_fetch_refuses_oversize_redirect_media_type_and_bad_certificates(
    dns: DnsServer, pki: Pki, domain: str, why: str
) -> None:
    async with https_server(pki) as server:
        with pytest.raises(PolicyFetchError, match=why):
            await fetch_policy(f"{domain}.sts.test", dns.resolver(), config(pki, server))
        assert server.hits.get("enf", 0) == 0  # the redirect was not followed


@async_test
async def test_fetch_needs_a_trusted_chain(dns: DnsServer, pki: Pki) -> None:
    untrusting = ssl.create_default_context(cadata=_other_ca_pem())
    async with https_server(pki) as server:
        with pytest.raises(PolicyFetchError, match="certificate verify failed"):
            await fetch_policy("enf.sts.test", dns.resolver(), config(pki, server, untrusting))
    with pytest.raises(ValueError):
        lax = ssl.create_default_context()
        lax.check_hostname = False
        lax.verify_mode = ssl.CERT_NONE
        await fetch_policy("enf.sts.test", dns.resolver(), FetchConfig(ssl_context=lax))


@async_test
async def test_two_sts_txt_records_mean_no_policy(dns: DnsServer, pki: Pki) -> None:
    async with https_server(pki) as server:
        outcome = await discover_sts(
            "twotxt.sts.test", dns.resolver(), lambda d: fetch_policy(d, dns.resolver(), config(pki, server)),
            PolicyCache(), NOW,
        )
        assert outcome.entry is None and "exactly one" in outcome.note and server.hits == {}


def _other_ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("other CA"))
        .issuer_name(_name("other CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@async_test
async def test_destination_policy_folds_each_fetched_policy_into_its_cache(dns: DnsServer, pki: Pki) -> None:
    r = dns.resolver()
    async with https_server(pki) as server:
        cfg = config(pki, server)

        async def fetch(d: str) -> StsPolicy:
            return await fetch_policy(d, r, cfg)

        holder = DestinationPolicy(r, fetch, rng=random.Random(0))
        first = await holder.plan("enf.sts.test", now=NOW)
        second = await holder.plan("enf.sts.test", now=NOW + 60, attempt=1)
    assert first.mta_sts_update is not None and second.mta_sts_update is None
    assert server.hits == {"enf": 1} and holder.cache.get("enf.sts.test", NOW + 60) == first.mta_sts_update
    assert second.routes[0].tls.mode == "pkix"
