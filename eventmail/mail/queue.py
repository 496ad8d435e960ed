"""The outbound queue's decisions: per-recipient work folded from the queue stream, when to try again, when to give up, and the DSNs.

The queue stream holds an `OutboundQueued` per submitted message and an `OutboundAttempt` per
recipient per try, each attempt carrying its decision: delivered, failed for good, or the time of
the next try. `QueueView` folds those events (pure: replay gives the same queue, and never sends
anything); `decide` makes the decision for one recipient's try, once, and the runner records it.
A failure notice (RFC 3464) goes into the sender's INBOX through `ingest`, never by the queue's
runner writing the account itself.
"""

from __future__ import annotations

import asyncio
import email.utils
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..mime.headers import MAX_HEADER_BYTES, header_end
from ..mime.parsed import parse_message
from ..proto import events_pb2 as pb
from ..store import QUEUE, Committed, Store, normalize_address
from . import ingest
from .admin import AdminError

# Mox's schedule: the first retry after 7.5 minutes, doubling (7.5, 15, 30, 60 min, 2, 4, 8, 16 h
# ...); RFC 5321 §4.5.4.1 asks to keep trying for at least 4-5 days, Postfix's
# maximal_queue_lifetime is 5 days: a recipient still not delivered then gets a failure notice.
FIRST_RETRY_SECONDS = 450.0
MAX_RETRY_SECONDS = 16 * 3600.0
GIVE_UP_SECONDS = 5 * 24 * 3600.0
# RFC 3464 delay notices: Postfix's delay_warning_time is off by default, Sendmail warns at 4 h.
DELAY_NOTICE_SECONDS = 4 * 3600.0
# The original's header fields attached to a notice (text/rfc822-headers, RFC 6522 §3.1 allows
# headers only): bounded, a notice is no way to send someone a megabyte back.
MAX_RETURNED_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Schedule:
    first_retry: float = FIRST_RETRY_SECONDS
    max_retry: float = MAX_RETRY_SECONDS
    give_up: float = GIVE_UP_SECONDS
    delay_notice: float = DELAY_NOTICE_SECONDS

    def retry_after(self, attempts: int) -> float:
        """Seconds from the end of try number `attempts` (1, 2, ...) to the next."""
        return min(self.first_retry * 2.0 ** max(attempts - 1, 0), self.max_retry)


@dataclass
class Recipient:
    """One recipient of a queued message, as its attempts left it."""

    address: str
    attempts: int = 0
    next_at: float = 0.0
    done: bool = False  # delivered, or failed for good
    delivered: bool = False
    delay_noticed: bool = False
    last_reply: str = ""


@dataclass
class Queued:
    """A queued message and its recipients still to do."""

    event: pb.OutboundQueued
    queued_at: float
    held: bool = False
    recipients: dict[str, Recipient] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.event.id

    def due(self, now: float) -> list[Recipient]:
        if self.held:
            return []
        return [r for r in self.recipients.values() if not r.done and r.next_at <= now]

    @property
    def finished(self) -> bool:
        return all(r.done for r in self.recipients.values())


class QueueView:
    """The queue folded from its stream: what is still to deliver, to whom, and when."""

    def __init__(self) -> None:
        self.items: dict[str, Queued] = {}

    def apply(self, time_s: float, event: pb.Event) -> None:
        kind = event.WhichOneof("kind")
        if kind == "outbound_queued":
            q = event.outbound_queued
            self.items[q.id] = Queued(q, time_s, recipients={r: Recipient(r, next_at=time_s) for r in q.rcpt_to})
        elif kind == "outbound_attempt":
            a = event.outbound_attempt
            item = self.items.get(a.id)
            r = item.recipients.get(a.rcpt_to) if item is not None else None
            if item is None or r is None:
                return
            r.attempts += 1
            r.last_reply = a.reply
            r.delivered = a.delivered
            r.done = a.delivered or a.permanent
            r.next_at = a.next_attempt
            r.delay_noticed = r.delay_noticed or a.delay_notice
            if item.finished:
                del self.items[a.id]
        elif kind == "outbound_held":
            held = self.items.get(event.outbound_held.id)
            if held is not None:
                held.held = event.outbound_held.held
        elif kind == "outbound_retry":
            again = self.items.get(event.outbound_retry.id)
            for r in again.recipients.values() if again is not None else ():
                if not r.done:
                    r.next_at = time_s
        elif kind == "outbound_dropped":
            self.items.pop(event.outbound_dropped.id, None)

    def next_due(self) -> float | None:
        times = [r.next_at for q in self.items.values() if not q.held for r in q.recipients.values() if not r.done]
        return min(times, default=None)


