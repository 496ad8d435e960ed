"""SASL for SMTP submission and IMAP: credentials, mechanism state machines, failed-login limits and the guard that applies them."""

from eventmail.sasl.channelbinding import TLS_EXPORTER, TLS_SERVER_END_POINT, tls_server_end_point
from eventmail.sasl.credentials import (
    DEFAULT_COST,
    HashCost,
    get_dummy_password_set,
    make_password_set,
    verify_password,
    verify_password_async,
)
from eventmail.sasl.guard import GuardedExchange, guarded, is_loopback, may_send_password
from eventmail.sasl.mechanisms import (
    MECHANISMS,
    Challenge,
    Exchange,
    Failure,
    FailureReason,
    Lookup,
    Result,
    SaslBackend,
    Success,
    advertised_mechanisms,
    create_exchange,
)
from eventmail.sasl.ratelimit import Decision, LimitPolicy, LoginLimiter
from eventmail.sasl.saslprep import SaslPrepError, saslprep

__all__ = [
    "DEFAULT_COST",
    "MECHANISMS",
    "TLS_EXPORTER",
    "TLS_SERVER_END_POINT",
    "Challenge",
    "Decision",
    "Exchange",
    "Failure",
    "FailureReason",
    "GuardedExchange",
    "HashCost",
    "LimitPolicy",
    "LoginLimiter",
    "Lookup",
    "Result",
    "SaslBackend",
    "SaslPrepError",
    "Success",
    "advertised_mechanisms",
    "create_exchange",
    "get_dummy_password_set",
    "guarded",
    "is_loopback",
    "make_password_set",
    "may_send_password",
    "saslprep",
    "tls_server_end_point",
    "verify_password",
    "verify_password_async",
]
