"""DMARC (RFC 7489): record parsing, policy discovery with organizational-domain fallback, alignment, disposition.

The evaluation is split into I/O and decision:

- `discover_policy(from_domain, resolver)` does the DNS part of §6.6.3;
- `evaluate_policy(...)` is a pure function of the From domain, the discovered record, the SPF
  and DKIM results and a sampling draw for pct=, returning at the first decision with a value
  that says why (STYLE pattern 2). Replaying a recorded delivery never re-runs it.

Scope: RFC 7489 with the Public Suffix List for organizational domains (§3.2), as opendmarc and
Mox do. Not implemented: RFC 9091 (public-suffix-domain DMARC, experimental) and the DNS tree
walk of DMARCbis; reporting (rua/ruf) is parsed but not sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from ..mime.addresses import Author, read_author, usable
from .dkim import DkimResult
from .domains import DomainError, to_ascii_domain
from .psl import organizational_domain
from .resolver import DnsStatus, Resolver
from .spf import SpfResult

DmarcResultCode = Literal["pass", "fail", "none", "temperror", "permerror"]
DMARC_RESULTS: frozenset[str] = frozenset({"pass", "fail", "none", "temperror", "permerror"})
Policy = Literal["none", "quarantine", "reject"]
POLICIES: frozenset[str] = frozenset({"none", "quarantine", "reject"})
Disposition = Policy
Alignment = Literal["r", "s"]

# RFC 7489 §6.6.1 lets receivers act on messages with several authors; we evaluate every
# author domain and keep the strictest outcome, so adding an address cannot dodge a policy.
MAX_AUTHOR_DOMAINS = 8
MAX_REASON_CHARS = 200
_DOWNGRADE: dict[Policy, Policy] = {"reject": "quarantine", "quarantine": "none", "none": "none"}
_SEVERITY: dict[str, int] = {"reject": 2, "quarantine": 1, "none": 0}
_RESULT_SEVERITY: dict[str, int] = {"fail": 4, "temperror": 3, "permerror": 2, "none": 1, "pass": 0}


class DmarcRecordError(ValueError):
    """A TXT record that is not a usable DMARC record."""


@dataclass(frozen=True)
class DmarcRecord:
    """The tags of RFC 7489 §6.3 we act on (rua/ruf kept for a future reporter)."""

    policy: Policy
    subdomain_policy: Policy | None = None
    adkim: Alignment = "r"
    aspf: Alignment = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()


_VERSION_RE = re.compile(r"^\s*v\s*=\s*DMARC1\s*(;|$)")
_TAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _uris(value: str) -> tuple[str, ...]:
    # RFC 7489 §6.4: dmarc-uri = URI [ "!" 1*DIGIT [ "k" / "m" / "g" / "t" ] ], comma-separated.
    out = []
    for part in value.split(","):
        uri = part.strip()
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", uri):
            out.append(uri)
    return tuple(out)


def is_dmarc_record(text: str) -> bool:
    """RFC 7489 §6.6.3 step 2: only records starting with "v=DMARC1" count."""
    return bool(_VERSION_RE.match(text))


def parse_record(text: str) -> DmarcRecord:
    """Parse one DMARC TXT record (RFC 7489 §6.3, §6.4); raise DmarcRecordError if unusable.

    Unknown tags are ignored (§6.3). Invalid optional values (adkim, aspf, pct) fall back to
    their defaults rather than discarding the owner's policy. A missing or invalid p= (or an
    invalid sp=) is read as p=none when a valid rua= is present, and discards the record
    otherwise (§6.6.3 step 6).
    """
    if not is_dmarc_record(text):
        raise DmarcRecordError("record does not start with v=DMARC1")
    tags: dict[str, str] = {}
    for i, part in enumerate(text.split(";")):
        item = part.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or not _TAG_RE.fullmatch(name):
            if i == 0:
                raise DmarcRecordError("malformed version tag")
            continue  # not a tag=value pair: ignored like an unknown tag
        if name in tags:
            continue  # first occurrence wins
        tags[name] = value.strip()
    rua = _uris(tags.get("rua", ""))
    ruf = _uris(tags.get("ruf", ""))
    p = tags.get("p", "").lower()
    sp_raw = tags.get("sp")
    sp = sp_raw.lower() if sp_raw is not None else None
    if p not in POLICIES or (sp is not None and sp not in POLICIES):
        if not rua:
            raise DmarcRecordError("no valid p= (and no rua=) (RFC 7489 §6.6.3 step 6)")
        p, sp = "none", None
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    pct_text = tags.get("pct", "100")
    pct = (
        int(pct_text)
        if pct_text.isascii() and pct_text.isdigit() and len(pct_text) <= 3 and int(pct_text) <= 100
        else 100
    )
    return DmarcRecord(
        policy=cast(Policy, p),
        subdomain_policy=cast(Policy, sp) if sp is not None else None,
        adkim="s" if adkim == "s" else "r",
        aspf="s" if aspf == "s" else "r",
        pct=pct,
        rua=rua,
        ruf=ruf,
    )


@dataclass(frozen=True)
class Discovery:
    """What §6.6.3 found for one From domain."""

    from_domain: str
    org_domain: str
    record: DmarcRecord | None
    policy_domain: str  # where the record was found: from_domain, org_domain, or ""
    status: Literal["found", "none", "temperror"]
    reason: str = ""


async def _records_at(domain: str, resolver: Resolver) -> tuple[list[str], str]:
    """(DMARC1 records at _dmarc.domain, error) where error is set on a temporary failure."""
    answer = await resolver.query(f"_dmarc.{domain}", "TXT")
    if answer.status is DnsStatus.TEMPERROR:
        return [], f"DNS error for _dmarc.{domain}: {answer.error}"
    if answer.status is not DnsStatus.OK:
        return [], ""  # NXDOMAIN, NODATA, or data that can never be a record: no policy here
    texts = [t.decode("utf-8", "replace") for t in answer.txt()]
    return [t for t in texts if is_dmarc_record(t)], ""


async def discover_policy(from_domain: str, resolver: Resolver) -> Discovery:
    """RFC 7489 §6.6.3: the From domain's record, else the organizational domain's."""
    org = organizational_domain(from_domain)
    records, error = await _records_at(from_domain, resolver)  # steps 1-2
    where = from_domain
    if error:
        return Discovery(from_domain, org, None, "", "temperror", error)
    if not records and org != from_domain:
        records, error = await _records_at(org, resolver)  # steps 3-4
        where = org
        if error:
            return Discovery(from_domain, org, None, "", "temperror", error)
    if len(records) != 1:  # step 5
        why = "no DMARC record" if not records else f"{len(records)} DMARC records at _dmarc.{where}"
        return Discovery(from_domain, org, None, "", "none", why)
    try:
        record = parse_record(records[0])  # step 6
    except DmarcRecordError as exc:
        return Discovery(from_domain, org, None, "", "none", f"record at _dmarc.{where} discarded: {exc}")
    return Discovery(from_domain, org, record, where, "found")


@dataclass(frozen=True)
class DmarcResult:
    """The DMARC outcome for the message (RFC 7489 §6.6.2, results as in RFC 8601 §2.7.x)."""

    result: DmarcResultCode
    disposition: Disposition
    from_domain: str = ""
    policy_domain: str = ""
    policy: Policy | None = None  # the policy that applies: p=, or sp= for a subdomain
    subdomain_policy: bool = False  # True when sp= (or p= via fallback) of the org domain applied
    pct: int = 100
    sampled_out: bool = False  # pct= excluded the message: policy applied one step lower (§6.6.4)
    adkim: Alignment = "r"
    aspf: Alignment = "r"
    aligned_dkim: str = ""  # d= of the aligned passing signature
    aligned_spf: str = ""  # SPF domain that passed aligned
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))  # flat: what asdict gives, without its deep copy

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DmarcResult:
        def pol(v: object) -> Policy | None:
            return cast(Policy, v) if isinstance(v, str) and v in POLICIES else None

        result = str(data.get("result", "permerror"))
        pct = data.get("pct", 100)
        return cls(
            result=cast(DmarcResultCode, result if result in DMARC_RESULTS else "permerror"),
            disposition=pol(data.get("disposition")) or "none",
            from_domain=str(data.get("from_domain", "")),
            policy_domain=str(data.get("policy_domain", "")),
            policy=pol(data.get("policy")),
            subdomain_policy=bool(data.get("subdomain_policy", False)),
            pct=pct if isinstance(pct, int) and not isinstance(pct, bool) else 100,
            sampled_out=bool(data.get("sampled_out", False)),
            adkim="s" if data.get("adkim") == "s" else "r",
            aspf="s" if data.get("aspf") == "s" else "r",
            aligned_dkim=str(data.get("aligned_dkim", "")),
            aligned_spf=str(data.get("aligned_spf", "")),
            reason=str(data.get("reason", "")),
        )


def aligned(authenticated: str, from_domain: str, mode: Alignment) -> bool:
    """RFC 7489 §3.1.1/§3.1.2: strict is equality; relaxed compares organizational domains."""
    a = authenticated.lower().rstrip(".")
    f = from_domain.lower().rstrip(".")
    if not a or not f:
        return False
    if mode == "s":
        return a == f
    return a == f or organizational_domain(a) == organizational_domain(f)


def evaluate_policy(
    discovery: Discovery,
    spf: SpfResult,
    dkim: Sequence[DkimResult],
    sample: float,
) -> DmarcResult:
    """RFC 7489 §6.6.2-§6.6.4 for one From domain; `sample` in [0, 1) decides pct= sampling."""
    from_domain = discovery.from_domain
    if discovery.status == "temperror":
        return DmarcResult("temperror", "none", from_domain, reason=discovery.reason)
    record = discovery.record
    if discovery.status == "none" or record is None:
        return DmarcResult("none", "none", from_domain, reason=discovery.reason or "no DMARC record")
    is_sub = discovery.policy_domain != from_domain
    # §6.3 sp=: the organizational domain's policy for its subdomains, p= when sp= is absent.
    policy: Policy = record.subdomain_policy or record.policy if is_sub else record.policy
    base = DmarcResult(
        "fail",
        "none",
        from_domain=from_domain,
        policy_domain=discovery.policy_domain,
        policy=policy,
        subdomain_policy=is_sub,
        pct=record.pct,
        adkim=record.adkim,
        aspf=record.aspf,
    )
    for sig in dkim:
        if sig.result == "pass" and aligned(sig.domain, from_domain, record.adkim):
            mode = "strict" if record.adkim == "s" else "relaxed"
            return replace(
                base,
                result="pass",
                aligned_dkim=sig.domain,
                reason=f"DKIM d={sig.domain} passed, {mode} alignment",
            )
    if spf.result == "pass" and aligned(spf.domain, from_domain, record.aspf):
        mode = "strict" if record.aspf == "s" else "relaxed"
        return replace(
            base, result="pass", aligned_spf=spf.domain, reason=f"SPF {spf.domain} passed, {mode} alignment"
        )
    # No aligned pass. If an aligned identifier could not be checked because of a temporary
    # DNS error, say temperror instead of fail, so the SMTP layer can ask for a retry rather
    # than reject mail that might have passed.
    if (spf.result == "temperror" and aligned(spf.domain, from_domain, record.aspf)) or any(
        s.result == "temperror" and aligned(s.domain, from_domain, record.adkim) for s in dkim
    ):
        return replace(base, result="temperror", reason="an aligned SPF or DKIM check had a temporary error")
    reasons = []
    passing_dkim = [s.domain for s in dkim if s.result == "pass"]
    if passing_dkim:
        reasons.append(f"DKIM passed for {', '.join(passing_dkim)} but not aligned")
    elif dkim:
        reasons.append("no DKIM signature passed")
    else:
        reasons.append("no DKIM signature")
    if spf.result == "pass":
        reasons.append(f"SPF passed for {spf.domain} but not aligned")
    else:
        reasons.append(f"SPF {spf.result}")
    # §6.6.4 / §6.3 pct=: messages outside the sample get the next less strict policy.
    sampled_out = record.pct < 100 and sample * 100 >= record.pct
    disposition: Disposition = _DOWNGRADE[policy] if sampled_out else policy
    if sampled_out:
        reasons.append(f"pct={record.pct}: sampled out, {policy} lowered to {disposition}")
    return replace(base, disposition=disposition, sampled_out=sampled_out, reason=_short("; ".join(reasons)))


# -- the RFC5322.From domain ------------------------------------------------------------------


def author_domains(message: bytes | Author) -> tuple[tuple[str, ...], str]:
    """(A-label author domains, error). RFC 7489 §6.6.1: the domain of RFC5322.From.

    The author is the server's one reading of From (eventmail.mime.addresses.read_author), the
    same that IMAP ENVELOPE serves. Every domain of every From field counts: with one field that
    is the domains ENVELOPE shows; a message with several (refused at the MX and at submission)
    cannot dodge a policy by adding one.
    """
    author = message if isinstance(message, Author) else read_author(message)
    if not author.fields:
        return (), "no From header field (RFC 7489 §6.6.1)"
    domains: list[str] = []
    for address in author.every_address:
        if not usable(address):
            continue
        try:
            ascii_domain = to_ascii_domain(address.host.decode("utf-8", "replace"))
        except DomainError:
            continue
        if ascii_domain not in domains:
            domains.append(ascii_domain)
    if not domains:
        return (), "no usable address in From (RFC 7489 §6.6.1)"
    if len(domains) > MAX_AUTHOR_DOMAINS:
        return tuple(domains[:MAX_AUTHOR_DOMAINS]), f"more than {MAX_AUTHOR_DOMAINS} author domains"
    return tuple(domains), ""


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def strictest(results: Sequence[DmarcResult]) -> DmarcResult:
    """Of several author domains' results, the one whose outcome is most severe."""
    return max(results, key=lambda r: (_SEVERITY[r.disposition], _RESULT_SEVERITY[r.result]))


async def check_dmarc(
    message: bytes,
    spf: SpfResult,
    dkim: Sequence[DkimResult],
    resolver: Resolver,
    sample: float,
) -> DmarcResult:
    """DMARC for `message`, given its SPF and DKIM results (convenience over the two halves)."""
    domains, error = author_domains(message)
    if not domains:
        return DmarcResult("permerror", "none", reason=error)
    results = []
    for domain in domains:
        discovery = await discover_policy(domain, resolver)
        results.append(evaluate_policy(discovery, spf, dkim, sample))
    chosen = strictest(results)
    if len(domains) > 1:
        chosen = replace(
            chosen, reason=_short(f"{len(domains)} author domains, strictest kept: {chosen.reason}")
        )
    return chosen
