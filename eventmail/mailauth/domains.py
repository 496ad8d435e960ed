"""Domain-name normalisation for mail authentication: IDNA U-labels to lower-case A-labels, validated."""

from __future__ import annotations

import functools

import dns.exception
import dns.name

# RFC 1035 §2.3.4: labels are at most 63 octets, names at most 255 octets on the wire
# (253 characters in text form without the trailing dot).
MAX_LABEL_OCTETS = 63
MAX_NAME_CHARS = 253


class DomainError(ValueError):
    """A string that cannot be used as a DNS domain name for authentication lookups."""


def _codec() -> dns.name.IDNACodec:
    # RFC 5891 (IDNA 2008) with UTS #46 mapping, the same conversion browsers and MTAs
    # use; falls back to IDNA 2003 when the optional `idna` package is missing.
    try:
        import idna  # noqa: F401  (only checks that IDNA 2008 support is importable)
    except ImportError:  # pragma: no cover - idna is a transitive dependency (aiohttp → yarl)
        return dns.name.IDNA_2003_Practical
    return dns.name.IDNA_2008_Practical


_IDNA = _codec()
# Conversions remembered (a pure function of the text): a delivery converts the same few
# domains 8-10 times (SPF, DKIM, DMARC, the junk features' From, To and Cc), at about 40 µs
# each through dnspython, and the next message from that sender converts them again. Only
# texts no longer than a name with its final dot are kept, at most CACHED_DOMAINS of them (the
# least recently used go first); failures are not kept (they raise).
CACHED_DOMAINS = 4096


def to_ascii_domain(domain: str) -> str:
    """Return `domain` as lower-case A-labels without a trailing dot, or raise DomainError.

    U-labels (RFC 5890 §2.3.2.1) are converted with IDNA 2008/UTS #46, so `Bücher.Test`
    becomes `xn--bcher-kva.test`. Empty labels, over-long labels and names, whitespace and
    control characters are rejected: they can never be looked up (RFC 7208 §4.3 treats such
    a sender domain as "none").
    """
    if len(domain) <= MAX_NAME_CHARS + 1:
        return _cached(domain)
    return _convert(domain)


@functools.lru_cache(maxsize=CACHED_DOMAINS)
def _cached(domain: str) -> str:
    return _convert(domain)


def _convert(domain: str) -> str:
    text = domain.strip()
    if text.endswith("."):
        text = text[:-1]
    if not text or text.startswith(".") or ".." in text:
        raise DomainError(f"empty label in domain {domain!r}")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise DomainError(f"whitespace or control character in domain {domain!r}")
    if any(ch in '\\"()<>@,;:[]' for ch in text):
        raise DomainError(f"character not allowed in a domain name: {domain!r}")
    try:
        if text.isascii():
            name = dns.name.from_text(text)
        else:
            name = dns.name.from_unicode(text, idna_codec=_IDNA)
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise DomainError(f"invalid domain {domain!r}: {exc}") from exc
    ascii_text = name.to_text(omit_final_dot=True).lower()
    if "\\" in ascii_text:
        # dnspython escapes octets that are not letters/digits/hyphen; such names are not
        # host names and are not valid mail domains (RFC 5321 §4.1.2 Domain syntax).
        raise DomainError(f"domain contains octets outside host-name syntax: {domain!r}")
    if len(ascii_text) > MAX_NAME_CHARS:
        raise DomainError(f"domain longer than {MAX_NAME_CHARS} characters")
    return ascii_text


def is_ascii_domain(domain: str) -> bool:
    """True when `domain` already is a valid lower-case A-label domain (no conversion needed)."""
    try:
        return to_ascii_domain(domain) == domain
    except DomainError:
        return False


def split_address(address: str) -> tuple[str, str]:
    """Split `local@domain` at the last "@" (RFC 5321 §4.1.2); ("", "") for the null path.

    Angle brackets are stripped. An address without "@" is returned as ("", address), which
    is how RFC 7208 §4.3 treats a bare domain (the caller substitutes "postmaster").
    """
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not text:
        return "", ""
    local, sep, domain = text.rpartition("@")
    if not sep:
        return "", text
    return local, domain


def label_count(domain: str) -> int:
    """Number of labels in an A-label domain without a trailing dot."""
    return len(domain.split(".")) if domain else 0
