"""The outbound queue: messages in the queue stream relayed through a smarthost, each attempt recorded as an event."""

import asyncio
import logging
import smtplib
import ssl
import time
from dataclasses import dataclass, field

from ..proto import events_pb2 as pb
from ..store import QUEUE, Store

log = logging.getLogger(__name__)

# RFC 5321 §4.5.4.1: retry for at least 4-5 days, first retry after at least 30 minutes is the
# RFC's suggestion for a busy MTA; a personal server retries sooner and backs off.
RETRY_DELAYS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800)
GIVE_UP_AFTER = 5 * 24 * 3600


@dataclass
class Pending:
    queued: pb.OutboundQueued
    queued_at: float
    remaining: set[str] = field(default_factory=set)
    attempts: int = 0
    next_at: float = 0.0


def pending_from_log(events: list[tuple[float, pb.Event]]) -> dict[str, Pending]:
    """What is still to deliver, folded from the queue stream (pure)."""
    out: dict[str, Pending] = {}
    for when, e in events:
        kind = e.WhichOneof("kind")
        if kind == "outbound_queued":
            q = e.outbound_queued
            out[q.id] = Pending(q, when, set(q.rcpt_to))
        elif kind == "outbound_attempt":
            a = e.outbound_attempt
            p = out.get(a.id)
            if p is None:
                continue
            if a.delivered or a.permanent:
                p.remaining.discard(a.rcpt_to)
            p.attempts += 1
            p.next_at = when + RETRY_DELAYS[min(p.attempts - 1, len(RETRY_DELAYS) - 1)]
    return {k: v for k, v in out.items() if v.remaining}


def relay(host: str, port: int, helo: str, mail_from: str, rcpts: list[str], data: bytes,
          tls: ssl.SSLContext | None) -> dict[str, tuple[int, str]]:
    """Hand one message to a relay (blocking; run in a thread). Returns each recipient's reply."""
    results: dict[str, tuple[int, str]] = {}
    with smtplib.SMTP(host, port, local_hostname=helo, timeout=60) as s:
        s.ehlo()
        if s.has_extn("starttls"):
            s.starttls(context=tls or ssl.create_default_context())
            s.ehlo()
        try:
            refused = s.sendmail(mail_from, rcpts, data)
        except smtplib.SMTPRecipientsRefused as e:
            refused = e.recipients
        except smtplib.SMTPResponseException as e:
            err = e.smtp_error
            text = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
            return {r: (e.smtp_code, text) for r in rcpts}
        for r in rcpts:
            code, msg = refused.get(r, (250, b"ok"))
            results[r] = (code, msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg))
    return results


class QueueRunner:
    """Delivers what the queue stream holds, through `smarthost` ("host:port")."""

    def __init__(self, store: Store, smarthost: str, helo: str, tls: ssl.SSLContext | None = None) -> None:
        host, _, port = smarthost.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.store = store
        self.helo = helo
        self.tls = tls

    async def run(self) -> None:
        sub = self.store.stream(QUEUE).subscribe()
        try:
            events = [(c.time_us / 1e6, c.event) for c in self.store.stream(QUEUE).events()]
            pending = pending_from_log(events)
            while True:
                now = time.time()
                for item in [p for p in pending.values() if p.next_at <= now]:
                    await self._attempt(item)
                    if not item.remaining:
                        pending.pop(item.queued.id, None)
                due = min((p.next_at for p in pending.values()), default=now + 3600)
                try:
                    first = await asyncio.wait_for(sub.get(), timeout=max(0.05, due - time.time()))
                except TimeoutError:
                    continue
                for c in [first, *sub.pending()]:
                    if c.event.WhichOneof("kind") == "outbound_queued":
                        q = c.event.outbound_queued
                        pending[q.id] = Pending(q, c.time_us / 1e6, set(q.rcpt_to))
        finally:
            sub.close()

    async def _attempt(self, item: Pending) -> None:
        q = item.queued
        data = await self.store.stream(QUEUE).read_blob(q.blob_id)
        rcpts = sorted(item.remaining)
        try:
            results = await asyncio.to_thread(relay, self.host, self.port, self.helo, q.mail_from, rcpts, data, self.tls)
        except (OSError, smtplib.SMTPException) as e:
            results = {r: (451, f"relay {self.host}:{self.port} unreachable: {e}") for r in rcpts}
        expired = time.time() - item.queued_at > GIVE_UP_AFTER
        events = []
        for r, (code, text) in results.items():
            delivered = 200 <= code < 300
            permanent = code >= 500 or (expired and not delivered)
            events.append(pb.Event(outbound_attempt=pb.OutboundAttempt(
                id=q.id, rcpt_to=r, delivered=delivered, permanent=permanent,
                relay=f"{self.host}:{self.port}", reply=f"{code} {text}"[:500],
            )))
            if delivered or permanent:
                item.remaining.discard(r)
            log.info("queue %s: %s -> %s %s", q.id, r, code, "delivered" if delivered else "permanent" if permanent else "retry")
        await self.store.stream(QUEUE).append(events)
        item.attempts += 1
        item.next_at = time.time() + RETRY_DELAYS[min(item.attempts - 1, len(RETRY_DELAYS) - 1)]
