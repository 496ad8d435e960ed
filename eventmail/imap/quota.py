"""QUOTA and QUOTA=RES-STORAGE (RFC 9208): GETQUOTA, GETQUOTAROOT, SETQUOTA (refused), over the account's one quota root.

The account is the one quota root, named "" as in RFC 9208's examples (and Mox): every mailbox
belongs to it. Its one resource is STORAGE, the bytes of every message of every mailbox (a
copy counted again), in units of 1024 octets (RFC 9208 §5.1), against the account setting
`quota_bytes` (0: no limit), which the administrator sets (`eventmail account set NAME
quota_bytes=...`, eventmail/mail/admin.py). Without a limit RFC 9208's syntax has no way to
give the usage (a QUOTA response lists at least one resource), so, as Mox does, no QUOTA
response is sent. The store enforces the limit (OverQuota, turned into NO [OVERQUOTA] by the
session).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from eventmail.imap import responses as r
from eventmail.imap.commands import GetQuota, GetQuotaRoot, SetQuota
from eventmail.imap.errors import no
from eventmail.imap.mailboxes import check_name

if TYPE_CHECKING:
    from eventmail.imap.session import Session

ROOT = ""
CAPABILITIES = ("QUOTA", "QUOTA=RES-STORAGE")


def _kib(n: int) -> int:
    return (n + 1023) // 1024  # RFC 9208 §5.1: STORAGE in units of 1024 octets, rounded up


def _quota(s: Session) -> list[r.Response]:
    acct = s.need_acct()
    limit = acct.quota_bytes
    if not limit:
        return []
    usage = (r.Atom("STORAGE"), _kib(acct.view.storage_used), _kib(limit))
    return [r.Untagged((r.Atom("QUOTA"), ROOT, usage))]


async def getquota(s: Session, cmd: GetQuota) -> AsyncIterator[r.Response]:
    if cmd.root != ROOT:
        raise no("no such quota root", "NONEXISTENT")  # RFC 9208 §4.1.1
    for resp in _quota(s):
        yield resp
    yield r.ok(cmd.tag, "GETQUOTA completed")


async def getquotaroot(s: Session, cmd: GetQuotaRoot) -> AsyncIterator[r.Response]:
    # RFC 9208 §4.1.2: the mailbox need not exist; the roots that would apply are named.
    name = check_name(cmd.mailbox)
    s.need_acct()
    yield r.Untagged((r.Atom("QUOTAROOT"), r.Mailbox(name), ROOT))
    for resp in _quota(s):
        yield resp
    yield r.ok(cmd.tag, "GETQUOTAROOT completed")


async def setquota(s: Session, cmd: SetQuota) -> AsyncIterator[r.Response]:
    # RFC 9208 §4.1.3: a server may refuse; limits are the administrator's (QUOTASET is not offered).
    raise no("quotas are set by the administrator", "NOPERM")
    yield  # pragma: no cover - makes this an async generator



__all__ = ["CAPABILITIES", "ROOT", "getquota", "getquotaroot", "setquota"]
