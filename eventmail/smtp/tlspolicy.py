"""What TLS one delivery attempt to one host must achieve: the value the destination policy gives the SMTP client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TlsMode = Literal["opportunistic", "pkix", "dane", "none"]

# RFC 6698 §7.2-7.4 / RFC 7218 acronyms, for logs and events.
USAGE_NAMES = {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE"}
SELECTOR_NAMES = {0: "Cert", 1: "SPKI"}
MATCHING_NAMES = {0: "Full", 1: "SHA2-256", 2: "SHA2-512"}


@dataclass(frozen=True)
class Tlsa:
    """One TLSA record (RFC 6698 §2.1): certificate usage, selector, matching type, association data."""

    usage: int
    selector: int
    matching_type: int
    data: bytes

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.matching_type} {self.data.hex()}"


@dataclass(frozen=True)
class TlsRequirement:
    """The TLS an attempt must reach, and the policy that asked for it.

    mode:
      - "opportunistic": STARTTLS if offered, any certificate, plaintext if TLS is not offered or
        fails (RFC 3207; RFC 7435). In MTA-STS "testing" mode `host_name` is set so the client can
        check the certificate and report (RFC 8460) without enforcing (RFC 8461 §5).
      - "pkix": STARTTLS required, certificate chain valid to a public CA and matching
        `host_name`, the MX host name (RFC 8461 §4.2 MTA-STS "enforce"). Failure: try the next host.
      - "dane": STARTTLS required, the chain authenticated by one of `tlsa` (RFC 7672 §3);
        DANE-EE(3) ignores names and dates, DANE-TA(2) checks `host_name` (RFC 7672 §3.2.2).
      - "none": no TLS at all (only for routes an operator configures, never chosen by the policy).
    policy: which rule decided, for the attempt's event ("dane", "mta-sts:enforce id=...", ...).
    """

    mode: TlsMode
    host_name: str = ""
    tlsa: tuple[Tlsa, ...] = ()
    policy: str = ""

    @property
    def required(self) -> bool:
        """Whether a failed or missing STARTTLS must end this attempt instead of going on in plaintext."""
        return self.mode in ("pkix", "dane")


OPPORTUNISTIC = TlsRequirement("opportunistic")
