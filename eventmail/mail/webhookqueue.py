"""The webhook queue: pending hooks folded from the queue stream, the task that posts them on Mox's retry schedule and records each attempt, and outgoing hooks made from the outbound queue's results.

Every hook is a `WebhookQueued` event (its id is that event's seq) and every try a
`WebhookAttempt` carrying its decision: delivered, given up, or the time of the next try. `HookView`
folds them (pure); the sender posts what is due and records the outcome. A server killed while a
hook is pending finds it in the log and posts it again: delivery is at least once, and a
receiver tells a repeat by X-Mox-Webhook-ID. Outgoing hooks are decided by the same task from
the outbound queue's `OutboundAttempt` and `OutboundDropped` events; each `WebhookQueued` names the
event it reports (`source_seq`), so after a restart the task goes on after the last one reported.
Of a replicating pair only the primary runs it (eventmail.serve).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..mime.headers import first_value
from ..proto import events_pb2 as pb
from ..store import QUEUE, Committed, Store, StoreError
from . import webhooks
from .queue import hard_bounce

log = logging.getLogger(__name__)

# Mox's schedule (queue/hook.go): after a failed try the next comes 1, 2, 4, 7.5, 15, 30 minutes,
# then 1, 2, 4, 8, 16 hours later, each with ±1% jitter; the try after the 16-hour wait is the
# last (12 tries over about 33 hours).
INTERVALS = (60.0, 120.0, 240.0, 450.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 57600.0)
JITTER = 0.01
# Mox's limits: a request may take 60 seconds; at most 10 in flight, one per URL at a time (a
# slow receiver is not hit in parallel); 512 bytes of a response are kept for the record.
REQUEST_TIMEOUT = 60.0
MAX_CONCURRENT = 10
RESPONSE_BYTES = 512
USER_AGENT = "eventmail (webhook)"


@dataclass(frozen=True)
class HookSchedule:
    """Mox's intervals, scaled so that the first is `first_retry` seconds (tests shorten it)."""

    first_retry: float = INTERVALS[0]

    @property
    def tries(self) -> int:
        return len(INTERVALS) + 1

    def next_attempt(self, attempt: int, now: float, jitter: float) -> float:
        """When to try again after failed try number `attempt` (1, 2, ...); 0.0: give up."""
        if attempt > len(INTERVALS):
            return 0.0
        return now + INTERVALS[attempt - 1] * (self.first_retry / INTERVALS[0]) * (1.0 + jitter)


@dataclass
class PendingHook:
    seq: int
    hook: pb.WebhookQueued
    queued_at: float
    attempts: int = 0
    next_at: float = 0.0


class HookView:
    """The hooks still to deliver, folded from the queue stream (pure: replay gives the same)."""

    def __init__(self) -> None:
        self.pending: dict[int, PendingHook] = {}
        self.by_recipient: dict[tuple[str, str, str], int] = {}  # (account, queue id, rcpt) -> pending hook
        self.reported = 0  # the last outbound queue event an outgoing hook was queued for

    def apply(self, seq: int, time_s: float, event: pb.Event) -> None:
        kind = event.WhichOneof("kind")
        if kind == "webhook_queued":
            q = pb.WebhookQueued()
            q.CopyFrom(event.webhook_queued)
            # The body (up to a few MB for an incoming message) stays in the log, read when sent:
            # a receiver down for a day must not make the server hold every pending body in memory.
            q.ClearField("payload")
            if q.supersedes:
                self._drop(q.supersedes)
            self.pending[seq] = PendingHook(seq, q, time_s, next_at=time_s)
            if q.queue_id:
                self.by_recipient[(q.account, q.queue_id, q.rcpt_to)] = seq
            self.reported = max(self.reported, q.source_seq)
        elif kind == "webhook_attempt":
            a = event.webhook_attempt
            p = self.pending.get(a.hook)
            if p is None:
                return
            p.attempts = a.attempt
            if a.next_attempt == 0:
                self._drop(a.hook)
            else:
                p.next_at = a.next_attempt

    def _drop(self, seq: int) -> None:
        p = self.pending.pop(seq, None)
        if p is not None and p.hook.queue_id:
            self.by_recipient.pop((p.hook.account, p.hook.queue_id, p.hook.rcpt_to), None)


def decide(p: PendingHook, status: int, error: str, response: str, duration: float, now: float,
           schedule: HookSchedule, jitter: float) -> pb.WebhookAttempt:
    """The recorded outcome of one try. Success is a 200 answer, as Mox has it."""
    attempt = p.attempts + 1
    delivered = status == 200 and not error
    return pb.WebhookAttempt(
        hook=p.seq, attempt=attempt, status=status, error=error[:500], response=response[:RESPONSE_BYTES],
        duration_ms=int(duration * 1000), delivered=delivered,
        next_attempt=0.0 if delivered else schedule.next_attempt(attempt, now, jitter))