@dataclass(frozen=True)
class TryResult:
    """What one try at one recipient came to, as the delivery runner saw it."""

    address: str
    delivered: bool
    permanent: bool  # the remote (or the DNS, or the policy) said no for good
    reply: str  # the remote reply, or why there was none
    mx_host: str = ""
    ip: str = ""
    tls_policy: str = ""  # "dane", "mta-sts:enforce id=...", "opportunistic", "smarthost", ...
    tls: str = ""  # what TLS came to: "TLSv1.3 verified by dane-ee", "none: ..." (RFC 8460 spirit)


def decide(item: Queued, result: TryResult, now: float, schedule: Schedule) -> pb.OutboundAttempt:
    """The recorded outcome of one try: delivered, failed for good (a 5xx, a permanent DNS answer,
    or too old), or the time of the next try; and whether a delay notice goes out with it."""
    r = item.recipients[result.address]
    attempts = r.attempts + 1
    expired = now - item.queued_at >= schedule.give_up
    permanent = not result.delivered and (result.permanent or expired)
    reply = result.reply if not (expired and not result.permanent) else (
        f"{result.reply} (giving up: not delivered within {schedule.give_up / 86400:g} days)")
    done = result.delivered or permanent
    notice = (not done and not r.delay_noticed and now - item.queued_at >= schedule.delay_notice
              and bool(item.event.mail_from))
    return pb.OutboundAttempt(
        id=item.id, rcpt_to=result.address, delivered=result.delivered, permanent=permanent,
        relay=f"{result.mx_host} [{result.ip}]" if result.ip else result.mx_host, reply=reply[:1000],
        mx_host=result.mx_host, ip=result.ip, tls_policy=result.tls_policy, tls=result.tls[:300],
        attempt=attempts, next_attempt=0.0 if done else now + schedule.retry_after(attempts), delay_notice=notice,
    )


async def record(store: Store, attempts: Iterable[pb.OutboundAttempt]) -> list[Committed]:
    """Commit the attempts' decisions to the queue stream (fsynced; replicated in sync mode)."""
    events = [pb.Event(outbound_attempt=a) for a in attempts]
    return await store.stream(QUEUE).append(events) if events else []


async def record_sts_policy(store: Store, policy: pb.MtaStsPolicy) -> list[Committed]:
    """A fetched MTA-STS policy, recorded before it is used (the cache is a fold of these)."""
    return await store.stream(QUEUE).append([pb.Event(mta_sts_policy=policy)])


def view_of(store: Store) -> QueueView:
    """The queue as its stream on disk has it (the CLI without a server, and the server's commands)."""
    view = QueueView()
    for c in store.stream(QUEUE).events():
        view.apply(c.time_us / 1e6, c.event)
    return view


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


