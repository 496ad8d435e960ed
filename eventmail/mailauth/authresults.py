"""Renders the Authentication-Results header field (RFC 8601) from result values, safe for hostile input.

Rendered by hand rather than with `authres` so that every value is quoted or escaped by one
set of rules we test (authres drops comments and does not escape values it is given), and so
that nothing from the wire (explanations from SPF exp= records, d= values, local parts) can
break out of its field: CR, LF and other control characters never reach the output, every
line stays under RFC 5322's 998-octet limit, and values that are not tokens are quoted.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

HEADER_NAME = "Authentication-Results"
# RFC 5322 §2.1.1: lines SHOULD be at most 78 characters, MUST be at most 998 octets.
FOLD_AT = 78
MAX_LINE_OCTETS = 998
# Bounds for what a value may contribute, so one token can never approach 998 octets even
# when every octet is escaped: 2 * 256 + 2 quotes + "smtp.mailfrom=" < 600.
MAX_VALUE_OCTETS = 256
MAX_REASON_CHARS = 200

# RFC 2045 §5.1: token := 1*<any (US-ASCII) CHAR except SPACE, CTLs, or tspecials>.
_TSPECIALS = set('()<>@,;:\\"/[]?=')
# RFC 8601 §2.2 keyword (method and result names) = Let-dig [Ldh-str] (RFC 5321).
_KEYWORD = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
# RFC 5322 §3.2.3 dot-atom-text with ASCII atext, and a domain-name of LDH labels (with the
# underscore allowed by DNS for e.g. _dmarc names and selectors).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_DOMAIN = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*"
_PVALUE_ADDR = re.compile(rf"^(?:(?:{_DOT_ATOM})?@)?{_DOMAIN}$")
_COMMENT_SAFE = re.compile(r"[^A-Za-z0-9 =._:+-]")


@dataclass(frozen=True)
class ResInfo:
    """One result: `method=result [(comment)] [reason="..."] ptype.property=value ...`."""

    method: str
    result: str
    reason: str = ""
    properties: tuple[tuple[str, str], ...] = ()  # (("smtp.mailfrom", "a@example.org"), ...)
    comment: str = ""


def _truncate_utf8(text: str, limit: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


# C0 and C1 controls (CR and LF among them), DEL and the Unicode line and paragraph separators,
# each as a space: str.translate does it in C (this runs several times per delivery).
_CONTROLS_TO_SPACE = {c: " " for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}
# A token's characters: printable ASCII other than tspecials (RFC 2045 §5.1).
_TOKEN = re.compile(r'[!#-\'*+\-.0-9A-Z^-~]+')


def clean(text: str) -> str:
    """Control characters (CR and LF included) become spaces; runs of whitespace collapse."""
    return " ".join(text.translate(_CONTROLS_TO_SPACE).split())


def quote(text: str) -> str:
    """RFC 5322 §3.2.4 quoted-string: backslash-escape \\ and \" (the text is already clean)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def value(text: str) -> str:
    """RFC 2045 value: the token itself, or a quoted-string."""
    text = _truncate_utf8(clean(text), MAX_VALUE_OCTETS)
    return text if is_token(text) else quote(text)


def pvalue(text: str) -> str:
    """RFC 8601 §2.2 pvalue: `[[local-part]@]domain-name` unquoted when it is one, else a value."""
    text = _truncate_utf8(clean(text), MAX_VALUE_OCTETS)
    if text and _PVALUE_ADDR.fullmatch(text):
        return text
    return value(text)


def _keyword(text: str, fallback: str) -> str:
    return text if _KEYWORD.fullmatch(text) else fallback


# RFC 8601 §2.2: ptype = "smtp" / "header" / "body" / "policy".
PTYPES = frozenset({"smtp", "header", "body", "policy"})


def _ptype_property(name: str) -> str:
    ptype, dot, prop = name.partition(".")
    if not dot or ptype not in PTYPES or not re.fullmatch(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*", prop):
        return "policy.x-invalid"
    return name


@functools.lru_cache(maxsize=16)
def authserv_id(text: str) -> str:
    """The authserv-id as a token (RFC 8601 §2.5 suggests the host name); other octets become "-".

    RFC 8601 also allows a quoted-string, but common parsers (authres among them) accept only
    a dot-atom, and the id is our own configured host name anyway.
    """
    cleaned = clean(text)[:MAX_VALUE_OCTETS]
    token = "".join(ch if 0x20 < ord(ch) < 0x7F and ch not in _TSPECIALS else "-" for ch in cleaned)
    # Also an RFC 5322 dot-atom (no empty labels), which is what a host name is.
    return ".".join(part for part in token.split(".") if part) or "unknown"


# A result's tokens, kept for results that come again: a sender's SPF and DMARC results (and its
# DKIM results but for header.b) are the same message after message, and each token is built by
# several regular expressions and translations (2.5 % of the event loop's samples under load).
# ResInfo is frozen, hashable; the bound keeps the cache small whatever the senders.
@functools.lru_cache(maxsize=256)
def _resinfo_tokens(info: ResInfo) -> tuple[str, ...]:
    tokens = [f"{_keyword(info.method, 'x-invalid')}={_keyword(info.result, 'permerror')}"]
    comment = _COMMENT_SAFE.sub("", clean(info.comment))[:80].strip()
    if comment:
        tokens.append(f"({comment})")
    reason = clean(info.reason)
    if reason:
        # Free text from the wire: ASCII only in the header (the delivery event keeps the full
        # text), so the field stays readable by MUAs that do not speak RFC 6532.
        reason = reason.encode("ascii", "replace").decode("ascii")[:MAX_REASON_CHARS]
        tokens.append(f"reason={quote(reason)}")
    for name, val in info.properties:
        tokens.append(f"{_ptype_property(name)}={pvalue(val)}")
    return tuple(tokens)


def render(authserv_id_text: str, results: Sequence[ResInfo]) -> str:
    """The whole field, `Authentication-Results: ...`, folded with CRLF+TAB, without final CRLF."""
    server = authserv_id(authserv_id_text)
    lines = [f"{HEADER_NAME}: {server};" if results else f"{HEADER_NAME}: {server}; none"]
    for i, info in enumerate(results):
        last = i == len(results) - 1
        tokens = _resinfo_tokens(info)
        line = "\t" + tokens[0]
        for token in tokens[1:]:
            if len((line + " " + token).encode("utf-8")) > FOLD_AT:
                lines.append(line)
                line = "\t" + token
            else:
                line += " " + token
        lines.append(line + ("" if last else ";"))
    return "\r\n".join(lines)
