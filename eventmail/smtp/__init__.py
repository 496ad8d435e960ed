"""Sans-IO SMTP server protocol core: client bytes in, typed events out; replies in, bytes out.

See eventmail.smtp.wire for the connection state machine and the loop that drives it. The
server (eventmail.smtp.server), delivery and submission layers decide policy and do the I/O.
"""

from eventmail.smtp.address import MailParams, RcptParams, split_address, valid_domain
from eventmail.smtp.config import Limits, SmtpConfig
from eventmail.smtp.events import (
    AuthResponse,
    AuthStart,
    ChunkReceived,
    DataStart,
    Event,
    Expn,
    Helo,
    Help,
    MailFrom,
    MessageComplete,
    Noop,
    ProtocolError,
    Quit,
    RcptTo,
    Reset,
    StartTls,
    Vrfy,
)
from eventmail.smtp.reply import Reply, SmtpError, SmtpUsageError
from eventmail.smtp.wire import Phase, SmtpConnection

__all__ = [
    "AuthResponse",
    "AuthStart",
    "ChunkReceived",
    "DataStart",
    "Event",
    "Expn",
    "Helo",
    "Help",
    "Limits",
    "MailFrom",
    "MailParams",
    "MessageComplete",
    "Noop",
    "Phase",
    "ProtocolError",
    "Quit",
    "RcptParams",
    "RcptTo",
    "Reply",
    "Reset",
    "SmtpConfig",
    "SmtpConnection",
    "SmtpError",
    "SmtpUsageError",
    "StartTls",
    "Vrfy",
    "split_address",
    "valid_domain",
]
