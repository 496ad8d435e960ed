"""ACME's server side (RFC 8555, RFC 8737): answering HTTP-01 and TLS-ALPN-01 challenges, the types an order's challenges and renewal windows travel in, and the ARI certificate id.

The client that talks to the CA is eventmail.tls.acmeclient, over certbot's `acme` package, which
brings `requests`, pyOpenSSL and josepy (about 7 MB): it is imported only when something is to be
ordered, so a server whose certificates are current never loads it. What to issue and when, and
what is recorded, is the mail layer's (eventmail.mail.certificates).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .certs import ACME_TLS_ALPN, CertificateHolder, context_from_pem, self_signed_pem

if TYPE_CHECKING:
    from acme import messages
    from aiohttp import web

log = logging.getLogger(__name__)

HTTP_01 = "http-01"
TLS_ALPN_01 = "tls-alpn-01"
CHALLENGE_TYPES = (TLS_ALPN_01, HTTP_01)
# RFC 8737 §3: id-pe-acmeIdentifier.
ACME_IDENTIFIER_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.31")


class AcmeError(Exception):
    """The CA could not be reached, or refused or failed an order; the message says which."""


def new_private_key_pem() -> bytes:
    """A new ECDSA P-256 key, PEM PKCS#8: for an account or a certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def tls_alpn_certificate(name: str, key_authz: str) -> tuple[bytes, bytes]:
    """The TLS-ALPN-01 challenge certificate for `name` (RFC 8737 §3): self-signed, `name` as its
    only subjectAltName, and the critical acmeIdentifier extension holding the DER OCTET STRING
    of SHA-256(key authorization). PEM certificate and key."""
    digest = hashlib.sha256(key_authz.encode("ascii")).digest()
    octet_string = b"\x04" + bytes([len(digest)]) + digest  # DER: OCTET STRING, 32 bytes
    return self_signed_pem([name], days=7, ca=False,
                           extra=[(x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, octet_string), True)])


@dataclass
class Challenge:
    """One challenge to answer for one name of an order."""

    kind: str  # HTTP_01 or TLS_ALPN_01
    name: str
    token: str
    key_authorization: str
    body: messages.ChallengeBody


@dataclass(frozen=True)
class AriWindow:
    """The CA's suggested renewal window for a certificate (RFC 9773 §4.2), and when to ask again."""

    start: datetime.datetime
    end: datetime.datetime
    ask_again: datetime.datetime


def ari_cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 §4.1: base64url(AKI keyIdentifier) "." base64url(DER serial number bytes)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier or b""
    serial = cert.serial_number
    der = serial.to_bytes((serial.bit_length() + 8) // 8, "big")  # DER INTEGER content: a leading 0 if the top bit is set

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    return f"{b64(aki)}.{b64(der)}"


def tls_alpn_context(name: str, key_authz: str) -> ssl.SSLContext:
    """The context a TLS-ALPN-01 validation of `name` is answered with: the challenge
    certificate, and only ALPN acme-tls/1 (RFC 8737 §3)."""
    cert_pem, key_pem = tls_alpn_certificate(name, key_authz)
    return context_from_pem(cert_pem, key_pem, alpn=[ACME_TLS_ALPN])


def acme_challenge_routes(holder: CertificateHolder) -> list[web.RouteDef]:
    """HTTP-01 (RFC 8555 §8.3): GET /.well-known/acme-challenge/{token} answers the token's key
    authorization while its challenge is pending, 404 otherwise. Add them to the application of
    the port-80 listener: `app.add_routes(acme_challenge_routes(holder))`."""
    from aiohttp import web  # here, not above: a server without HTTP never loads aiohttp (~9 MB)

    async def answer(request: web.Request) -> web.Response:
        key_authz = holder.http01.get(request.match_info["token"])
        if key_authz is None:
            raise web.HTTPNotFound()
        return web.Response(text=key_authz, content_type="application/octet-stream")

    return [web.get("/.well-known/acme-challenge/{token}", answer)]


def acme_challenge_app(holder: CertificateHolder) -> web.Application:
    """An application that serves only the HTTP-01 answers (the `[acme] http01_port` listener)."""
    from aiohttp import web

    app = web.Application()
    app.add_routes(acme_challenge_routes(holder))
    return app


async def serve_http01(holder: CertificateHolder, addresses: list[str], port: int) -> Callable[[], Awaitable[None]]:
    """Serve only the HTTP-01 answers on `port` of each address (the `[acme] http01_port`
    setting, for a setup whose port 80 has no other HTTP listener); returns the stopper."""
    from aiohttp import web

    runner = web.AppRunner(acme_challenge_app(holder), access_log=None)
    await runner.setup()
    for address in addresses:
        await web.TCPSite(runner, address, port).start()
        log.info("acme: HTTP-01 answers on %s port %d", address, port)
    return runner.cleanup
