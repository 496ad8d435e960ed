"""Who may log in, how: the TLS rule, credential lookup, and failed-login limits shared by all IMAP listeners."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import time

from eventmail.imap.errors import no
from eventmail.proto import events_pb2 as pb
from eventmail.sasl import (
    Exchange,
    Failure,
    LoginLimiter,
    SaslBackend,
    advertised_mechanisms,
    create_exchange,
)
from eventmail.store import Store, normalize_address

log = logging.getLogger("eventmail.imap")


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


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
        return tls or (self.allow_plaintext and is_loopback(peer))

    def mechanisms(self, tls: bool, peer: str) -> tuple[str, ...]:
        if not self.may_send_password(tls, peer):
            return ()
        return advertised_mechanisms(tls=True)

    def exchange(self, mechanism: str, tls: bool, peer: str) -> Exchange | None:
        if not self.may_send_password(tls, peer):
            return None
        return create_exchange(mechanism, self.backend, tls=True)

    async def gate(self, peer: str, account: str | None, conn: str) -> None:
        """Wait out the limiter's delay, or refuse (RFC 5530 UNAVAILABLE: try again later)."""
        decision = self.limiter.check(peer, account)
        if not decision.allowed:
            log.warning("imap %s: login refused for %.0f s more after repeated failures", conn, decision.retry_after)
            raise no("too many failed logins; try again later", "UNAVAILABLE")
        if decision.delay > 0:
            await asyncio.sleep(decision.delay)

    def failed(self, peer: str, failure: Failure, conn: str) -> None:
        self.limiter.record_failure(peer, failure.authcid)
        log.warning(
            "imap %s: authentication failed for %r from %s: %s (%s)",
            conn, failure.authcid, peer, failure.reason.value, failure.detail,
        )

    def succeeded(self, peer: str, account: str, conn: str) -> None:
        self.limiter.record_success(peer, account)
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
