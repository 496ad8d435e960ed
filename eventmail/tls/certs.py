"""Self-signed certificates, server-side TLS contexts, the holder that picks a listener's certificate by SNI, and the mail host's lasting key with its DANE record value."""

import datetime
import ipaddress
import logging
import os
import ssl
import tempfile
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)


def make_self_signed(cert_path: Path, key_path: Path, names: list[str], days: int = 365) -> None:
    """Write a self-signed ECDSA P-256 certificate for `names` (DNS names or IP addresses)."""
    cert_pem, key_pem = self_signed_pem(names, days)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.touch(mode=0o600)
    key_path.write_bytes(key_pem)
    cert_path.write_bytes(cert_pem)


def self_signed_pem(names: list[str], days: int = 365, ca: bool = True,
                    extra: Sequence[tuple[x509.ExtensionType, bool]] = (),
                    key_pem: bytes | None = None) -> tuple[bytes, bytes]:
    """A self-signed certificate for `names` and its key, both PEM (key PKCS#8): with `key_pem`'s
    key (see read_host_key), else a new ECDSA P-256 one.
    `ca`: with BasicConstraints CA (a self-signed server certificate a client may pin as its own
    root); `extra`: more (extension, critical) pairs, e.g. ACME's acmeIdentifier."""
    key: Any = (serialization.load_pem_private_key(key_pem, password=None) if key_pem is not None
                else ec.generate_private_key(ec.SECP256R1()))
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    for extension, critical in extra:
        builder = builder.add_extension(extension, critical=critical)
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class HostKeyError(Exception):
    """The host key file cannot be used: one line naming the file."""


def read_host_key(path: Path) -> bytes:
    """The mail host's lasting private key (`[acme] host_key_file`), PEM PKCS#8, checked to be one a
    CA signs and a sender's DANE check accepts: ECDSA P-256/P-384 or RSA of at least 2048 bits."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as e:
        raise HostKeyError(f"{path}: {e.strerror}") from None
    except (ValueError, TypeError):
        raise HostKeyError(f"{path}: not an unencrypted PEM private key") from None
    good = (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in ("secp256r1", "secp384r1")) or (
        isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048)
    if not good:
        raise HostKeyError(f"{path}: an ECDSA P-256/P-384 or RSA (2048 bits or more) key is needed")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def tlsa_3_1_1(key_pem: bytes) -> str:
    """The data of a "TLSA 3 1 1" record for a key (RFC 6698 §2.1; RFC 7671 §5.1: DANE-EE, the
    SubjectPublicKeyInfo, SHA-256): true for every certificate made with this key, self-signed ones too."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return digest.finalize().hex()


def _server_context() -> ssl.SSLContext:
    """TLS 1.2 or newer, and no TLS 1.3 session tickets. Tickets arrive after the handshake, while
    the client may already be writing its first command; imaplib2's reader and writer threads
    then use one OpenSSL connection at once (offlineimap after STARTTLS: a hang to the server's
    timeout, or a crash, in most runs here). Mail clients gain little from resumption: a full
    handshake per connection costs a millisecond of CPU."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.num_tickets = 0
    return ctx


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server context: TLS 1.2 or newer, the certificate and key loaded."""
    ctx = _server_context()
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


def context_from_pem(chain_pem: bytes, key_pem: bytes, alpn: Iterable[str] = ()) -> ssl.SSLContext:
    """A server context for a certificate chain and key held in memory (from the store).

    OpenSSL loads certificates only from files: the PEM goes through an anonymous memory file
    (memfd), so no private key touches a disk unencrypted."""
    ctx = _server_context()
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if hasattr(os, "memfd_create"):
        fds = [os.memfd_create("eventmail-cert"), os.memfd_create("eventmail-key")]
        try:
            for fd, data in zip(fds, (chain_pem, key_pem), strict=True):
                os.write(fd, data)
            ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
        finally:
            for fd in fds:
                os.close(fd)
        return ctx
    with tempfile.TemporaryDirectory() as d:  # mode 0700: only this user reads the key meanwhile
        (Path(d) / "c.pem").write_bytes(chain_pem)
        (Path(d) / "k.pem").write_bytes(key_pem)
        ctx.load_cert_chain(str(Path(d) / "c.pem"), str(Path(d) / "k.pem"))
    return ctx


ACME_TLS_ALPN = "acme-tls/1"  # RFC 8737 §6.2


