"""Throwaway certificates for the SMTP client tests: a CA, a server certificate it issued, a self-signed one."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eventmail.smtp.tlspolicy import Tlsa


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@dataclass
class Certs:
    ca_pem: Path  # the throwaway CA
    chain_pem: Path  # server cert issued by the CA, then the CA (RFC 7672 §3.2.2: TA in the chain)
    key_pem: Path
    self_pem: Path  # a self-signed server cert for the same name
    self_key_pem: Path
    ca: x509.Certificate
    leaf: x509.Certificate

    def tlsa_ee(self) -> Tlsa:
        spki = self.leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return Tlsa(3, 1, 1, hashlib.sha256(spki).digest())

    def tlsa_ta(self) -> Tlsa:
        return Tlsa(2, 0, 1, hashlib.sha256(self.ca.public_bytes(serialization.Encoding.DER)).digest())


def make_certs(directory: Path, name: str = "mx.remote.test") -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    later = now + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("eventmail test CA"))
        .issuer_name(_name("eventmail test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    sans = x509.SubjectAlternativeName(
        [x509.DNSName(name), x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
    )

    def server(key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(sans, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if signer is ca_key:
            b = b.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        return b.sign(signer, hashes.SHA256())

    key = ec.generate_private_key(ec.SECP256R1())
    leaf = server(key, ca.subject, ca_key)
    self_key = ec.generate_private_key(ec.SECP256R1())
    self_cert = server(self_key, _name(name), self_key)
    pem = serialization.Encoding.PEM
    certs = Certs(
        directory / "ca.pem", directory / "chain.pem", directory / "key.pem",
        directory / "self.pem", directory / "self-key.pem", ca, leaf,
    )
    certs.ca_pem.write_bytes(ca.public_bytes(pem))
    certs.chain_pem.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    certs.key_pem.write_bytes(_pem_key(key))
    certs.self_pem.write_bytes(self_cert.public_bytes(pem))
    certs.self_key_pem.write_bytes(_pem_key(self_key))
    for p in (certs.key_pem, certs.self_key_pem):
        p.chmod(0o644)  # Postfix reads them as root, the Python servers as us; throwaway keys
    return certs