@dataclass
class _Sent:
    """An outbound message as the outgoing hooks need it."""

    event: pb.OutboundQueued
    left: set[str]
    header: tuple[str, str] | None = None  # (Message-ID, Subject), read from its blob once


@dataclass
class _Outbound:
    """The outbound messages whose results may still be reported."""

    messages: dict[str, _Sent] = field(default_factory=dict)

    def note(self, event: pb.Event) -> None:
        if event.WhichOneof("kind") == "outbound_queued":
            q = event.outbound_queued
            self.messages[q.id] = _Sent(q, set(q.rcpt_to))

    def finish(self, event: pb.Event) -> None:
        kind = event.WhichOneof("kind")
        if kind == "outbound_attempt":
            a = event.outbound_attempt
            sent = self.messages.get(a.id)
            if sent is not None and (a.delivered or a.permanent):
                sent.left.discard(a.rcpt_to)
                if not sent.left:
                    del self.messages[a.id]
        elif kind == "outbound_dropped":
            self.messages.pop(event.outbound_dropped.id, None)


class WebhookSender:
    """Posts the hooks of the queue stream and records each try; queues the outgoing hooks."""

    def __init__(self, store: Store, schedule: HookSchedule | None = None, *,
                 timeout: float = REQUEST_TIMEOUT, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.schedule = schedule or HookSchedule()
        self.timeout = timeout
        self.clock = clock
        self.view = HookView()
        self.outbound = _Outbound()
        self._launched: dict[int, int] = {}  # hook -> the try in flight or recorded but not folded yet
        self._busy: set[str] = set()  # URLs with a request in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        # While catching up at start, each account's settings are read once (not once per result).
        self._settings: dict[str, webhooks.WebhookSettings] | None = None

    # -- following the stream

    async def _fold(self, c: Committed) -> None:
        self.view.apply(c.seq, c.time_us / 1e6, c.event)
        if c.event.WhichOneof("kind") == "webhook_attempt" and c.event.webhook_attempt.hook not in self.view.pending:
            self._launched.pop(c.event.webhook_attempt.hook, None)  # done: delivered, given up or superseded
        self.outbound.note(c.event)
        if c.seq > self.view.reported and c.event.WhichOneof("kind") in ("outbound_attempt", "outbound_dropped"):
            await self._report_logged(c)
        self.outbound.finish(c.event)

    async def _report(self, c: Committed) -> None:
        """Queue the outgoing hooks an outbound result calls for (the account's settings decide)."""
        e = c.event
        if e.WhichOneof("kind") == "outbound_attempt":
            a = e.outbound_attempt
            sent = self.outbound.messages.get(a.id)
            if sent is None:
                return
            event = "delivered" if a.delivered else "failed" if a.permanent else "delayed"
            items = [(event, a.rcpt_to, a.reply, hard_bounce(a), "" if a.delivered else a.reply)]
        else:
            sent = self.outbound.messages.get(e.outbound_dropped.id)
            if sent is None:
                return
            items = [("canceled", r, "", False, "removed from the queue by the operator") for r in sorted(sent.left)]
        account = sent.event.account
        if account not in self.store.system.accounts:
            return
        s = self._settings.get(account) if self._settings is not None else None
        if s is None:
            async with self.store.use_account(account) as acct:
                s = webhooks.settings(acct)
            if self._settings is not None:
                self._settings[account] = s
        when = c.time_us / 1e6
        items = [i for i in items if s.wants(i[0]) and when >= s.outgoing_since]
        if not items or s.outgoing is None:
            return
        message_id, subject = await self._header(sent)
        events = []
        for event, rcpt, reply, suppressing, error in items:
            payload = webhooks.outgoing_payload(event, queue_id=sent.event.id, message_id=message_id, subject=subject,
                                                queued=self.clock(), reply=reply, suppressing=suppressing, error=error)
            events.append(pb.Event(webhook_queued=pb.WebhookQueued(
                account=account, url=s.outgoing.url, authorization=s.outgoing.authorization, event=event,
                payload=payload, source_seq=c.seq, queue_id=sent.event.id, rcpt_to=rcpt,
                # Mox keeps only the latest event about a recipient: an older one not yet sent is retired.
                supersedes=self.view.by_recipient.get((account, sent.event.id, rcpt), 0))))
        for committed in await self.store.stream(QUEUE).append(events):
            log.info("webhook %d queued: %s for %s's message %s to %s", committed.seq,
                     committed.event.webhook_queued.event, account, sent.event.id, committed.event.webhook_queued.rcpt_to)

    async def _header(self, sent: _Sent) -> tuple[str, str]:
        if sent.header is None:
            try:
                raw = await self.store.stream(QUEUE).read_blob(sent.event.blob_id)
            except StoreError:
                raw = b""
            mid = (first_value(raw, b"message-id") or b"").decode("utf-8", "replace").strip()
            subject = _decoded_subject(raw)
            sent.header = (mid, subject)
        return sent.header

    # -- posting

    def _due(self, now: float) -> list[PendingHook]:
        out: list[PendingHook] = []
        busy = set(self._busy)
        for p in sorted(self.view.pending.values(), key=lambda p: (p.next_at, p.seq)):
            if len(self._tasks) + len(out) >= MAX_CONCURRENT:
                break
            if p.next_at > now or p.hook.url in busy or self._launched.get(p.seq, 0) > p.attempts:
                continue
            busy.add(p.hook.url)
            out.append(p)
        return out

    def _launch(self, p: PendingHook) -> None:
        self._launched[p.seq] = p.attempts + 1
        self._busy.add(p.hook.url)
        task = asyncio.get_running_loop().create_task(self._deliver(p))
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._busy.discard(p.hook.url)
            if not t.cancelled() and t.exception() is not None:
                # Not recorded (a store error): the hook stays due, tried again after the first interval.
                log.error("webhook %d: try not recorded: %r", p.seq, t.exception())
                self._launched.pop(p.seq, None)
                p.next_at = self.clock() + self.schedule.first_retry
            self._wake.set()

        task.add_done_callback(done)

    async def _secret(self, account: str) -> str | None:
        if account not in self.store.system.accounts:
            return None
        async with self.store.use_account(account) as acct:
            return webhooks.settings(acct).secret

    def _payload(self, seq: int) -> bytes:
        """The body of hook `seq`, read from its WebhookQueued event in the log (blocking: a thread's job)."""
        for c in self.store.stream(QUEUE).events(since=seq - 1):
            if c.seq == seq and c.event.WhichOneof("kind") == "webhook_queued":
                return c.event.webhook_queued.payload.encode()
            break
        raise StoreError(f"webhook {seq}: its event is not in the queue stream")

    async def _deliver(self, p: PendingHook) -> None:
        attempt = p.attempts + 1
        secret = await self._secret(p.hook.account)
        start = self.clock()
        status, response, error = 0, "", ""
        if secret is None:
            error = f"account {p.hook.account} no longer exists"
        else:
            body = await asyncio.to_thread(self._payload, p.seq)
            status, response, error = await self._post(p, attempt, secret, body)
        outcome = decide(p, status, error, response, self.clock() - start, self.clock(), self.schedule,
                         0.0 if secret is None else random.uniform(-JITTER, JITTER))
        if secret is None:
            outcome.next_attempt = 0.0
        await self.store.stream(QUEUE).append([pb.Event(webhook_attempt=outcome)])
        from yarl import URL  # aiohttp's URL library: loaded with aiohttp, at the first webhook

        host = URL(p.hook.url).host
        if outcome.delivered:
            log.info("webhook %d delivered to %s (try %d)", p.seq, host, attempt)
        elif outcome.next_attempt:
            log.info("webhook %d: try %d to %s failed: %s; next try in %.1f s", p.seq, attempt, host,
                     error or f"HTTP status {status}", outcome.next_attempt - self.clock())
        else:
            log.warning("webhook %d: try %d to %s failed: %s; given up", p.seq, attempt, host,
                        error or f"HTTP status {status}")

    async def _post(self, p: PendingHook, attempt: int, secret: str, body: bytes) -> tuple[int, str, str]:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "X-Mox-Webhook-ID": str(p.seq),
            "X-Mox-Webhook-Attempt": str(attempt),
            webhooks.SIGNATURE_HEADER: webhooks.sign(secret, int(self.clock()), body),
        }
        if p.hook.authorization:
            headers["Authorization"] = p.hook.authorization
        import aiohttp  # only once a hook is posted (about 9 MB resident): most servers have none

        try:
            # No redirects followed (a hook goes where it was configured to), no proxy from the
            # environment, no cookies kept between calls.
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session, session.post(
                    p.hook.url, data=body, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                response = (await resp.content.read(RESPONSE_BYTES)).decode("utf-8", "replace")
                error = "" if resp.status == 200 else f"HTTP status {resp.status}, expected 200"
                return resp.status, response, error
        except TimeoutError:
            return 0, "", f"no answer within {self.timeout:.0f} s"
        except (aiohttp.ClientError, OSError, ValueError) as e:
            return 0, "", f"{type(e).__name__}: {e}"[:500]

    # -- the task

    async def run(self) -> None:
        sub = self.store.stream(QUEUE).subscribe()
        try:
            first = list(self.store.stream(QUEUE).events())
            loaded = first[-1].seq if first else 0
            # Two passes: the first finds the hooks and the last outbound event reported; the
            # second reports what came after it (results of a time the server was down).
            for c in first:
                self.view.apply(c.seq, c.time_us / 1e6, c.event)
            reported = self.view.reported
            self._settings = {}
            for c in first:
                self.outbound.note(c.event)
                if c.seq > reported and c.event.WhichOneof("kind") in ("outbound_attempt", "outbound_dropped"):
                    await self._report_logged(c)
                self.outbound.finish(c.event)
            self._settings = None
            log.info("webhooks: %d pending", len(self.view.pending))
            while True:
                for c in sub.pending():
                    if c.seq > loaded:
                        await self._fold(c)
                now = self.clock()
                for p in self._due(now):
                    self._launch(p)
                waits = [p.next_at - now for p in self.view.pending.values()
                         if self._launched.get(p.seq, 0) <= p.attempts and p.hook.url not in self._busy]
                # With every slot taken, a finished try wakes the loop (no polling meanwhile).
                wait = 3600.0 if len(self._tasks) >= MAX_CONCURRENT else max(0.05, min(waits, default=3600.0))
                self._wake.clear()
                # Woken by a new queue event, a finished try, or the next due time.
                getter = asyncio.ensure_future(sub.get())
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({getter, waker}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                for f in (getter, waker):
                    f.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await f
                if not getter.cancelled() and getter.result().seq > loaded:
                    await self._fold(getter.result())
        finally:
            sub.close()
            for t in list(self._tasks):
                t.cancel()
            for t in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def _report_logged(self, c: Committed) -> None:
        try:
            await self._report(c)
        except StoreError as e:
            log.error("webhook for queue event %d not queued: %s", c.seq, e)


@dataclass
class HookRecord:
    """One hook of an account as its log tells it, for a settings page (newest first from `history`)."""

    id: int
    event: str  # "incoming" or the outgoing event
    url: str
    queued_at: float
    attempts: int = 0
    state: str = "pending"  # pending, delivered, given up, superseded
    last_status: int = 0
    last_error: str = ""
    next_at: float = 0.0


def history(store: Store, account: str, limit: int = 100) -> list[HookRecord]:
    """The account's latest `limit` hooks and what came of them, read from the queue stream."""
    hooks: dict[int, HookRecord] = {}
    for c in store.stream(QUEUE).events():
        kind = c.event.WhichOneof("kind")
        if kind == "webhook_queued" and c.event.webhook_queued.account == account:
            q = c.event.webhook_queued
            if q.supersedes in hooks and hooks[q.supersedes].state == "pending":
                hooks[q.supersedes].state = "superseded"
            hooks[c.seq] = HookRecord(c.seq, q.event, q.url, c.time_us / 1e6, next_at=c.time_us / 1e6)
        elif kind == "webhook_attempt" and c.event.webhook_attempt.hook in hooks:
            a = c.event.webhook_attempt
            h = hooks[a.hook]
            h.attempts, h.last_status, h.last_error, h.next_at = a.attempt, a.status, a.error, a.next_attempt
            if h.state == "pending":
                h.state = "delivered" if a.delivered else "given up" if a.next_attempt == 0 else "pending"
    return sorted(hooks.values(), key=lambda h: -h.id)[:limit]


async def send_webhooks(store: Store, schedule: HookSchedule | None = None) -> None:
    """A server's task (the primary's, of a pair): post webhooks until cancelled. A sender that
    fails (a bug, a broken store) is logged and started afresh from the log after a pause."""
    schedule = schedule or HookSchedule()
    while True:
        try:
            await WebhookSender(store, schedule).run()
        except Exception:  # a supervisor: whatever ended the sender, the hooks are in the log
            log.exception("webhook sender failed; starting again in %.0f s", schedule.first_retry)
        await asyncio.sleep(schedule.first_retry)


def _decoded_subject(raw: bytes) -> str:
    """The Subject of a message's header, MIME words decoded (RFC 2047), as Mox's envelope has it."""
    from email.header import decode_header, make_header

    value = first_value(raw, b"subject")
    if value is None:
        return ""
    text = value.decode("utf-8", "replace")
    try:
        return " ".join(str(make_header(decode_header(text))).split())
    except (ValueError, LookupError):
        return " ".join(text.split())


__all__ = ["INTERVALS", "HookRecord", "HookSchedule", "HookView", "WebhookSender", "decide", "history", "send_webhooks"]
