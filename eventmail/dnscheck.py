"""`eventmail dns check DOMAIN --config FILE`: what the domain publishes in DNS, against what this server
needs (eventmail.mailauth.published), record by record — OK, MISSING or WRONG with the exact fix.

The expected records come from the configuration (host name, resolver) and the store (the domain's
active DKIM keys; opened read-only, so a running server is no obstacle). Queries go to the
configured resolver, as the server's own lookups do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import dns.exception
import dns.rdata

from .config import Config
from .mailauth.dkim import public_key_record
from .mailauth.published import Lookup, Record, caa_issuer, domain_records, tlsa_record, zone_signed
from .opening import open_store
from .store import MasterKeySource, load_master_key
from .tls.certs import read_host_key, tlsa_3_1_1
from .web.clientconfig import mta_sts_id, mta_sts_policy

OK, MISSING, WRONG = "OK", "MISSING", "WRONG"


@dataclass(frozen=True)
class Finding:
    status: str
    what: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.status:8}{self.what}" + (f"\n        {self.detail}" if self.detail else "")


async def _dkim(cfg: Config, domain: str) -> list[tuple[str, str]]:
    source = MasterKeySource(key_file=cfg.key_file, passphrase_env=cfg.passphrase_env,
                             allow_loose_mode=cfg.allow_key_file_mode)
    store = await open_store(cfg.data_dir, load_master_key(cfg.data_dir, source), writable=False)
    try:
        return [(sel, public_key_record(d.algorithm, d.private_key))
                for (dom, sel), d in sorted(store.system.dkim.items()) if dom == domain and d.active]
    finally:
        await store.close()


def host_key_pem(cfg: Config) -> bytes:
    """The key the host's certificates are made with: [acme] host_key_file, else [tls] key."""
    return read_host_key(cfg.acme.host_key_file if cfg.acme is not None and cfg.acme.host_key_file
                         else cfg.tls_key)


def _txt_texts(rdatas: list[dns.rdata.Rdata]) -> list[str]:
    return [b"".join(r.strings).decode("utf-8", "replace") for r in rdatas]  # type: ignore[attr-defined]


def _compare(expected: Record, lookup: Lookup) -> Finding:
    what = f"{expected.rtype} {expected.name}"
    fix = f"publish: {expected.line()}"
    try:
        found = lookup(expected.name, expected.rtype)
    except dns.exception.DNSException as e:
        return Finding(WRONG, what, f"the resolver failed: {e}; {fix}")
    if expected.rtype == "TXT":
        texts = _txt_texts(found)
        prefix = expected.txt_prefix
        mine = [t for t in texts if t.startswith(prefix)] if prefix else texts
        if not mine:
            return Finding(MISSING, what, fix)
        if prefix:
            if len(mine) > 1:
                return Finding(WRONG, what, f"{len(mine)} records start with {prefix!r}, one is allowed; keep: "
                                            f"{expected.line()}")
            return Finding(OK, what, mine[0])
        if expected.txt in texts:
            return Finding(OK, what)
        return Finding(WRONG, what, f"published: {texts[0][:80]}...; {fix}")
    texts = texts_of(found)
    if expected.rtype == "TLSA":
        # A record for another key makes validating senders refuse to deliver (RFC 7672 §2.2);
        # extra records (a next key published ahead of a rollover) are fine beside ours.
        want = expected.value.split()[3].lower()
        if any((r.usage, r.selector, r.mtype, r.cert.hex()) == (3, 1, 1, want) for r in found):  # type: ignore[attr-defined]
            return Finding(OK, what)
        return Finding(MISSING if not texts else WRONG, what,
                       (f"published: {', '.join(texts)} (none matches the host's key: validating senders "
                        f"will not deliver); " if texts else "") + fix)
    if expected.rtype == "MX":
        host = expected.value.split()[1]
        if any(t.split()[1] == host for t in texts):
            return Finding(OK, what, ", ".join(texts))
        return Finding(MISSING if not texts else WRONG, what, (f"published: {', '.join(texts)}; " if texts else "") + fix)
    if expected.value.lower() in texts:
        return Finding(OK, what)
    return Finding(MISSING if not texts else WRONG, what, (f"published: {', '.join(texts)}; " if texts else "") + fix)


def texts_of(found: list[dns.rdata.Rdata]) -> list[str]:
    return [r.to_text().lower() for r in found]


def check(cfg: Config, domain: str) -> list[Finding]:
    domain = domain.rstrip(".").lower()
    dkim = asyncio.run(_dkim(cfg, domain))
    lookup = Lookup(cfg.resolver.nameservers, cfg.resolver.port)
    findings: list[Finding] = []
    host = cfg.hostname.rstrip(".") + "."
    addresses = [r.to_text() for rtype in ("A", "AAAA") for r in _safe(lookup, host, rtype)]
    findings.append(Finding(OK, f"A/AAAA {host}", ", ".join(addresses)) if addresses else
                    Finding(MISSING, f"A/AAAA {host}", f"publish the host's addresses: {host} {3600} IN A <IPv4>"))
    if not dkim:
        findings.append(Finding(MISSING, f"DKIM key for {domain}",
                                f"no active signing key in the store: eventmail dkim add {domain} SELECTOR"))
    # DMARC and TLSRPT are compared by how they start, so the report address does not matter.
    # The MTA-STS and autoconfig names only when an HTTPS listener serves them.
    served = any(li.kind == "https" for li in cfg.listeners) or (
        bool(cfg.trusted_proxies) and any(li.kind == "http" for li in cfg.listeners))  # behind a web server
    policy_id = mta_sts_id(mta_sts_policy(cfg.hostname, cfg.mta_sts)) if served else None
    caa = caa_issuer(cfg.acme.directory) if cfg.acme is not None else None
    for expected in domain_records(domain, cfg.hostname, f"postmaster@{domain}", dkim, policy_id, caa):
        findings.append(_compare(expected, lookup))
    findings.append(_dane(cfg, lookup))
    return findings


def _dane(cfg: Config, lookup: Lookup) -> Finding:
    """TLSA for the MX host, when its zone is signed (RFC 7672); a note otherwise."""
    expected = tlsa_record(cfg.hostname, tlsa_3_1_1(host_key_pem(cfg)))
    what = f"TLSA {expected.name}"
    signed = zone_signed(lookup, cfg.hostname)
    if signed:
        return _compare(expected, lookup)
    found = _safe(lookup, expected.name, "TLSA")
    if signed is None:
        return Finding(OK, what, "could not tell whether the zone is DNSSEC-signed; once it is, publish: "
                       f"{expected.line()}")
    return Finding(OK, what, "not checked: the zone is not DNSSEC-signed, so senders skip DANE"
                   + (f" (published, unused: {', '.join(texts_of(found))})" if found else
                      f"; once it is signed, publish: {expected.line()}"))


def _safe(lookup: Lookup, name: str, rtype: str) -> list[dns.rdata.Rdata]:
    try:
        return lookup(name, rtype)
    except dns.exception.DNSException:
        return []
