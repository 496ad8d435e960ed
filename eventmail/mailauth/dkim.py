"""DKIM (RFC 6376, RFC 8463, RFC 8301): verify every signature of a message, and sign outgoing mail.

Verification checks every DKIM-Signature field, not only the first as `dkim.verify` does,
and gives one result per signature with d=, s=, the algorithm, the key size and a reason.
The work is split so that no DNS lookup blocks a thread and no per-byte work runs on the loop:

1. `prepare_dkim`, a pure function of the bytes, run with the message's parse in the analysis
   process (eventmail/smtp/analysis.py; or a worker thread): the message is split by the server's
   header reader (dkimcanon), each signature field parsed and checked (dkimpy's tag-list parser
   and field checks), each body hash computed and compared and each signed string built;
2. on the event loop, the key records (`<s>._domainkey.<d>`) are fetched concurrently
   through our Resolver (so its cache, timeouts and answer checks apply);
3. on the event loop, each signature is checked against its key: RSA and Ed25519 from
   `cryptography` (C) over the prepared data, key records read by dkimpy's `evaluate_pk` once
   per record (cached).

Step 3 was dkimpy's `verify_sig_process` until bench/smtp.py put DKIM at a fifth of the server's
CPU per delivery: dkimpy splits the whole message into lines again, runs its RSA in Python and
reads the key's DER on every message; the same results (tests/test_mailauth_dkimcanon.py checks
them against dkimpy and RFC 8463's example) cost a fraction of that (docs/architecture.md).

Signing uses relaxed/relaxed canonicalisation and signs the header fields RFC 6376 §5.4.1
recommends, over-signing the ones whose addition would change the meaning (§8.15). It runs
in a worker thread, through dkimpy (about 9 ms per 2048-bit RSA signature: its RSA is pure
Python), as outgoing mail is rarer than incoming.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import dkim as dkimpy
import dkim.crypto
import dkim.util
import nacl.encoding
import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from ..cputime import stage
from ..mime.headers import top_fields
from .dkimcanon import (
    CanonicalizationError,
    HeaderField,
    SplitMessage,
    canonical_body,
    canonicalizations,
    header_hash_input,
    split_message,
)
from .domains import DomainError, to_ascii_domain
from .resolver import DnsAnswer, DnsLookupFailed, DnsStatus, Resolver

DkimResultCode = Literal["pass", "fail", "neutral", "policy", "temperror", "permerror"]
DKIM_RESULTS: frozenset[str] = frozenset({"pass", "fail", "neutral", "policy", "temperror", "permerror"})
Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
ALGORITHMS: frozenset[str] = frozenset({"rsa-sha256", "ed25519-sha256"})

# RFC 6376 §6.1: "Verifiers MAY limit the number of signatures they tries to verify". Each one
# costs a DNS lookup and a body hash; a message with hundreds of signatures is an attack.
MAX_SIGNATURES = 10
# RFC 8301 §3.2: verifiers MUST NOT consider signatures with RSA keys under 1024 bits valid.
MIN_RSA_BITS = 1024
# RFC 6376 §3.5 recommends signers sign these (From is required); RFC 8058 §4 requires
# List-Unsubscribe-Post to be signed when present.
SIGNED_HEADERS: tuple[str, ...] = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "in-reply-to", "references", "mime-version", "content-type", "content-transfer-encoding",
    "content-disposition", "content-language", "list-id", "list-help", "list-unsubscribe",
    "list-unsubscribe-post", "list-subscribe", "list-post", "list-owner", "list-archive",
    "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-message-id",
)  # fmt: skip
# RFC 6376 §8.15: signing one instance more than present makes adding another break the
# signature. Done for the fields a reader trusts (who, when, what, threading, MIME structure).
OVERSIGNED_HEADERS: frozenset[str] = frozenset(
    {
        "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
        "in-reply-to", "references", "mime-version", "content-type", "content-transfer-encoding",
    }
)  # fmt: skip
MAX_REASON_CHARS = 200

_log = logging.getLogger(__name__)
_dkimpy_log = logging.getLogger(__name__ + ".dkimpy")


class DkimSignError(ValueError):
    """Signing failed: bad key, unsupported algorithm, or a message without From."""


@dataclass(frozen=True)
class DkimResult:
    """The outcome for one DKIM-Signature field (RFC 8601 §2.7.1 results)."""

    result: DkimResultCode
    domain: str  # d=, as A-labels when it could be converted
    selector: str  # s=
    algorithm: str  # a=
    key_bits: int | None  # RSA modulus size, 256 for ed25519, None when no key was read
    identity: str = ""  # i= (RFC 6376 §3.5), "" when absent
    b_prefix: str = ""  # the first characters of b=, for header.b (RFC 6008 §4)
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.result == "pass"

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))  # flat: what asdict gives, without its deep copy

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DkimResult:
        result = str(data.get("result", "permerror"))
        bits = data.get("key_bits")
        return cls(
            result=cast(DkimResultCode, result if result in DKIM_RESULTS else "permerror"),
            domain=str(data.get("domain", "")),
            selector=str(data.get("selector", "")),
            algorithm=str(data.get("algorithm", "")),
            key_bits=bits if isinstance(bits, int) and not isinstance(bits, bool) else None,
            identity=str(data.get("identity", "")),
            b_prefix=str(data.get("b_prefix", "")),
            reason=str(data.get("reason", "")),
        )


def _text(value: bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


@dataclass
class _Pending:
    """A signature that parsed and now needs its key."""

    index: int
    fields: dict[bytes, bytes]
    include_headers: list[bytes]
    header: HeaderField
    base: DkimResult
    key_name: str


def _base_result(fields: dict[bytes, bytes]) -> DkimResult:
    domain = _text(fields.get(b"d")).strip()
    try:
        domain = to_ascii_domain(domain)
    except DomainError:
        pass
    b = re.sub(r"\s+", "", _text(fields.get(b"b")))
    return DkimResult(
        result="neutral",
        domain=domain,
        selector=_text(fields.get(b"s")).strip(),
        algorithm=_text(fields.get(b"a")).strip().lower(),
        key_bits=None,
        identity=_text(fields.get(b"i")).strip(),
        b_prefix=b[:16],
    )


def _fail(base: DkimResult, result: DkimResultCode, reason: str, key_bits: int | None = None) -> DkimResult:
    return DkimResult(
        result,
        base.domain,
        base.selector,
        base.algorithm,
        key_bits,
        base.identity,
        base.b_prefix,
        _short(reason),
    )


def _parse_signatures(
    message: bytes, max_signatures: int
) -> tuple[SplitMessage | None, list[DkimResult | _Pending]]:
    """Step 1 (worker thread): split the message and check every DKIM-Signature field (dkimpy's
    tag-list parser and field checks, RFC 6376 §3.2 and §6.1.1)."""
    try:
        msg = split_message(message)
    except Exception as exc:
        return None, [
            DkimResult("permerror", "", "", "", None, reason=_short(f"message header is malformed: {exc}"))
        ]
    out: list[DkimResult | _Pending] = []
    for idx, header in enumerate(f for f in msg.fields if f.key == b"dkim-signature"):
        try:
            fields = dkim.util.parse_tag_value(header.value)
        except Exception as exc:
            base = _base_result({})
            if idx < max_signatures:
                out.append(_fail(base, "permerror", f"signature field invalid: {exc}"))
                continue
            fields = {}
        base = _base_result(fields)
        if idx >= max_signatures:
            out.append(
                _fail(base, "policy", f"not verified: more than {max_signatures} signatures (RFC 6376 §6.1)")
            )
            continue
        try:
            dkimpy.validate_signature_fields(fields)
        except Exception as exc:
            # RFC 6376 §6.1.1: a signature field that does not validate is PERMFAIL.
            out.append(_fail(base, "permerror", f"signature field invalid: {exc}"))
            continue
        include_headers = [x.lower() for x in re.split(rb"\s*:\s*", fields[b"h"])]
        algorithm = _text(fields.get(b"a")).lower()
        if algorithm == "rsa-sha1":
            out.append(_fail(base, "permerror", "rsa-sha1 signatures are not accepted (RFC 8301 §3.1)"))
            continue
        if algorithm not in ALGORITHMS:
            out.append(_fail(base, "permerror", f"unsupported algorithm {algorithm!r}"))
            continue
        if b"from" not in include_headers:
            out.append(_fail(base, "permerror", "From is not signed (RFC 6376 §6.1.1)"))
            continue
        try:
            key_name = to_ascii_domain(f"{_text(fields[b's'])}._domainkey.{_text(fields[b'd'])}")
        except DomainError as exc:
            out.append(_fail(base, "permerror", f"key name invalid: {exc}"))
            continue
        out.append(_Pending(idx, fields, include_headers, header, base, key_name))
    return msg, out


def _key_tags(record: bytes) -> dict[bytes, bytes]:
    try:
        return dict(dkim.util.parse_tag_value(record))
    except Exception:
        return {}


@dataclass(frozen=True)
class _Key:
    """A key record read once (dkimpy's evaluate_pk: tag list, base64, DER) and made a key of
    `cryptography`'s, whose RSA and Ed25519 run in C."""

    key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey
    bits: int
    ktag: bytes
    tlsrpt: bool  # s=tlsrpt: a key for TLS reports only (RFC 8460 §3), not for mail


@functools.lru_cache(maxsize=256)
def _public_key(name: str, record: bytes) -> _Key:
    """The key of a TXT record. Cached: a busy sender's few keys come up on every message, and
    the record's bytes are the whole input. Raises as dkimpy.evaluate_pk does."""
    pk, bits, ktag, tlsrpt = dkimpy.evaluate_pk(name.encode(), record)
    if ktag == b"ed25519":
        return _Key(ed25519.Ed25519PublicKey.from_public_bytes(bytes(pk)), bits, ktag, bool(tlsrpt))
    numbers = rsa.RSAPublicNumbers(int(pk["publicExponent"]), int(pk["modulus"]))
    return _Key(numbers.public_key(), bits, ktag, bool(tlsrpt))


@dataclass(frozen=True, slots=True)
class _Hashed:
    """What one signature's check needs of the message (RFC 6376 §6.1.3), computed without its
    key: the body hash compared, the signed data and b= decoded; or what stopped that."""

    error: Exception | None  # raised in place of the check: a body hash mismatch, a bad c=, ...
    data: bytes = b""  # the header hash input (§3.7)
    signature: bytes = b""  # b=, decoded


def _hash_inputs(msg: SplitMessage, p: _Pending, body_hashes: dict[tuple[bytes, bytes], bytes]) -> _Hashed:
    """The message's part of one signature's check: the per-byte work, pure (no key, no DNS)."""
    try:
        header_c, body_c = canonicalizations(p.fields.get(b"c"))
        length = p.fields.get(b"l", b"")
        cut = (body_c, length)
        if cut not in body_hashes:  # signatures with the same c= and l= share one body hash
            body = canonical_body(msg.body, body_c)
            if length:
                body = body[: int(length)]
            body_hashes[cut] = hashlib.sha256(body).digest()
        if body_hashes[cut] != base64.b64decode(re.sub(rb"\s+", b"", p.fields[b"bh"])):
            return _Hashed(dkimpy.ValidationError("body hash mismatch"))
        # A From field more than h= lists breaks the signature (dkimpy's bug #644046: an added From).
        names = [*p.include_headers, b"from"]
        data = header_hash_input(msg, names, p.header, header_c)
        return _Hashed(None, data, base64.b64decode(re.sub(rb"\s+", b"", p.fields[b"b"])))
    except Exception as exc:  # reported as _verify_one reports it, once a key was found usable
        return _Hashed(exc)


@dataclass(frozen=True)
class DkimPrepared:
    """Everything of a message's DKIM verification that needs neither DNS nor a key: the
    signature fields checked, and for each one to verify its body hash compared and its signed
    data. A pure function of the bytes (`prepare_dkim`), so it can be made in the analysis
    process with the message's parse (eventmail/smtp/analysis.py) and crosses back pickled."""

    items: tuple[DkimResult | _Pending, ...]
    hashed: dict[int, _Hashed]  # by _Pending.index


def prepare_dkim(message: bytes, max_signatures: int = MAX_SIGNATURES) -> DkimPrepared:
    """Steps 1 and the per-byte part of 3 (below): split, check every signature field, hash."""
    msg, items = _parse_signatures(message, max_signatures)
    hashed: dict[int, _Hashed] = {}
    body_hashes: dict[tuple[bytes, bytes], bytes] = {}
    for item in items:
        if isinstance(item, _Pending):
            hashed[item.index] = _hash_inputs(msg, item, body_hashes) if msg is not None else _Hashed(
                ValueError("message could not be parsed"))
    return DkimPrepared(tuple(items), hashed)


def _signature_ok(key: _Key, hashed: _Hashed) -> bool:
    """RFC 6376 §6.1.3 with the message's part done: raises what that part found (dkimpy's
    ValidationError for a body hash mismatch, CanonicalizationError for a bad c=), else checks
    b= with the key."""
    if hashed.error is not None:
        raise hashed.error
    try:
        if isinstance(key.key, ed25519.Ed25519PublicKey):
            # RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data, not the data.
            key.key.verify(hashed.signature, hashlib.sha256(hashed.data).digest())
        else:
            key.key.verify(hashed.signature, hashed.data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _verify_one(p: _Pending, answer: DnsAnswer, hashed: _Hashed) -> DkimResult:
    """Step 3: one signature against its key record; never raises."""
    base = p.base
    if answer.status is DnsStatus.TEMPERROR:
        return _fail(base, "temperror", f"key lookup {p.key_name} failed: {answer.error}")
    if answer.status is DnsStatus.PERMERROR:
        return _fail(base, "permerror", f"key record {p.key_name} unusable: {answer.error}")
    records = [r for r in answer.txt() if r.strip()]
    if not records:
        # RFC 6376 §6.1.2 step 3: no key record is PERMFAIL (no key for signature).
        return _fail(base, "permerror", f"no key for signature at {p.key_name}")
    wanted_type = b"ed25519" if base.algorithm.startswith("ed25519") else b"rsa"
    last_error = ""
    for record in records:
        tags = _key_tags(record)
        if b"p" in tags and not tags[b"p"].strip():
            last_error = "key revoked (empty p=, RFC 6376 §3.6.1)"
            continue
        try:
            key = _public_key(p.key_name, bytes(record))
        except (dkimpy.DKIMException, binascii.Error, ValueError, TypeError, KeyError, IndexError) as exc:
            last_error = f"key record invalid: {exc}"
            continue
        keysize = key.bits
        if key.ktag != wanted_type:
            # RFC 6376 §6.1.2 step 6: a key unsuitable for a= is PERMFAIL.
            return _fail(
                base, "permerror", f"key type {_text(key.ktag)} does not match a={base.algorithm}", keysize
            )
        key_hashes = tags.get(b"h")
        if key_hashes is not None and b"sha256" not in [h.strip().lower() for h in key_hashes.split(b":")]:
            return _fail(base, "permerror", "key h= does not allow sha256 (RFC 6376 §3.6.1)", keysize)
        flags = [f.strip() for f in tags.get(b"t", b"").split(b":")]
        if b"s" in flags and base.identity:
            i_domain = base.identity.rpartition("@")[2].lower().rstrip(".")
            if i_domain != base.domain:
                return _fail(base, "permerror", "key t=s forbids an i= subdomain (RFC 6376 §3.6.1)", keysize)
        if key.ktag == b"rsa" and keysize < MIN_RSA_BITS:
            return _fail(
                base, "permerror", f"RSA key of {keysize} bits is too small (RFC 8301 §3.2)", keysize
            )
        if key.tlsrpt:
            return _fail(base, "permerror", "signature invalid: the key is for TLS reports only (RFC 8460 §3)",
                         keysize)
        try:
            ok = _signature_ok(key, hashed)
        except dkimpy.ValidationError as exc:
            text = str(exc)
            if "body hash mismatch" in text:
                return _fail(base, "fail", "body hash did not verify (RFC 6376 §6.1.3)", keysize)
            return _fail(base, "permerror", f"signature invalid: {text}", keysize)
        except CanonicalizationError as exc:
            return _fail(base, "permerror", f"signature invalid: {exc}", keysize)
        except Exception as exc:
            return _fail(base, "permerror", f"verification error: {type(exc).__name__}: {exc}", keysize)
        if ok:
            return DkimResult(
                "pass", base.domain, base.selector, base.algorithm, keysize, base.identity, base.b_prefix, ""
            )
        return _fail(base, "fail", "signature did not verify (RFC 6376 §6.1.3)", keysize)
    return _fail(base, "permerror", last_error or "no usable key record")


_T = TypeVar("_T")


def _timed(fn: Callable[..., _T], *args: Any) -> _T:
    with stage("dkim"):
        return fn(*args)


def _verify_all(prepared: DkimPrepared, answers: dict[str, DnsAnswer]) -> tuple[DkimResult, ...]:
    out: list[DkimResult] = []
    for item in prepared.items:
        if isinstance(item, DkimResult):
            out.append(item)
        else:
            try:
                out.append(_verify_one(item, answers[item.key_name], prepared.hashed[item.index]))
            except Exception as exc:
                out.append(_fail(item.base, "permerror", f"verification error: {type(exc).__name__}: {exc}"))
    return tuple(out)


async def verify_dkim(
    message: bytes, resolver: Resolver, *, max_signatures: int = MAX_SIGNATURES,
    prepared: DkimPrepared | None = None,
) -> tuple[DkimResult, ...]:
    """One DkimResult per DKIM-Signature field, in header order; () when the message has none.
    `prepared` is `prepare_dkim(message)` when the caller had it made (the analysis process):
    then only the key lookups and the signature checks run here."""
    if prepared is None:
        prepared = await asyncio.to_thread(_timed, prepare_dkim, message, max_signatures)
    names = sorted({i.key_name for i in prepared.items if isinstance(i, _Pending)})
    if not names:
        return tuple(i for i in prepared.items if isinstance(i, DkimResult))
    fetched = await asyncio.gather(*(resolver.query(n, "TXT") for n in names))
    # On the loop: what is left is a key read once per record (cached) and an RSA or Ed25519
    # check in C over a few hundred octets (tens of microseconds), cheaper than a thread's trip.
    return _verify_all(prepared, dict(zip(names, fetched, strict=True)))


def dnsfunc_for(resolver: Resolver) -> Callable[..., bytes | None]:
    """A dkimpy `dnsfunc` (for `dkim.verify`, `dkim.arc_verify`, ...) that asks `resolver`.

    Blocking: call dkimpy from a worker thread. DNS failures become `dkim.DnsTimeoutError`,
    which dkimpy reports as a failed verification instead of raising.
    """

    def dnsfunc(name: bytes, timeout: float = 5.0) -> bytes | None:
        try:
            return resolver.dkim_txt(name, timeout)
        except DnsLookupFailed as exc:
            raise dkimpy.DnsTimeoutError(str(exc)) from None

    return dnsfunc


# -- signing ----------------------------------------------------------------------------------


def _header_counts(message: bytes) -> dict[str, int]:
    """How many fields of each name the header has, as the server's one header reader counts them."""
    counts: dict[str, int] = {}
    for f in top_fields(message):
        key = f.name.decode("ascii", "replace")
        counts[key] = counts.get(key, 0) + 1
    return counts


def _has_from(message: bytes) -> bool:
    return _header_counts(message).get("from", 0) > 0


def headers_to_sign(message: bytes) -> list[bytes]:
    """The h= list for `message`: present fields of SIGNED_HEADERS, over-signed where listed."""
    counts = _header_counts(message)
    out: list[bytes] = []
    for name in SIGNED_HEADERS:
        n = counts.get(name, 0) + (1 if name in OVERSIGNED_HEADERS else 0)
        out.extend([name.encode()] * n)
    return out


def sign_sync(
    message: bytes,
    domain: str,
    selector: str,
    algorithm: str,
    private_key: bytes,
    *,
    headers: Sequence[str] | None = None,
) -> bytes:
    """Blocking signer: the `DKIM-Signature: ...\\r\\n` field to prepend to `message`.

    `private_key` is PEM (PKCS#1 or PKCS#8) for rsa-sha256, and the base64 of the 32-byte seed
    for ed25519-sha256 (RFC 8463 §4; raw 32 bytes are accepted too).
    """
    if algorithm not in ALGORITHMS:
        raise DkimSignError(f"unsupported algorithm {algorithm!r} (use one of {sorted(ALGORITHMS)})")
    try:
        d_ascii = to_ascii_domain(domain)
    except DomainError as exc:
        raise DkimSignError(str(exc)) from exc
    key = private_key
    if algorithm == "ed25519-sha256" and len(key) == 32:
        key = base64.b64encode(key)
    if not _has_from(message):
        raise DkimSignError("message has no From field (RFC 6376 §5.4: From MUST be signed)")
    include = [h.lower().encode() for h in headers] if headers is not None else headers_to_sign(message)
    if b"from" not in include:
        raise DkimSignError("From must be among the signed header fields (RFC 6376 §5.4)")
    try:
        d = dkimpy.DKIM(message, logger=_dkimpy_log, signature_algorithm=algorithm.encode())
        return bytes(
            d.sign(
                selector.encode(),
                d_ascii.encode(),
                key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
            )
        )
    except (dkimpy.DKIMException, ValueError, TypeError, binascii.Error, nacl.exceptions.CryptoError) as exc:
        raise DkimSignError(f"cannot sign: {exc}") from exc


async def sign(message: bytes, domain: str, selector: str, algorithm: str, private_key: bytes) -> bytes:
    """The DKIM-Signature header field (bytes, ending in CRLF) for `message`; runs off the loop."""
    return await asyncio.to_thread(sign_sync, message, domain, selector, algorithm, private_key)


# -- key records ------------------------------------------------------------------------------


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def _der_int(n: int) -> bytes:
    raw = n.to_bytes(max(1, (n.bit_length() + 8) // 8), "big")  # leading 0 keeps it positive
    return _der(0x02, raw)


# rsaEncryption, RFC 8017 Appendix C: 1.2.840.113549.1.1.1
_RSA_ALGORITHM_ID = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + _der(0x05, b""))


def zone_txt(value: str) -> str:
    """A TXT value as zone-file text: quoted character-strings of at most 255 octets each (RFC 1035
    §3.3.14); a verifier joins them again (RFC 6376 §3.6.2.2). An RSA-2048 key needs two."""
    parts = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join(f'"{p}"' for p in parts)


def public_key_record(algorithm: str, private_key: bytes) -> str:
    """The DNS TXT value to publish at `<selector>._domainkey.<domain>` for `private_key`.

    RSA: p= is the DER SubjectPublicKeyInfo (what `openssl pkey -pubout` gives, RFC 6376 §3.6.1).
    Ed25519: p= is the raw 32-byte public key (RFC 8463 §4).
    """
    if algorithm == "rsa-sha256":
        try:
            pk = dkim.crypto.parse_pem_private_key(private_key)
        except Exception as exc:
            raise DkimSignError(f"not an RSA private key: {exc}") from exc
        rsa_key = _der(0x30, _der_int(int(pk["modulus"])) + _der_int(int(pk["publicExponent"])))
        spki = _der(0x30, _RSA_ALGORITHM_ID + _der(0x03, b"\x00" + rsa_key))
        return f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"
    if algorithm == "ed25519-sha256":
        try:
            seed = private_key if len(private_key) == 32 else base64.b64decode(private_key, validate=True)
            verify_key = nacl.signing.SigningKey(seed).verify_key
        except (ValueError, binascii.Error, nacl.exceptions.CryptoError, TypeError) as exc:
            raise DkimSignError(f"not an ed25519 seed: {exc}") from exc
        return f"v=DKIM1; k=ed25519; p={verify_key.encode(nacl.encoding.Base64Encoder).decode()}"
    raise DkimSignError(f"unsupported algorithm {algorithm!r}")
