"""Our DKIM verifier (eventmail.mailauth.dkimcanon + dkim) against RFC 8463's example and against dkimpy on the same messages."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import dkim as dkimpy
import dkim.canonicalization
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventmail.mailauth import dkimcanon
from eventmail.mailauth.dkim import verify_dkim
from eventmail.mailauth.resolver import Resolver
from tests.dns_fixture import (
    DkimKey,
    DnsServer,
    async_test,
    make_ed25519_key,
    make_rsa_key,
    txt_rdata,
    zone_text,
)

# RFC 8463 Appendix A: the keys (A.2) and the message signed with both (A.3), continuation
# lines indented by one space as in the RFC's text.
RFC8463_ED25519 = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
RFC8463_RSA = (
    "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY"
    "/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kry"
    "OTIKT+l/K4w3QIDAQAB"
)
RFC8463_MESSAGE = "\r\n".join([
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;",
    " d=football.example.com; i=@football.example.com;",
    " q=dns/txt; s=brisbane; t=1528637909; h=from : to :",
    " subject : date : message-id : from : subject : date;",
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;",
    " b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus",
    " Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==",
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;",
    " d=football.example.com; i=@football.example.com;",
    " q=dns/txt; s=test; t=1528637909; h=from : to : subject :",
    " date : message-id : from : subject : date;",
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;",
    " b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3",
    " DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz",
    " dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=",
    "From: Joe SixPack <joe@football.example.com>",
    "To: Suzie Q <suzie@shopping.example.net>",
    "Subject: Is dinner ready?",
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)",
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>",
    "",
    "Hi.",
    "",
    "We lost the game.  Are you hungry yet?",
    "",
    "Joe.",
    "",
]).encode()

KEYS: dict[str, DkimKey] = {}


def key(name: str) -> DkimKey:
    if name not in KEYS:
        KEYS[name] = make_rsa_key(1024) if name == "rsa" else make_ed25519_key()
    return KEYS[name]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    zones = {
        "football.example.com": zone_text("football.example.com", [
            f"brisbane._domainkey TXT {txt_rdata(RFC8463_ED25519)}",
            f"test._domainkey TXT {txt_rdata(RFC8463_RSA)}",
        ]),
        "canon.test": zone_text("canon.test", [
            f"rsa._domainkey TXT {txt_rdata(key('rsa').txt)}",
            f"ed._domainkey TXT {txt_rdata(key('ed').txt)}",
        ]),
    }
    with DnsServer.start(tmp_path_factory.mktemp("dns"), zones) as s:
        yield s


@pytest.fixture(scope="module")
def resolver(server: DnsServer) -> Resolver:
    return server.resolver(timeout=0.5, lifetime=1.0)


@async_test
async def test_rfc8463_example_passes_both_signatures(resolver: Resolver) -> None:
    results = await verify_dkim(RFC8463_MESSAGE, resolver)
    assert [(r.result, r.selector, r.algorithm, r.key_bits) for r in results] == [
        ("pass", "brisbane", "ed25519-sha256", 256),
        ("pass", "test", "rsa-sha256", 1024),
    ]
    # The body changed: both body hashes fail; a signed header changed: both signatures fail.
    body = await verify_dkim(RFC8463_MESSAGE.replace(b"hungry", b"angry"), resolver)
    assert [(r.result, "body hash" in r.reason) for r in body] == [("fail", True)] * 2
    header = await verify_dkim(RFC8463_MESSAGE.replace(b"dinner", b"lunch"), resolver)
    assert [(r.result, "did not verify" in r.reason) for r in header] == [("fail", True)] * 2
    # Relaxed canonicalisation: re-folded fields and re-spaced lines still pass (RFC 6376 §3.4.2).
    respaced = RFC8463_MESSAGE.replace(b"Subject: Is dinner", b"SUBJECT :  Is\r\n\tdinner").replace(
        b"game.  Are", b"game.\t Are").replace(b"Joe.\r\n", b"Joe.  \r\n\r\n\r\n")
    assert [r.result for r in await verify_dkim(respaced, resolver)] == ["pass", "pass"]


# -- the same computations as dkimpy ---------------------------------------------------------

LINE_TEXT = st.text(alphabet=st.sampled_from(list("ab Z.:;\t=-")), max_size=20).map(str.encode)
FIELD_NAMES = st.sampled_from([b"From", b"from", b"To", b"Subject", b"X-Thing", b"DKIM-Signature", b"Date"])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    fields = []
    for _ in range(draw(st.integers(1, 6))):
        name = draw(FIELD_NAMES)
        value = draw(LINE_TEXT)
        folds = draw(st.lists(st.tuples(st.sampled_from([b" ", b"\t", b"  "]), LINE_TEXT), max_size=2))
        fields.append(name + b":" + value + b"".join(b"\r\n" + ws + t for ws, t in folds) + b"\r\n")
    lines = draw(st.lists(LINE_TEXT, max_size=8))
    body = b"\r\n".join(lines) + draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b"  \r\n\r\n"]))
    return b"".join(fields) + b"\r\n" + body


class Collect:
    """Stands in for dkimpy's hash object to keep what it would hash."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def update(self, data: bytes) -> None:
        self.data.append(data)


