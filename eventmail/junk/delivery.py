"""The junk filter at SMTP time: per-account settings, the verdict, the optional DNSBL, and the Rejects mailbox.

The MX calls `JunkFilter.plan()` for each recipient account, then delivers accepted mail, and
keeps rejected mail in Rejects, through the mail layer (eventmail.mail.rejects: the writes;
here: the decisions, `reject_key()` and `rejects_to_prune()`). Everything that decides goes into the
delivery event (`Origin.junk`); everything the projections learn goes into `MessageAdded.junk`.

Account settings (AccountSetting events, so a secondary has them too):
- `junk.list-domains`: comma-separated domains of mailing lists the user reads. List mail
  (List-Id) whose SPF or DKIM domain is one of them, or under one, is accepted and its
  author's DMARC policy is not enforced (the list rewrote it).
- `junk.forwarders`: comma-separated domains or IP networks of servers that forward mail to
  the user. Their mail is not held to the author's DMARC policy, and the forwarder's IP and
  SPF domain are left out of the reputation (it would otherwise gather its senders' blame).
- `junk.dnsbl`: comma-separated DNSBL zones, consulted only for senders without history.
  Off by default: a DNSBL learns whom the user talks to, and it must not break mail from
  people with a history.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..cputime import stage
from ..mailauth.resolver import Resolver
from ..mailauth.verdict import AuthVerdict
from ..mime.headers import without_fields
from ..proto import events_pb2 as pb
from ..store import Account, Mailbox, Message
from .analyze import DEFAULT_CONFIG, JUNK_MAILBOX, Context, JunkConfig, analyze
from .features import header_value, names_recipient
from .projection import junk_view
from .reputation import reputation

log = logging.getLogger(__name__)

# The talk's fixed-size Rejects mailbox: two weeks is longer than any sender retries (RFC 5321
# §4.5.4.1 suggests giving up after 4-5 days), and 1,000 messages bound its size.
REJECTS_DAYS = 14
REJECTS_MAX = 1000
DAY = 86400
# A DNSBL answer later than this is treated as "not listed": mail is not held up for it.
DNSBL_TIMEOUT = 5.0

SETTING_LISTS = "junk.list-domains"
SETTING_FORWARDERS = "junk.forwarders"
SETTING_DNSBL = "junk.dnsbl"


@dataclass(frozen=True)
class Plan:
    """What the filter decided for one account."""

    verdict: pb.JunkVerdict
    features: pb.JunkFeatures  # as recorded for this account (a forwarder's identities left out)
    mailbox: Mailbox  # where the message was meant to go
    trusted: str  # the mailing list or forwarder it came through, "" when neither


def _setting_list(acct: Account, key: str) -> list[str]:
    return [x.strip().lower() for x in (acct.view.setting(key) or "").split(",") if x.strip()]


def _under(domain: str, parents: Iterable[str]) -> str:
    for p in parents:
        if domain == p or domain.endswith("." + p):
            return p
    return ""


def _in_networks(ip: str, entries: Iterable[str]) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    for e in entries:
        try:
            if addr in ipaddress.ip_network(e, strict=False):
                return e
        except ValueError:
            continue
    return ""


def strip_header(message: bytes, name: str) -> bytes:
    """Remove every field `name` (and its continuation lines): senders must not forge our verdict."""
    lname = name.lower().encode()
    return without_fields(message, lambda f: f.name == lname)


def dnsbl_name(ip: str, zone: str) -> str:
    """The DNSBL query name (RFC 5782 §2.1 IPv4, §2.4 IPv6 nibbles)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return ".".join(reversed(str(addr).split("."))) + "." + zone
    return ".".join(reversed(addr.exploded.replace(":", ""))) + "." + zone


# Verdicts that no sender history decided: content alone, or nothing at all.
FIRST_TIME_METHODS = ("bayes", "bayes:unsure", "bayes:untrained")


def message_draw(acct: Account, message: bytes) -> float:
    """The threshold jitter's draw for one message and account, in [0, 1): a keyed hash of the
    message as the sender sent it, with the account's own key.

    Not random: the same message meets the same threshold every time (a sender's retry of a
    refused message is refused again until the user's judgement changes the statistics, rather
    than getting a new draw until one lets it through), and the same message scored by the same
    projection state gets the same verdict on every run. Not predictable either without the
    account's key, so a sender probing the threshold with variants of a message still finds no
    sharp edge."""
    digest = acct.blobs.blob_id(b"junk-draw\x00" + message)
    return int.from_bytes(digest[:8], "big") / 2**64


