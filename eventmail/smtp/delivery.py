"""Inbound delivery: recipients decided at RCPT, mail authentication, trace headers, and the log append before 250."""

import asyncio
import email.utils
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .. import metrics
from ..cputime import timed
from ..junk.analyze import JUNK_MAILBOX
from ..junk.analyze import header as junk_header
from ..junk.delivery import JunkFilter, Plan
from ..junk.features import with_identities
from ..junk.training import REJECTS
from ..mail import ingest, rejects
from ..mail.roles import ROLE_NAMES, mailbox_for_role, mailbox_with_role
from ..mailauth.resolver import Resolver
from ..mailauth.verdict import AuthVerdict, evaluate
from ..mime.parsed import ParsedMessage
from ..mime.structure import MAX_MIME_DEPTH, MimeTooDeep
from ..proto import events_pb2 as pb
from ..store import NotWriter, OverQuota, ReplicationTimeout, Store, StoreError, StoreFull, normalize_address
from .analysis import Analyzer, Incoming
from .reply import Reply

log = logging.getLogger(__name__)

# RFC 2046 puts no bound on nesting or parts; real mail rarely nests past 5. Nesting past the
# server's MAX_MIME_DEPTH (mime.structure) or 2,000 parts is hostile (a "MIME bomb") rather than
# mail, and each part costs parsing and IMAP rendering.
MAX_MIME_PARTS = 2000


@dataclass
class Transaction:
    """One SMTP transaction as the policy layer sees it."""

    remote_ip: str
    helo: str
    tls: bool
    mail_from: str = ""
    authenticated: str | None = None  # the account, on submission
    smtputf8: bool = False
    requiretls: bool = False  # RFC 8689 §4.1: MAIL FROM ... REQUIRETLS, kept for relaying
    recipients: dict[str, str] = field(default_factory=dict)  # address -> account

    @property
    def transaction_id(self) -> str:
        return self._id

    def __post_init__(self) -> None:
        self._id = secrets.token_hex(6)


def received_header(tx: Transaction, hostname: str, recipient: str | None) -> bytes:
    """The trace field of RFC 5321 §4.4, with the protocol named as RFC 3848 has it."""
    proto = "ESMTP" + ("S" if tx.tls else "") + ("A" if tx.authenticated else "")
    if tx.smtputf8:
        proto = "UTF8" + proto.replace("ESMTP", "SMTP")
    for_part = f"\r\n\tfor <{recipient}>" if recipient else ""
    date = email.utils.format_datetime(email.utils.localtime())
    return (
        f"Received: from {tx.helo} ([{tx.remote_ip}])\r\n\tby {hostname} (eventmail) with {proto} id {tx.transaction_id}"
        f"{for_part}; {date}\r\n"
    ).encode()


Evaluator = Callable[[bytes, str, str, str], Awaitable[AuthVerdict]]
# (account, mailbox, final bytes, bytes as received, origin) -> True when recorded for hand-off
# to the primary instead of delivered here (a backup MX; see replica.handoff).
HandoffHook = Callable[[str, str, bytes, bytes, pb.Origin], Awaitable[bool]]