class QueueOps:
    """The operator's queue commands (`eventmail queue ...`), through the control socket of a
    running server or on the store: each writing one is an event the runner folds at once."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def commands(self) -> dict[str, Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]]:
        return {"queue.list": self.list, "queue.show": self.show, "queue.retry": self.retry,
                "queue.drop": self.drop, "queue.hold": self.hold, "queue.release": self.release,
                "queue.suppress": self.suppress, "queue.unsuppress": self.unsuppress,
                "queue.suppressions": self.suppressions}

    def _policy(self) -> OutboundPolicy:
        policy = OutboundPolicy()
        for c in self.store.stream(QUEUE).events():
            policy.apply(c.seq, c.time_us / 1e6, c.event)
        return policy

    def _account_address(self, args: Mapping[str, Any]) -> tuple[str, str]:
        account, address = args.get("account"), args.get("address")
        if not isinstance(account, str) or account not in self.store.system.accounts:
            raise AdminError(f"no account {account}")
        if not isinstance(address, str) or "@" not in address.strip("@"):
            raise AdminError(f"address {address!r}: expected local@domain")
        return account, normalize_address(address)

    async def suppress(self, args: Mapping[str, Any]) -> dict[str, Any]:
        account, address = self._account_address(args)
        reason = args.get("reason") if isinstance(args.get("reason"), str) else ""
        await suppress(self.store, account, address, str(reason) or "added by the operator", manual=True)
        return {"message": f"{account}: {address} suppressed"}

    async def unsuppress(self, args: Mapping[str, Any]) -> dict[str, Any]:
        account, address = self._account_address(args)
        if (account, address) not in self._policy().suppressed:
            raise AdminError(f"{address} is not on {account}'s suppression list")
        await unsuppress(self.store, account, address)
        return {"message": f"{account}: {address} taken off the suppression list"}

    async def suppressions(self, args: Mapping[str, Any]) -> dict[str, Any]:
        only = args.get("account")
        lines = [f"{account}\t{address}\t{_age(self.clock() - when)} ago\t{reason}"
                 for (account, address), (when, reason) in sorted(self._policy().suppressed.items())
                 if not only or account == only]
        return {"message": "\n".join(lines) if lines else "no suppressed addresses"}

    def _item(self, view: QueueView, args: Mapping[str, Any]) -> Queued:
        queue_id = args.get("id")
        if not isinstance(queue_id, str) or queue_id not in view.items:
            raise AdminError(f"no queued message {queue_id}")
        return view.items[queue_id]

    async def list(self, args: Mapping[str, Any]) -> dict[str, Any]:
        view, now = view_of(self.store), self.clock()
        lines = []
        for item in sorted(view.items.values(), key=lambda i: i.queued_at):
            left = [r for r in item.recipients.values() if not r.done]
            nxt = min((r.next_at for r in left), default=now)
            when = "held" if item.held else ("due now" if nxt <= now else f"next try in {_age(nxt - now)}")
            lines.append(f"{item.id}\t{_age(now - item.queued_at)} old\t{item.event.size} bytes\t"
                         f"<{item.event.mail_from}>\t{len(left)} recipients\t{when}")
        return {"message": "\n".join(lines) if lines else "the queue is empty"}

    async def show(self, args: Mapping[str, Any]) -> dict[str, Any]:
        view, now = view_of(self.store), self.clock()
        item = self._item(view, args)
        q = item.event
        lines = [f"id {q.id}", f"account {q.account}", f"from <{q.mail_from}>", f"size {q.size} bytes",
                 f"queued {_age(now - item.queued_at)} ago" + (", held" if item.held else "")]
        for r in item.recipients.values():
            state = "delivered" if r.delivered else "failed" if r.done else (
                "due now" if r.next_at <= now else f"next try in {_age(r.next_at - now)}")
            lines.append(f"  <{r.address}>\t{state}\t{r.attempts} tries\t{r.last_reply}")
        return {"message": "\n".join(lines)}

    async def _each(self, args: Mapping[str, Any], make: Callable[[str], pb.Event], done: str) -> dict[str, Any]:
        view = view_of(self.store)
        ids = sorted(view.items) if args.get("all") == "yes" else [self._item(view, args).id]
        if ids:
            await self.store.stream(QUEUE).append([make(i) for i in ids])
        return {"message": f"{done}: {', '.join(ids)}" if ids else "the queue is empty"}

    async def retry(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return await self._each(args, lambda i: pb.Event(outbound_retry=pb.OutboundRetry(id=i)), "due now")

    async def drop(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return await self._each(args, lambda i: pb.Event(outbound_dropped=pb.OutboundDropped(id=i)), "dropped")

    async def hold(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return await self._each(args, lambda i: pb.Event(outbound_held=pb.OutboundHeld(id=i, held=True)), "held")

    async def release(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return await self._each(args, lambda i: pb.Event(outbound_held=pb.OutboundHeld(id=i, held=False)), "released")


# ---------------------------------------------------------------- delivery status notifications


def _returned_headers(message: bytes) -> bytes:
    end = min(header_end(message), MAX_HEADER_BYTES, MAX_RETURNED_HEADER_BYTES)
    return message[:end]


def notice(
    hostname: str, item: Queued, attempts: list[pb.OutboundAttempt], original: bytes, now: float,
    *, delayed: bool,
) -> bytes:
    """An RFC 3464 delivery status notification (multipart/report; report-type=delivery-status)
    telling the sender which recipients failed (or are delayed), with the original's header."""
    q = item.event
    boundary = "=_" + secrets.token_hex(12)
    subject = "Delayed mail (still trying)" if delayed else "Undelivered mail returned to sender"
    head = [
        f"From: Mail Delivery Subsystem <postmaster@{hostname}>",
        f"To: <{q.mail_from}>",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(now)}",
        f"Message-ID: {email.utils.make_msgid(domain=hostname)}",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5: no automatic reply to this
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    text = [
        f"This is the mail system at {hostname}.",
        "",
        ("Your message could not be delivered yet to the recipients below; the server keeps trying "
         f"for up to {GIVE_UP_SECONDS / 86400:g} days.") if delayed else
        "Your message could not be delivered to the recipients below. This is a permanent error.",
        "",
        *(f"<{a.rcpt_to}>: {' '.join(a.reply.split())}" for a in attempts),
    ]
    # RFC 3464 §2.2 per-message fields, then §2.3 per-recipient fields, blocks separated by a blank line.
    status = [f"Reporting-MTA: dns; {hostname}", f"X-Eventmail-Queue-ID: {q.id}",
              f"Arrival-Date: {email.utils.formatdate(item.queued_at)}"]
    for a in attempts:
        status += ["", f"Final-Recipient: rfc822; {a.rcpt_to}", f"Action: {'delayed' if delayed else 'failed'}",
                   f"Status: {_status_code(a.reply, delayed)}"]
        if a.mx_host:
            status.append(f"Remote-MTA: dns; {a.mx_host}")
        if a.reply[:3].isdigit():
            status.append(f"Diagnostic-Code: smtp; {' '.join(a.reply.split())[:900]}")
    crlf = "\r\n"
    out = crlf.join(head) + crlf + crlf
    out += f"--{boundary}{crlf}Content-Type: text/plain; charset=utf-8{crlf}Content-Transfer-Encoding: 8bit{crlf}{crlf}"
    out += crlf.join(text) + crlf
    out += f"--{boundary}{crlf}Content-Type: message/delivery-status{crlf}{crlf}" + crlf.join(status) + crlf
    out += f"--{boundary}{crlf}Content-Type: text/rfc822-headers{crlf}Content-Transfer-Encoding: 8bit{crlf}{crlf}"
    returned = _returned_headers(original).rstrip(b"\r\n").replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return out.encode() + returned + f"{crlf}--{boundary}--{crlf}".encode()


