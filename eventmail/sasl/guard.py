"""One failed-login rule for every protocol and mechanism: the limiter wrapped around each SASL exchange.

SMTP AUTH, IMAP AUTHENTICATE and IMAP LOGIN (run as PLAIN) all get their exchange through
`guarded()`, so the rule is applied once, here, and alike everywhere:

* before the exchange starts, the remote address is checked (a refusal ends it at once);
* the moment the client names the account (the authcid of PLAIN, the username of LOGIN, the
  n= of SCRAM's client-first message), and before any credential is looked at, the account is
  checked (`Exchange.admit`); a refusal ends the exchange without a password check;
* the outcome is recorded with the address and the account: a failure counts for both, a
  success marks the network as one of the account's own (ratelimit's exemption); and it is
  counted in the metrics, by protocol and failure reason.

Delays are awaited here, off the protocol's state machine; refusals are logged here, with the
connection label the protocol gives. Also here: who may send a password without TLS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from eventmail import metrics
from eventmail.sasl.mechanisms import Challenge, Exchange, Failure, FailureReason, Result, Success
from eventmail.sasl.ratelimit import Decision, LoginLimiter

__all__ = ["GuardedExchange", "guarded", "is_loopback", "may_send_password"]

log = logging.getLogger("eventmail.sasl")

Sleep = Callable[[float], Awaitable[None]]


def is_loopback(address: str) -> bool:
    """True for a peer on this machine (127/8, ::1, and 127/8 mapped into IPv6)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def may_send_password(*, tls: bool, peer: str, allow_plaintext: bool) -> bool:
    """RFC 8314 §3 / RFC 4954 §4 / RFC 9051 §11.1: credentials only over TLS, unless the server
    was told to allow them in the clear and the client is on this machine (localserve), where no
    network carries them."""
    return tls or (allow_plaintext and is_loopback(peer))


class GuardedExchange:
    """An Exchange with the failed-login limits applied: same start()/step() as the Exchange."""

    def __init__(self, inner: Exchange, limiter: LoginLimiter, *, peer: str, conn: str, protocol: str,
                 sleep: Sleep = asyncio.sleep) -> None:
        self._inner = inner
        self._protocol = protocol
        self._limiter = limiter
        self._peer = peer
        self._conn = conn
        self._sleep = sleep
        self._recorded = False
        inner.admit = self._admit_account

    @property
    def mechanism(self) -> str:
        return self._inner.mechanism

    async def start(self, initial_response: bytes | None = None) -> Result:
        decision = self._limiter.check(self._peer)
        if not decision.allowed:
            return self._refused(decision, None)
        if decision.delay > 0:
            await self._sleep(decision.delay)
        return self._outcome(await self._inner.start(initial_response))

    async def step(self, client_data: bytes) -> Result:
        return self._outcome(await self._inner.step(client_data))

    def abandon(self, detail: str) -> Failure:
        """The protocol ended the exchange itself (it refused a client line): a failed attempt."""
        failure = Failure(FailureReason.BAD_ENCODING, self._inner.authcid, detail)
        self._outcome(failure)
        return failure

    async def _admit_account(self, account: str) -> Failure | None:
        decision = self._limiter.check_account(self._peer, account)
        if not decision.allowed:
            return self._refused(decision, account)
        if decision.delay > 0:
            await self._sleep(decision.delay)
        return None

    def _refused(self, decision: Decision, account: str | None) -> Failure:
        # Not counted as a failure: the cool-down is the answer, and counting refusals would
        # extend it for as long as the guesser keeps knocking.
        self._recorded = True
        metrics.login_failed(self._protocol, FailureReason.LIMITED.value)
        which = "the address" if account is None else f"account {account!r} from this network"
        log.warning("%s: login refused, too many failures for %s (%.0f s left)", self._conn, which,
                    decision.retry_after)
        return Failure(FailureReason.LIMITED, account, "too many failed logins")

    def _outcome(self, result: Result) -> Result:
        if isinstance(result, Challenge) or self._recorded:
            return result
        self._recorded = True
        if isinstance(result, Success):
            self._limiter.record_success(self._peer, result.username)
            metrics.login_succeeded(self._protocol)
            return result
        if result.reason is not FailureReason.LIMITED:
            self._limiter.record_failure(self._peer, self._inner.account or result.authcid)
        metrics.login_failed(self._protocol, result.reason.value)
        return result


def guarded(exchange: Exchange, limiter: LoginLimiter, *, peer: str, conn: str, protocol: str) -> GuardedExchange:
    """`exchange` under the failed-login limits of `limiter` for a client at `peer`; `conn`
    labels the log lines (the protocol's connection id), `protocol` the metrics (one of
    eventmail.metrics.LOGIN_PROTOCOLS)."""
    return GuardedExchange(exchange, limiter, peer=peer, conn=conn, protocol=protocol)
