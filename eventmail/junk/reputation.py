"""Sender reputation from the account's own history: the first identity step with data decides.

The steps, most specific first (Mox's order): the exact From address when DMARC-aligned, then
addresses the user wrote to, the From domain, its organizational domain, the DKIM-verified
domains and the SPF-verified MAIL FROM domain, then the sending IP at /32, /26 and /21 (IPv6
/64, /48, /32). Each step looks at the newest classified messages with that identity that were
meant for the same mailbox, within its time window. A step with no such messages passes to
the next; the first step with messages decides: conclusively when it has its minimum count
and the sample is all junk or all not-junk, otherwise only as a hint for the content filter.
Pure: the clock comes in as `now`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..proto import events_pb2 as pb
from .projection import JunkView, Sighting

DAY = 86400


@dataclass(frozen=True)
class Step:
    method: str
    kinds: tuple[str, ...]  # identity kinds in the index
    window_days: int
    sample: int  # the newest this many classified messages are looked at
    minimum: int  # a clear sample of fewer is not conclusive


# From address: the newest three decide ("if the recent ones were junk, we reject"), one is
# enough. Broader identities need more history, and a relay that carries both kinds
# shows it only over a longer sample (50, as Mox takes for IPs), before they speak for a sender, and IP ranges
# the most, since a /21 holds many unrelated senders. Windows: people's habits change over
# years, servers change hands over months.
FROM_ADDRESS = Step("reputation:from-address", ("from",), 365, 3, 1)
FROM_DOMAIN = Step("reputation:from-domain", ("domain",), 365, 10, 2)
ORG_DOMAIN = Step("reputation:org-domain", ("org",), 365, 10, 3)
DKIM_SPF = Step("reputation:dkim-spf", ("dkim", "spf"), 180, 10, 2)
IP_STEPS = (
    Step("reputation:ip-narrow", ("ip",), 90, 50, 2),
    Step("reputation:ip-medium", ("ip",), 90, 50, 5),
    Step("reputation:ip-wide", ("ip",), 90, 50, 10),
)
WROTE_TO_DAYS = 2 * 365


@dataclass(frozen=True)
class Reputation:
    method: str  # the step that decided, "" when no step had data
    spam: bool | None  # None: no history at all
    conclusive: bool
    reason: str


NONE = Reputation("", None, False, "no history for this sender")


def _judge(step: Step, values: list[str], history: list[Sighting]) -> Reputation:
    n = len(history)
    nspam = sum(s.spam for s in history)
    what = f"{step.method.split(':')[1]} {', '.join(values)}"
    summary = f"{what}: {nspam} junk, {n - nspam} not junk of the newest {n} within {step.window_days} days"
    if n >= step.minimum and nspam in (0, n):
        return Reputation(step.method, nspam == n, True, summary)
    return Reputation(step.method, nspam * 2 > n, False, summary + " (not clear)")


def _history(view: JunkView, step: Step, values: list[str], destined: int, now: int) -> list[Sighting]:
    keys = [(k, v) for k in step.kinds for v in values]
    return view.history(keys, destined, now - step.window_days * DAY, step.sample)


def reputation(view: JunkView, f: pb.JunkFeatures, destined: int, now: int) -> Reputation:
    """The sender's reputation with the account, for mail meant for mailbox `destined`."""
    if f.from_validated and f.from_address:
        h = _history(view, FROM_ADDRESS, [f.from_address], destined, now)
        if h:
            return _judge(FROM_ADDRESS, [f.from_address], h)
        if view.wrote_to(f.from_address, now - WROTE_TO_DAYS * DAY):
            return Reputation("reputation:wrote-to", False, True, f"you wrote to {f.from_address}")
        h = _history(view, FROM_DOMAIN, [f.from_domain], destined, now)
        if h:
            return _judge(FROM_DOMAIN, [f.from_domain], h)
        if f.from_org_domain and f.from_org_domain != f.from_domain:
            h = _history(view, ORG_DOMAIN, [f.from_org_domain], destined, now)
            if h:
                return _judge(ORG_DOMAIN, [f.from_org_domain], h)
    verified = sorted({*f.dkim_domains, *([f.spf_domain] if f.spf_domain else [])})
    if verified:
        h = _history(view, DKIM_SPF, verified, destined, now)
        if h:
            return _judge(DKIM_SPF, verified, h)
    for step, net in zip(IP_STEPS, f.ip_nets, strict=False):
        h = _history(view, step, [net], destined, now)
        if h:
            return _judge(step, [net], h)
    return NONE
