"""Tests for eventmail.mailauth.dmarc (RFC 7489): discovery, alignment and policy, end to end over real DNS."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventmail.mailauth.dkim import DkimResult, sign_sync
from eventmail.mailauth.dmarc import (
    Discovery,
    DmarcRecord,
    DmarcRecordError,
    aligned,
    author_domains,
    check_dmarc,
    evaluate_policy,
    parse_record,
)
from eventmail.mailauth.resolver import Resolver
from eventmail.mailauth.spf import SpfResult
from eventmail.mailauth.verdict import AuthVerdict, evaluate
from eventmail.mime.addresses import read_author
from tests.dns_fixture import DATA_DIR, DkimKey, DnsServer, async_test, make_ed25519_key, txt_rdata, zone_text

GOOD_IP = "192.0.2.10"  # authorised by the SPF records of the fixture domains
BAD_IP = "198.51.100.66"  # authorised by nobody
SIGNING_DOMAINS = (
    "dmarc.test",
    "sub.dmarc.test",
    "strict.test",
    "other.test",
    "example.co.uk",
    "xn--bcher-kva.test",
)


@pytest.fixture(scope="module")
def key() -> DkimKey:
    return make_ed25519_key()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, key: DkimKey) -> Iterator[DnsServer]:
    zones = {
        f"_domainkey.{d}": zone_text(f"_domainkey.{d}", [f"ed TXT {txt_rdata(key.txt)}"])
        for d in SIGNING_DOMAINS
    }
    files = [DATA_DIR / "test.zone", DATA_DIR / "example.co.uk.zone", DATA_DIR / "hostile.test.zone"]
    behaviours = {"broken._domainkey.dmarc.test": "servfail", "broken.hostile.test": "servfail"}
    with DnsServer.start(tmp_path_factory.mktemp("dns"), zones, zone_files=files, behaviours=behaviours) as s:
        yield s


@pytest.fixture(scope="module")
def resolver(server: DnsServer) -> Resolver:
    return server.resolver(timeout=0.5, lifetime=1.0)


def message(author: str, subject: str = "test") -> bytes:
    return (
        f"From: Someone <{author}>\r\nTo: rcpt@example.org\r\nSubject: {subject}\r\n"
        "Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n\r\nBody text\r\n"
    ).encode()


async def run(
    resolver: Resolver,
    key: DkimKey,
    author: str,
    mail_from: str,
    ip: str = GOOD_IP,
    signers: Sequence[tuple[str, str]] = (),
    sample: float = 0.0,
) -> AuthVerdict:
    msg = message(author)
    for domain, selector in signers:
        msg = sign_sync(msg, domain, selector, "ed25519-sha256", key.private_key) + msg
    return await evaluate(msg, ip, "client.example.org", mail_from, resolver, sample=sample)


@async_test
async def test_pass_via_aligned_dkim(resolver: Resolver, key: DkimKey) -> None:
    v = await run(resolver, key, "alice@dmarc.test", "bounce@attacker.test", BAD_IP, [("dmarc.test", "ed")])
    assert v.spf.result == "fail"
    assert (v.dmarc.result, v.dmarc.disposition, v.dmarc.aligned_dkim) == ("pass", "none", "dmarc.test")
    assert v.method == "dmarc-pass"


@async_test
async def test_pass_via_aligned_spf(resolver: Resolver, key: DkimKey) -> None:
    v = await run(resolver, key, "alice@dmarc.test", "bounce@bounce.dmarc.test")
    assert v.dkim == ()
    assert (v.dmarc.result, v.dmarc.aligned_spf) == ("pass", "bounce.dmarc.test")  # relaxed: same org domain


@async_test
async def test_fail_with_p_reject(resolver: Resolver, key: DkimKey) -> None:
    v = await run(resolver, key, "ceo@dmarc.test", "x@attacker.test", "203.0.113.5", [("other.test", "ed")])
    assert v.spf.result == "pass" and v.dkim[0].result == "pass"  # both pass, neither aligned
    assert (v.dmarc.result, v.dmarc.disposition, v.dmarc.policy) == ("fail", "reject", "reject")
    assert v.disposition == "reject" and v.method == "dmarc-policy"
    assert "not aligned" in v.dmarc.reason


@async_test
async def test_quarantine(resolver: Resolver, key: DkimKey) -> None:
    v = await run(resolver, key, "a@quarantine.test", "a@quarantine.test", BAD_IP)
    assert (v.dmarc.result, v.dmarc.disposition) == ("fail", "quarantine")
    sub = await run(resolver, key, "a@deep.sub.quarantine.test", "a@quarantine.test", BAD_IP)
    assert (sub.dmarc.disposition, sub.dmarc.subdomain_policy, sub.dmarc.policy_domain) == (
        "quarantine",
        True,
        "quarantine.test",
    )  # no sp=: p= applies to subdomains


@async_test
async def test_subdomain_policy(resolver: Resolver, key: DkimKey) -> None:
    v = await run(resolver, key, "a@sub.dmarc.test", "a@attacker.test", BAD_IP)
    assert (v.dmarc.result, v.dmarc.disposition, v.dmarc.policy) == ("fail", "quarantine", "quarantine")
    assert (v.dmarc.policy_domain, v.dmarc.subdomain_policy) == ("dmarc.test", True)
    own = await run(resolver, key, "a@own.dmarc.test", "a@attacker.test", BAD_IP)
    assert (own.dmarc.result, own.dmarc.disposition, own.dmarc.policy_domain) == (
        "fail",
        "none",
        "own.dmarc.test",
    )


@async_test
async def test_relaxed_vs_strict_alignment(resolver: Resolver, key: DkimKey) -> None:
    # Relaxed: d=dmarc.test aligns with From sub.dmarc.test (same organizational domain).
    relaxed = await run(resolver, key, "a@sub.dmarc.test", "a@attacker.test", BAD_IP, [("dmarc.test", "ed")])
    assert relaxed.dmarc.result == "pass"
    # Strict: only the exact domain aligns, for DKIM and SPF alike.
    exact = await run(resolver, key, "a@strict.test", "a@attacker.test", BAD_IP, [("strict.test", "ed")])
    assert exact.dmarc.result == "pass"
    dkim_sub = await run(
        resolver, key, "a@mail.strict.test", "a@attacker.test", BAD_IP, [("strict.test", "ed")]
    )
    assert (dkim_sub.dmarc.result, dkim_sub.dmarc.disposition) == ("fail", "reject")
    spf_sub = await run(resolver, key, "a@strict.test", "b@bounce.strict.test")
    assert spf_sub.spf.result == "pass"
    assert (spf_sub.dmarc.result, spf_sub.dmarc.aspf) == ("fail", "s")
    spf_exact = await run(resolver, key, "a@strict.test", "b@strict.test")
    assert spf_exact.dmarc.result == "pass"


@async_test
async def test_org_domain_fallback_with_psl(resolver: Resolver, key: DkimKey) -> None:
    v = await run(resolver, key, "x@a.b.example.co.uk", "x@attacker.test", BAD_IP)
    assert (v.dmarc.result, v.dmarc.disposition, v.dmarc.policy_domain) == ("fail", "reject", "example.co.uk")
    good = await run(
        resolver, key, "x@a.b.example.co.uk", "x@attacker.test", BAD_IP, [("example.co.uk", "ed")]
    )
    assert good.dmarc.result == "pass"
    spf = await run(resolver, key, "x@example.co.uk", "x@a.b.example.co.uk")
    assert spf.dmarc.result == "pass"


@async_test
async def test_pct_sampling(resolver: Resolver, key: DkimKey) -> None:
    inside = await run(resolver, key, "a@pct.test", "a@attacker.test", BAD_IP, sample=0.1)
    assert (inside.dmarc.disposition, inside.dmarc.sampled_out) == ("reject", False)
    outside = await run(resolver, key, "a@pct.test", "a@attacker.test", BAD_IP, sample=0.5)
    assert (outside.dmarc.result, outside.dmarc.disposition, outside.dmarc.sampled_out) == (
        "fail",
        "quarantine",
        True,
    )


@async_test
async def test_no_policy_cases(resolver: Resolver, key: DkimKey) -> None:
    for author in ("a@norecord.test", "a@two.test", "a@badp-norua.test", "a@unknown-domain.test"):
        v = await run(resolver, key, author, "a@attacker.test", BAD_IP)
        assert (v.dmarc.result, v.dmarc.disposition, v.method) == ("none", "none", "dmarc-none"), author
    badp = await run(resolver, key, "a@badp.test", "a@attacker.test", BAD_IP)
    assert (badp.dmarc.result, badp.dmarc.policy, badp.dmarc.disposition) == ("fail", "none", "none")
    mixed = await run(resolver, key, "a@mixed.test", "a@attacker.test", BAD_IP)
    assert mixed.dmarc.disposition == "quarantine"  # the non-DMARC TXT is ignored (step 2)


@async_test
async def test_temporary_errors(resolver: Resolver, key: DkimKey) -> None:
    v = await run(resolver, key, "a@x.broken.hostile.test", "a@attacker.test", BAD_IP)
    assert (v.dmarc.result, v.dmarc.disposition, v.method) == ("temperror", "none", "dmarc-temperror")
    # The only aligned identifier had a DNS failure: temperror, not a reject (retry later).
    dkim_temp = await run(
        resolver, key, "a@dmarc.test", "a@attacker.test", BAD_IP, [("dmarc.test", "broken")]
    )
    assert dkim_temp.dkim[0].result == "temperror"
    assert (dkim_temp.dmarc.result, dkim_temp.dmarc.disposition) == ("temperror", "none")


@async_test
async def test_author_problems(resolver: Resolver, key: DkimKey) -> None:
    two = b"From: a@norecord.test, b@dmarc.test\r\nSubject: x\r\n\r\nbody\r\n"  # several authors: the strictest outcome is kept, so adding one cannot dodge a policy
    v = await evaluate(two, BAD_IP, "h", "a@attacker.test", resolver, sample=0.0)
    assert (v.dmarc.result, v.dmarc.disposition, v.dmarc.from_domain) == ("fail", "reject", "dmarc.test")
    twice = b"From: a@norecord.test\r\nFrom: b@quarantine.test\r\n\r\nbody\r\n"
    v = await evaluate(twice, BAD_IP, "h", "a@attacker.test", resolver, sample=0.0)
    assert v.dmarc.disposition == "quarantine"
    none = await evaluate(b"Subject: no from\r\n\r\nbody\r\n", BAD_IP, "h", "", resolver)
    assert (none.dmarc.result, none.method) == ("permerror", "dmarc-permerror")
    direct = await check_dmarc(two, spf_result("none", ""), (), resolver, 0.0)
    assert direct.disposition == "reject"


@async_test
async def test_idn_from_domain(resolver: Resolver, key: DkimKey) -> None:
    v = await run(
        resolver, key, "jörg@Bücher.test", "jörg@bücher.test", "192.0.2.77", [("bücher.test", "ed")]
    )
    assert v.spf.result == "pass" and v.spf.domain == "xn--bcher-kva.test"
    assert v.dkim[0].result == "pass" and v.dkim[0].domain == "xn--bcher-kva.test"
    assert (v.dmarc.result, v.dmarc.from_domain, v.dmarc.adkim) == ("pass", "xn--bcher-kva.test", "s")
    spoof = await run(resolver, key, "jörg@bücher.test", "x@attacker.test", BAD_IP)
    assert (spoof.dmarc.result, spoof.dmarc.disposition) == ("fail", "reject")


# -- pure parts ---------------------------------------------------------------------------------


def spf_result(result: str, domain: str) -> SpfResult:
    return SpfResult(result, domain, "mailfrom", f"x@{domain}", "h", "192.0.2.1")  # type: ignore[arg-type]


def dkim_result(result: str, domain: str) -> DkimResult:
    return DkimResult(result, domain, "s", "ed25519-sha256", 256)  # type: ignore[arg-type]


def test_parse_record() -> None:
    r = parse_record(
        "v=DMARC1; p=Reject; SP=none; adkim=s; aspf=r; pct=50; rua=mailto:a@x.test,mailto:b@x.test!10m"
    )
    assert r == DmarcRecord("reject", "none", "s", "r", 50, ("mailto:a@x.test", "mailto:b@x.test!10m"))
    assert parse_record("v=DMARC1;p=none") == DmarcRecord("none")
    assert parse_record("v=DMARC1; p=quarantine; pct=101; adkim=x; future=tag").pct == 100
    assert parse_record("v=DMARC1; p=none; p=reject").policy == "none"  # first occurrence wins
    assert parse_record("v = DMARC1 ; p = reject").policy == "reject"
    with pytest.raises(DmarcRecordError):
        parse_record("v=DMARC1")  # no p=, no rua=
    with pytest.raises(DmarcRecordError):
        parse_record("p=reject; v=DMARC1")  # v= must come first
    with pytest.raises(DmarcRecordError):
        parse_record("v=spf1 -all")
    assert parse_record("v=DMARC1; p=reject; sp=bogus; rua=mailto:r@x.test").policy == "none"


def test_alignment() -> None:
    assert aligned("dmarc.test", "dmarc.test", "s")
    assert not aligned("mail.dmarc.test", "dmarc.test", "s")
    assert aligned("mail.dmarc.test", "dmarc.test", "r")
    assert aligned("DMARC.test.", "dmarc.test", "s")
    assert not aligned("example.co.uk", "other.co.uk", "r")  # co.uk is a public suffix
    assert not aligned("", "dmarc.test", "r")


def test_evaluate_policy_is_pure_and_ordered() -> None:
    record = DmarcRecord("reject", None, "r", "r", 100)
    found = Discovery("dmarc.test", "dmarc.test", record, "dmarc.test", "found")
    both = evaluate_policy(found, spf_result("pass", "dmarc.test"), [dkim_result("pass", "dmarc.test")], 0.9)
    assert both.aligned_dkim == "dmarc.test" and both.aligned_spf == ""  # DKIM decides first
    failing = evaluate_policy(found, spf_result("fail", "x.test"), [dkim_result("fail", "dmarc.test")], 0.9)
    assert (failing.result, failing.disposition) == ("fail", "reject")
    assert failing == evaluate_policy(
        found, spf_result("fail", "x.test"), [dkim_result("fail", "dmarc.test")], 0.9
    )
    temp_unaligned = evaluate_policy(found, spf_result("temperror", "other.test"), [], 0.0)
    assert temp_unaligned.result == "fail"  # a temperror elsewhere does not save the message


def test_author_domains_read_every_from_field_unfolded() -> None:
    raw = 'From: "Jörg, the\r\n boss" <jörg@bücher.test>\r\nfrom : x@y.test\r\nSubject: s\r\n\r\nFrom: body@z.test\r\n'
    author = read_author(raw.encode())
    assert author.fields == 2 and author.space_before_colon and author.ambiguous
    assert [a.name for a in author.addresses] == ["Jörg, the boss".encode()]
    assert author_domains(raw.encode()) == (("xn--bcher-kva.test", "y.test"), "")
    assert author_domains(b"From: undisclosed-recipients:;\r\n\r\n")[0] == ()


@given(st.text(max_size=200))
def test_parse_record_never_raises_unexpectedly(text: str) -> None:
    try:
        record = parse_record(text)
    except DmarcRecordError:
        return
    assert record.policy in ("none", "quarantine", "reject") and 0 <= record.pct <= 100


@given(st.binary(max_size=400))
def test_author_domains_never_raise(data: bytes) -> None:
    domains, error = author_domains(b"From: " + data + b"\r\n\r\n")
    assert bool(domains) or bool(error)
    assert all(d == d.lower() and d.isascii() for d in domains)
