"""Channel-binding data for SCRAM-PLUS: tls-server-end-point from a DER certificate (RFC 5929 §4)."""

from __future__ import annotations

import hashlib

__all__ = [
    "TLS_EXPORTER",
    "TLS_EXPORTER_LABEL",
    "TLS_EXPORTER_LENGTH",
    "TLS_SERVER_END_POINT",
    "tls_server_end_point",
]

TLS_SERVER_END_POINT = "tls-server-end-point"
TLS_EXPORTER = "tls-exporter"
# RFC 9266 §2: tls-exporter data = TLS exporter with this label, no context, 32 bytes. Python's
# ssl module has no exporter API (only get_channel_binding("tls-unique")), so the TLS layer must
# get it elsewhere (e.g. pyOpenSSL's export_keying_material) and pass the bytes in.
TLS_EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
TLS_EXPORTER_LENGTH = 32


def _oid(dotted: str) -> bytes:
    """DER encoding (tag, length, value) of an OBJECT IDENTIFIER (X.690 §8.19)."""
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return bytes([0x06, len(body)]) + bytes(body)


# RFC 5929 §4.1: hash with the certificate's signatureAlgorithm hash, except MD5 and SHA-1,
# which become SHA-256. Algorithms with no single hash (Ed25519, Ed448, RSASSA-PSS parameters we
# do not parse) leave the binding undefined, so they are refused.
_SIGNATURE_HASHES = {
    _oid("1.2.840.113549.1.1.4"): "sha256",  # md5WithRSAEncryption -> SHA-256
    _oid("1.2.840.113549.1.1.5"): "sha256",  # sha1WithRSAEncryption -> SHA-256
    _oid("1.2.840.113549.1.1.11"): "sha256",  # sha256WithRSAEncryption
    _oid("1.2.840.113549.1.1.12"): "sha384",  # sha384WithRSAEncryption
    _oid("1.2.840.113549.1.1.13"): "sha512",  # sha512WithRSAEncryption
    _oid("1.2.840.113549.1.1.14"): "sha224",  # sha224WithRSAEncryption
    _oid("1.2.840.10045.4.1"): "sha256",  # ecdsa-with-SHA1 -> SHA-256
    _oid("1.2.840.10045.4.3.1"): "sha224",  # ecdsa-with-SHA224
    _oid("1.2.840.10045.4.3.2"): "sha256",  # ecdsa-with-SHA256
    _oid("1.2.840.10045.4.3.3"): "sha384",  # ecdsa-with-SHA384
    _oid("1.2.840.10045.4.3.4"): "sha512",  # ecdsa-with-SHA512
}


def _read_tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """Return (tag, start of value, end of value) of the DER element at `pos` (X.690 §8.1)."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER")
    tag, first = der[pos], der[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(der):
            raise ValueError("bad DER length")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def tls_server_end_point(cert_der: bytes) -> bytes:
    """RFC 5929 §4.1 tls-server-end-point data: hash of the server's DER certificate.

    Raises ValueError for malformed DER or a signature algorithm the RFC leaves undefined.
    """
    # RFC 5280 §4.1: Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
    tag, start, end = _read_tlv(cert_der, 0)
    if tag != 0x30 or end != len(cert_der):
        raise ValueError("not a DER certificate")
    tag, _, tbs_end = _read_tlv(cert_der, start)
    if tag != 0x30:
        raise ValueError("not a DER certificate")
    # AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER, parameters ANY OPTIONAL }
    tag, alg_start, _ = _read_tlv(cert_der, tbs_end)
    if tag != 0x30:
        raise ValueError("not a DER certificate")
    tag, _, oid_end = _read_tlv(cert_der, alg_start)
    if tag != 0x06:
        raise ValueError("not a DER certificate")
    hash_name = _SIGNATURE_HASHES.get(cert_der[alg_start:oid_end])
    if hash_name is None:
        raise ValueError("tls-server-end-point is undefined for this signature algorithm")
    return hashlib.new(hash_name, cert_der).digest()
