"""What mail clients fetch to configure themselves: Thunderbird autoconfig, Outlook autodiscover, the MTA-STS policy — pure functions, no I/O."""

from __future__ import annotations

import hashlib
import plistlib
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

from ..config import MtaStsSettings

# The largest autodiscover request read (an Outlook request is ~400 octets).
MAX_AUTODISCOVER_BYTES = 16 * 1024

_AUTODISCOVER_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"


@dataclass(frozen=True)
class Endpoint:
    """One way in: a port and how TLS starts there ("SSL": implicit, RFC 8314; "STARTTLS")."""

    port: int
    tls: str


@dataclass(frozen=True)
class Services:
    """The mail host and its client ports, best first (implicit TLS before STARTTLS, RFC 8314 §5.1)."""

    hostname: str
    imap: tuple[Endpoint, ...]
    submission: tuple[Endpoint, ...]


def services_from_listeners(hostname: str, listeners: list[tuple[str, int]]) -> Services:
    """`listeners`: (kind, port) as configured (the public ports clients should use)."""
    def pick(implicit: str, starttls: str) -> tuple[Endpoint, ...]:
        found = [Endpoint(p, "SSL") for k, p in listeners if k == implicit]
        found += [Endpoint(p, "STARTTLS") for k, p in listeners if k == starttls]
        return tuple(found)

    return Services(hostname, pick("imaps", "imap"), pick("submissions", "submission"))


def thunderbird_autoconfig(domain: str, services: Services) -> str:
    """Thunderbird's clientConfig v1.1 (wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat).

    The user name is the placeholder %EMAILADDRESS%: the answer is the same for every address of
    the domain, so it tells nobody which addresses exist. Passwords go in the clear inside TLS
    (password-cleartext); every endpoint listed has TLS."""
    d, h = escape(domain), escape(services.hostname)

    def server(tag: str, kind: str, e: Endpoint) -> str:
        return (f'    <{tag} type="{kind}">\n'
                f"      <hostname>{h}</hostname>\n"
                f"      <port>{e.port}</port>\n"
                f"      <socketType>{e.tls}</socketType>\n"
                "      <username>%EMAILADDRESS%</username>\n"
                "      <authentication>password-cleartext</authentication>\n"
                f"    </{tag}>\n")

    body = "".join(server("incomingServer", "imap", e) for e in services.imap)
    body += "".join(server("outgoingServer", "smtp", e) for e in services.submission)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<clientConfig version="1.1">\n'
            f'  <emailProvider id="{d}">\n'
            f"    <domain>{d}</domain>\n"
            f"    <displayName>{d}</displayName>\n"
            f"    <displayShortName>{d}</displayShortName>\n"
            f"{body}"
            "  </emailProvider>\n"
            "</clientConfig>\n")


class AutodiscoverError(ValueError):
    """The request is not an Outlook autodiscover request we can answer."""


def autodiscover_address(body: bytes) -> str:
    """The EMailAddress of an Outlook autodiscover request ([MS-OXDSCLI] §2.2.3, POX schema 2006).

    A document type declaration is refused before parsing: with none, no entity can be declared,
    so neither external entities nor entity expansion (billion laughs) can happen — the same rule
    defusedxml applies."""
    if len(body) > MAX_AUTODISCOVER_BYTES:
        raise AutodiscoverError("request too large")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise AutodiscoverError("document type declarations are refused")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise AutodiscoverError(f"not XML: {e}") from None
    node = root.find(f"{{{_AUTODISCOVER_REQUEST_NS}}}Request/{{{_AUTODISCOVER_REQUEST_NS}}}EMailAddress")
    if node is None:  # some clients omit the namespace
        node = root.find("Request/EMailAddress")
    address = (node.text or "").strip() if node is not None else ""
    if "@" not in address or len(address) > 320:
        raise AutodiscoverError("no EMailAddress")
    return address


def outlook_autodiscover(address: str, services: Services) -> str:
    """The POX response (outlook responseschema 2006a): IMAP and SMTP with TLS, the address as
    login name. <Encryption> says which TLS: "SSL" implicit, "TLS" STARTTLS."""
    h, login = escape(services.hostname), escape(address)

    def protocol(kind: str, e: Endpoint) -> str:
        return ("      <Protocol>\n"
                f"        <Type>{kind}</Type>\n"
                f"        <Server>{h}</Server>\n"
                f"        <Port>{e.port}</Port>\n"
                f"        <LoginName>{login}</LoginName>\n"
                "        <SPA>off</SPA>\n"
                "        <SSL>on</SSL>\n"
                f"        <Encryption>{'SSL' if e.tls == 'SSL' else 'TLS'}</Encryption>\n"
                "        <AuthRequired>on</AuthRequired>\n"
                "      </Protocol>\n")

    protocols = "".join(protocol("IMAP", e) for e in services.imap[:1])
    protocols += "".join(protocol("SMTP", e) for e in services.submission[:1])
    return ('<?xml version="1.0" encoding="utf-8"?>\n'
            '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">\n'
            '  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">\n'
            "    <Account>\n"
            "      <AccountType>email</AccountType>\n"
            "      <Action>settings</Action>\n"
            f"{protocols}"
            "    </Account>\n"
            "  </Response>\n"
            "</Autodiscover>\n")


def mta_sts_policy(hostname: str, settings: MtaStsSettings) -> str:
    """The policy file (RFC 8461 §3.2): CRLF line ends, one mx line per MX host."""
    mxs = [hostname, *(m for m in settings.extra_mx if m != hostname)]
    lines = ["version: STSv1", f"mode: {settings.mode}", *(f"mx: {m}" for m in mxs), f"max_age: {settings.max_age}"]
    return "\r\n".join(lines) + "\r\n"


def mta_sts_id(policy: str) -> str:
    """The `id` of the _mta-sts TXT record (RFC 8461 §3.1): changes whenever the policy does, so
    senders refetch it; derived from the policy so that `dns check` can tell a stale record."""
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def apple_profile(address: str, services: Services) -> bytes:
    """An Apple configuration profile (.mobileconfig, payload com.apple.mail.managed) for
    `address`: IMAP and SMTP with TLS, the address as user name, the password asked on the
    device. It holds nothing secret, so it is served without a login, as autoconfig is. The
    UUIDs derive from the address and host, so installing it again replaces the same account."""
    imap, smtp = services.imap[0], services.submission[0]
    domain = address.rpartition("@")[2]
    ident = ".".join(reversed(domain.split("."))) + ".eventmail"
    account_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"eventmail-mail:{address}@{services.hostname}")).upper()
    profile_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"eventmail-profile:{address}@{services.hostname}")).upper()
    mail = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.mail.{account_uuid}",
        "PayloadUUID": account_uuid,
        "PayloadDisplayName": address,
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAccountDescription": address,
        "EmailAddress": address,
        "IncomingMailServerHostName": services.hostname,
        "IncomingMailServerPortNumber": imap.port,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": address,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": services.hostname,
        "OutgoingMailServerPortNumber": smtp.port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": address,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.{profile_uuid}",
        "PayloadUUID": profile_uuid,
        "PayloadDisplayName": f"Mail for {address}",
        "PayloadContent": [mail],
    }
    return plistlib.dumps(profile)
