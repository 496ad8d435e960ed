"""MAIL FROM / RCPT TO arguments: paths, mailboxes and ESMTP parameters, checked octet by octet.

RFC 5321 §4.1.2 (Path, Mailbox, Local-part, Domain, address-literal, esmtp-param grammar),
§4.1.3 (address literals), §4.1.1.3 (RCPT TO:<Postmaster>), §4.1.1.11 (555 for parameters
not recognised), §4.5.3.1.3 (a path is at most 256 octets); RFC 6531 §3.3 (UTF-8 in local
parts, U-labels in domains, only with SMTPUTF8; §3.5: 550/553 5.6.7 otherwise), RFC 1870 (SIZE),
RFC 6152 (BODY=8BITMIME), RFC 8689 (REQUIRETLS), RFC 4954 §5 (AUTH= in xtext, RFC 3461 §4).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass

from eventmail.smtp.reply import Reply, SmtpError

__all__ = [
    "MailOffer",
    "MailParams",
    "RcptParams",
    "parse_mail_params",
    "parse_path",
    "parse_rcpt_params",
    "split_address",
    "split_path_argument",
    "valid_domain",
]

# RFC 5321 §4.5.3.1.3: a reverse-path or forward-path is at most 256 octets, brackets included.
MAX_PATH = 256
# RFC 5321 §4.5.3.1.2 / RFC 1035 §2.3.4: a domain is at most 255 octets, a label 63.
MAX_DOMAIN = 255
MAX_LABEL = 63

# RFC 5322 §3.2.3 atext, plus RFC 6531 §3.3 UTF8-non-ascii (already decoded, so any non-ASCII).
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff"
_DOT_STRING_RE = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
# RFC 5321 §4.1.2 Quoted-string: qtextSMTP %d32-33 / %d35-91 / %d93-126 (+ UTF-8), or a
# quoted-pairSMTP backslash %d32-126.
_QUOTED_RE = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
# RFC 5321 §4.1.2 sub-domain = Let-dig [Ldh-str].
_LDH_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
# RFC 5321 §4.1.3 General-address-literal = Standardized-tag ":" 1*dcontent.
_GENERAL_LITERAL_RE = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+")
# RFC 5321 §4.1.2 esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-").
_KEYWORD_RE = re.compile(rb"[A-Za-z0-9][A-Za-z0-9-]*")
# esmtp-value = 1*(%d33-60 / %d62-126), RFC 6531 §3.3 adds UTF8-non-ascii.
_VALUE_RE = re.compile(rb"[\x21-\x3c\x3e-\x7e\x80-\xff]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_XTEXT_HEX_RE = re.compile(rb"\+([0-9A-F]{2})")


@dataclass(frozen=True, slots=True)
class MailParams:
    """The ESMTP parameters of MAIL FROM that this server understands (all others get 555)."""

    size: int | None = None  # RFC 1870 §3: the declared message size in octets
    body: str | None = None  # RFC 6152 §3: "7BIT" or "8BITMIME"
    smtputf8: bool = False  # RFC 6531 §3.4: UTF-8 envelope and headers
    requiretls: bool = False  # RFC 8689 §4.1: relay only over verified TLS
    auth: str | None = None  # RFC 4954 §5: the xtext-decoded AUTH= mailbox; "<>" means unknown


@dataclass(frozen=True, slots=True)
class RcptParams:
    """RCPT TO parameters. None is advertised yet (RFC 3461 DSN NOTIFY/ORCPT would go here), so
    every RCPT parameter is answered with 555 and this is always empty."""


@dataclass(frozen=True, slots=True)
class MailOffer:
    """Which MAIL parameters the connection has advertised at this moment."""

    extended: bool  # the session began with EHLO: without it there are no parameters at all
    max_size: int
    eightbitmime: bool
    smtputf8: bool
    requiretls: bool
    auth: bool


def _syntax(reverse: bool, text: str) -> SmtpError:
    # RFC 3463 §3.2: X.1.7 bad sender mailbox syntax; X.1.3 bad destination mailbox syntax.
    return SmtpError(Reply(501, "5.1.7" if reverse else "5.1.3", text))


def _param_error(text: str) -> SmtpError:
    return SmtpError(Reply(501, "5.5.4", text))  # RFC 3463 §3.6: X.5.4 invalid arguments


def _unsupported(keyword: str) -> SmtpError:
    # RFC 5321 §4.1.1.11: parameters not recognised or not implemented get 555.
    return SmtpError(Reply(555, "5.5.4", f"Unsupported parameter {keyword}"))


def split_path_argument(arg: bytes, *, reverse: bool) -> tuple[bytes, list[bytes]]:
    """Split what follows `FROM:` / `TO:` into the path (without <>) and its parameters.

    A space after the colon is tolerated (RFC 5321 §4.1.1.2 has none, but it is common); the
    brackets are not optional. A `>` inside a quoted local part does not end the path."""
    arg = arg.lstrip(b" ")
    if not arg.startswith(b"<"):
        raise _syntax(reverse, "Syntax: path must be enclosed in <>")
    i, quoted = 1, False
    while i < len(arg):
        c = arg[i]
        if quoted:
            if c == 0x5C:  # quoted-pairSMTP: the next octet is literal
                i += 2
                continue
            if c == 0x22:
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c == 0x3E:
            break
        i += 1
    else:
        raise _syntax(reverse, "Syntax: path must be enclosed in <>")
    path, rest = arg[1:i], arg[i + 1 :]
    if rest and not rest.startswith(b" "):
        raise _syntax(reverse, "Syntax: a space must separate the path from its parameters")
    return path, [p for p in rest.split(b" ") if p]


def parse_path(raw: bytes, *, reverse: bool, utf8: bool, max_path: int = MAX_PATH) -> str:
    """Check a path's inside (between < and >) and return its mailbox as text.

    Reverse-path `<>` gives "". A source route (`@a,@b:`) is checked and dropped (RFC 5321
    §4.1.2 and appendix C: servers MUST accept and SHOULD ignore it). RCPT TO:<Postmaster>
    (any case) is accepted without a domain (§4.1.1.3). Raises SmtpError with the reply."""
    if not raw:
        if reverse:
            return ""  # RFC 5321 §4.1.1.2: the null reverse-path of bounces
        raise _syntax(reverse, "Syntax: empty forward-path")
    if len(raw) + 2 > max_path:
        raise _syntax(reverse, "Path too long")  # RFC 5321 §4.5.3.1.10
    if not raw.isascii():
        if not utf8:
            # RFC 6531 §3.5: X.6.7 "non-ASCII addresses not permitted", with 550 for MAIL and
            # 553 for RCPT; without the SMTPUTF8 parameter (§3.4) the envelope is ASCII.
            raise SmtpError(Reply(550 if reverse else 553, "5.6.7", "Non-ASCII address requires SMTPUTF8"))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SmtpError(Reply(501, "5.6.7", "Address is not valid UTF-8")) from None
    else:
        text = raw.decode("ascii")
    if _CONTROL_RE.search(text):
        raise _syntax(reverse, "Syntax: control character in path")
    if text.startswith("@"):  # A-d-l ":" Mailbox
        route, colon, text = text.partition(":")
        if not colon or not all(h.startswith("@") and valid_domain(h[1:]) for h in route.split(",")):
            raise _syntax(reverse, "Syntax: bad source route")
    if not reverse and text.lower() == "postmaster":
        return text
    if text.startswith('"'):
        m = _QUOTED_RE.match(text)
        if m is None or text[m.end() : m.end() + 1] != "@":
            raise _syntax(reverse, "Syntax: bad quoted local part")
        local, domain = text[: m.end()], text[m.end() + 1 :]
    else:
        local, at, domain = text.rpartition("@")
        if not at or not _DOT_STRING_RE.fullmatch(local):
            raise _syntax(reverse, "Syntax: bad local part" if at else "Syntax: address needs @domain")
    if not valid_domain(domain):
        raise _syntax(reverse, "Syntax: bad domain")
    return f"{local}@{domain}"


def valid_domain(domain: str) -> bool:
    """RFC 5321 §4.1.2 Domain or address-literal; RFC 6531 §3.3 also U-labels."""
    if domain.startswith("["):
        return domain.endswith("]") and _valid_address_literal(domain[1:-1])
    total = -1
    for label in domain.split("."):
        if label.isascii():
            if not _LDH_LABEL_RE.fullmatch(label):
                return False
            length = len(label)
        else:
            if label[0] == "-" or label[-1] == "-" or not all(_ulabel_char(c) for c in label):
                return False
            length = 4 + len(label.encode("punycode"))  # its A-label "xn--..." (RFC 5890 §2.3.2.1)
        if length > MAX_LABEL:
            return False
        total += length + 1
    return total <= MAX_DOMAIN


def _ulabel_char(c: str) -> bool:
    if c.isascii():
        return c.isalnum() or c == "-"
    return unicodedata.category(c)[0] in "LMN"  # letters, marks, digits: RFC 5892's PVALID core


def _valid_address_literal(inner: str) -> bool:
    # RFC 5321 §4.1.3: IPv4-address-literal / "IPv6:" IPv6-addr / General-address-literal.
    try:
        if inner[:5].upper() == "IPV6:":
            ipaddress.IPv6Address(inner[5:])
            return True
        if ":" not in inner:
            ipaddress.IPv4Address(inner)  # dotted quad, no leading zeros
            return True
    except ValueError:
        return False
    return _GENERAL_LITERAL_RE.fullmatch(inner) is not None


def _split_param(item: bytes) -> tuple[str, bytes | None]:
    keyword, eq, value = item.partition(b"=")
    if not _KEYWORD_RE.fullmatch(keyword) or (eq and not _VALUE_RE.fullmatch(value)):
        raise _param_error("Syntax error in parameters")
    return keyword.decode("ascii").upper(), (value if eq else None)


def _xtext_decode(value: bytes) -> str:
    # RFC 3461 §4: xtext is "!".."~" except "+" and "=", with "+XX" (uppercase hex) for others.
    if any(c > 0x7E for c in value) or b"+" in _XTEXT_HEX_RE.sub(b"", value):
        raise _param_error("Syntax: AUTH= value is not xtext")
    decoded = _XTEXT_HEX_RE.sub(lambda m: bytes([int(m.group(1), 16)]), value)
    if any(c < 0x20 or c > 0x7E for c in decoded):
        raise _param_error("Syntax: AUTH= value is not printable")
    return decoded.decode("ascii")


def parse_mail_params(items: list[bytes], offer: MailOffer) -> MailParams:
    """The parameters of MAIL FROM; raises SmtpError (501, 552 or 555) on the first bad one."""
    seen: set[str] = set()
    size: int | None = None
    body: str | None = None
    smtputf8 = requiretls = False
    auth: str | None = None
    for item in items:
        key, value = _split_param(item)
        if key in seen:
            raise _param_error(f"Duplicate parameter {key}")
        seen.add(key)
        if not offer.extended:
            raise _unsupported(key)  # RFC 5321 §4.1.1.11: no extensions after HELO
        if key == "SIZE":  # RFC 1870 §3: SIZE=1*20DIGIT
            if value is None or not value.isdigit() or len(value) > 20:
                raise _param_error("Syntax: SIZE=<number>")
            size = int(value)
            if size > offer.max_size:
                # RFC 1870 §6.1: 552 when the declared size exceeds the fixed maximum.
                raise SmtpError(Reply(552, "5.3.4", "Message size exceeds fixed maximum message size"))
        elif key == "BODY" and offer.eightbitmime:  # RFC 6152 §3
            if value is None or value.upper() not in (b"7BIT", b"8BITMIME"):
                raise _param_error("Syntax: BODY=7BIT or BODY=8BITMIME")
            body = value.upper().decode("ascii")
        elif key == "SMTPUTF8" and offer.smtputf8:  # RFC 6531 §3.4: no value
            if value is not None:
                raise _param_error("Syntax: SMTPUTF8 takes no value")
            smtputf8 = True
        elif key == "REQUIRETLS" and offer.requiretls:  # RFC 8689 §4.1: no value
            if value is not None:
                raise _param_error("Syntax: REQUIRETLS takes no value")
            requiretls = True
        elif key == "AUTH" and offer.auth:  # RFC 4954 §5
            if value is None:
                raise _param_error("Syntax: AUTH=<mailbox>")
            auth = _xtext_decode(value)
        else:
            raise _unsupported(key)
    return MailParams(size=size, body=body, smtputf8=smtputf8, requiretls=requiretls, auth=auth)


def parse_rcpt_params(items: list[bytes]) -> RcptParams:
    """RCPT TO parameters: none is offered, so any is 555 (RFC 5321 §4.1.1.11)."""
    for item in items:
        key, _ = _split_param(item)
        raise _unsupported(key)
    return RcptParams()


def split_address(address: str) -> tuple[str, str]:
    """(local part, domain) of a mailbox from an event, the local part unquoted.

    "" gives ("", ""), the null reverse-path; "Postmaster" gives ("Postmaster", "")."""
    if not address:
        return "", ""
    if address.startswith('"'):
        m = _QUOTED_RE.match(address)
        if m is not None and address[m.end() : m.end() + 1] == "@":
            local = re.sub(r"\\(.)", r"\1", address[1 : m.end() - 1])
            return local, address[m.end() + 1 :]
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, "")
