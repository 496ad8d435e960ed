"""Tests for eventmail.mailauth.verdict and authresults: end to end over real DNS, JSON, and the header renderer fuzzed."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import authres
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from eventmail.mailauth.authresults import (
    MAX_LINE_OCTETS,
    PTYPES,
    ResInfo,
    authserv_id,
    clean,
    pvalue,
    render,
    value,
)
from eventmail.mailauth.dkim import DKIM_RESULTS, DkimResult, sign_sync
from eventmail.mailauth.dmarc import DMARC_RESULTS, POLICIES, DmarcResult
from eventmail.mailauth.resolver import Resolver, ResolverConfig
from eventmail.mailauth.spf import SPF_RESULTS, SpfResult
from eventmail.mailauth.verdict import AuthVerdict, decide, evaluate
from tests.dns_fixture import (
    DATA_DIR,
    DkimKey,
    DnsServer,
    async_test,
    make_ed25519_key,
    make_rsa_key,
    txt_rdata,
    zone_text,
)

AUTHSERV = "mx.eventmail.test"
MESSAGE = (
    b"From: Alice <alice@dmarc.test>\r\nTo: bob@example.org\r\nSubject: verdict\r\n"
    b"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <v1@dmarc.test>\r\n\r\nHi Bob\r\n"
)


@dataclass(frozen=True)
class Keys:
    rsa: DkimKey
    ed: DkimKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(make_rsa_key(2048), make_ed25519_key())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[DnsServer]:
    zones = {
        "_domainkey.dmarc.test": zone_text(
            "_domainkey.dmarc.test",
            [f"rsa TXT {txt_rdata(keys.rsa.txt)}", f"ed TXT {txt_rdata(keys.ed.txt)}"],
        ),
        "_domainkey.xn--bcher-kva.test": zone_text(
            "_domainkey.xn--bcher-kva.test", [f"ed TXT {txt_rdata(keys.ed.txt)}"]
        ),
    }
    with DnsServer.start(tmp_path_factory.mktemp("dns"), zones, zone_files=[DATA_DIR / "test.zone"]) as s:
        yield s


@pytest.fixture(scope="module")
def resolver(server: DnsServer) -> Resolver:
    return server.resolver()


def parse_header(field: str) -> authres.AuthenticationResultsHeader:
    assert "\r\n" in field or len(field) < 200
    return authres.all_features().parse(field.replace("\r\n", ""))  # RFC 5322 §2.2.3 unfolding


# -- end to end ---------------------------------------------------------------------------------


@async_test
async def test_evaluate_signed_message(resolver: Resolver, keys: Keys) -> None:
    h1 = sign_sync(MESSAGE, "dmarc.test", "rsa", "rsa-sha256", keys.rsa.private_key)
    h2 = sign_sync(MESSAGE, "dmarc.test", "ed", "ed25519-sha256", keys.ed.private_key)
    v = await evaluate(
        h1 + h2 + MESSAGE, "192.0.2.10", "mail.dmarc.test", "bounce@bounce.dmarc.test", resolver
    )
    assert v.spf.result == "pass"
    assert [(d.result, d.algorithm, d.key_bits) for d in v.dkim] == [
        ("pass", "rsa-sha256", 2048),
        ("pass", "ed25519-sha256", 256),
    ]
    assert (v.dmarc.result, v.disposition, v.method) == ("pass", "none", "dmarc-pass")
    assert v.reasons[0].startswith("DMARC pass for dmarc.test")

    field = v.authentication_results(AUTHSERV)
    assert field.startswith(f"Authentication-Results: {AUTHSERV};\r\n\t")
    parsed = parse_header(field)
    assert parsed.authserv_id == AUTHSERV
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "pass"),
        ("dkim", "pass"),
        ("dkim", "pass"),
        ("dmarc", "pass"),
    ]
    props = {(p.type, p.name): p.value for p in parsed.results[0].properties}
    assert props[("smtp", "mailfrom")] == "bounce@bounce.dmarc.test"
    dkim_props = [{(p.type, p.name): p.value for p in r.properties} for r in parsed.results[1:3]]
    assert [p[("header", "d")] for p in dkim_props] == ["dmarc.test", "dmarc.test"]
    assert [p[("header", "s")] for p in dkim_props] == ["rsa", "ed"]
    assert "header.b=" in field and "(2048-bit rsa key)" in field
    dmarc_props = {(p.type, p.name): p.value for p in parsed.results[3].properties}
    assert dmarc_props == {("header", "from"): "dmarc.test", ("policy", "dmarc"): "reject"}

    assert AuthVerdict.from_json(v.to_json()) == v


@async_test
async def test_evaluate_spoof_and_render_reasons(resolver: Resolver) -> None:
    v = await evaluate(MESSAGE, "198.51.100.66", "evil.example", "ceo@dmarc.test", resolver, sample=0.3)
    assert (v.spf.result, v.dkim, v.dmarc.result, v.disposition) == ("fail", (), "fail", "reject")
    field = v.authentication_results(AUTHSERV)
    parsed = parse_header(field)
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "fail"),
        ("dkim", "none"),
        ("dmarc", "fail"),
    ]
    assert "(p=reject dis=reject)" in field
    assert parsed.results[2].reason  # "no DKIM signature; SPF fail"
    assert v.method == "dmarc-policy"
    data = json.loads(v.to_json())
    assert data["v"] == 1 and data["dmarc"]["disposition"] == "reject" and data["method"] == "dmarc-policy"


@async_test
async def test_idn_end_to_end(resolver: Resolver, keys: Keys) -> None:
    msg = "From: Jörg <jörg@Bücher.test>\r\nTo: x@example.org\r\nSubject: Grüße\r\n\r\nHallo\r\n".encode()
    signed = sign_sync(msg, "bücher.test", "ed", "ed25519-sha256", keys.ed.private_key) + msg
    v = await evaluate(signed, "192.0.2.77", "mail.bücher.test", "jörg@bücher.test", resolver)
    assert (v.spf.result, v.dkim[0].result, v.dmarc.result) == ("pass", "pass", "pass")
    assert v.dmarc.from_domain == v.dkim[0].domain == v.spf.domain == "xn--bcher-kva.test"
    field = v.authentication_results(AUTHSERV)
    # The UTF-8 local part is kept (RFC 8601 §2.2 with RFC 6532), quoted; domains are A-labels.
    assert 'smtp.mailfrom="jörg@bücher.test"' in field
    assert "header.d=xn--bcher-kva.test" in field and "header.from=xn--bcher-kva.test" in field
    again = AuthVerdict.from_json(v.to_json())
    assert again == v and "jörg" in v.to_json()


@async_test
async def test_hostile_dns_end_to_end(tmp_path: Path, keys: Keys) -> None:
    signed = sign_sync(MESSAGE, "dmarc.test", "ed", "ed25519-sha256", keys.ed.private_key) + MESSAGE
    for mode in ("timeout", "garbage", "servfail", "badlabel", "wrongid", "truncate"):
        with DnsServer.start(
            tmp_path / mode, {"dmarc.test": zone_text("dmarc.test", [])}, behaviours={".": mode}
        ) as s:
            r = s.resolver(timeout=0.2, lifetime=0.5)
            started = time.monotonic()
            v = await evaluate(signed, "192.0.2.10", "h.example", "a@dmarc.test", r)
            assert time.monotonic() - started < 10
        assert (v.spf.result, v.dkim[0].result, v.dmarc.result) == ("temperror", "temperror", "temperror"), (
            mode
        )
        assert v.disposition == "none"
        parse_header(v.authentication_results(AUTHSERV))
    # Nobody listening at all.
    dead = Resolver(ResolverConfig(nameservers=("127.0.0.1",), port=9, timeout=0.2, lifetime=0.4))
    v = await evaluate(signed, "192.0.2.10", "h.example", "a@dmarc.test", dead)
    assert v.dmarc.result == "temperror"


@async_test
async def test_hostile_messages(resolver: Resolver) -> None:
    for msg in (
        b"",
        b"\x00" * 100,
        b"From: \xff\xfe@\xff\r\n\r\n",
        b"From: a@dmarc.test\n\nbare LF\n",
        b"x" * 5000,
    ):
        v = await evaluate(msg, "192.0.2.10", "", "", resolver)
        assert AuthVerdict.from_json(v.to_json()) == v
        parse_header(v.authentication_results(AUTHSERV))


def test_from_json_rejects_other_versions() -> None:
    with pytest.raises(ValueError):
        AuthVerdict.from_json('{"v": 99}')
    with pytest.raises(ValueError):
        AuthVerdict.from_json("[]")


# -- the renderer -------------------------------------------------------------------------------


def test_render_shapes() -> None:
    assert render("mx.example", []) == "Authentication-Results: mx.example; none"
    assert authserv_id("mx example;\r\n") == "mx-example-"
    assert authserv_id("") == "unknown"
    assert value("pass") == "pass" and value("a b") == '"a b"' and value('q"\\') == '"q\\"\\\\"'
    assert pvalue("user@example.test") == "user@example.test"
    assert pvalue("@example.test") == "@example.test"
    assert pvalue("a b@example.test") == '"a b@example.test"'
    assert pvalue("abc/def=") == '"abc/def="'  # header.b base64 has tspecials: quoted
    assert clean("a\r\nb\x00c\u2028d") == "a b c d"
    field = render(
        "mx", [ResInfo("spf", "pass", 'evil\r\nX-Injected: yes"', (("smtp.mailfrom", "a@b.test\r\nBcc: x"),))]
    )
    assert "\nX-Injected" not in field and "\nBcc" not in field
    assert render("mx", [ResInfo("bad method!", "weird result", properties=(("nope", "v"),))]) == (
        "Authentication-Results: mx;\r\n\tx-invalid=permerror policy.x-invalid=v"
    )


ASCII = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=60)
ANY = st.text(max_size=80)
PROPERTY_NAMES = st.sampled_from(
    ["smtp.mailfrom", "smtp.helo", "policy.dmarc", "body.hash", "smtp.auth", "policy.iprev"]
)


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def check_structure(field: str) -> None:
    assert "\r" not in field.replace("\r\n\t", "") and "\n" not in field.replace("\r\n\t", "")
    for line in field.split("\r\n"):
        assert len(line.encode("utf-8")) <= MAX_LINE_OCTETS
    assert field.startswith("Authentication-Results: ")


@settings(max_examples=300, deadline=None)
@given(
    ANY,
    st.lists(
        st.builds(
            ResInfo,
            method=ANY,
            result=ANY,
            reason=ANY,
            properties=st.lists(st.tuples(ANY, ANY), max_size=4).map(tuple),
            comment=ANY,
        ),
        max_size=5,
    ),
)
# A regular expression's `$` also matches before a final LF: keywords must match in full.
@example("", [ResInfo(method="dkim", result="pass\n")])
@example("", [ResInfo(method="dkim\n", result="pass", properties=(("header.d", "example.org\n"),))])
def test_render_never_breaks_out_of_the_field(server_id: str, infos: list[ResInfo]) -> None:
    check_structure(render(server_id, infos))


# A strict reading of the RFC 8601 §2.2 grammar, written for this test: the oracle for values
# authres 1.2 cannot read (it accepts a quoted pvalue only as the last property of a result).
_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"
_QUOTED = r'"(?:[^"\\\r\n]|\\.)*"'
_PVALUE = rf"(?:{_QUOTED}(?:@[A-Za-z0-9_.-]+)?|[^\s;()\"]+)"
_RESINFO = re.compile(
    rf"\s*;\s*(?P<method>[A-Za-z0-9-]+)\s*=\s*(?P<result>[A-Za-z0-9-]+)"
    rf"(?:\s*\((?P<comment>[^()\\]*)\))?"
    rf"(?:\s+reason=(?P<reason>{_QUOTED}))?"
    rf"(?P<props>(?:\s+(?:smtp|header|body|policy)\.[A-Za-z0-9_.-]+={_PVALUE})*)"
)
_PROP = re.compile(rf"(?P<name>(?:smtp|header|body|policy)\.[A-Za-z0-9_.-]+)=(?P<value>{_PVALUE})")


def strict_parse(field: str) -> tuple[str, list[tuple[str, str, str, list[tuple[str, str]]]]]:
    text = field.replace("\r\n", "")
    head = "Authentication-Results: "
    assert text.startswith(head)
    rest = text[len(head) :]
    m = re.match(rf"(?P<id>{_TOKEN})", rest)
    assert m, rest
    server, rest = m.group("id"), rest[m.end() :]
    if rest == "; none":
        return server, []
    out = []
    while rest:
        m = _RESINFO.match(rest)
        assert m, rest
        props = []
        for p in _PROP.finditer(m.group("props")):
            v = p.group("value")
            props.append((p.group("name"), unescape(v[1:-1]) if v.startswith('"') and v.endswith('"') else v))
        reason = m.group("reason")
        out.append((m.group("method"), m.group("result"), unescape(reason[1:-1]) if reason else "", props))
        rest = rest[m.end() :]
    return server, out


@settings(max_examples=300, deadline=None)
@given(
    ANY,
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True),
            st.sampled_from(["pass", "fail", "none", "neutral", "temperror", "permerror", "policy"]),
            ANY,
            st.lists(st.tuples(st.sampled_from(sorted(PTYPES)).map(lambda t: t + ".x"), ANY), max_size=4),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_render_round_trips_through_the_grammar(
    server_id: str, rows: list[tuple[str, str, str, list[tuple[str, str]]]]
) -> None:
    infos = [ResInfo(m, r, reason, tuple(props)) for m, r, reason, props in rows]
    field = render(server_id, infos)
    check_structure(field)
    server, parsed = strict_parse(field)
    assert server == authserv_id(server_id)
    for info, (method, result, reason, props) in zip(infos, parsed, strict=True):
        assert (method, result) == (info.method, info.result)
        assert reason == "".join(ch if ord(ch) < 0x80 else "?" for ch in clean(info.reason))[:200]
        want = [(name, clean(v).encode()[:256].decode("utf-8", "ignore")) for name, v in info.properties]
        assert props == want


@settings(max_examples=300, deadline=None)
@given(
    ASCII,
    st.lists(
        st.tuples(
            st.sampled_from(["spf", "dkim", "dmarc", "arc", "iprev", "auth", "x-custom"]),
            st.sampled_from(["pass", "fail", "none", "neutral", "temperror", "permerror"]),
            ASCII,
            st.lists(st.tuples(PROPERTY_NAMES, ASCII), max_size=1),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_render_parses_back_with_authres(
    server_id: str, rows: list[tuple[str, str, str, list[tuple[str, str]]]]
) -> None:
    infos = [ResInfo(m, r, reason, tuple(props)) for m, r, reason, props in rows]
    field = render(server_id, infos)
    check_structure(field)
    parsed = parse_header(field)
    assert parsed.authserv_id == authserv_id(server_id).lower()  # authres lower-cases it
    assert [(x.method, x.result) for x in parsed.results] == [(m, r) for m, r, _, _ in rows]
    for info, got in zip(infos, parsed.results, strict=True):
        want_reason = clean(info.reason)[:200]
        assert unescape(got.reason or "") == want_reason
        want_props = [(name.split(".")[0], name.split(".")[1], clean(v)) for name, v in info.properties]
        got_props = [(p.type, p.name, unescape(p.value) if p.value else "") for p in got.properties]
        assert got_props == want_props


RESULT = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)


@given(
    st.builds(
        SpfResult,
        result=st.sampled_from(sorted(SPF_RESULTS)),
        domain=RESULT,
        identity=st.sampled_from(["mailfrom", "helo"]),
        sender=RESULT,
        helo=RESULT,
        remote_ip=RESULT,
        mechanism=RESULT,
        reason=RESULT,
    ),
    st.lists(
        st.builds(
            DkimResult,
            result=st.sampled_from(sorted(DKIM_RESULTS)),
            domain=RESULT,
            selector=RESULT,
            algorithm=RESULT,
            key_bits=st.none() | st.integers(0, 16384),
            identity=RESULT,
            b_prefix=RESULT,
            reason=RESULT,
        ),
        max_size=3,
    ).map(tuple),
    st.builds(
        DmarcResult,
        result=st.sampled_from(sorted(DMARC_RESULTS)),
        disposition=st.sampled_from(sorted(POLICIES)),
        from_domain=RESULT,
        policy_domain=RESULT,
        policy=st.none() | st.sampled_from(sorted(POLICIES)),
        subdomain_policy=st.booleans(),
        pct=st.integers(0, 100),
        sampled_out=st.booleans(),
        adkim=st.sampled_from(["r", "s"]),
        aspf=st.sampled_from(["r", "s"]),
        aligned_dkim=RESULT,
        aligned_spf=RESULT,
        reason=RESULT,
    ),
)
def test_verdict_json_round_trip_and_header(
    spf: SpfResult, dkim: tuple[DkimResult, ...], dmarc: DmarcResult
) -> None:
    verdict = decide(spf, dkim, dmarc)
    assert AuthVerdict.from_json(verdict.to_json()) == verdict
    field = verdict.authentication_results("mx.example")
    check_structure(field)
    _, parsed = strict_parse(field)
    assert [m for m, _, _, _ in parsed] == ["spf", *(["dkim"] * max(1, len(dkim))), "dmarc"]


def test_checks_whose_dns_never_answers_end_at_their_bounds_as_temperrors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DNS server that reads queries and answers none: DKIM and DMARC give up at their own
    bounds (the verdict's, here made short) with temperrors that say so, and the evaluation
    still returns a verdict rather than waiting for the resolver."""
    import socket

    from eventmail.mailauth import verdict as verdict_module

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    monkeypatch.setattr(verdict_module, "DKIM_TIMEOUT", 0.2)
    monkeypatch.setattr(verdict_module, "DMARC_TIMEOUT", 0.2)
    resolver = Resolver(ResolverConfig(nameservers=("127.0.0.1",), port=silent.getsockname()[1],
                                       timeout=1.0, lifetime=1.0))
    signed = b"DKIM-Signature: v=1; a=rsa-sha256; d=dmarc.test; s=sel; h=from; bh=AAAA; b=AAAA\r\n" + MESSAGE
    try:
        result = asyncio.run(evaluate(signed, "192.0.2.1", "mail.dmarc.test", "alice@dmarc.test", resolver))
    finally:
        silent.close()
    assert (result.dmarc.result, result.dmarc.reason) == ("temperror", "DMARC policy lookup timed out")
    assert [(d.result, d.reason) for d in result.dkim] == [("temperror", "DKIM verification timed out")]
    assert result.spf.result == "temperror"
