"""What one SMTP listener offers (extensions, TLS, AUTH) and the limits it enforces per connection.

RFC 5321 §4.5.3.1 (size limits and minimums), RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 6531
(SMTPUTF8), RFC 2034 (ENHANCEDSTATUSCODES), RFC 2920 (PIPELINING), RFC 3030 (CHUNKING),
RFC 3207 (STARTTLS), RFC 4954 (AUTH), RFC 8689 (REQUIRETLS).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Limits", "SmtpConfig", "ehlo_keywords"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one connection may send or make the server hold. Defaults and sources:"""

    # RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including the command word and
    # the CRLF.
    max_command_line: int = 512
    # MAIL and RCPT carry extension parameters, and RFC 5321 §4.5.3.1.4 lets extensions raise
    # the 512: SIZE adds 26 (RFC 1870 §3), AUTH= adds 500 (RFC 4954 §5), BODY= 14, SMTPUTF8 and
    # REQUIRETLS a dozen, DSN's NOTIFY/ORCPT/RET/ENVID about 600 (RFC 3461 §4), and UTF-8 paths
    # (RFC 6531) take more octets than characters. 2048 covers all of them and is Postfix's
    # line_length_limit.
    max_mail_rcpt_line: int = 2048
    # RFC 4954 §4: the server MUST accept an AUTH command line, and each line of the exchange,
    # of up to 12288 octets (a SCRAM or GSSAPI message in base64).
    max_auth_line: int = 12288
    # RFC 5321 §4.5.3.1.6: a text line of the message is at most 1000 octets including the CRLF,
    # not counting the dot added by transparency. Raise it to accept mail from sloppy senders.
    max_text_line: int = 1000
    # RFC 5321 §4.5.3.1.7 asks for at least 64 KiB; 25 MiB is what the big mailbox providers
    # accept on inbound mail. Advertised in EHLO as `SIZE n` (RFC 1870 §4).
    max_message_size: int = 25 * 1024 * 1024
    # RFC 5321 §4.5.3.1.8: a server MUST accept at least 100 recipients per transaction, and
    # answers more with 452 4.5.3 (§4.5.3.1.10, RFC 3463 §3.6).
    max_recipients: int = 100
    # Error replies (4xx/5xx, ours or the policy layer's) before `421 4.7.0` and close: Postfix's
    # smtpd_hard_error_limit default.
    max_errors: int = 20
    # Unrecognised commands before `421 4.7.0` and close: aiosmtpd's BOGUS_LIMIT. HTTP and other
    # cross-protocol junk never looks like SMTP for long.
    max_unknown_commands: int = 5
    # NOOP, RSET, VRFY, EXPN, HELP that do not move mail: Postfix's smtpd_junk_command_limit.
    max_junk_commands: int = 100
    # Unparsed input the core will hold while a reply is outstanding. A server that answers
    # every event before reading again (the documented loop) holds at most one read; this only
    # bounds a caller that keeps feeding without answering.
    max_buffered_input: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """One listener's offer. The EHLO reply is built from this and the connection's state."""

    hostname: str
    limits: Limits = field(default_factory=Limits)
    pipelining: bool = True  # RFC 2920
    eightbitmime: bool = True  # RFC 6152
    smtputf8: bool = True  # RFC 6531 §3.1: needs 8BITMIME too
    enhanced_status_codes: bool = True  # RFC 2034; off: replies go out without x.y.z
    chunking: bool = True  # RFC 3030 BDAT
    starttls: bool = False  # RFC 3207: this listener can upgrade (a TLS context exists)
    implicit_tls: bool = False  # RFC 8314 §3: the connection is TLS from the first octet (465)
    # RFC 4954: SASL mechanisms offered, strongest first. Offered only under TLS unless
    # allow_plaintext_auth (RFC 4954 §4 / RFC 8314: no passwords in the clear), which is for a
    # loopback-only local listener.
    auth_mechanisms: tuple[str, ...] = ()
    allow_plaintext_auth: bool = False
    requiretls: bool = True  # RFC 8689 §4: advertised only once TLS is in use
    # Verbs that are never SMTP and only come from cross-protocol attacks (an HTTP client or
    # proxy aimed at port 25): answered with 421 and closed at once, as Postfix's
    # smtpd_forbidden_commands does.
    forbidden_commands: tuple[str, ...] = ("CONNECT", "GET", "POST", "PUT", "HEAD", "OPTIONS")

    def __post_init__(self) -> None:
        if self.smtputf8 and not self.eightbitmime:
            raise ValueError("RFC 6531 §3.1: SMTPUTF8 requires 8BITMIME")
        if not self.hostname or any(c in self.hostname for c in " \r\n\t"):
            raise ValueError(f"bad hostname {self.hostname!r}")


def ehlo_keywords(config: SmtpConfig, *, tls: bool, auth: tuple[str, ...]) -> list[str]:
    """The extension lines of the EHLO reply (RFC 5321 §4.1.1.1) for a connection that is (or
    is not) in TLS and offers the `auth` mechanisms (empty: AUTH not offered)."""
    keywords = []
    if config.pipelining:
        keywords.append("PIPELINING")  # RFC 2920
    keywords.append(f"SIZE {config.limits.max_message_size}")  # RFC 1870 §4
    if config.eightbitmime:
        keywords.append("8BITMIME")  # RFC 6152
    if config.smtputf8:
        keywords.append("SMTPUTF8")  # RFC 6531 §3.1
    if config.enhanced_status_codes:
        keywords.append("ENHANCEDSTATUSCODES")  # RFC 2034
    if config.chunking:
        keywords.append("CHUNKING")  # RFC 3030
    if config.starttls and not tls:
        keywords.append("STARTTLS")  # RFC 3207 §4.2: not once TLS is in use
    if auth:
        keywords.append("AUTH " + " ".join(auth))  # RFC 4954 §3
    if config.requiretls and tls:
        keywords.append("REQUIRETLS")  # RFC 8689 §4: only over TLS
    return keywords