@settings(max_examples=400, deadline=None)
@given(messages(), st.lists(FIELD_NAMES.map(bytes.lower), min_size=1, max_size=6))
def test_canonical_forms_are_dkimpys(message: bytes, names: list[bytes]) -> None:
    """Body canonicalisation, field selection and the signed-data string are byte for byte what
    dkimpy computes from the same message, for simple and relaxed."""
    ours = dkimcanon.split_message(message)
    headers, body = dkimpy.rfc822_parse(message)
    assert [(f.name, f.value) for f in ours.fields] == [(bytes(n), bytes(v)) for n, v in headers]
    for method in (b"simple", b"relaxed"):
        policy = dkim.canonicalization.CanonicalizationPolicy.from_c_value(method + b"/" + method)
        assert dkimcanon.canonical_body(ours.body, method) == policy.canonicalize_body(body)
        signature = dkimcanon.HeaderField(b"dkim-signature", b"DKIM-Signature",
                                          b" v=1; a=rsa-sha256; h=from;\r\n b=AbC+/\r\n dE=; bh=xyz\r\n")
        collected = Collect()
        dkimpy.hash_headers(collected, policy, policy.canonicalize_headers(headers), list(names),
                            (signature.name, signature.value), {})
        assert dkimcanon.header_hash_input(ours, list(names), signature, method) == b"".join(collected.data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    messages(),
    st.sampled_from(["rsa", "ed"]),
    st.sampled_from([b"simple/simple", b"relaxed/relaxed", b"relaxed/simple", b"simple/relaxed"]),
    st.booleans(),
    st.sampled_from([b"", b"X-Added: later\r\n", b"From: second@evil.test\r\n"]),
    st.sampled_from([(b"", b""), (b"\r\n\r\n", b"\r\n\r\n x\r\n"), (b"a", b"a  \t"), (b"Z", b"z")]),
)
def test_pass_and_fail_agree_with_dkimpy(resolver: Resolver, message: bytes, which: str, c: bytes,
                                         length: bool, added: bytes, change: tuple[bytes, bytes]) -> None:
    """A message signed by dkimpy (with l= or not), then perhaps changed on the way (a field
    added above, text replaced, text appended past l=): our result is pass exactly when dkimpy's
    own verification passes."""
    message = b"From: a@canon.test\r\n" + message
    k = key(which)
    algorithm = b"rsa-sha256" if which == "rsa" else b"ed25519-sha256"
    signature = dkimpy.sign(message, which.encode(), b"canon.test", k.private_key, canonicalize=tuple(c.split(b"/")),
                            include_headers=[b"from", b"subject", b"to"], length=length,
                            signature_algorithm=algorithm)
    received = added + signature + message.replace(change[0], change[1], 1) + (b"appended\r\n" if length else b"")
    results = asyncio.run(verify_dkim(received, resolver))

    def txt(name: bytes, timeout: float = 5) -> bytes:
        return (key("rsa") if name.startswith(b"rsa.") else key("ed")).txt.encode()

    try:
        theirs = dkimpy.DKIM(received, minkey=1024).verify(idx=0 if not added.startswith(b"DKIM") else 1, dnsfunc=txt)
    except dkimpy.DKIMException:
        theirs = False
    assert (results[0].result == "pass") == theirs, (results[0], received)
