"""The outbound queue's runner: tries each due recipient by MX (or through a smarthost) and has the mail layer record what came of it.

The decisions — when to retry, when to give up, which notice the sender gets — are the mail
layer's (`eventmail.mail.queue`); this module carries messages: `plan_delivery` for the
destination (MX lookup, MTA-STS, DANE), `attempt` for one SMTP transaction, next MX on a
temporary failure (RFC 5321 §5.1). Of a replicating pair only the primary runs it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..mail import queue as mailqueue
from ..mail.queue import Queued, QueueView, Schedule, TryResult
from ..mailauth.resolver import Resolver
from ..metrics import QUEUE_ATTEMPTS, QUEUE_MESSAGES, QUEUE_NOTICES
from ..proto import events_pb2 as pb
from ..store import QUEUE, Committed, Store
from .attempt import AttemptResult, Auth, Outcome, Timeouts, attempt
from .destination import DestinationPolicy
from .mtasts import CachedPolicy, StsPolicy
from .tlspolicy import TlsMode, TlsRequirement

log = logging.getLogger(__name__)

SMTP_PORT = 25  # RFC 5321 §4.5.4.2
SUBMISSIONS_PORT = 465  # RFC 8314 §3.3: implicit TLS
# Tries at once: a personal server's queue is short; a burst of submissions to many domains
# should not open hundreds of connections at once.
MAX_PARALLEL = 8


@dataclass(frozen=True)
class Smarthost:
    """Relay everything through one host (config.SmarthostSettings, which reads and checks the
    setting): 465 means TLS from the start with the certificate verified (RFC 8314); on other
    ports STARTTLS, verified when a password is sent, opportunistic when not."""

    host: str
    port: int
    auth: Auth | None = None

    def tls(self) -> TlsRequirement:
        if self.port == SUBMISSIONS_PORT:
            return TlsRequirement.pkix(self.host, implicit=True, policy="smarthost:implicit-tls")
        if self.auth is not None:
            # A password goes only to the host named, over TLS whose certificate is verified: an
            # unverified STARTTLS would hand it to whoever sits in the path.
            return TlsRequirement.pkix(self.host, policy="smarthost:starttls-verified")
        # No password to protect: STARTTLS when offered (RFC 3207), as to any MX.
        return TlsRequirement(TlsMode.OPPORTUNISTIC, policy="smarthost:starttls")


def _cached(p: pb.MtaStsPolicy) -> CachedPolicy:
    return CachedPolicy.from_dict({"domain": p.domain, "id": p.policy_id, "mode": p.mode, "max_age": p.max_age,
                                   "mx": list(p.mx), "fetched_at": p.fetched_at})


def _tls_text(r: AttemptResult) -> str:
    t = r.tls
    if not t.started:
        return f"none: {t.failure}" if t.failure else "none"
    how = f"verified by {t.verified_by}" if t.verified else "not verified"
    return f"{t.version or 'TLS'} {how}" + (f" ({t.failure})" if t.failure else "")


def _results(r: AttemptResult, rcpts: list[str], tls_policy: str) -> dict[str, TryResult]:
    out: dict[str, TryResult] = {}
    for rr in r.rcpts:
        if rr.rcpt not in rcpts:
            continue
        reply = str(rr.reply) if rr.reply is not None else rr.reason
        out[rr.rcpt] = TryResult(rr.rcpt, rr.outcome is Outcome.DELIVERED, rr.outcome is Outcome.PERMANENT, reply,
                                 r.host, r.ip, tls_policy, _tls_text(r))
    return out


class QueueRunner:
    """Delivers what the queue stream holds: due recipients, grouped by domain, each group one
    destination plan and as many MX hosts as it takes."""

    def __init__(
        self, store: Store, hostname: str, resolver: Resolver, *, smarthost: Smarthost | None = None,
        routes: dict[str, Smarthost] | None = None,
        schedule: Schedule | None = None, mx_port: int = SMTP_PORT, timeouts: Timeouts | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.hostname = hostname
        self.smarthost = smarthost
        self.routes = routes or {}  # recipient domain (A-labels, lower case) -> its relay
        self.schedule = schedule or Schedule()
        self.mx_port = mx_port
        self.timeouts = timeouts or Timeouts()
        self.clock = clock
        self.view = QueueView()
        self._loaded = 0  # the last seq of the first read of the stream
        self._own: set[int] = set()  # seqs of our own records, folded already

        async def fetch(domain: str) -> StsPolicy:
            # aiohttp (about 9 MB resident) only once a policy is fetched: an MX-only node
            # (a backup MX, a receive-only host) never loads it.
            from .mtastsfetch import fetch_policy

            return await fetch_policy(domain, resolver)

        self.policy = DestinationPolicy(resolver, fetch, self_names=frozenset({hostname.lower()}))
        self._slots = asyncio.Semaphore(MAX_PARALLEL)

    def _apply(self, committed: list[Committed], own: bool = False) -> None:
        """Fold events into the view: those of the stream (the subscription: a submission, an
        operator's command) and our own tries' records, folded as soon as they are committed so
        the next round does not try the same recipients again. Each event is folded once: the
        subscription brings our own back (skipped by seq), and the first read of the stream may
        overlap what the subscription has (skipped by the read's last seq)."""
        for c in committed:
            if own:
                self._own.add(c.seq)
            elif c.seq <= self._loaded or c.seq in self._own:
                self._own.discard(c.seq)
                continue
            if c.event.WhichOneof("kind") == "mta_sts_policy":
                self.policy.cache = self.policy.cache.put(_cached(c.event.mta_sts_policy))
            else:
                self.view.apply(c.time_us / 1e6, c.event)
        QUEUE_MESSAGES.set(len(self.view.items))

    async def run(self) -> None:
        sub = self.store.stream(QUEUE).subscribe()
        try:
            first = list(self.store.stream(QUEUE).events())
            self._apply(first)
            self._loaded = first[-1].seq if first else 0
            log.info("queue: %d messages to deliver%s", len(self.view.items),
                     f" through smarthost {self.smarthost.host}:{self.smarthost.port}" if self.smarthost else " by MX")
            while True:
                self._apply(sub.pending())
                now = self.clock()
                due = [(item, rs) for item in list(self.view.items.values()) if (rs := item.due(now))]
                if due:
                    done = await asyncio.gather(*(self._try(item, [r.address for r in rs], now) for item, rs in due),
                                                return_exceptions=True)
                    for (item, _), outcome in zip(due, done, strict=True):
                        if isinstance(outcome, Exception):
                            # A bug or a store error: logged; the recipients stay due, tried again
                            # after a pause rather than in a tight loop.
                            log.error("queue %s: try failed: %r", item.id, outcome, exc_info=outcome)
                            for r in item.recipients.values():
                                r.next_at = max(r.next_at, now + self.schedule.first_retry)
                    continue
                nxt = self.view.next_due()
                wait = 3600.0 if nxt is None else max(0.05, nxt - self.clock())
                try:
                    self._apply([await asyncio.wait_for(sub.get(), timeout=wait)])
                except TimeoutError:
                    pass
        finally:
            sub.close()

    async def _try(self, item: Queued, rcpts: list[str], now: float) -> None:
        async with self._slots:
            message = await self.store.stream(QUEUE).read_blob(item.event.blob_id)
            by_domain: dict[str, list[str]] = {}
            for r in rcpts:
                by_domain.setdefault(r.rpartition("@")[2].lower(), []).append(r)
            results: dict[str, TryResult] = {}
            for domain, group in by_domain.items():
                results.update(await self._deliver(item, domain, group, message, now))
        decisions = [mailqueue.decide(item, results[r], now, self.schedule) for r in rcpts]
        for a in decisions:
            state = "delivered" if a.delivered else "failed" if a.permanent else "deferred"
            QUEUE_ATTEMPTS.labels(state).inc()
            log.info("queue %s: %s %s via %s (%s; tls %s): %s", item.id, a.rcpt_to, state, a.relay or "-",
                     a.tls_policy or "-", a.tls or "-", a.reply)
        self._apply(await mailqueue.record(self.store, decisions), own=True)
        for a in decisions:
            if mailqueue.hard_bounce(a):
                # The address does not exist: the account's mail is not sent to it again until an
                # operator (or the webapi) takes it off the list.
                await mailqueue.suppress(self.store, item.event.account, a.rcpt_to, a.reply, manual=False)
                log.info("queue %s: %s suppressed for %s (hard bounce)", item.id, a.rcpt_to, item.event.account)
        failed = [a for a in decisions if a.permanent]
        delayed = [a for a in decisions if a.delay_notice]
        for attempts, is_delay in ((failed, False), (delayed, True)):
            if attempts and await mailqueue.send_notice(self.store, self.hostname, item, attempts, delayed=is_delay):
                QUEUE_NOTICES.labels("delay" if is_delay else "failure").inc()
                log.info("queue %s: %s notice to %s", item.id, "delay" if is_delay else "failure", item.event.mail_from)

    async def _deliver(self, item: Queued, domain: str, rcpts: list[str], message: bytes, now: float) -> dict[str, TryResult]:
        q = item.event
        sh = self.routes.get(domain.encode("idna").decode("ascii") if not domain.isascii() else domain) or self.smarthost
        if sh is not None:
            r = await attempt(sh.host, sh.host, sh.port, q.mail_from, rcpts, message, tls=sh.tls(), helo=self.hostname,
                              auth=sh.auth, timeouts=self.timeouts, requiretls=q.requiretls)
            got = _results(r, rcpts, sh.tls().policy)
            return {x: got.get(x) or TryResult(x, False, False, r.error or "no answer", sh.host, "", sh.tls().policy)
                    for x in rcpts}
        tries = min(item.recipients[x].attempts for x in rcpts)
        plan = await self.policy.plan(domain, now, attempt=tries)
        if plan.mta_sts_update is not None:
            u = plan.mta_sts_update
            self._apply(await mailqueue.record_sts_policy(self.store, pb.MtaStsPolicy(
                domain=u.domain, policy_id=u.policy_id, mode=u.policy.mode, max_age=u.policy.max_age,
                mx=list(u.policy.mx), fetched_at=u.fetched_at)), own=True)
        if plan.failure is not None:
            reply = f"{plan.failure.code} {plan.failure.reason}"
            return {x: TryResult(x, False, plan.failure.permanent, reply) for x in rcpts}
        out: dict[str, TryResult] = {}  # delivered, or refused for good
        deferred: dict[str, TryResult] = {}  # the latest temporary result
        left = list(rcpts)
        for route in plan.routes[: plan.max_sessions]:
            r = await attempt(route.host, route.address, self.mx_port, q.mail_from, left, message, tls=route.tls,
                              helo=self.hostname, timeouts=self.timeouts, requiretls=q.requiretls)
            policy = plan.policy or route.tls.policy
            got = _results(r, left, policy)
            for x in left:
                res = got.get(x)
                if res is not None and (res.delivered or res.permanent):
                    out[x] = res
                else:
                    deferred[x] = res or TryResult(x, False, False, r.error or "no answer", route.host, route.address,
                                                   policy, _tls_text(r))
            # RFC 5321 §5.1: after a temporary failure the next MX host (or address) is tried.
            left = [x for x in left if x not in out]
            if not left:
                break
        for x in left:
            out[x] = deferred.get(x) or TryResult(x, False, False, "no MX host could be tried", "", "", plan.policy)
        return out
