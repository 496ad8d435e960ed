"""The server's metrics registry (prometheus-client): one place where each metric is defined once.

Label values are few and known in advance: never an address, an account, a host name or any text
a client sent (a label value per address would grow the scrape without bound). Where a value
comes from elsewhere in the code, the helpers below map anything outside its known set to
"other". docs/operations.md ("Metrics") lists every metric and what the alerts built on them mean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

# One registry per process rather than the library's global one: tests start several servers'
# code in one interpreter, and a global registry refuses a second metric of the same name.
REGISTRY = CollectorRegistry()
# The server process's own: resident memory, CPU seconds, open file descriptors (from /proc),
# the series every Prometheus exporter has and operators alert on.
ProcessCollector(registry=REGISTRY)

OTHER = "other"

# ---------------------------------------------------------------- SMTP (MX and submission)

SMTP_ROLES = ("mx", "submission")
# Why a MAIL, RCPT or message was refused by policy (the `reason` of eventmail.smtp.reply.Reply).
# Protocol errors (syntax, sequence, the core's limits) are not rejects of mail and not counted.
SMTP_REJECT_REASONS = (
    "auth_required", "sender_not_yours", "rate_limit", "suppressed", "relaying_denied", "unknown_recipient",
    "mime_structure", "author", "dmarc", "junk", "storage_full", "replication", "store_error", "injected",
    "over_quota",
)
SMTP_DELIVERIES = Counter("eventmail_smtp_deliveries", "messages accepted with 250 after DATA (mx: delivered to "
                          "local accounts; submission: filed and queued), by listener role", ["role"],
                          registry=REGISTRY)
SMTP_REJECTS = Counter("eventmail_smtp_rejects", "MAIL, RCPT and messages refused by policy, by listener role and "
                       "reason (junk: the 451 of a message every account's filter rejected)", ["role", "reason"],
                       registry=REGISTRY)

# ---------------------------------------------------------------- junk filter

# The methods of eventmail.junk.analyze and eventmail.junk.reputation.
JUNK_METHODS = (
    "mailing-list", "reputation:wrote-to", "reputation:from-address", "reputation:from-domain",
    "reputation:org-domain", "reputation:dkim-spf", "reputation:ip-narrow", "reputation:ip-medium",
    "reputation:ip-wide", "dnsbl", "bayes", "bayes:unsure", "bayes:untrained",
)
JUNK_VERDICTS = Counter("eventmail_junk_verdicts", "junk decisions recorded at the MX, one per message and account, "
                        "by method and verdict (accept, reject)", ["method", "verdict"], registry=REGISTRY)

# ---------------------------------------------------------------- outbound queue

QUEUE_MESSAGES = Gauge("eventmail_queue_messages", "messages in the outbound queue with recipients left",
                       registry=REGISTRY)
QUEUE_ATTEMPTS = Counter("eventmail_queue_attempts", "outbound tries per recipient, by result "
                         "(delivered, deferred, failed)", ["result"], registry=REGISTRY)
QUEUE_NOTICES = Counter("eventmail_queue_notices", "delivery status notices sent to senders, by kind "
                        "(failure, delay)", ["kind"], registry=REGISTRY)

# ---------------------------------------------------------------- IMAP

IMAP_SESSIONS = Gauge("eventmail_imap_sessions", "IMAP connections open now", registry=REGISTRY)
IMAP_COMMANDS = Counter("eventmail_imap_commands", "IMAP commands completed, by command (UID commands as "
                        "UID FETCH etc.; INVALID: a line the parser refused) and tagged result (ok, no, bad)",
                        ["command", "result"], registry=REGISTRY)
IMAP_RESULTS = ("ok", "no", "bad")

# ---------------------------------------------------------------- logins (every protocol, sasl.guard)

# The protocols whose logins go through sasl.guard: SMTP submission, IMAP, and the web's login forms
# and webapi (their `what` in eventmail.web.session).
LOGIN_PROTOCOLS = ("smtp", "imap", "account-page", "admin-page", "webapi")
LOGINS = Counter("eventmail_logins", "successful logins, by protocol", ["protocol"], registry=REGISTRY)
LOGIN_FAILURES = Counter("eventmail_login_failures", "failed logins, by protocol and reason (the values of "
                         "sasl.FailureReason; too-many-failures: refused by the failed-login limits)",
                         ["protocol", "reason"], registry=REGISTRY)

# ---------------------------------------------------------------- store

# From a fast SSD's sub-millisecond fsync to a disk in trouble; a commit answers no client until
# its fsync is done, so the upper buckets are where users wait.
FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STORE_FSYNC_SECONDS = Histogram("eventmail_store_fsync_seconds", "time of the fsync of each group commit to a "
                                "stream's log (and of each batch a secondary appends)", buckets=FSYNC_BUCKETS,
                                registry=REGISTRY)

# ---------------------------------------------------------------- replication (replica/)

REPLICA_ROLES = ("primary", "secondary")
REPLICA_LINKS = ("peer_follows_us", "we_follow_peer")
REPLICA_ROLE = Gauge("eventmail_replica_role", "1 for the role this node has in its epoch (primary, secondary)",
                     ["role"], registry=REGISTRY)
REPLICA_PEER_CONNECTED = Gauge("eventmail_replica_peer_connected", "1 while the link is up: peer_follows_us (the "
                               "peer follows our streams), we_follow_peer (we follow the peer's)", ["link"],
                               registry=REGISTRY)
REPLICA_LAG_RECORDS = Gauge("eventmail_replica_lag_records", "records this node is behind the peer, all followed "
                            "streams", registry=REGISTRY)
REPLICA_LAG_SECONDS = Gauge("eventmail_replica_lag_seconds", "largest lag in seconds of any followed stream",
                            registry=REGISTRY)
REPLICA_APPLIED = Counter("eventmail_replica_records_applied", "records received and made durable",
                          registry=REGISTRY)
REPLICA_DEGRADED = Gauge("eventmail_replica_degraded", "1 while sync mode has degraded to async", registry=REGISTRY)
REPLICA_SYNC_TIMEOUTS = Counter("eventmail_replica_sync_timeouts", "sync waits that timed out", registry=REGISTRY)
REPLICA_HANDOFFS = Counter("eventmail_replica_handoffs_delivered", "hand-off entries delivered", registry=REGISTRY)
REPLICA_NO_PEER = Gauge("eventmail_replica_no_peer", "1 while a promoted primary acknowledges without a secondary",
                        registry=REGISTRY)
REPLICA_EPOCH = Gauge("eventmail_replica_epoch", "the epoch number this node is in", registry=REGISTRY)
# What `eventmail replica status --metrics` prints.
REPLICA_METRIC_NAMES = ("eventmail_replica_role", "eventmail_replica_peer_connected", "eventmail_replica_lag_records",
                        "eventmail_replica_lag_seconds", "eventmail_replica_records_applied_total",
                        "eventmail_replica_degraded", "eventmail_replica_sync_timeouts_total",
                        "eventmail_replica_handoffs_delivered_total", "eventmail_replica_no_peer",
                        "eventmail_replica_epoch")


def bounded(value: str, known: Iterable[str]) -> str:
    """`value` when it is one of `known`, else "other": what keeps a label's values few."""
    return value if value in known else OTHER


