"""tls-server-end-point channel-binding data (RFC 5929 §4.1) from DER certificates."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from eventmail.sasl.channelbinding import _oid, tls_server_end_point


def _tlv(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes(2, "big")
    return bytes([tag, 0x82]) + size + body


def fake_cert(oid: str, tbs_size: int = 10) -> bytes:
    """Certificate ::= SEQUENCE { tbs, AlgorithmIdentifier, BIT STRING } with a dummy tbs."""
    alg = _tlv(0x30, _oid(oid) + b"\x05\x00")
    return _tlv(0x30, _tlv(0x30, b"\x02\x01\x00" * (tbs_size // 3)) + alg + _tlv(0x03, b"\x00\x01"))


def test_oid_encoding() -> None:
    # X.690 §8.19 example arcs: sha256WithRSAEncryption
    assert _oid("1.2.840.113549.1.1.11") == bytes.fromhex("06092a864886f70d01010b")


@pytest.mark.parametrize(
    ("oid", "hash_name"),
    [
        ("1.2.840.113549.1.1.4", "sha256"),  # MD5 -> SHA-256 (RFC 5929 §4.1)
        ("1.2.840.113549.1.1.5", "sha256"),  # SHA-1 -> SHA-256
        ("1.2.840.113549.1.1.11", "sha256"),
        ("1.2.840.113549.1.1.12", "sha384"),
        ("1.2.840.113549.1.1.13", "sha512"),
        ("1.2.840.10045.4.3.2", "sha256"),
        ("1.2.840.10045.4.3.3", "sha384"),
    ],
)
def test_hash_follows_signature_algorithm(oid: str, hash_name: str) -> None:
    for size in (10, 300):  # short and long DER lengths
        der = fake_cert(oid, size)
        assert tls_server_end_point(der) == hashlib.new(hash_name, der).digest()


@pytest.mark.parametrize(
    "der",
    [
        b"",
        b"\x30",
        b"\x30\x05\x30\x00",
        b"\x04\x00",
        fake_cert("1.3.101.112"),  # Ed25519: no hash, binding undefined
        fake_cert("1.2.840.113549.1.1.10"),  # RSASSA-PSS: parameters not parsed
        fake_cert("1.2.840.113549.1.1.11") + b"\x00",  # trailing garbage
        b"\x30\x84\xff\xff\xff\xff",
        b"\x30\x80",
    ],
)
def test_rejects(der: bytes) -> None:
    with pytest.raises(ValueError):
        tls_server_end_point(der)


def make_cert(tmp_path: Path, key_args: list[str], digest: str) -> bytes:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", *key_args, f"-{digest}", "-nodes", "-days", "1"),
            *("-subj", "/CN=mail.example.test", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize(
    ("key_args", "digest"),
    [
        (["rsa:2048"], "sha256"),
        (["ec", "-pkeyopt", "ec_paramgen_curve:P-384"], "sha384"),
    ],
)
def test_real_certificates(tmp_path: Path, key_args: list[str], digest: str) -> None:
    der = make_cert(tmp_path, key_args, digest)
    assert tls_server_end_point(der) == hashlib.new(digest, der).digest()
    try:  # scramp: an independent implementation, if installed
        from scramp.core import CBindData  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return
    assert tls_server_end_point(der) == bytes(CBindData.from_der(der))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_real_ed25519_certificate_is_undefined(tmp_path: Path) -> None:
    der = make_cert(tmp_path, ["ed25519"], "sha256")
    with pytest.raises(ValueError):
        tls_server_end_point(der)
