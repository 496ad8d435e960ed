"""Submission: the sender's From checked, Date and Message-ID added, DKIM-signed, queued, copied to Sent, local mail delivered."""

import asyncio
import email.utils
import logging
import secrets
import time

from ..mail import ingest
from ..mail.queue import OutboundPolicy
from ..mail.roles import mailbox_for_role
from ..mailauth.dkim import DkimSignError, sign
from ..mime import MimeTooDeep
from ..mime.addresses import Author
from ..mime.headers import top_fields
from ..mime.parsed import ParsedMessage, parse_message
from ..proto import events_pb2 as pb
from ..store import NotWriter, OverQuota, ReplicationTimeout, Store, StoreError, StoreFull, normalize_address
from .delivery import Transaction, received_header
from .reply import Reply

log = logging.getLogger(__name__)

# Ed25519 first (RFC 8463 §3 suggests signing with both while verifiers catch up).
SIGNING_ORDER = ("ed25519-sha256", "rsa-sha256")


def author_refusal(author: Author) -> str:
    """Why a submitted message's author cannot be checked ("" when it can).

    Only a message with exactly one From field, written as RFC 5322 §3.6.2 writes it, and an
    address list of mailboxes is checked against the account: anything else leaves the reader of
    the message to pick an author, and a forger to choose which one the check sees. "From :" is
    read as From everywhere (RFC 5322 §4.5 obs-optional), but no mail program writes it, and
    RFC 5322 §4 says obsolete syntax MUST NOT be generated: refused at submission, as a spoof.
    """
    if author.problem:
        return author.problem
    if author.space_before_colon:
        return "white space before the colon of From (RFC 5322 §4.5 obsolete syntax)"
    return ""


def add_missing_fields(message: bytes, hostname: str) -> bytes:
    """RFC 6409 §8.2/§8.3: a submission server may add Date and Message-ID when they are missing."""
    names = {f.name for f in top_fields(message)}
    extra = b""
    if b"date" not in names:
        extra += f"Date: {email.utils.format_datetime(email.utils.localtime())}\r\n".encode()
    if b"message-id" not in names:
        extra += f"Message-ID: <{secrets.token_hex(12)}@{hostname}>\r\n".encode()
    return extra + message


