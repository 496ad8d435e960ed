"""The authentication verdict for one incoming message: SPF, DKIM and DMARC evaluated once, recorded as a value.

`evaluate()` is the one entry point for the SMTP delivery pipeline. It runs SPF, DKIM and
DMARC policy discovery concurrently, then decides DMARC with a pure function, and returns an
`AuthVerdict`: a frozen value that says what was found and why (STYLE pattern 2). The value
goes into the delivery event as `to_json()`; replays read it back with `from_json()` and never
evaluate again. `authentication_results()` renders the RFC 8601 header field to prepend.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ..cputime import timed
from ..mime.addresses import Author
from .authresults import ResInfo, render
from .dkim import DkimPrepared, DkimResult, verify_dkim
from .dmarc import (
    Discovery,
    Disposition,
    DmarcResult,
    author_domains,
    discover_policy,
    evaluate_policy,
    strictest,
)
from .resolver import Resolver
from .spf import SPF_TIMEOUT, SpfResult, check_spf

VERDICT_VERSION = 1
# Budgets: SPF has its own RFC 7208 §4.6.4 limit; DKIM is a few concurrent key lookups plus
# hashing; DMARC discovery is at most two TXT lookups per author domain.
DKIM_TIMEOUT = 30.0
DMARC_TIMEOUT = 15.0

T = TypeVar("T")


@dataclass(frozen=True)
class AuthVerdict:
    """SPF, DKIM and DMARC results for one message, and what decided the disposition."""

    spf: SpfResult
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult
    method: str  # "dmarc-pass", "dmarc-policy", "dmarc-none", "dmarc-temperror", "dmarc-permerror"
    reasons: tuple[str, ...]

    @property
    def disposition(self) -> Disposition:
        """What the From domain's owner asked for: none, quarantine or reject (RFC 7489 §6.3)."""
        return self.dmarc.disposition

    def authentication_results(self, authserv_id: str) -> str:
        """The RFC 8601 field, `Authentication-Results: <authserv_id>; spf=...; dkim=...; dmarc=...`.

        Folded with CRLF+TAB, without a trailing CRLF. Before prepending it, the SMTP layer
        must remove any Authentication-Results fields that claim our authserv-id (RFC 8601 §5).
        """
        results: list[ResInfo] = []
        spf = self.spf
        spf_props: list[tuple[str, str]] = []
        if spf.identity == "helo":
            if spf.domain or spf.helo:
                spf_props.append(("smtp.helo", spf.domain or spf.helo))
        elif spf.sender:
            spf_props.append(("smtp.mailfrom", spf.sender))
        results.append(ResInfo("spf", spf.result, spf.reason, tuple(spf_props)))
        if not self.dkim:
            results.append(ResInfo("dkim", "none"))
        for sig in self.dkim:
            # header.b last: base64 may need quoting, and some parsers (authres 1.2) accept a
            # quoted value only at the end of a result. RFC 6008 §4: at least 8 characters.
            candidates = [
                ("header.d", sig.domain),
                ("header.s", sig.selector),
                ("header.i", sig.identity),
                ("header.a", sig.algorithm),
                ("header.b", sig.b_prefix[:8]),
            ]
            props = [(k, v) for k, v in candidates if v]  # an empty d= or s= says nothing
            comment = ""
            if sig.key_bits:
                comment = f"{sig.key_bits}-bit {sig.algorithm.split('-')[0]} key"
            results.append(
                ResInfo("dkim", sig.result, sig.reason if not sig.passed else "", tuple(props), comment)
            )
        d = self.dmarc
        comment = ""
        if d.policy is not None:
            comment = f"p={d.policy} dis={d.disposition}"
        dmarc_props: list[tuple[str, str]] = []
        if d.from_domain:
            dmarc_props.append(("header.from", d.from_domain))
        if d.policy is not None:
            dmarc_props.append(("policy.dmarc", d.policy))
        results.append(
            ResInfo("dmarc", d.result, d.reason if d.result != "pass" else "", tuple(dmarc_props), comment)
        )
        return render(authserv_id, results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": VERDICT_VERSION,
            "spf": self.spf.to_dict(),
            "dkim": [s.to_dict() for s in self.dkim],
            "dmarc": self.dmarc.to_dict(),
            "method": self.method,
            "reasons": list(self.reasons),
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces, UTF-8 kept) for the delivery event."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuthVerdict:
        dkim = data.get("dkim") or []
        return cls(
            spf=SpfResult.from_dict(dict(data.get("spf") or {})),
            dkim=tuple(DkimResult.from_dict(dict(s)) for s in dkim if isinstance(s, dict)),
            dmarc=DmarcResult.from_dict(dict(data.get("dmarc") or {})),
            method=str(data.get("method", "")),
            reasons=tuple(str(r) for r in data.get("reasons") or []),
        )

    @classmethod
    def from_json(cls, text: str) -> AuthVerdict:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != VERDICT_VERSION:
            raise ValueError("not an AuthVerdict of a known version")
        return cls.from_dict(data)


