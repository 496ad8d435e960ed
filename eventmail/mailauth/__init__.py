"""Mail authentication: SPF, DKIM and DMARC verdicts for incoming mail, DKIM signatures for outgoing mail."""

from .dkim import DkimResult, DkimSignError, public_key_record, sign, sign_sync, verify_dkim
from .dmarc import DmarcRecord, DmarcResult, parse_record
from .resolver import DnsAnswer, DnsStatus, Resolver, ResolverConfig
from .spf import SpfResult, check_spf
from .verdict import AuthVerdict, evaluate

__all__ = [
    "AuthVerdict",
    "DkimResult",
    "DkimSignError",
    "DmarcRecord",
    "DmarcResult",
    "DnsAnswer",
    "DnsStatus",
    "Resolver",
    "ResolverConfig",
    "SpfResult",
    "check_spf",
    "evaluate",
    "parse_record",
    "public_key_record",
    "sign",
    "sign_sync",
    "verify_dkim",
]