def _status_code(reply: str, delayed: bool) -> str:
    """The RFC 3463 status in a reply ("5.1.1" of "550 5.1.1 ...", "5.1.2" of a DNS failure's
    "5.1.2 ..."), or a generic one."""
    for token in reply.split()[:2]:
        pieces = token.split(".")
        if len(pieces) == 3 and token[:1] in "245" and all(p.isdigit() for p in pieces):
            return token
    return "4.4.1" if delayed else "5.0.0"


async def send_notice(
    store: Store, hostname: str, item: Queued, attempts: list[pb.OutboundAttempt], *, delayed: bool,
    now: float | None = None,
) -> bool:
    """Put a notice into the submitting account's INBOX (the sender is one of its addresses).
    False when there is nobody to tell: a null reverse path (never a notice about a notice,
    RFC 3464 §2.2.2 / RFC 5321 §4.5.5) or an account that is gone."""
    q = item.event
    if not q.mail_from or q.account not in store.system.accounts:
        return False
    original = await store.stream(QUEUE).read_blob(q.blob_id)
    raw = notice(hostname, item, attempts, original, time.time() if now is None else now, delayed=delayed)
    parsed = await asyncio.to_thread(parse_message, raw)
    basis = f"dsn:{q.id}:{'delay' if delayed else 'fail'}:{','.join(a.rcpt_to for a in attempts)}".encode()
    async with store.use_account(q.account) as acct:
        await ingest.deliver(store, acct, "INBOX", parsed, b"", key_basis=basis,
                             origin=pb.Origin(kind="dsn", mail_from="", rcpt_to=[q.mail_from]))
    return True


# ---------------------------------------------------------------- what submission checks

