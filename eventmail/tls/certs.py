"""Self-signed certificates and server-side TLS contexts for the mail listeners."""

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_self_signed(cert_path: Path, key_path: Path, names: list[str], days: int = 365) -> None:
    """Write a self-signed ECDSA P-256 certificate for `names` (DNS names or IP addresses)."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server context: TLS 1.2 or newer, the certificate and key loaded."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for what, path in (("certificate", cert_path), ("private key", key_path)):
        if not path.is_file():
            raise FileNotFoundError(f"TLS {what} {path} does not exist (tls.cert / tls.key in the configuration)")
    try:
        ctx.load_cert_chain(str(cert_path), str(key_path))
    except ssl.SSLError as e:
        raise ssl.SSLError(f"TLS certificate {cert_path} with key {key_path}: {e.reason or e}") from None
    return ctx


def client_context(cafile: Path) -> ssl.SSLContext:
    """A client context trusting exactly `cafile` (for tests and the local tools)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    return ctx
