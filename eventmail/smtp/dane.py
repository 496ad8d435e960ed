"""DANE for SMTP (RFC 7672): match a server's certificate chain against its TLSA records, without I/O.

The resolver (the policy half of outbound delivery) hands us the TLSA records it got with the
AD bit; we get the chain the server presented in the handshake (DER, leaf first) and decide.

- RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP, as are selectors and
  matching types other than 0/1 and 0/1/2 (RFC 6698 §2.1.2-§2.1.3). If records exist but none
  is usable, RFC 7672 §2.2 asks for TLS without authentication: `usable()` is empty then and the
  caller encrypts without verifying.
- DANE-EE(3) (§3.1.1): the leaf's certificate or public key matches; no name check and no
  expiry check: the DNS record is the whole authentication.
- DANE-TA(2) (§3.1.2, §3.2.2): a certificate in the presented chain matches (RFC 7672 §3.2.2:
  the server must include the trust anchor in its chain); the leaf must chain up to it with valid
  signatures, be within its validity period, and carry one of the reference names (the
  TLSA base domain, normally the MX host name). That path check is cryptography's X.509 verifier
  with the matched certificate as the only trust anchor.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509 import DNSName
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from .tlspolicy import DANE_EE, Tlsa, usable

__all__ = ["DaneResult", "verify_chain"]

@dataclass(frozen=True, slots=True)
class DaneResult:
    verified: bool
    method: str | None  # "dane-ee" or "dane-ta"
    record: Tlsa | None  # the record that matched
    reason: str  # why not, or what matched


def _selected(cert: x509.Certificate, selector: int) -> bytes:
    if selector == 0:
        return cert.public_bytes(Encoding.DER)  # the full certificate
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _matches(cert: x509.Certificate, record: Tlsa) -> bool:
    content = _selected(cert, record.selector)
    if record.matching_type == 1:
        content = hashlib.sha256(content).digest()
    elif record.matching_type == 2:
        content = hashlib.sha512(content).digest()
    return content == record.data


def verify_chain(
    chain_der: list[bytes],
    records: tuple[Tlsa, ...] | list[Tlsa],
    names: tuple[str, ...],
    *,
    now: datetime.datetime | None = None,
) -> DaneResult:
    """Whether the chain (leaf first) is authenticated by one of the usable records."""
    records = usable(records)
    if not records:
        return DaneResult(False, None, None, "no usable TLSA records (RFC 7672 §3.1.3)")
    if not chain_der:
        return DaneResult(False, None, None, "server presented no certificate")
    try:
        chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError as exc:
        return DaneResult(False, None, None, f"unparsable certificate in chain: {exc}")
    leaf = chain[0]
    reasons: list[str] = []
    for record in records:
        if record.usage == DANE_EE:
            if _matches(leaf, record):
                return DaneResult(True, "dane-ee", record, f"leaf matches TLSA {record.usage} {record.selector} {record.matching_type}")
            reasons.append(f"TLSA {record.usage} {record.selector} {record.matching_type}: leaf does not match")
            continue
        anchors = [c for c in chain if _matches(c, record)]
        if not anchors:
            reasons.append(f"TLSA {record.usage} {record.selector} {record.matching_type}: no certificate in the chain matches")
            continue
        why = _path_to(leaf, chain[1:], anchors, names, now)
        if why is None:
            return DaneResult(True, "dane-ta", record, f"chain to trust anchor matching TLSA {record.usage} {record.selector} {record.matching_type}")
        reasons.append(f"TLSA {record.usage} {record.selector} {record.matching_type}: {why}")
    return DaneResult(False, None, None, "; ".join(reasons))


def _path_to(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    anchors: list[x509.Certificate],
    names: tuple[str, ...],
    now: datetime.datetime | None,
) -> str | None:
    """None if the leaf chains to one of the anchors under one of the names; else why not."""
    if any(leaf == a for a in anchors):
        # RFC 7672 §3.1.2 lets DANE-TA match the leaf itself only as a self-issued anchor: treat
        # it as a path of length one, still checked for names and dates below.
        intermediates = []
    why = "no reference name"
    for name in names:
        builder = PolicyBuilder().store(Store(anchors))
        if now is not None:
            builder = builder.time(now)
        try:
            verifier = builder.build_server_verifier(DNSName(name))
            verifier.verify(leaf, intermediates)
            return None
        except (VerificationError, ValueError) as exc:
            why = f"chain does not verify for {name}: {exc}"
    return why