# Mox's defaults: at most 1,000 messages a day per account, and at most 200 recipients a day the
# account never sent to before (a stolen password is spent sending to new addresses).
MESSAGES_PER_DAY = 1000
FIRST_TIME_RECIPIENTS_PER_DAY = 200
DAY = 86400.0
# A hard bounce: the receiving server said the mailbox does not exist (RFC 3463 §3.2 X.1.1).
# Other permanent failures (policy, content) say nothing about the address, and DNS answers
# about the domain (X.1.2, a null MX X.1.10) are about a domain that may be fixed or mistyped
# once: they bounce, but do not suppress.
HARD_BOUNCE_STATUSES = ("5.1.1",)


@dataclass
class OutboundPolicy:
    """What submission checks before it queues, folded from the queue stream: each account's
    suppression list (fed by hard bounces and by operators) and what it sent in the last day."""

    messages_per_day: int = MESSAGES_PER_DAY
    first_time_per_day: int = FIRST_TIME_RECIPIENTS_PER_DAY
    suppressed: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)
    sent: dict[str, list[float]] = field(default_factory=dict)  # account -> times of queued messages
    known: dict[str, dict[str, float]] = field(default_factory=dict)  # account -> recipient -> first time
    accounts: dict[str, str] = field(default_factory=dict)  # queue id -> account
    seq: int = 0

    def apply(self, seq: int, time_s: float, event: pb.Event) -> None:
        if seq <= self.seq:
            return
        self.seq = seq
        kind = event.WhichOneof("kind")
        if kind == "outbound_queued":
            q = event.outbound_queued
            self.accounts[q.id] = q.account
            self.sent.setdefault(q.account, []).append(time_s)
            known = self.known.setdefault(q.account, {})
            for r in q.rcpt_to:
                known.setdefault(normalize_address(r), time_s)
        elif kind == "suppressed":
            sup = event.suppressed
            self.suppressed[(sup.account, sup.address)] = (time_s, sup.reason)
        elif kind == "unsuppressed":
            self.suppressed.pop((event.unsuppressed.account, event.unsuppressed.address), None)

    def _recent(self, account: str, now: float) -> list[float]:
        times = [t for t in self.sent.get(account, ()) if t > now - DAY]
        self.sent[account] = times
        return times

    def mail_refusal(self, account: str, now: float) -> str | None:
        if len(self._recent(account, now)) >= self.messages_per_day:
            return f"sending limit reached: {self.messages_per_day} messages a day"
        return None

    def rcpt_refusal(self, account: str, address: str, now: float, new_in_tx: int = 0) -> tuple[bool, str] | None:
        """(permanent, why) when `account` may not send to `address` now; `new_in_tx`: first-time
        recipients already accepted in this transaction."""
        addr = normalize_address(address)
        hit = self.suppressed.get((account, addr))
        if hit is not None:
            return True, f"{address} is on the suppression list ({hit[1][:120]})"
        known = self.known.get(account, {})
        if addr not in known:
            first_times = sum(1 for t in known.values() if t > now - DAY) + new_in_tx
            if first_times >= self.first_time_per_day:
                return False, f"sending limit reached: {self.first_time_per_day} new recipients a day"
        return None

    def is_new(self, account: str, address: str) -> bool:
        return normalize_address(address) not in self.known.get(account, {})

    async def follow(self, store: Store) -> None:
        """Keep folding the queue stream (a task for the server's life)."""
        sub = store.stream(QUEUE).subscribe()
        try:
            for c in store.stream(QUEUE).events():
                self.apply(c.seq, c.time_us / 1e6, c.event)
            while True:
                c = await sub.get()
                for x in [c, *sub.pending()]:
                    self.apply(x.seq, x.time_us / 1e6, x.event)
        finally:
            sub.close()


def hard_bounce(attempt: pb.OutboundAttempt) -> bool:
    """A permanent failure the remote server gave (not our DNS lookup) for a mailbox it lacks."""
    return (attempt.permanent and bool(attempt.mx_host) and attempt.reply[:1] == "5"
            and _status_code(attempt.reply, False) in HARD_BOUNCE_STATUSES)


async def suppress(store: Store, account: str, address: str, reason: str, manual: bool) -> None:
    await store.stream(QUEUE).append([pb.Event(suppressed=pb.Suppressed(
        account=account, address=normalize_address(address), reason=reason[:300], manual=manual))])


async def unsuppress(store: Store, account: str, address: str) -> None:
    await store.stream(QUEUE).append([pb.Event(unsuppressed=pb.Unsuppressed(
        account=account, address=normalize_address(address)))])