def decide(spf: SpfResult, dkim: tuple[DkimResult, ...], dmarc: DmarcResult) -> AuthVerdict:
    """Name what decided and why, from the three results (pure)."""
    summary = [
        f"spf={spf.result} {spf.domain}".rstrip(),
        *(f"dkim={s.result} d={s.domain} s={s.selector}" for s in dkim),
    ]
    if not dkim:
        summary.append("dkim=none")
    if dmarc.result == "pass":
        method = "dmarc-pass"
        head = f"DMARC pass for {dmarc.from_domain}: {dmarc.reason}"
    elif dmarc.result == "fail":
        method = "dmarc-policy"
        where = f" ({dmarc.policy_domain})" if dmarc.policy_domain else ""
        head = f"DMARC fail for {dmarc.from_domain}: policy {dmarc.policy}{where}, disposition {dmarc.disposition}"
        summary.append(dmarc.reason)
    elif dmarc.result == "none":
        method = "dmarc-none"
        head = f"no DMARC policy for {dmarc.from_domain}: {dmarc.reason}"
    else:
        method = f"dmarc-{dmarc.result}"
        head = f"DMARC {dmarc.result}: {dmarc.reason}"
    return AuthVerdict(spf, dkim, dmarc, method, (head, *summary))


async def _bounded(aw: Awaitable[T], seconds: float) -> T | None:
    # asyncio.timeout, not wait_for: wait_for runs `aw` in a task of its own, a second task per
    # check for every message (gather already gives each check one).
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError:
        return None


async def _discover_all(domains: tuple[str, ...], resolver: Resolver) -> list[Discovery]:
    if len(domains) == 1:  # the usual case: one author domain, no task for it
        return [await discover_policy(domains[0], resolver)]
    return list(await asyncio.gather(*(discover_policy(d, resolver) for d in domains)))


async def evaluate(
    message: bytes,
    remote_ip: str,
    helo: str,
    mail_from: str,
    resolver: Resolver,
    *,
    sample: float | None = None,
    receiver: str = "",
    author: Author | None = None,
    prepared_dkim: DkimPrepared | None = None,
) -> AuthVerdict:
    """Evaluate SPF (RFC 7208), every DKIM signature (RFC 6376) and DMARC (RFC 7489) for one message.

    `mail_from` is the MAIL FROM path ("" for the null path), `helo` the EHLO/HELO argument,
    `remote_ip` the client address. `sample` in [0, 1) is the draw for DMARC pct= sampling;
    by default a fresh random number (the decision, not the draw, is recorded). `author` is the
    message's author as the caller's parse read it (read here when not given), `prepared_dkim`
    the message's `prepare_dkim` when the caller's analysis made it. Never raises on bad DNS or
    hostile messages: failures are temperror/permerror results with reasons.
    """
    draw = random.random() if sample is None else sample
    domains, from_error = author_domains(author if author is not None else message)
    spf_r, dkim_r, discoveries = await asyncio.gather(
        _bounded(timed("spf", check_spf(remote_ip, mail_from, helo, resolver, receiver=receiver)), SPF_TIMEOUT + 2.0),
        _bounded(timed("dkim", verify_dkim(message, resolver, prepared=prepared_dkim)), DKIM_TIMEOUT),
        _bounded(timed("dmarc", _discover_all(domains, resolver)), DMARC_TIMEOUT),
    )
    spf = spf_r or SpfResult(
        "temperror",
        "",
        "mailfrom",
        mail_from,
        helo,
        remote_ip,
        reason="SPF check timed out (RFC 7208 §4.6.4)",
    )
    dkim: tuple[DkimResult, ...] = dkim_r if dkim_r is not None else ()
    if dkim_r is None:
        dkim = (DkimResult("temperror", "", "", "", None, reason="DKIM verification timed out"),)
    if not domains:
        dmarc = DmarcResult("permerror", "none", reason=from_error)
    elif discoveries is None:
        dmarc = DmarcResult(
            "temperror", "none", from_domain=domains[0], reason="DMARC policy lookup timed out"
        )
    else:
        dmarc = strictest([evaluate_policy(d, spf, dkim, draw) for d in discoveries])
        if len(domains) > 1:
            dmarc = replace(dmarc, reason=f"{len(domains)} author domains, strictest kept: {dmarc.reason}")
    return decide(spf, dkim, dmarc)