class InboundDelivery:
    """The MX's policy and its writes. One per server; stateless between transactions."""

    def __init__(self, store: Store, resolver: Resolver, hostname: str, junk: JunkFilter | None = None,
                 analyzer: Analyzer | None = None) -> None:
        self.store = store
        self.analyzer = analyzer or Analyzer()
        self.resolver = resolver
        self.hostname = hostname
        self.handoff: HandoffHook | None = None
        self._domains: tuple[int, frozenset[str]] = (-1, frozenset())
        self.junk = junk or JunkFilter(resolver)

    def recipient_account(self, address: str) -> str | None:
        """RCPT TO: the account receiving mail for the address (addresses, then catch-alls)."""
        return self.store.system.account_for(address)

    async def full(self, account: str) -> bool:
        """RCPT TO: whether the account is at its quota already (no message fits): refused per
        recipient, so the transaction's other recipients still get the message. A backup MX does not
        know (it follows no account stream; the primary enforces the quota when it delivers)."""
        if self._backup():
            return False
        async with self.store.use_account(account) as acct:
            return bool(acct.quota_bytes) and acct.view.storage_used >= acct.quota_bytes

    def is_local_domain(self, domain: str) -> bool:
        """Whether mail for `domain` ends here (a domain of the system stream or of an address);
        anything else at the MX is relaying, which only authenticated submission may do."""
        system = self.store.system
        if self._domains[0] != system.seq:
            names = {a.rpartition("@")[2] for a in system.addresses}
            names.update(normalize_address("x@" + d).rpartition("@")[2] for d in system.domains)
            self._domains = (system.seq, frozenset(names))
        return normalize_address("x@" + domain).rpartition("@")[2] in self._domains[1]

    async def verdict(self, tx: Transaction, message: bytes, incoming: Incoming | None = None) -> AuthVerdict:
        return await evaluate(
            message, tx.remote_ip, tx.helo, tx.mail_from, self.resolver, receiver=self.hostname,
            author=incoming.parsed.author if incoming is not None else None,
            prepared_dkim=incoming.dkim if incoming is not None else None)

    async def deliver(self, tx: Transaction, message: bytes) -> Reply:
        """Authenticate, add trace headers, append one event per recipient account; 250 only after fsync."""
        # What is stored is the message without forged verdicts of ours, behind per-account trace
        # fields; it is parsed once, off the event loop (with DKIM's per-byte work: analysis.py),
        # and every account gets that parse.
        try:
            incoming = await self.analyzer.incoming(message, self.hostname)
        except MimeTooDeep:
            # RFC 3463 §3.7 X.6.0: other or undefined media error, as for the parts limit below
            log.info("tx %s from %s: refused, MIME nesting deeper than %d", tx.transaction_id, tx.remote_ip,
                     MAX_MIME_DEPTH)
            return Reply(554, "5.6.0", "MIME parts nested too deep", reason="mime_structure")
        parsed, content = incoming.parsed, incoming.features
        depth, parts = incoming.shape
        if parts > MAX_MIME_PARTS:
            log.info("tx %s from %s: refused, MIME depth %d parts %d", tx.transaction_id, tx.remote_ip, depth, parts)
            return Reply(554, "5.6.0", "message structure too complex", reason="mime_structure")
        if parsed.author.fields > 1:
            # RFC 7489 §6.6.1: messages with several From fields are typically rejected. ENVELOPE
            # can show only one of them and the sender picks which; OpenDMARC refuses them
            # (RequiredHeaders) and Mox evaluates no author for them (message.From).
            log.info("tx %s from %s: refused, %s", tx.transaction_id, tx.remote_ip, parsed.author.problem)
            return Reply(550, "5.7.1", "a message must have exactly one From field", reason="author")
        verdict = await timed("auth verdict", self.verdict(tx, message, incoming))
        by_account: dict[str, list[str]] = {}
        for address, account in tx.recipients.items():
            by_account.setdefault(account, []).append(address)
        # The junk filter decides per account, from that account's history (eventmail/junk/).
        # The content features are this delivery's own: the identities go onto them, and with one
        # account they are that account's plan's (no copies of up to 2,000 tokens).
        base = with_identities(content, auth=verdict, remote_ip=tx.remote_ip, in_place=True)
        plans: dict[str, Plan] = {}
        try:
            for account, addrs in by_account.items():
                async with self.store.use_account(account) as acct:
                    plans[account] = await self.junk.plan(
                        acct, message, base, verdict, remote_ip=tx.remote_ip, tls=tx.tls, recipients=addrs,
                        own=len(by_account) == 1, named=incoming.named)
        except StoreError as e:
            log.error("tx %s: store error %s, answered 451", tx.transaction_id, e)
            return Reply(451, "4.3.0", "local error in processing, try again later", reason="store_error")
        # Mail through a configured mailing list or forwarder is not held to the author's DMARC
        # policy: the list or forwarder broke the alignment, not a forger.
        trusted = all(p.trusted for p in plans.values())
        if verdict.disposition == "reject" and not trusted:
            log.info("tx %s from %s: refused by DMARC policy: %s", tx.transaction_id, tx.remote_ip, verdict.reasons[0])
            return Reply(550, "5.7.1", "rejected by the sender domain's DMARC policy", reason="dmarc")
        quarantine = verdict.disposition == "quarantine"
        auth_results = verdict.authentication_results(self.hostname)
        delay = self.junk.delay_for(plans.values())
        if delay:
            # Mox's first-time-sender delay (eventmail/junk/delivery.py), before the message is stored.
            log.info("tx %s from %s: first-time sender, answering in %.0f s", tx.transaction_id, tx.remote_ip, delay)
            await asyncio.sleep(delay)
        try:
            await asyncio.gather(
                *(timed("delivery", self._deliver_one(tx, account, addrs, parsed, message, auth_results, verdict,
                                                      plans[account], quarantine and not plans[account].trusted,
                                                      incoming.row))
                  for account, addrs in by_account.items())
            )
        except StoreFull:
            log.error("tx %s: disk full, answered 452", tx.transaction_id)
            return Reply(452, "4.3.1", "insufficient system storage, try again later", reason="storage_full")
        except OverQuota as e:
            # RFC 3463 §3.3 X.2.2 mailbox full, temporary as Postfix and Mox answer it: the sender
            # retries while the user makes room (RFC 9208 quota, eventmail/imap/quota.py).
            log.info("tx %s: over quota (%s), answered 452", tx.transaction_id, e)
            return Reply(452, "4.2.2", "mailbox full, try again later", reason="over_quota")
        except (NotWriter, ReplicationTimeout) as e:
            log.warning("tx %s: not written (%s), answered 451", tx.transaction_id, e)
            return Reply(451, "4.3.0", "this server cannot accept mail now (replication), try again later",
                         reason="replication")
        except StoreError as e:
            log.error("tx %s: store error %s, answered 451", tx.transaction_id, e)
            return Reply(451, "4.3.0", "local error in processing, try again later", reason="store_error")
        for plan in plans.values():
            metrics.junk_verdict(plan.verdict.method, plan.verdict.accept)  # one per account, as decided
        summary = ", ".join(
            f"{a}: {'accepted' if p.verdict.accept else 'rejected'} by {p.verdict.method}" for a, p in sorted(plans.items()))
        if not quarantine and not any(p.verdict.accept for p in plans.values()):
            # The talk's answer to junk: a temporary error with a generic text, so the sending
            # server retries and at last tells its user; the copy waits in Rejects.
            log.info("tx %s from %s: junk, answered 451 (%s)", tx.transaction_id, tx.remote_ip, summary)
            return Reply(451, "4.3.0", "temporary failure, try again later", reason="junk")
        log.info(
            "tx %s from %s: delivered (%s; %s)", tx.transaction_id, tx.remote_ip, summary, verdict.method,
        )
        return Reply(250, "2.0.0", f"queued as {tx.transaction_id}")

    async def _quarantine_mailbox(self, account: str) -> str:
        """RFC 7489 §6.3 p=quarantine: the account's Junk mailbox, whatever the user named it. A
        backup MX cannot make one (it writes no account stream): it hands the message over with
        the name it sees, and the primary files it (into INBOX if that mailbox is gone by then)."""
        async with self.store.use_account(account) as acct:
            if self._backup():
                found = mailbox_with_role(acct, pb.SPECIAL_USE_JUNK)
                return found.name if found is not None else ROLE_NAMES[pb.SPECIAL_USE_JUNK]
            return (await mailbox_for_role(acct, pb.SPECIAL_USE_JUNK)).name

    def _backup(self) -> bool:
        """Whether this node is a backup MX just now (replica.handoff.HandoffRecorder has the node)."""
        node = getattr(self.handoff, "node", None)
        return node is not None and not bool(getattr(node, "is_primary", True))

    async def _deliver_one(
        self, tx: Transaction, account: str, addresses: list[str], parsed: ParsedMessage, original: bytes,
        auth_results: str, verdict: AuthVerdict, plan: Plan, quarantine: bool, row: bytes | None = None,
    ) -> None:
        # `row`: the content row of the message's words (Incoming.row); the plan's features hold
        # those same words (JunkFilter.plan adds identities, never words).
        trace = received_header(tx, self.hostname, addresses[0] if len(addresses) == 1 else None)
        prefix = trace + auth_results.encode() + b"\r\n" + junk_header(plan.verdict).encode() + b"\r\n"
        final = prefix + parsed.raw
        origin = pb.Origin(
            kind="smtp", remote_ip=tx.remote_ip, helo=tx.helo, mail_from=tx.mail_from, rcpt_to=addresses,
            authentication_results=auth_results, verdict=verdict.to_json(), junk=plan.verdict,
        )
        rejected = not plan.verdict.accept and not quarantine
        # The filter's unsure band is filed in Junk (JunkConfig.unsure_to_junk), as p=quarantine is.
        to_junk = quarantine or (plan.verdict.accept and plan.verdict.mailbox == JUNK_MAILBOX)
        mailbox = await self._quarantine_mailbox(account) if to_junk else plan.mailbox.name
        if rejected and self._backup():
            # A backup MX does not write the account's stream: the Rejects copy travels in its
            # hand-off stream with the verdict in its origin, and the primary keeps it
            # (replica.handoff) without deciding again.
            log.info("tx %s: %s: rejected as backup MX (%s)", tx.transaction_id, account, plan.verdict.method)
            if self.handoff is not None:
                await self.handoff(account, REJECTS, final, original, origin)
            return
        if not rejected and self.handoff is not None and await self.handoff(account, mailbox, final, original, origin):
            return
        async with self.store.use_account(account) as acct:
            if rejected:
                if not await rejects.store_reject(self.junk, acct, final, original, plan, origin):
                    log.info("tx %s: %s already holds this message in Rejects", tx.transaction_id, account)
                return
            # A retried transaction adds nothing; its 250 waits, as the first copy's did, for the secondary.
            added = await ingest.deliver(self.store, acct, mailbox, parsed, prefix, key_basis=original, origin=origin,
                                         features=plan.features, row=row)
            if added is None:
                log.info("tx %s: %s already had this message (a retried transaction)", tx.transaction_id, account)
            if await rejects.accepted(acct, original):
                log.info("tx %s: %s: an earlier rejected copy left Rejects", tx.transaction_id, account)
