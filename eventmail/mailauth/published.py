"""The DNS records a domain publishes for its mail here — what `quickstart` prints and `dns check`
compares with what is published — and the lookups both make to tell what is published."""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdata
import dns.resolver

from .dkim import zone_txt
from .psl import organizational_domain

TTL = 3600


@dataclass(frozen=True)
class Record:
    name: str  # absolute, with the final dot
    rtype: str
    value: str  # the rdata as zone-file text
    why: str
    # How `dns check` compares a TXT record: the whole text ("") or only how it starts (the
    # operator may tune an SPF, DMARC or TLSRPT record; the key of a DKIM record must be exact).
    txt_prefix: str = ""
    txt: str = ""  # the TXT text, joined

    def line(self) -> str:
        return f"{self.name} {TTL} IN {self.rtype} {self.value}"


def _txt(name: str, text: str, why: str, prefix: str = "") -> Record:
    return Record(name, "TXT", zone_txt(text), why, prefix, text)


# The CAA issuer domain of the ACME CAs a configuration may name (RFC 8659 §4.2): known ones only.
CAA_ISSUERS = {"letsencrypt.org": "letsencrypt.org"}


def caa_issuer(acme_directory: str) -> str | None:
    """The CAA issuer of the CA behind an ACME directory URL, when it is a CA we know."""
    host = acme_directory.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    for suffix, issuer in CAA_ISSUERS.items():
        if host == suffix or host.endswith("." + suffix):
            return issuer
    return None


def domain_records(domain: str, hostname: str, report_address: str, dkim: list[tuple[str, str]],
                   mta_sts_id: str | None = None, caa: str | None = None) -> list[Record]:
    """`dkim`: (selector, TXT value) of the domain's active keys; `mta_sts_id`: the id of the
    MTA-STS policy the server's HTTPS listener serves (None: no web listener, no MTA-STS or
    autoconfig records); `caa`: the CAA issuer of the ACME CA (None: no CAA record)."""
    d, h = domain.rstrip(".").lower() + ".", hostname.rstrip(".").lower() + "."
    return [
        Record(d, "MX", f"10 {h}", "Mail for the domain goes to this host (RFC 5321 §5.1)."),
        _txt(d, "v=spf1 mx -all", "Only this domain's MX may send its mail (RFC 7208); -all: refuse the rest.", "v=spf1 "),
        _txt(h, "v=spf1 a -all", "The host itself sends its own notices (bounces) under its name.", "v=spf1 "),
        *(_txt(f"{sel}._domainkey.{d}", value, "A DKIM public key (RFC 6376 §3.6.2; RFC 8463 for ed25519).")
          for sel, value in dkim),
        _txt(f"_dmarc.{d}", f"v=DMARC1; p=reject; rua=mailto:{report_address}",
             "DMARC (RFC 7489): receivers refuse mail in the domain's name that fails; reports to you.", "v=DMARC1;"),
        _txt(f"_smtp._tls.{d}", f"v=TLSRPTv1; rua=mailto:{report_address}",
             "SMTP TLS reporting (RFC 8460): receivers report TLS failures to you.", "v=TLSRPTv1;"),
        Record(f"_submissions._tcp.{d}", "SRV", f"0 1 465 {h}", "Submission with TLS (RFC 8314 §5.1, RFC 6186)."),
        Record(f"_submission._tcp.{d}", "SRV", f"10 1 587 {h}", "Submission with STARTTLS (RFC 6186)."),
        Record(f"_imaps._tcp.{d}", "SRV", f"0 1 993 {h}", "IMAP with TLS (RFC 8314 §5.1, RFC 6186)."),
        Record(f"_imap._tcp.{d}", "SRV", f"10 1 143 {h}", "IMAP with STARTTLS (RFC 6186)."),
        Record(f"_pop3s._tcp.{d}", "SRV", "0 0 0 .", "No POP3 here (RFC 6186 §4)."),
        Record(f"_pop3._tcp.{d}", "SRV", "0 0 0 .", "No POP3 here (RFC 6186 §4)."),
        *(_web_records(d, h, mta_sts_id) if mta_sts_id is not None else []),
        *([Record(d, "CAA", f'0 issue "{caa}"', "Only this CA may issue certificates for the domain's names "
                  "(RFC 8659); the server's ACME account uses it.")] if caa else []),
    ]


def tlsa_record(hostname: str, spki_sha256: str) -> Record:
    """DANE for mail to the host (RFC 7672 §3): TLSA 3 1 1 of the host's lasting key. Only worth
    publishing in a DNSSEC-signed zone; senders ignore it elsewhere."""
    return Record(f"_25._tcp.{hostname.rstrip('.').lower()}.", "TLSA", f"3 1 1 {spki_sha256}",
                  "DANE (RFC 7672): senders that validate DNSSEC require TLS with this key (the "
                  "host's lasting key, [acme] host_key_file; renewals keep it).")


def _web_records(d: str, h: str, mta_sts_id: str) -> list[Record]:
    """What the HTTPS listener serves for the domain (docs/web.md): the MTA-STS policy and the
    client autoconfiguration, both under names of the domain that point at the mail host."""
    return [
        _txt(f"_mta-sts.{d}", f"v=STSv1; id={mta_sts_id}",
             "MTA-STS (RFC 8461 §3.1): senders fetch the policy; the id changes when the policy does."),
        Record(f"mta-sts.{d}", "CNAME", h, "The policy is served at https://mta-sts.DOMAIN/ (RFC 8461 §3.3)."),
        Record(f"autoconfig.{d}", "CNAME", h, "Thunderbird's autoconfiguration (config-v1.1.xml)."),
        Record(f"_autodiscover._tcp.{d}", "SRV", f"0 1 443 {h}", "Outlook's autodiscover ([MS-OXDSCLI] §3.1.5)."),
    ]


class Lookup:
    """Answers from one resolver (the configured one, as the server's own lookups): rdatas, or []
    when the name or type does not exist."""

    def __init__(self, nameservers: tuple[str, ...] | list[str], port: int, lifetime: float = 10.0) -> None:
        self.resolver = dns.resolver.Resolver(configure=False)
        self.resolver.nameservers = list(nameservers)
        self.resolver.port = port
        self.resolver.lifetime = lifetime

    def __call__(self, name: str, rtype: str) -> list[dns.rdata.Rdata]:
        try:
            return list(self.resolver.resolve(name, rtype, raise_on_no_answer=False) or [])
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []


def zone_signed(lookup: Lookup, name: str) -> bool | None:
    """Whether the zone holding `name` is DNSSEC-signed (it publishes DNSKEY records at its apex);
    None when the resolver could not tell, or the name's registered domain is not delegated yet
    (the zone found would be the TLD's). TLSA records mean something only in a signed zone
    (RFC 7672 §2.2): senders that find the zone insecure skip DANE."""
    registered = dns.name.from_text(organizational_domain(name.rstrip(".")))
    try:
        apex = dns.resolver.zone_for_name(name, resolver=lookup.resolver, lifetime=lookup.resolver.lifetime)
        if not apex.is_subdomain(registered):
            return None
        return bool(lookup(apex.to_text(), "DNSKEY"))
    except (dns.exception.DNSException, OSError):
        return None
