"""What TLS one delivery attempt to one host must achieve: the value the destination policy gives the SMTP client."""

from __future__ import annotations

import enum
from dataclasses import dataclass

# RFC 6698 §7.2-7.4 / RFC 7218 acronyms, for logs and events.
USAGE_NAMES = {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE"}
SELECTOR_NAMES = {0: "Cert", 1: "SPKI"}
MATCHING_NAMES = {0: "Full", 1: "SHA2-256", 2: "SHA2-512"}
DANE_TA = 2
DANE_EE = 3


@dataclass(frozen=True, slots=True)
class Tlsa:
    """One TLSA record (RFC 6698 §2.1): certificate usage, selector, matching type, association data."""

    usage: int
    selector: int
    matching_type: int
    data: bytes

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.matching_type} {self.data.hex()}"


# RFC 6698 §2.1.3: SHA2-256 and SHA2-512 associations are digests of these lengths.
_DIGEST_LENGTHS = {1: 32, 2: 64}


def is_usable(record: Tlsa) -> bool:
    """Whether an SMTP client may use this record: DANE-TA or DANE-EE (RFC 7672 §3.1.3), selector
    Cert or SPKI, and association data of the matching type's form (RFC 6698 §2.1.2-2.1.3)."""
    if record.usage not in (DANE_TA, DANE_EE) or record.selector not in (0, 1):
        return False
    if record.matching_type == 0:
        return len(record.data) > 0
    return _DIGEST_LENGTHS.get(record.matching_type) == len(record.data)


def usable(records: tuple[Tlsa, ...] | list[Tlsa]) -> tuple[Tlsa, ...]:
    """The records of `records` an SMTP client may use (is_usable)."""
    return tuple(r for r in records if is_usable(r))


class TlsMode(enum.StrEnum):
    """How an attempt uses TLS (a str, so a mode compares equal to its name in logs and events).

    - opportunistic: STARTTLS if offered, any certificate, plaintext if TLS is not offered or the
      handshake fails (RFC 3207; RFC 7435). In MTA-STS "testing" mode `host_name` is set so the
      certificate can be checked and reported (RFC 8460) without enforcing (RFC 8461 §5).
    - pkix: TLS required, chain valid to a trusted CA and matching `host_name` (MTA-STS
      "enforce", RFC 8461 §4.2; a smarthost). Failure: try the next host.
    - dane: TLS required, the chain authenticated by one of `tlsa` (RFC 7672 §3).
    - plaintext: no TLS (only for routes an operator configures, never chosen by the policy).
    """

    OPPORTUNISTIC = "opportunistic"
    PKIX = "pkix"
    DANE = "dane"
    PLAINTEXT = "plaintext"


@dataclass(frozen=True, slots=True)
class TlsRequirement:
    """The TLS one attempt to one host must reach, and the policy that asked for it (`policy`, the
    label recorded in the attempt's event: "dane", "mta-sts:enforce id=...", "smarthost", ...)."""

    mode: TlsMode
    host_name: str = ""  # the reference name: PKIX host name, DANE-TA names (with `names`)
    names: tuple[str, ...] = ()  # further DANE reference names (RFC 7672 §3.2.2)
    cafile: str | None = None  # PKIX trust store; None: the system's
    tlsa: tuple[Tlsa, ...] = ()
    implicit: bool = False  # TLS from the start (RFC 8314 §3), with PKIX verification
    policy: str = ""

    @classmethod
    def opportunistic(cls) -> TlsRequirement:
        return cls(TlsMode.OPPORTUNISTIC, policy="opportunistic")

    @classmethod
    def pkix(cls, name: str, *, cafile: str | None = None, implicit: bool = False, policy: str = "pkix") -> TlsRequirement:
        return cls(TlsMode.PKIX, host_name=name, cafile=cafile, implicit=implicit, policy=policy)

    @classmethod
    def dane(cls, name: str, tlsa: tuple[Tlsa, ...] | list[Tlsa], *, names: tuple[str, ...] = ()) -> TlsRequirement:
        return cls(TlsMode.DANE, host_name=name, names=names, tlsa=tuple(tlsa), policy="dane")

    @classmethod
    def plaintext(cls) -> TlsRequirement:
        return cls(TlsMode.PLAINTEXT, policy="plaintext")

    @property
    def required(self) -> bool:
        """Whether a failed or missing TLS must end this attempt instead of going on in plaintext."""
        return self.mode in (TlsMode.PKIX, TlsMode.DANE) or self.implicit

    @property
    def verifies(self) -> bool:
        """Whether a successful handshake under this requirement is an authenticated one."""
        return self.mode is TlsMode.PKIX or (self.mode is TlsMode.DANE and bool(usable(self.tlsa)))