def _zero(counter: Counter, *label_sets: tuple[str, ...]) -> None:
    """Make the series exist at 0 before anything happens, so that rate() and increase() see the
    first event (a series that appears at 1 shows no increase) and a dashboard shows 0, not nothing."""
    for labels in label_sets:
        counter.labels(*labels)


_zero(SMTP_DELIVERIES, *((r,) for r in SMTP_ROLES))
_zero(QUEUE_ATTEMPTS, ("delivered",), ("deferred",), ("failed",))
_zero(QUEUE_NOTICES, ("failure",), ("delay",))
_zero(LOGINS, *((p,) for p in LOGIN_PROTOCOLS))


# ---------------------------------------------------------------- the protocols' calls


def smtp_delivered(role: str) -> None:
    SMTP_DELIVERIES.labels(bounded(role, SMTP_ROLES)).inc()


def smtp_rejected(role: str, reason: str) -> None:
    SMTP_REJECTS.labels(bounded(role, SMTP_ROLES), bounded(reason, SMTP_REJECT_REASONS)).inc()


def junk_verdict(method: str, accept: bool) -> None:
    JUNK_VERDICTS.labels(bounded(method, JUNK_METHODS), "accept" if accept else "reject").inc()


def imap_command(command: str, status: str) -> None:
    """`command` is the name of a parsed command class (eventmail.imap.commands), not client text."""
    IMAP_COMMANDS.labels(command, bounded(status.lower(), IMAP_RESULTS)).inc()


def login_succeeded(protocol: str) -> None:
    LOGINS.labels(bounded(protocol, LOGIN_PROTOCOLS)).inc()


def login_failed(protocol: str, reason: str) -> None:
    """`reason` is a sasl.FailureReason value (a fixed set)."""
    LOGIN_FAILURES.labels(bounded(protocol, LOGIN_PROTOCOLS), reason).inc()


def watch_replica(role: Callable[[], str], links: Callable[[], dict[str, bool]]) -> None:
    """The replica node's role and peer links, read at each scrape (a process runs one node)."""
    for name in REPLICA_ROLES:
        REPLICA_ROLE.labels(name).set_function(_role_is(role, name))
    for link in REPLICA_LINKS:
        REPLICA_PEER_CONNECTED.labels(link).set_function(_link_up(links, link))


def _role_is(role: Callable[[], str], name: str) -> Callable[[], float]:
    return lambda: float(role() == name)


def _link_up(links: Callable[[], dict[str, bool]], link: str) -> Callable[[], float]:
    return lambda: float(links().get(link, False))