class Submission:
    """The submission listener's policy and writes (RFC 6409)."""

    def __init__(self, store: Store, hostname: str, deliver_all_to: str | None = None,
                 policy: OutboundPolicy | None = None) -> None:
        self.store = store
        self.hostname = hostname
        self.deliver_all_to = deliver_all_to
        self.policy = policy  # the suppression list and the daily limits (None: none, as localserve)

    def mail_refusal(self, account: str) -> Reply | None:
        """MAIL: an account past its messages a day (Mox: 1,000) waits (RFC 3463 X.7.0)."""
        why = self.policy.mail_refusal(account, time.time()) if self.policy is not None else None
        return Reply(451, "4.7.0", why + ", try again later", reason="rate_limit") if why else None

    def rcpt_refusal(self, account: str, address: str, tx: Transaction) -> Reply | None:
        """RCPT of a remote recipient: not one on the account's suppression list (550 5.1.1: it
        bounced hard), and not past the new-recipients-a-day limit (451 4.7.0)."""
        if self.policy is None or self.deliver_all_to or self.store.system.account_for(address) is not None:
            return None
        new = sum(1 for r in tx.recipients if self.policy.is_new(account, r)
                  and self.store.system.account_for(r) is None)
        refusal = self.policy.rcpt_refusal(account, address, time.time(), new)
        if refusal is None:
            return None
        permanent, why = refusal
        if permanent:
            return Reply(550, "5.1.1", why, reason="suppressed")
        return Reply(451, "4.7.0", why + ", try again later", reason="rate_limit")

    def owns(self, account: str, address: str) -> bool:
        """Whether `address` is one of the account's addresses (a catch-all covers its domain)."""
        return self.store.system.account_for(address) == account

    async def dkim_headers(self, message: bytes, from_domain: str) -> bytes:
        selectors = [
            d for (domain, _), d in sorted(self.store.system.dkim.items()) if domain == from_domain and d.active
        ]
        selectors.sort(key=lambda d: SIGNING_ORDER.index(d.algorithm) if d.algorithm in SIGNING_ORDER else 9)
        out = b""
        for d in selectors:
            try:
                out += await sign(message, d.domain, d.selector, d.algorithm, d.private_key)
            except DkimSignError as e:
                log.error("DKIM signing with %s._domainkey.%s failed: %s", d.selector, d.domain, e)
        return out

    async def submit(self, tx: Transaction, message: bytes) -> Reply:
        account = tx.authenticated
        if account is None:
            return Reply(530, "5.7.0", "authentication required", reason="auth_required")
        message = add_missing_fields(message, self.hostname)
        # One parse, off the event loop: the From checked here is the one ENVELOPE will serve.
        try:
            parsed = await asyncio.to_thread(parse_message, message)
        except MimeTooDeep as e:
            # RFC 3463 §3.7 X.6.0, as the MX answers it (smtp.delivery)
            log.info("tx %s: %s: refused, %s", tx.transaction_id, account, e)
            return Reply(554, "5.6.0", "MIME parts nested too deep", reason="mime_structure")
        refusal = author_refusal(parsed.author)
        if refusal:
            log.info("tx %s: %s: refused, ambiguous author: %s", tx.transaction_id, account, refusal)
            return Reply(550, "5.7.1", "the message must have exactly one From field with an address",
                         reason="author")
        senders = parsed.author.mailboxes()
        if not all(self.owns(account, a) for a in senders):
            log.info("tx %s: %s tried to send as %s", tx.transaction_id, account, senders)
            return Reply(550, "5.7.1", "the From address is not one of this account's addresses",
                         reason="sender_not_yours")
        from_domain = normalize_address(senders[0]).rpartition("@")[2]
        dkim = await self.dkim_headers(message, from_domain)
        signed = dkim + message
        local: dict[str, list[str]] = {}
        remote: list[str] = []
        for rcpt in tx.recipients:
            target = self.store.system.account_for(rcpt) or self.deliver_all_to
            if target is None:
                remote.append(rcpt)
            else:
                local.setdefault(target, []).append(rcpt)
        origin = pb.Origin(kind="submission", remote_ip=tx.remote_ip, mail_from=tx.mail_from, rcpt_to=list(tx.recipients))
        try:
            writes = [self._sent_copy(account, signed, parsed, len(dkim), origin)]
            writes += [self._deliver_local(tx, target, rcpts, signed, parsed, len(dkim)) for target, rcpts in local.items()]
            if remote:
                writes.append(self._queue(tx, account, remote, signed))
            await asyncio.gather(*writes)
        except StoreFull:
            return Reply(452, "4.3.1", "insufficient system storage, try again later", reason="storage_full")
        except OverQuota as e:
            # RFC 3463 §3.3 X.2.2 mailbox full, temporary as Postfix and Mox answer it: the sender
            # retries while the user makes room (RFC 9208 quota, eventmail/imap/quota.py): the
            # sender's Sent copy or a local recipient's delivery did not fit.
            log.info("tx %s: over quota (%s), answered 452", tx.transaction_id, e)
            return Reply(452, "4.2.2", "mailbox full, try again later", reason="over_quota")
        except (NotWriter, ReplicationTimeout) as e:
            log.warning("tx %s: not written (%s), answered 451", tx.transaction_id, e)
            return Reply(451, "4.3.0", "this server cannot accept mail now (replication), try again later",
                         reason="replication")
        except StoreError as e:
            log.error("tx %s: store error %s", tx.transaction_id, e)
            return Reply(451, "4.3.0", "local error in processing, try again later", reason="store_error")
        log.info(
            "tx %s: %s submitted to %d local and %d remote recipients", tx.transaction_id, account,
            sum(len(r) for r in local.values()), len(remote),
        )
        return Reply(250, "2.0.0", f"queued as {tx.transaction_id}")

    async def _sent_copy(
        self, account: str, signed: bytes, parsed: ParsedMessage, prefix: int, origin: pb.Origin
    ) -> None:
        async with self.store.use_account(account) as acct:
            sent = await mailbox_for_role(acct, pb.SPECIAL_USE_SENT)  # wherever the client keeps it
            await ingest.file_sent(acct, sent.name, parsed, signed[:prefix], origin)

    async def _deliver_local(
        self, tx: Transaction, account: str, rcpts: list[str], signed: bytes, parsed: ParsedMessage, prefix: int
    ) -> None:
        trace = received_header(tx, self.hostname, rcpts[0] if len(rcpts) == 1 else None)
        origin = pb.Origin(kind="submission-local", remote_ip=tx.remote_ip, mail_from=tx.mail_from, rcpt_to=rcpts)
        async with self.store.use_account(account) as acct:
            await ingest.deliver(self.store, acct, "INBOX", parsed, trace + signed[:prefix], key_basis=signed,
                                 origin=origin)

    async def _queue(self, tx: Transaction, account: str, rcpts: list[str], signed: bytes) -> None:
        final = received_header(tx, self.hostname, None) + signed
        await ingest.queue_outbound(self.store, tx.transaction_id, account, tx.mail_from, rcpts, final, tx.requiretls)