class JunkFilter:
    """Per-server: the filter's configuration, the clock, and the jitter's draw (by default
    `message_draw`; a fixed one in tests)."""

    def __init__(
        self, resolver: Resolver | None = None, config: JunkConfig = DEFAULT_CONFIG,
        clock: Callable[[], float] = time.time, draw: Callable[[], float] | None = None,
        first_time_delay: float = 0.0,
    ) -> None:
        self.resolver = resolver
        self.config = config
        self.clock = clock
        self.draw = draw
        # Mox's first-time-sender delay (its default is 15 s; off here unless configured): a
        # sender the account has no conclusive history with waits this long for the answer
        # to DATA. Real servers wait; bulk senders that cut the connection early lose the message.
        self.first_time_delay = first_time_delay

    def delay_for(self, plans: Iterable[Plan]) -> float:
        """Seconds to hold the answer: the delay when every account accepts by content alone (no
        conclusive reputation, no mailing list or forwarder), as Mox does for "no bad signals"."""
        ps = list(plans)
        if self.first_time_delay <= 0 or not ps:
            return 0.0
        first = all(p.verdict.accept and p.verdict.method in FIRST_TIME_METHODS and not p.trusted for p in ps)
        return self.first_time_delay if first else 0.0

    def trusted_path(self, acct: Account, f: pb.JunkFeatures, remote_ip: str) -> tuple[str, str]:
        """(mailing list domain, forwarder) the message came through, as the account configured them."""
        verified = [*f.dkim_domains, *([f.spf_domain] if f.spf_domain else [])]
        lists = _setting_list(acct, SETTING_LISTS)
        listed = ""
        if f.list_id and lists:
            listed = next((p for p in (_under(d, lists) for d in verified) if p), "")
        forwarders = _setting_list(acct, SETTING_FORWARDERS)
        fwd = _in_networks(remote_ip, forwarders) or next((p for p in (_under(d, forwarders) for d in verified) if p), "")
        return listed, fwd

    async def _dnsbl(self, remote_ip: str, zones: list[str]) -> str:
        if self.resolver is None or not remote_ip:
            return ""
        for zone in zones:
            try:
                answer = await asyncio.wait_for(self.resolver.query(dnsbl_name(remote_ip, zone), "A"), DNSBL_TIMEOUT)
            except (TimeoutError, ValueError):
                continue
            # RFC 5782 §2.1: listed entries answer with an address in 127.0.0.0/8.
            if answer.ok and any(a.startswith("127.") for a in answer.addresses()):
                return zone
        return ""

    async def plan(
        self, acct: Account, message: bytes, base: pb.JunkFeatures, auth: AuthVerdict | None, *,
        remote_ip: str, tls: bool, recipients: list[str], mailbox: str = "INBOX", own: bool = False,
        named: Sequence[str] | None = None,
    ) -> Plan:
        """Decide for one account. `base` are the message's features (computed once for all
        accounts); with `own` (the only account) they become the plan's, not copied. `named` are
        the message's To and Cc addresses when its analysis read them (features.named_addresses)."""
        dest = acct.view.mailbox(mailbox) or acct.mailbox_required("INBOX")
        if own:
            f = base
        else:
            f = pb.JunkFeatures()
            f.CopyFrom(base)
        listed, fwd = self.trusted_path(acct, f, remote_ip)
        if fwd:
            del f.ip_nets[:]
            f.spf_domain = ""
        now = int(self.clock())
        ctx = Context(tls=tls, names_recipient=names_recipient(message, recipients, named), mailing_list=listed, forwarder=fwd)
        zones = _setting_list(acct, SETTING_DNSBL)
        if zones and not listed and reputation(junk_view(acct), f, dest.id, now).spam is None:
            ctx = Context(ctx.tls, ctx.names_recipient, listed, fwd, await self._dnsbl(remote_ip, zones))
        with stage("junk decision"):
            draw = self.draw() if self.draw is not None else message_draw(acct, message)
            verdict = analyze(junk_view(acct), f, dest.id, dest.name, now, draw, ctx, self.config)
        if verdict.accept and verdict.mailbox == JUNK_MAILBOX and dest.special_use != pb.SPECIAL_USE_JUNK:
            # Filed in Junk but meant for `dest`: the reputation index counts it there once the
            # user classifies it (moving it back to INBOX says it was wanted there).
            f.destined_mailbox_id = dest.id
        return Plan(verdict, f, dest, listed or fwd)



def reject_key(acct: Account, original: bytes) -> bytes:
    """The Rejects dedup key: the Message-ID when there is one, else the content (as the talk has it)."""
    message_id = header_value(original, "Message-ID").strip()
    basis = b"mid\x00" + message_id.encode() if message_id else b"content\x00" + original
    return acct.blobs.blob_id(b"reject\x00" + basis)


def rejects_to_prune(messages: Sequence[Message], now: int) -> list[int]:
    """The uids of Rejects to remove: older than REJECTS_DAYS days, and the oldest past REJECTS_MAX."""
    cutoff = now - REJECTS_DAYS * DAY
    old = {m.uid for m in messages if m.internal_date < cutoff}
    keep = [m for m in messages if m.uid not in old]
    excess = sorted(keep, key=lambda m: (m.internal_date, m.uid))[: max(0, len(keep) - REJECTS_MAX)]
    return sorted(old | {m.uid for m in excess})