class CertificateHolder:
    """The certificates every TLS listener presents, swapped in place without a restart.

    Every listener (SMTP STARTTLS and implicit, IMAP, HTTPS) uses `context`: its `sni_callback`
    switches each handshake to the context of the certificate for the name the client asked for
    (RFC 6066 §3), or to the default one (the mail host's) when the name is unknown or not sent.
    `install` replaces a name's context: handshakes after it present the new certificate, open
    connections keep theirs.

    It also answers ACME challenges: a ClientHello that offers ALPN `acme-tls/1` for a name with a
    pending TLS-ALPN-01 challenge gets that challenge's certificate (RFC 8737 §3), and `http01`
    maps an HTTP-01 token to its key authorization (RFC 8555 §8.3; served by
    eventmail.tls.acme.acme_challenge_app)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context  # the listeners' context; its own certificate serves until install()
        self._default: ssl.SSLContext | None = None
        self._by_name: dict[str, ssl.SSLContext] = {}
        self._challenges: dict[str, ssl.SSLContext] = {}
        self.http01: dict[str, str] = {}
        # Handshakes whose ClientHello offered acme-tls/1: seen by the message callback, which
        # OpenSSL calls with the ClientHello before the SNI callback runs.
        self._acme_hellos: weakref.WeakSet[Any] = weakref.WeakSet()
        context.sni_callback = self._pick

    def install(self, names: Iterable[str], context: ssl.SSLContext, default: bool = False) -> None:
        """Present `context` for `names` (DNS names, matched case-insensitively) from now on;
        `default`: also to clients that send no name or an unknown one."""
        for name in names:
            self._by_name[name.lower().rstrip(".")] = context
        if default:
            self._default = context

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            self._by_name.pop(name.lower().rstrip("."), None)

    def current(self, name: str) -> ssl.SSLContext | None:
        return self._by_name.get(name.lower().rstrip("."))

    def add_tls_alpn_challenge(self, name: str, context: ssl.SSLContext) -> None:
        """Answer TLS-ALPN-01 for `name` with `context` (its challenge certificate) until removed."""
        self._challenges[name.lower().rstrip(".")] = context
        self._watch_hellos(True)

    def remove_tls_alpn_challenge(self, name: str) -> None:
        self._challenges.pop(name.lower().rstrip("."), None)
        if not self._challenges:
            self._watch_hellos(False)

    def _watch_hellos(self, on: bool) -> None:
        # Only while a challenge is pending: the callback runs for every TLS record of every
        # handshake started meanwhile. `_msg_callback` is CPython's (private, since 3.8) hook on
        # SSL_CTX_set_msg_callback; without it the challenge certificate goes to any handshake
        # for the name (it fails verification there; see docs/acme.md).
        if hasattr(self.context, "_msg_callback"):
            self.context._msg_callback = self._hello if on else None

    def _hello(self, conn: Any, direction: str, version: Any, content_type: Any, msg_type: Any, data: bytes) -> None:
        if direction == "read" and msg_type == ssl._TLSMessageType.CLIENT_HELLO:  # type: ignore[attr-defined]
            if ACME_TLS_ALPN.encode() in client_hello_alpn(data):
                self._acme_hellos.add(conn)

    def _pick(self, conn: Any, name: str | None, ctx: ssl.SSLContext) -> None:
        key = (name or "").lower().rstrip(".")
        challenge = self._challenges.get(key)
        if challenge is not None and (conn in self._acme_hellos or not hasattr(self.context, "_msg_callback")):
            conn.context = challenge
            return
        chosen = self._by_name.get(key) or self._default
        if chosen is not None and chosen is not conn.context:
            conn.context = chosen


def client_hello_alpn(message: bytes) -> list[bytes]:
    """The ALPN protocol names a TLS ClientHello handshake message offers (RFC 8446 §4.1.2,
    RFC 7301 §3.1); empty when it offers none or cannot be parsed."""
    try:
        pos = 4 + 2 + 32  # handshake header, legacy_version, random
        pos += 1 + message[pos]  # legacy_session_id
        pos += 2 + int.from_bytes(message[pos:pos + 2], "big")  # cipher_suites
        pos += 1 + message[pos]  # legacy_compression_methods
        end = pos + 2 + int.from_bytes(message[pos:pos + 2], "big")
        pos += 2
        while pos + 4 <= end:
            kind = int.from_bytes(message[pos:pos + 2], "big")
            size = int.from_bytes(message[pos + 2:pos + 4], "big")
            body = message[pos + 4:pos + 4 + size]
            pos += 4 + size
            if kind == 16:  # application_layer_protocol_negotiation
                names, i = [], 2
                while i < len(body):
                    n = body[i]
                    names.append(body[i + 1:i + 1 + n])
                    i += 1 + n
                return names
    except IndexError:
        pass
    return []
