"""The ACME client (RFC 8555) over certbot's `acme` package: account, order, challenges answered, finalization, ARI windows.

Everything in `AcmeClient` blocks (the package speaks HTTP through `requests`): callers run its
methods in a worker thread. Imported only when something is to be ordered (eventmail.tls.acme says
why).
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from .acme import HTTP_01, TLS_ALPN_01, AcmeError, AriWindow, Challenge, ari_cert_id

USER_AGENT = "eventmail"
BAD_NONCE_TRIES = 10  # a CA may refuse any nonce (pebble refuses 5 % by default); each retry has a fresh one


class _Network(client.ClientNetwork):
    """The package's network, retrying a request the CA refused for its nonce as often as
    BAD_NONCE_TRIES (the package retries once): RFC 8555 §6.5, a client SHOULD retry it with a
    fresh nonce. An order makes a dozen or more requests, so one retry left one order in a few
    dozen failing against a CA that refuses nonces at random, with the next try a minute or more
    away (`[acme] retry_seconds`)."""

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for _ in range(BAD_NONCE_TRIES - 1):
            try:
                return self._post_once(*args, **kwargs)
            except messages.Error as e:
                if e.code != "badNonce":
                    raise
        return self._post_once(*args, **kwargs)


class TLSALPN01Response(challenges.ChallengeResponse):
    """The (empty) response to a TLS-ALPN-01 challenge, which the `acme` package no longer has:
    RFC 8737 §3 "the client responds with an empty JSON object"."""

    typ = TLS_ALPN_01

    def __bool__(self) -> bool:
        # The package sends an empty payload (a POST-as-GET, RFC 8555 §6.3: no answer at all)
        # for a falsy body, and a JSON object without fields has length 0.
        return True


def _jwk(key_pem: bytes) -> JWKEC:
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return JWKEC(key=key)


def key_authorization(token: str, account_key: JWK) -> str:
    """RFC 8555 §8.1: token "." base64url(JWK thumbprint, RFC 7638, SHA-256)."""
    thumb = account_key.public_key().thumbprint(hash_function=hashes.SHA256)
    return f"{token}.{base64.urlsafe_b64encode(thumb).rstrip(b'=').decode()}"


class AcmeClient:
    """One account at one CA. Blocking: call from a worker thread."""

    def __init__(self, directory_url: str, account_key_pem: bytes, contact: str | None = None,
                 ca_file: str | None = None, timeout: int = 30) -> None:
        self.directory_url = directory_url
        self.contact = contact
        self.account_key = _jwk(account_key_pem)
        # ca_file: the CA's own HTTPS certificate's issuer, when it is not in the system's trust
        # store (a test CA); `requests` takes a path as `verify`.
        self._net = _Network(self.account_key, alg=ES256, user_agent=USER_AGENT,
                                         verify_ssl=ca_file or True, timeout=timeout)  # type: ignore[arg-type]
        self._acme: client.ClientV2 | None = None

    def connect(self) -> str:
        """Fetch the directory and register the account, or find it by its key when it exists
        (RFC 8555 §7.3.1: the server answers 200 with the account's URL). The account URL."""
        try:
            directory = client.ClientV2.get_directory(self.directory_url, self._net)
            self._acme = client.ClientV2(directory, net=self._net)
            registration = messages.NewRegistration.from_data(
                email=self.contact, terms_of_service_agreed=True) if self.contact else messages.NewRegistration(
                terms_of_service_agreed=True)
            try:
                regr = self._acme.new_account(registration)
            except errors.ConflictError as e:
                regr = self._acme.query_registration(messages.RegistrationResource(uri=e.location, body=messages.Registration()))
            return str(regr.uri)
        except AcmeError:
            raise
        except Exception as e:
            raise AcmeError(f"{self.directory_url}: {_describe(e)}") from e

    @property
    def acme(self) -> client.ClientV2:
        if self._acme is None:
            self.connect()
        assert self._acme is not None
        return self._acme

    def new_order(self, names: list[str], key_pem: bytes) -> messages.OrderResource:
        try:
            return self.acme.new_order(crypto_util.make_csr(key_pem, names))
        except Exception as e:
            raise AcmeError(f"new order for {', '.join(names)}: {_describe(e)}") from e

    def challenges(self, order: messages.OrderResource, kinds: tuple[str, ...]) -> list[Challenge]:
        """One challenge per authorization still pending, of the first kind in `kinds` the CA
        offers for it (a valid authorization is reused, RFC 8555 §7.1.4)."""
        out = []
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue
            name = authz.body.identifier.value
            offered: dict[str, messages.ChallengeBody] = {}
            for challb in authz.body.challenges:
                chall = challb.chall
                kind = chall.jobj.get("type") if isinstance(chall, challenges.UnrecognizedChallenge) else chall.typ
                offered.setdefault(str(kind), challb)
            kind = next((k for k in kinds if k in offered), None)
            if kind is None:
                raise AcmeError(f"{name}: the CA offers none of {', '.join(kinds)} (it offers {', '.join(offered)})")
            challb = offered[kind]
            chall = challb.chall
            token = chall.jobj["token"] if isinstance(chall, challenges.UnrecognizedChallenge) else chall.encode("token")
            out.append(Challenge(kind, name, str(token), key_authorization(str(token), self.account_key), challb))
        return out

    def answer(self, challenge: Challenge) -> None:
        """Tell the CA the challenge is ready to be validated (RFC 8555 §7.5.1)."""
        response: challenges.ChallengeResponse
        if challenge.kind == HTTP_01:
            response = challenges.HTTP01Response(key_authorization=challenge.key_authorization)
        else:
            response = TLSALPN01Response()
        try:
            self.acme.answer_challenge(challenge.body, response)
        except Exception as e:
            raise AcmeError(f"{challenge.name}: answering {challenge.kind}: {_describe(e)}") from e

    def finalize(self, order: messages.OrderResource, seconds: float) -> bytes:
        """Wait for the authorizations, finalize, download: the PEM chain, end-entity first."""
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=seconds)
        try:
            done = self.acme.poll_and_finalize(order, deadline)
        except errors.ValidationError as e:
            problems = [f"{a.body.identifier.value}: {c.error}" for a in e.failed_authzrs
                        for c in a.body.challenges if c.error is not None]
            raise AcmeError(f"validation failed: {'; '.join(problems) or e}") from e
        except Exception as e:
            raise AcmeError(f"finalizing: {_describe(e)}") from e
        return str(done.fullchain_pem).encode()

    def ari_window(self, cert_pem: bytes) -> AriWindow | None:
        """The CA's renewal window for the certificate (RFC 9773), None when the CA has no ARI."""
        acme = self.acme
        base = acme.directory.to_partial_json().get("renewalInfo")
        if not base:
            return None
        cert = x509.load_pem_x509_certificate(cert_pem)
        url = f"{str(base).rstrip('/')}/{ari_cert_id(cert)}"
        try:
            resp = self._net.get(url, content_type="application/json")
            info = messages.RenewalInfo.from_json(resp.json())
        except Exception as e:
            raise AcmeError(f"renewal info {url}: {_describe(e)}") from e
        ask_again = client.ClientV2.retry_after(resp, 6 * 3600)
        return AriWindow(_utc(info.suggested_window.start), _utc(info.suggested_window.end), _utc(ask_again))


def _utc(t: datetime.datetime) -> datetime.datetime:
    # acme's retry_after is naive local time (datetime.now()); the ARI window is aware.
    return t.astimezone(datetime.UTC) if t.tzinfo is not None else t.astimezone().astimezone(datetime.UTC)


def _describe(e: BaseException) -> str:
    """One line for the log: the CA's problem document, or the exception's class and text."""
    if isinstance(e, messages.Error):
        return f"{e.typ}: {e.detail}"
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}"[:300]
