"""Who may log in, how: the TLS rule and credential lookup of all IMAP listeners; the failed-login
limits are sasl.guard's, shared with SMTP."""

from __future__ import annotations

import base64
import logging
import time

from eventmail.proto import events_pb2 as pb
from eventmail.sasl import (
    Failure,
    GuardedExchange,
    LoginLimiter,
    SaslBackend,
    advertised_mechanisms,
    create_exchange,
    guarded,
    is_loopback,
    may_send_password,
)
from eventmail.store import Store, normalize_address

log = logging.getLogger("eventmail.imap")


class Authenticator:
    """One per server: every listener's sessions share the limiter, so guesses spread over
    ports and connections still add up."""

    def __init__(self, store: Store, *, allow_plaintext: bool, limiter: LoginLimiter | None = None) -> None:
        self.store = store
        self.allow_plaintext = allow_plaintext
        self.limiter = limiter if limiter is not None else LoginLimiter(time.monotonic)
        self.backend = SaslBackend(lookup=self.lookup)

    def lookup(self, name: str) -> pb.PasswordSet | None:
        """A login name is the account name or one of its addresses (not a catch-all)."""
        system = self.store.system
        account = name if name in system.accounts else system.addresses.get(normalize_address(name))
        info = system.accounts.get(account) if account is not None else None
        return info.password if info is not None else None

    def may_send_password(self, tls: bool, peer: str) -> bool:
        """RFC 9051 §11.1 / RFC 8314: credentials only over TLS, unless this server was told to
        allow them in the clear and the client is on this machine (localserve)."""
        return may_send_password(tls=tls, peer=peer, allow_plaintext=self.allow_plaintext)

    def mechanisms(self, tls: bool, peer: str) -> tuple[str, ...]:
        if not self.may_send_password(tls, peer):
            return ()
        return advertised_mechanisms(tls=True)

    def exchange(self, mechanism: str, tls: bool, peer: str, conn: str) -> GuardedExchange | None:
        """An exchange under the failed-login limits (sasl.guard), or None if not offered here."""
        if not self.may_send_password(tls, peer):
            return None
        exchange = create_exchange(mechanism, self.backend, tls=True)
        return guarded(exchange, self.limiter, peer=peer, conn=f"imap {conn}", protocol="imap") if exchange is not None else None

    def failed(self, peer: str, failure: Failure, conn: str) -> None:
        log.warning(
            "imap %s: authentication failed for %r from %s: %s (%s)",
            conn, failure.authcid, peer, failure.reason.value, failure.detail,
        )

    def succeeded(self, peer: str, account: str, conn: str) -> None:
        log.info("imap %s: logged in as %s", conn, account)


def plain_response(user: str, password: str) -> bytes:
    """LOGIN as a SASL PLAIN initial response in its wire form (RFC 4616 §2), so LOGIN shares
    PLAIN's SASLprep, timing-safe lookup and dummy work for unknown users."""
    return base64.b64encode(b"\x00" + user.encode("utf-8") + b"\x00" + password.encode("utf-8"))


def wire_form(data: bytes | None, initial: bool) -> bytes | None:
    """The wire decoded the client's base64; the exchanges take it encoded (RFC 4959 §3: an
    empty initial response is "=")."""
    if data is None:
        return None
    if initial and not data:
        return b"="
    return base64.b64encode(data)


__all__ = ["Authenticator", "is_loopback", "plain_response", "wire_form"]
