"""Tests for eventmail.mailauth.dkim: our signer checked by independent verifiers, every signature verified."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim as dkimpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventmail.mailauth.dkim import (
    OVERSIGNED_HEADERS,
    DkimResult,
    DkimSignError,
    dnsfunc_for,
    headers_to_sign,
    public_key_record,
    sign,
    sign_sync,
    verify_dkim,
)
from eventmail.mailauth.resolver import Resolver
from tests.dns_fixture import (
    SERVER_SCRIPT,
    DkimKey,
    DnsServer,
    async_test,
    make_ed25519_key,
    make_rsa_key,
    txt_rdata,
    zone_text,
)

MESSAGE = (
    b"From: Alice Example <alice@dkim.test>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: Quarterly figures\r\n"
    b"Date: Mon, 25 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <figures-1@dkim.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"the figures are attached in spirit.\r\n"
    b".leading dot line\r\n"
    b"\r\n"
)


@dataclass(frozen=True)
class Keys:
    rsa: DkimKey
    rsa1024: DkimKey
    rsa512: DkimKey
    ed: DkimKey
    other: DkimKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        make_rsa_key(2048), make_rsa_key(1024), make_rsa_key(512), make_ed25519_key(), make_ed25519_key()
    )


def dkim_zone(keys: Keys) -> str:
    return zone_text(
        "dkim.test",
        [
            f"rsa._domainkey TXT {txt_rdata(keys.rsa.txt)}",
            f"rsa1024._domainkey TXT {txt_rdata(keys.rsa1024.txt)}",
            f"small._domainkey TXT {txt_rdata(keys.rsa512.txt)}",
            f"ed._domainkey TXT {txt_rdata(keys.ed.txt)}",
            'revoked._domainkey TXT "v=DKIM1; k=ed25519; p="',
            f"mismatch._domainkey TXT {txt_rdata(keys.ed.txt)}",
            f"sha1only._domainkey TXT {txt_rdata(keys.ed.txt + '; h=sha1')}",
            f"strict._domainkey TXT {txt_rdata(keys.ed.txt + '; t=s')}",
            'garbled._domainkey TXT "v=DKIM1; k=rsa; p=!!!notbase64"',
            f"huge._domainkey TXT {txt_rdata('v=DKIM1; k=rsa; p=' + 'A' * 5000)}",
            "loop._domainkey CNAME loop._domainkey",
            "alias._domainkey CNAME ed._domainkey",
        ],
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[DnsServer]:
    zones = {
        "dkim.test": dkim_zone(keys),
        "other.test": zone_text("other.test", [f"sel._domainkey TXT {txt_rdata(keys.other.txt)}"]),
        "xn--bcher-kva.test": zone_text(
            "xn--bcher-kva.test", [f"ed._domainkey TXT {txt_rdata(keys.ed.txt)}"]
        ),
    }
    behaviours = {"broken._domainkey.dkim.test": "servfail", "junk._domainkey.dkim.test": "garbage"}
    with DnsServer.start(tmp_path_factory.mktemp("dns"), zones, behaviours=behaviours) as s:
        yield s


@pytest.fixture(scope="module")
def resolver(server: DnsServer) -> Resolver:
    return server.resolver(timeout=0.5, lifetime=1.0)


# -- independent verifiers --------------------------------------------------------------------

# dkimpy's own verify loop, run in a separate process with a plain dnspython lookup against our
# DNS server: nothing of eventmail is imported there.
INDEPENDENT_VERIFIER = textwrap.dedent(
    """
    import sys, dkim, dns.resolver
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = int(sys.argv[1])
    def dnsfunc(name, timeout=5):
        try:
            answer = r.resolve(name.decode(), "TXT")
        except Exception:
            return None
        return b"".join(answer[0].strings)
    message = sys.stdin.buffer.read()
    d = dkim.DKIM(message)
    count = sum(1 for k, _ in d.headers if k.lower() == b"dkim-signature")
    def one(i):
        try:
            return d.verify(idx=i, dnsfunc=dnsfunc)
        except dkim.DKIMException:  # e.g. "body hash mismatch"
            return False
    results = [one(i) for i in range(count)]
    print(" ".join("pass" if ok else "fail" for ok in results))
    sys.exit(0 if results and all(results) else 1)
    """
)


def independent_verify(server: DnsServer, message: bytes) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-c", INDEPENDENT_VERIFIER, str(server.port)],
        input=message,
        capture_output=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout.decode().strip()


def _netns_usable() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


# opendkim-testmsg has no resolver option: it asks the nameserver in /etc/resolv.conf. So it
# runs in a private network and mount namespace (root only) where resolv.conf points at a copy
# of our DNS server on 127.0.0.1:53. Only loopback exists inside.
OPENDKIM_IN_NETNS = textwrap.dedent(
    """
    set -u
    ip link set lo up
    echo "nameserver 127.0.0.1" > "$WORK/resolv.conf"
    mount --bind "$WORK/resolv.conf" /etc/resolv.conf
    "$PYTHON" "$SERVER" --port 53 "$@" > "$WORK/port" 2> "$WORK/dns.err" &
    pid=$!
    for i in $(seq 200); do grep -q PORT "$WORK/port" 2>/dev/null && break; sleep 0.05; done
    opendkim-testmsg < "$WORK/message.eml" > "$WORK/out" 2>&1
    rc=$?
    kill $pid; wait $pid 2>/dev/null
    cat "$WORK/out"
    exit $rc
    """
)


def opendkim_verify(server: DnsServer, message: bytes, work: Path) -> tuple[int, str]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "message.eml").write_bytes(message)
    env = {**os.environ, "WORK": str(work), "PYTHON": sys.executable, "SERVER": str(SERVER_SCRIPT)}
    args = [*server.behaviour_args, *(str(p) for p in server.zone_paths)]
    proc = subprocess.run(
        ["unshare", "--net", "--mount", "sh", "-c", OPENDKIM_IN_NETNS, "sh", *args],
        env=env,
        capture_output=True,
        timeout=120,
    )
    return proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace").strip()


requires_opendkim = pytest.mark.skipif(
    not shutil.which("opendkim-testmsg") or not _netns_usable(),
    reason="opendkim-testmsg (Debian opendkim-tools) or a root network namespace is not available",
)


# -- signing checked by others ----------------------------------------------------------------


@pytest.mark.parametrize(("selector", "attr"), [("rsa", "rsa"), ("ed", "ed")])
@async_test
async def test_our_signature_passes_independent_dkimpy(
    server: DnsServer, keys: Keys, selector: str, attr: str
) -> None:
    key: DkimKey = getattr(keys, attr)
    header = await sign(MESSAGE, "dkim.test", selector, key.algorithm, key.private_key)
    assert header.startswith(b"DKIM-Signature: ") and header.endswith(b"\r\n")
    assert b"c=relaxed/relaxed" in header and b"d=dkim.test" in header
    rc, out = independent_verify(server, header + MESSAGE)
    assert (rc, out) == (0, "pass")
    rc, out = independent_verify(server, header + MESSAGE.replace(b"spirit", b"spirits"))
    assert (rc, out) == (1, "fail")


@requires_opendkim
@pytest.mark.parametrize(("selector", "attr"), [("rsa", "rsa"), ("ed", "ed")])
def test_our_signature_passes_opendkim(
    server: DnsServer, keys: Keys, selector: str, attr: str, tmp_path: Path
) -> None:
    key: DkimKey = getattr(keys, attr)
    header = sign_sync(MESSAGE, "dkim.test", selector, key.algorithm, key.private_key)
    rc, out = opendkim_verify(server, header + MESSAGE, tmp_path / "good")
    assert rc == 0, out
    rc, out = opendkim_verify(server, header + MESSAGE.replace(b"Hello", b"Hullo"), tmp_path / "bad")
    assert rc != 0, out


# -- verification -----------------------------------------------------------------------------


@async_test
async def test_every_signature_is_verified(resolver: Resolver, keys: Keys) -> None:
    h_rsa = sign_sync(MESSAGE, "dkim.test", "rsa", "rsa-sha256", keys.rsa.private_key)
    h_ed = sign_sync(MESSAGE, "dkim.test", "ed", "ed25519-sha256", keys.ed.private_key)
    h_other = sign_sync(MESSAGE, "other.test", "sel", "ed25519-sha256", keys.other.private_key)
    h_1024 = sign_sync(MESSAGE, "dkim.test", "rsa1024", "rsa-sha256", keys.rsa1024.private_key)
    results = await verify_dkim(h_rsa + h_ed + h_other + h_1024 + MESSAGE, resolver)
    assert [(r.result, r.domain, r.selector, r.algorithm, r.key_bits) for r in results] == [
        ("pass", "dkim.test", "rsa", "rsa-sha256", 2048),
        ("pass", "dkim.test", "ed", "ed25519-sha256", 256),
        ("pass", "other.test", "sel", "ed25519-sha256", 256),
        ("pass", "dkim.test", "rsa1024", "rsa-sha256", 1024),
    ]
    assert all(r.identity == f"@{r.domain}" and len(r.b_prefix) == 16 and r.reason == "" for r in results)


@async_test
async def test_unsigned_message_has_no_results(resolver: Resolver) -> None:
    assert await verify_dkim(MESSAGE, resolver) == ()


@async_test
async def test_tampering_fails(resolver: Resolver, keys: Keys) -> None:
    signed = sign_sync(MESSAGE, "dkim.test", "ed", "ed25519-sha256", keys.ed.private_key) + MESSAGE
    body = await verify_dkim(signed.replace(b"figures are", b"figures were"), resolver)
    assert body[0].result == "fail" and "body hash" in body[0].reason
    header = await verify_dkim(signed.replace(b"Quarterly", b"Annual"), resolver)
    assert header[0].result == "fail" and "signature did not verify" in header[0].reason
    # RFC 6376 §8.15: From is over-signed, so adding a second From breaks the signature.
    added = await verify_dkim(
        signed.replace(b"\r\n\r\n", b"\r\nFrom: mallory@evil.test\r\n\r\n", 1), resolver
    )
    assert added[0].result == "fail"
    # Relaxed canonicalisation tolerates whitespace changes in headers and body (RFC 6376 §3.4).
    rewrapped = signed.replace(b"Subject: Quarterly figures", b"Subject:   Quarterly \t figures")
    assert (await verify_dkim(rewrapped.replace(b"Hello Bob,", b"Hello  Bob,"), resolver))[0].result == "pass"


@async_test
async def test_key_problems(resolver: Resolver, keys: Keys) -> None:
    def signed(selector: str, key: DkimKey) -> bytes:
        return sign_sync(MESSAGE, "dkim.test", selector, key.algorithm, key.private_key) + MESSAGE

    cases = {
        "small": (signed("small", keys.rsa512), "permerror", "too small"),
        "nokey": (signed("nokey", keys.ed), "permerror", "no key"),
        "revoked": (signed("revoked", keys.ed), "permerror", "revoked"),
        "mismatch": (signed("mismatch", keys.rsa), "permerror", "does not match"),
        "sha1only": (signed("sha1only", keys.ed), "permerror", "h="),
        "garbled": (signed("garbled", keys.rsa), "permerror", "key record invalid"),
        "huge": (signed("huge", keys.rsa), "permerror", "4096"),
        "loop": (signed("loop", keys.ed), "permerror", "CNAME"),
        "broken": (signed("broken", keys.ed), "temperror", "SERVFAIL"),
        "junk": (signed("junk", keys.ed), "temperror", ""),
        "alias": (signed("alias", keys.ed), "pass", ""),
    }
    for selector, (message, result, reason) in cases.items():
        (got,) = await verify_dkim(message, resolver)
        assert got.result == result, (selector, got)
        assert reason in got.reason, (selector, got)
        assert got.selector == selector


@async_test
async def test_signature_field_problems(resolver: Resolver, keys: Keys) -> None:
    sha1 = dkimpy.sign(MESSAGE, b"rsa", b"dkim.test", keys.rsa.private_key, signature_algorithm=b"rsa-sha1")
    (r,) = await verify_dkim(sha1 + MESSAGE, resolver)
    assert r.result == "permerror" and "RFC 8301" in r.reason
    no_from = sign_sync(MESSAGE, "dkim.test", "ed", "ed25519-sha256", keys.ed.private_key, headers=["from"])
    no_from = no_from.replace(b"h=from", b"h=subject")
    (r,) = await verify_dkim(no_from + MESSAGE, resolver)
    assert r.result == "permerror" and "From is not signed" in r.reason
    strict = sign_sync(MESSAGE, "dkim.test", "strict", "ed25519-sha256", keys.ed.private_key)
    strict = strict.replace(b"i=@dkim.test", b"i=@sub.dkim.test")
    (r,) = await verify_dkim(strict + MESSAGE, resolver)
    assert r.result == "permerror" and "t=s" in r.reason
    garbage = b"DKIM-Signature: v=1; a=rsa-sha256; this is not tag=value\r\n"
    (r,) = await verify_dkim(garbage + MESSAGE, resolver)
    assert r.result == "permerror"
    missing = b"DKIM-Signature: v=1; a=ed25519-sha256; d=dkim.test; s=ed; h=from; bh=; b=\r\n"
    (r,) = await verify_dkim(missing + MESSAGE, resolver)
    assert r.result == "permerror" and r.domain == "dkim.test"


@async_test
async def test_signature_count_is_bounded(resolver: Resolver, keys: Keys) -> None:
    header = sign_sync(MESSAGE, "dkim.test", "ed", "ed25519-sha256", keys.ed.private_key)
    results = await verify_dkim(header * 12 + MESSAGE, resolver, max_signatures=10)
    assert [r.result for r in results] == ["pass"] * 10 + ["policy"] * 2


@async_test
async def test_hostile_messages_never_raise(resolver: Resolver) -> None:
    for message in (
        b"",
        b"\x00\xff\xfe",
        b"no colon line\r\n\r\nbody",
        b"DKIM-Signature:\r\n\r\n",
        MESSAGE * 3,
    ):
        results = await verify_dkim(message, resolver)
        assert all(isinstance(r, DkimResult) for r in results)


@async_test
async def test_idn_domain_is_signed_and_looked_up_as_a_labels(resolver: Resolver, keys: Keys) -> None:
    header = await sign(MESSAGE, "Bücher.test", "ed", "ed25519-sha256", keys.ed.private_key)
    assert b"d=xn--bcher-kva.test" in header
    (r,) = await verify_dkim(header + MESSAGE, resolver)
    assert (r.result, r.domain) == ("pass", "xn--bcher-kva.test")
    # A U-label d= from a foreign signer is converted for the lookup too (RFC 8616 §4).
    utf8 = header.replace(b"d=xn--bcher-kva.test", "d=bücher.test".encode())
    utf8 = utf8.replace(b"i=@xn--bcher-kva.test", "i=@bücher.test".encode())
    (r,) = await verify_dkim(utf8 + MESSAGE, resolver)
    # The key is found (so the result is not permerror "no key"); the signature covered the
    # A-label form, so this rewritten copy fails.
    assert (r.domain, r.result, r.key_bits) == ("xn--bcher-kva.test", "fail", 256)


# -- signing details --------------------------------------------------------------------------


def test_headers_to_sign_oversigns() -> None:
    h = [x.decode() for x in headers_to_sign(MESSAGE)]
    assert h.count("from") == 2 and h.count("subject") == 2 and h.count("reply-to") == 1
    assert "received" not in h and "list-id" not in h
    assert set(h) >= {"from", "to", "subject", "date", "message-id", "mime-version", "content-type"}
    assert all(name in OVERSIGNED_HEADERS for name in ("from", "to", "cc"))


def test_public_key_record_matches_openssl(keys: Keys) -> None:
    assert public_key_record("rsa-sha256", keys.rsa.private_key) == keys.rsa.txt
    assert public_key_record("ed25519-sha256", keys.ed.private_key) == keys.ed.txt


def test_sign_errors(keys: Keys) -> None:
    with pytest.raises(DkimSignError):
        sign_sync(MESSAGE, "dkim.test", "s", "rsa-sha1", keys.rsa.private_key)
    with pytest.raises(DkimSignError):
        sign_sync(MESSAGE, "dkim.test", "s", "rsa-sha256", b"not a key")
    with pytest.raises(DkimSignError):
        sign_sync(MESSAGE, "dkim.test", "s", "ed25519-sha256", b"c2hvcnQ=")
    with pytest.raises(DkimSignError):
        sign_sync(
            b"Subject: no from\r\n\r\nbody\r\n", "dkim.test", "s", "ed25519-sha256", keys.ed.private_key
        )
    with pytest.raises(DkimSignError):
        sign_sync(MESSAGE, "bad domain", "s", "ed25519-sha256", keys.ed.private_key)
    with pytest.raises(DkimSignError):
        public_key_record("rsa-sha256", b"nope")


def test_raw_ed25519_seed_is_accepted(keys: Keys) -> None:
    import base64

    raw = base64.b64decode(keys.ed.private_key)
    assert sign_sync(MESSAGE, "dkim.test", "ed", "ed25519-sha256", raw).startswith(b"DKIM-Signature:")
    assert public_key_record("ed25519-sha256", raw) == keys.ed.txt


def test_result_round_trip() -> None:
    r = DkimResult("fail", "d.test", "s", "rsa-sha256", 2048, "@d.test", "abcdefgh", "why")
    assert DkimResult.from_dict(r.to_dict()) == r
    assert DkimResult.from_dict({"result": "nonsense", "key_bits": True}).key_bits is None


@async_test
async def test_dkimpy_dnsfunc_shim_uses_our_resolver(resolver: Resolver, keys: Keys) -> None:
    signed = sign_sync(MESSAGE, "dkim.test", "rsa", "rsa-sha256", keys.rsa.private_key) + MESSAGE
    dnsfunc = dnsfunc_for(resolver)
    assert await asyncio.to_thread(dkimpy.verify, signed, dnsfunc=dnsfunc)
    broken = sign_sync(MESSAGE, "dkim.test", "broken", "ed25519-sha256", keys.ed.private_key) + MESSAGE
    assert not await asyncio.to_thread(dkimpy.verify, broken, dnsfunc=dnsfunc)  # SERVFAIL: False, no raise


SIGNATURE_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.sampled_from(
            [
                "v=1",
                "a=rsa-sha256",
                "a=ed25519-sha256",
                "a=rsa-sha1",
                "d=dkim.test",
                "d=x..y",
                "s=ed",
                "s=rsa",
                "s=",
                "h=from",
                "h=from:to",
                "bh=",
                "bh=AAAA",
                "b=",
                "b=AAAA",
                "c=relaxed/relaxed",
                "c=bogus",
                "l=5",
                "l=-1",
                "x=1",
                "t=99999999999",
                "i=@dkim.test",
                "i=@evil.test",
                "q=dns/txt",
                "q=http",
            ]
        )
        | SIGNATURE_TEXT,
        max_size=12,
    ),
    st.binary(max_size=200),
)
def test_hostile_signatures_never_raise(resolver: Resolver, tags: list[str], body: bytes) -> None:
    field = b"DKIM-Signature: " + "; ".join(tags).encode() + b"\r\n"
    results = asyncio.run(verify_dkim(field + MESSAGE + body, resolver))
    assert len(results) == 1
    assert results[0].result in ("pass", "fail", "neutral", "policy", "temperror", "permerror")
    assert results[0].result != "pass"
