"""Static settings from one TOML file (listeners, hostname, data directory, TLS, resolver), validated by key."""

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# http/https: the web pages, webapi, autoconfig, MTA-STS policy (eventmail/web/server.py);
# metrics: /metrics alone, for an internal address.
LISTENER_KINDS = ("smtp", "submission", "submissions", "imap", "imaps", "http", "https", "metrics")
# Every key of every table (docs/config.md lists each; tests/test_config.py checks it does).
TOP_KEYS = frozenset({
    "hostname", "data_dir", "key_file", "passphrase_env", "tls", "listener", "resolver", "allow_plaintext_auth",
    "deliver_all_to", "smarthost", "max_message_bytes", "replication", "smarthost_user",
    "smarthost_password_file", "queue", "analysis_workers", "route", "limits", "min_password_length",
    "deletion_grace_days", "allow_key_file_mode", "user", "mta_sts", "log", "acme", "trusted_proxies",
})
TLS_KEYS = frozenset({"cert", "key"})
LISTENER_KEYS = frozenset({"kind", "address", "port"})
RESOLVER_KEYS = frozenset({"nameservers", "port"})
MTA_STS_KEYS = frozenset({"mode", "max_age", "extra_mx"})
LOG_KEYS = frozenset({"format", "level", "levels"})
LOG_LEVELS = ("debug", "info", "warning", "error")
# The areas whose log level the config's [log.levels] sets, and the loggers each covers.
LOG_AREAS: dict[str, tuple[str, ...]] = {
    "smtp": ("eventmail.smtp",),
    "imap": ("eventmail.imap",),
    "web": ("eventmail.web", "eventmail.webapi", "aiohttp"),
    "queue": ("eventmail.smtp.outbound", "eventmail.mail.queue"),
    "mail": ("eventmail.mail",),
    "junk": ("eventmail.junk",),
    "auth": ("eventmail.sasl",),
    "store": ("eventmail.store",),
    "tls": ("eventmail.tls",),
    "replication": ("replica",),
    "control": ("eventmail.control", "eventmail.serve"),
}
ROUTE_KEYS = frozenset({"domain", "smarthost", "smarthost_user", "smarthost_password_file"})
QUEUE_KEYS = frozenset({"first_retry", "give_up_days", "delay_notice_hours", "mx_port", "messages_per_day",
                        "first_time_recipients_per_day", "webhook_first_retry"})
ACME_KEYS = frozenset({"directory", "email", "ca_file", "renew_before_days", "challenges", "http01_port",
                       "retry_seconds", "host_key_file"})
REPLICATION_KEYS = frozenset({"node", "peer_node", "listen", "peer", "cert", "key", "peer_cert", "control", "role",
                              "mode", "sync_timeout", "on_timeout"})


# With [replication], a message's blob crosses the link in one gRPC message, which carries at most
# replica.tlsauth.MAX_MESSAGE_BYTES (80 MiB): a larger accepted message would stop replication
# for good. 64 MiB leaves room for the trace fields added at delivery and the record framing.
REPLICATED_MESSAGE_BYTES = 64 << 20


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the key."""


@dataclass(frozen=True)
class Listener:
    kind: str  # one of LISTENER_KINDS
    address: str
    port: int


@dataclass(frozen=True)
class ResolverSettings:
    nameservers: tuple[str, ...] = ("127.0.0.1",)
    port: int = 53


@dataclass(frozen=True)
class SmarthostSettings:
    """Relay all outbound mail through one host (docs/operations.md, "Transports")."""

    host: str
    port: int  # 587 (STARTTLS) when the config names none; 465 is implicit TLS
    user: str | None = None
    password: str | None = field(default=None, repr=False)  # read from `smarthost_password_file`


@dataclass(frozen=True)
class QueueSettings:
    """The outbound queue's schedule (eventmail.mail.queue has the defaults and why)."""

    first_retry: float = 450.0  # seconds; doubling, at most 16 h apart
    give_up_days: float = 5.0
    delay_notice_hours: float = 4.0
    mx_port: int = 25  # the port of remote MX hosts: 25 (RFC 5321); other values only for tests
    messages_per_day: int = 1000  # per account (Mox's default)
    first_time_recipients_per_day: int = 200  # per account (Mox's default)
    webhook_first_retry: float = 60.0  # seconds; Mox's webhook schedule scaled to it (eventmail.mail.webhookqueue)


@dataclass(frozen=True)
class ReplicationSettings:
    """The [replication] table: this node, its peer, mutual TLS, and the mode (docs/replication.md)."""

    node: str
    peer_node: str
    listen: str  # host:port of this node's replication service
    peer: str  # host:port of the peer's replication service
    cert: Path  # this node's certificate and key (it presents them as server and as client)
    key: Path
    peer_cert: Path  # the only certificate accepted from the peer (pinned, both directions)
    control: Path  # the local control socket (`eventmail replica status|promote`)
    initial_role: str = "secondary"  # until the node state records an epoch
    mode: str = "async"  # or "sync"
    sync_timeout: float = 5.0
    on_timeout: str = "tempfail"  # or "degrade"


@dataclass(frozen=True)
class LogSettings:
    """The [log] table: how the server's log lines look and how much of each area is written."""

    format: str = "text"  # text | json
    level: str = "info"  # for every logger not named in `levels`
    levels: tuple[tuple[str, str], ...] = ()  # (area of LOG_AREAS, level)


@dataclass(frozen=True)
class MtaStsSettings:
    """The [mta_sts] table: the policy served at https://mta-sts.DOMAIN/ (RFC 8461 §3.2)."""

    mode: str = "enforce"  # enforce | testing | none
    max_age: int = 7 * 86400  # seconds; RFC 8461 §3.2 suggests weeks
    extra_mx: tuple[str, ...] = ()  # further MX host names (a backup MX) besides `hostname`


@dataclass(frozen=True)
class AcmeSettings:
    """The [acme] table: certificates for the mail host and each domain's mta-sts and autoconfig
    names from an ACME CA (docs/acme.md)."""

    directory: str  # the CA's directory URL
    email: str | None = None  # the account's contact
    ca_file: Path | None = None  # trust for the CA's own HTTPS when not in the system store (a test CA)
    renew_before_days: float = 30.0  # without ARI: renew this long before notAfter
    challenges: tuple[str, ...] = ("tls-alpn-01", "http-01")  # in order of preference
    http01_port: int = 0  # >0: serve HTTP-01 answers alone on this port of every listener address
    retry_seconds: float = 60.0  # first retry when the CA fails; doubling up to 6 hours
    # The private key of every certificate of the mail host's name set, kept across renewals so
    # that a DANE record "TLSA 3 1 1" (RFC 7671 §5.1) stays true; None: a new key per certificate.
    host_key_file: Path | None = None


@dataclass(frozen=True)
class ServerLimits:
    """Per remote address limits of the listeners ([limits] in the file); the defaults are safe."""

    # Open connections per network (IPv4 address, IPv6 /64), counted from accept (TLS handshakes
    # included) across all listeners of the server together: an attacker's budget is then one
    # number whatever the port. An IMAP client keeps up to 5 connections open (Thunderbird's
    # default), a busy MTA a handful, and several devices share a NAT address; Postfix's
    # smtpd_client_connection_count_limit (per client) is 50 too.
    connections_per_ip: int = 50
    # RFC 5321 §4.5.3.2.7: a server waits at least 5 minutes for the next command. Also how long
    # any client may leave pending output unread before it is closed (IMAP's autologout is
    # longer, its pre-auth timeout shorter).
    idle_timeout: float = 300.0
    # Failed logins per address before each further try is delayed, and before refusal for a
    # cool-down (eventmail.sasl.ratelimit.DEFAULT_ADDRESS_POLICY explains the numbers).
    login_failures_before_delay: int = 5
    login_failures_before_refusal: int = 20
    # The same per account, from networks the account has not logged in from (the account's own
    # networks are exempt, see docs/security.md; DEFAULT_ACCOUNT_POLICY explains the numbers).
    login_account_failures_before_delay: int = 10
    login_account_failures_before_refusal: int = 50
    # Protocol errors one connection may make before it is closed (SMTP: error replies, `421
    # 4.7.0`; IMAP: BAD responses, `* BYE`): Postfix's smtpd_hard_error_limit. A real client
    # makes none or one; a probe or a log flooder makes thousands.
    protocol_errors: int = 20
    # A TLS handshake (implicit on 465/993, or after STARTTLS) not done in this many seconds is
    # abandoned: a couple of round trips need far less, and a stalled handshake holds a slot.
    tls_handshake_timeout: float = 30.0
    # The web listeners: a request head (line and header fields) must arrive whole this many
    # seconds after the connection opens or its previous response ends; aiohttp has no such
    # deadline of its own, so a slow sender could hold a connection for ever.
    request_head_timeout: float = 30.0


@dataclass(frozen=True)
class Config:
    hostname: str
    data_dir: Path
    key_file: Path | None
    passphrase_env: str | None
    tls_cert: Path
    tls_key: Path
    listeners: tuple[Listener, ...]
    resolver: ResolverSettings = field(default_factory=ResolverSettings)
    # Plaintext passwords only where no network sees them: localserve on loopback.
    allow_plaintext_auth: bool = False
    # Web listeners behind another web server: the addresses whose X-Forwarded-For and
    # X-Forwarded-Proto are believed (eventmail/web/server.py); from anyone else they are ignored.
    trusted_proxies: tuple[str, ...] = ()
    # localserve: every outgoing message is delivered to this account instead of leaving.
    deliver_all_to: str | None = None
    # Outbound mail goes by MX, or through this relay when set.
    smarthost: SmarthostSettings | None = None
    # Per-domain routes: mail for a recipient domain through a relay of its own (before `smarthost`).
    routes: tuple[tuple[str, SmarthostSettings], ...] = ()
    queue: QueueSettings = field(default_factory=QueueSettings)
    max_message_bytes: int = 50 << 20
    replication: ReplicationSettings | None = None
    limits: ServerLimits = field(default_factory=ServerLimits)
    # Accept a master key file that group or others may read (refused by default, as ssh does).
    allow_key_file_mode: bool = False
    # Started as root: the user to run as once the ports are bound (eventmail.privileges).
    user: str | None = None
    # Processes that parse and tokenize incoming mail beside the server's (eventmail/smtp/analysis.py).
    # 0: in a thread of the server. None (not set): one when the server may use 2 cores or more.
    analysis_workers: int | None = None
    # The shortest password `account add|set-password` accept (eventmail.mail.admin says why 8).
    min_password_length: int = 8
    deletion_grace_days: float = 7.0
    mta_sts: MtaStsSettings = field(default_factory=MtaStsSettings)
    log: LogSettings = field(default_factory=LogSettings)
    # localserve, a test bench (not in the file): /metrics on its HTTP port too (a server puts it on
    # a `metrics` listener), and failures injected by local part (eventmail.smtp.injected).
    localserve: bool = False
    acme: AcmeSettings | None = None


def _take(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}{key}: missing")
        return default
    value = table[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise ConfigError(f"{where}{key}: expected {names}, got {type(value).__name__}")
    return value


def _only(table: dict[str, Any], keys: set[str], where: str) -> None:
    """An unknown key is an error, never ignored: a misspelt setting must not fall back to its
    default unnoticed (`nameserver = [...]` once started a server on the default resolver)."""
    unknown = sorted(set(table) - keys)
    if unknown:
        raise ConfigError(f"{where}{unknown[0]}: unknown setting (known: {', '.join(sorted(keys))})")


def _check_address(value: str, where: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not an IP address") from None


def parse(text: str, base: Path) -> Config:
    """Parse and validate; relative paths are taken from `base` (the config file's directory)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}") from None
    for key in doc:
        if key not in TOP_KEYS:
            raise ConfigError(f"{key}: unknown setting")
    hostname = _take(doc, "hostname", str, "")
    if not hostname or " " in hostname:
        raise ConfigError("hostname: must be a host name")
    key_file = _take(doc, "key_file", str, "", None)
    passphrase_env = _take(doc, "passphrase_env", str, "", None)
    if key_file and passphrase_env:
        raise ConfigError("key_file, passphrase_env: set one, not both")
    tls = _take(doc, "tls", dict, "")
    _only(tls, set(TLS_KEYS), "tls.")
    listeners = []
    for i, item in enumerate(_take(doc, "listener", list, "")):
        where = f"listener[{i}]."
        if not isinstance(item, dict):
            raise ConfigError(f"listener[{i}]: expected a table")
        _only(item, set(LISTENER_KEYS), where)
        kind = _take(item, "kind", str, where)
        if kind not in LISTENER_KINDS:
            raise ConfigError(f"{where}kind: {kind!r} is not one of {', '.join(LISTENER_KINDS)}")
        address = _take(item, "address", str, where)
        _check_address(address, where + "address")
        port = _take(item, "port", int, where)
        if not 0 < port < 65536:
            raise ConfigError(f"{where}port: {port} is not a port number")
        listeners.append(Listener(kind, address, port))
    if not listeners:
        raise ConfigError("listener: at least one listener is needed")
    res = _take(doc, "resolver", dict, "", {})
    _only(res, set(RESOLVER_KEYS), "resolver.")
    servers = tuple(_take(res, "nameservers", list, "resolver.", ["127.0.0.1"]))
    for s in servers:
        _check_address(str(s), "resolver.nameservers")
    max_bytes = _take(doc, "max_message_bytes", int, "", 50 << 20)
    if max_bytes < 1024:
        raise ConfigError("max_message_bytes: too small")
    repl = _take(doc, "replication", dict, "", None)
    if repl is not None and max_bytes > REPLICATED_MESSAGE_BYTES:
        raise ConfigError(f"max_message_bytes: at most {REPLICATED_MESSAGE_BYTES} (64 MiB) with [replication], "
                          "whose link carries a message in one piece")
    min_password = _take(doc, "min_password_length", int, "", 8)
    if not 8 <= min_password <= 1024:
        raise ConfigError("min_password_length: from 8 (NIST SP 800-63B's least) to 1024")
    grace = _take(doc, "deletion_grace_days", (int, float), "", 7)
    if not 0 <= grace <= 3650 or isinstance(grace, bool):
        raise ConfigError("deletion_grace_days: from 0 (shred at once) to 3650")
    return Config(
        replication=_replication(repl, base) if repl is not None else None,
        deletion_grace_days=float(grace),
        limits=_limits(_take(doc, "limits", dict, "", {})),
        hostname=hostname,
        data_dir=base / _take(doc, "data_dir", str, ""),
        key_file=base / key_file if key_file else None,
        passphrase_env=passphrase_env,
        tls_cert=base / _take(tls, "cert", str, "tls."),
        tls_key=base / _take(tls, "key", str, "tls."),
        listeners=tuple(listeners),
        resolver=ResolverSettings(tuple(str(s) for s in servers), _take(res, "port", int, "resolver.", 53)),
        allow_plaintext_auth=_take(doc, "allow_plaintext_auth", bool, "", False),
        trusted_proxies=_trusted_proxies(doc),
        deliver_all_to=_take(doc, "deliver_all_to", str, "", None),
        smarthost=_smarthost(doc, base),
        routes=_routes(_take(doc, "route", list, "", []), base),
        queue=_queue(_take(doc, "queue", dict, "", {})),
        max_message_bytes=max_bytes,
        allow_key_file_mode=_take(doc, "allow_key_file_mode", bool, "", False),
        user=_take(doc, "user", str, "", None) or None,
        min_password_length=min_password,
        analysis_workers=_analysis_workers(doc),
        mta_sts=_mta_sts(_take(doc, "mta_sts", dict, "", {})),
        log=_log(_take(doc, "log", dict, "", {})),
        acme=_acme(_take(doc, "acme", dict, "", None), base),
    )


def _log(table: dict[str, Any]) -> LogSettings:
    _only(table, set(LOG_KEYS), "log.")
    fmt = _take(table, "format", str, "log.", "text")
    if fmt not in ("text", "json"):
        raise ConfigError(f"log.format: {fmt!r} is not text or json")
    level = _take(table, "level", str, "log.", "info")
    if level not in LOG_LEVELS:
        raise ConfigError(f"log.level: {level!r} is not one of {', '.join(LOG_LEVELS)}")
    levels = _take(table, "levels", dict, "log.", {})
    for area, value in levels.items():
        if area not in LOG_AREAS:
            raise ConfigError(f"log.levels.{area}: unknown area; the areas are {', '.join(LOG_AREAS)}")
        if value not in LOG_LEVELS:
            raise ConfigError(f"log.levels.{area}: {value!r} is not one of {', '.join(LOG_LEVELS)}")
    return LogSettings(fmt, level, tuple(sorted(levels.items())))


def _trusted_proxies(doc: dict[str, Any]) -> tuple[str, ...]:
    found = _take(doc, "trusted_proxies", list, "", [])
    for a in found:
        _check_address(str(a), "trusted_proxies")
    return tuple(str(ipaddress.ip_address(str(a))) for a in found)


def _mta_sts(table: dict[str, Any]) -> MtaStsSettings:
    _only(table, set(MTA_STS_KEYS), "mta_sts.")
    d = MtaStsSettings()
    mode = _take(table, "mode", str, "mta_sts.", d.mode)
    if mode not in ("enforce", "testing", "none"):
        raise ConfigError(f"mta_sts.mode: {mode!r} is not enforce, testing or none (RFC 8461 §5)")
    max_age = _take(table, "max_age", int, "mta_sts.", d.max_age)
    if not 0 <= max_age <= 31557600:
        raise ConfigError("mta_sts.max_age: seconds from 0 to 31557600 (RFC 8461 §3.2)")
    extra = _take(table, "extra_mx", list, "mta_sts.", [])
    for name in extra:
        if not isinstance(name, str) or not name or any(c in name for c in " /@\r\n"):
            raise ConfigError(f"mta_sts.extra_mx: {name!r} is not a host name")
    return MtaStsSettings(mode, max_age, tuple(extra))


def _smarthost(doc: dict[str, Any], base: Path) -> SmarthostSettings | None:
    """`smarthost = "host"`, `"host:port"` or `"[v6]:port"`; port 587 when not given (RFC 6409)."""
    text = _take(doc, "smarthost", str, "", None)
    user = _take(doc, "smarthost_user", str, "", None)
    password_file = _take(doc, "smarthost_password_file", str, "", None)
    if text is None:
        if user or password_file:
            raise ConfigError("smarthost_user, smarthost_password_file: given without a smarthost")
        return None
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host or any(c in host for c in " /@"):
        raise ConfigError(f"smarthost: {text!r} is not host or host:port")
    if port_text and not port_text.isdigit():
        raise ConfigError(f"smarthost: {text!r}: the port is not a number")
    port = int(port_text) if port_text else 587
    if not 0 < port < 65536:
        raise ConfigError(f"smarthost: {text!r}: port out of range")
    password = None
    if bool(user) != bool(password_file):
        raise ConfigError("smarthost_user and smarthost_password_file: give both or neither")
    if password_file:
        try:
            password = (base / password_file).read_text().strip("\r\n")
        except OSError as e:
            raise ConfigError(f"smarthost_password_file: {e.strerror or e}") from None
        if not password:
            raise ConfigError("smarthost_password_file: the file is empty")
    return SmarthostSettings(host, port, user or None, password)


def _analysis_workers(doc: dict[str, Any]) -> int | None:
    n = _take(doc, "analysis_workers", int, "", None)
    if n is None:
        return None
    if not 0 <= n <= 64:
        raise ConfigError("analysis_workers: from 0 (in the server's process) to 64")
    return int(n)


def _number(table: dict[str, Any], key: str, where: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}{key}: expected a number, got {type(value).__name__}")
    return float(value)


def _routes(items: list[Any], base: Path) -> tuple[tuple[str, SmarthostSettings], ...]:
    """[[route]] tables: `domain` (a recipient domain, exactly) and a relay as for `smarthost`."""
    out: list[tuple[str, SmarthostSettings]] = []
    for n, item in enumerate(items):
        where = f"route[{n}]."
        if not isinstance(item, dict):
            raise ConfigError(f"route[{n}]: expected a table")
        unknown = set(item) - ROUTE_KEYS
        if unknown:
            raise ConfigError(f"{where}{sorted(unknown)[0]}: unknown setting")
        domain = _take(item, "domain", str, where).strip().lower().rstrip(".")
        if not domain or "@" in domain or " " in domain:
            raise ConfigError(f"{where}domain: {domain!r} is not a domain")
        if any(d == domain for d, _ in out):
            raise ConfigError(f"{where}domain: {domain} has a route already")
        relay = _smarthost({k: v for k, v in item.items() if k != "domain"}, base)
        if relay is None:
            raise ConfigError(f"{where}smarthost: missing")
        out.append((domain, relay))
    return tuple(out)


def _queue(t: dict[str, Any]) -> QueueSettings:
    unknown = set(t) - QUEUE_KEYS
    if unknown:
        raise ConfigError(f"queue: unknown setting {sorted(unknown)[0]!r}")
    q = QueueSettings(
        first_retry=_number(t, "first_retry", "queue.", 450.0),
        give_up_days=_number(t, "give_up_days", "queue.", 5.0),
        delay_notice_hours=_number(t, "delay_notice_hours", "queue.", 4.0),
        mx_port=_take(t, "mx_port", int, "queue.", 25),
        messages_per_day=_take(t, "messages_per_day", int, "queue.", 1000),
        first_time_recipients_per_day=_take(t, "first_time_recipients_per_day", int, "queue.", 200),
        webhook_first_retry=_number(t, "webhook_first_retry", "queue.", 60.0),
    )
    if q.messages_per_day < 1 or q.first_time_recipients_per_day < 1:
        raise ConfigError("queue: the daily limits must be at least 1")
    if q.first_retry <= 0 or q.give_up_days <= 0 or q.delay_notice_hours <= 0 or q.webhook_first_retry <= 0:
        raise ConfigError("queue: times must be positive")
    if not 0 < q.mx_port < 65536:
        raise ConfigError("queue.mx_port: not a port number")
    return q


def _hostport(value: str, where: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: {value!r} is not host:port")
    _check_address(host.strip("[]"), where)
    return value


def _replication(t: dict[str, Any], base: Path) -> ReplicationSettings:
    w = "replication."
    for key in t:
        if key not in REPLICATION_KEYS:
            raise ConfigError(f"{w}{key}: unknown setting")
    role = _take(t, "role", str, w, "secondary")
    mode = _take(t, "mode", str, w, "async")
    on_timeout = _take(t, "on_timeout", str, w, "tempfail")
    if role not in ("primary", "secondary"):
        raise ConfigError(f"{w}role: {role!r} is not primary or secondary")
    if mode not in ("async", "sync"):
        raise ConfigError(f"{w}mode: {mode!r} is not async or sync")
    if on_timeout not in ("tempfail", "degrade"):
        raise ConfigError(f"{w}on_timeout: {on_timeout!r} is not tempfail or degrade")
    timeout = t.get("sync_timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 600:
        raise ConfigError(f"{w}sync_timeout: seconds, more than 0 and at most 600")
    node, peer_node = _take(t, "node", str, w), _take(t, "peer_node", str, w)
    if not node or not peer_node or node == peer_node or "/" in node + peer_node:
        raise ConfigError(f"{w}node, peer_node: two different names without '/'")
    return ReplicationSettings(
        node=node, peer_node=peer_node,
        listen=_hostport(_take(t, "listen", str, w), w + "listen"),
        peer=_hostport(_take(t, "peer", str, w), w + "peer"),
        cert=base / _take(t, "cert", str, w), key=base / _take(t, "key", str, w),
        peer_cert=base / _take(t, "peer_cert", str, w),
        control=base / _take(t, "control", str, w, "replica.sock"),
        initial_role=role, mode=mode, sync_timeout=float(timeout), on_timeout=on_timeout,
    )


def _acme(t: dict[str, Any] | None, base: Path) -> AcmeSettings | None:
    if t is None:
        return None
    w = "acme."
    _only(t, set(ACME_KEYS), w)
    directory = _take(t, "directory", str, w)
    if not directory.startswith(("https://", "http://")):
        raise ConfigError(f"{w}directory: {directory!r} is not an http(s) URL")
    email = _take(t, "email", str, w, None)
    if email is not None and ("@" not in email or " " in email):
        raise ConfigError(f"{w}email: {email!r} is not an address")
    ca_file = _take(t, "ca_file", str, w, None)
    kinds = _take(t, "challenges", list, w, ["tls-alpn-01", "http-01"])
    if not kinds or any(k not in ("tls-alpn-01", "http-01") for k in kinds):
        raise ConfigError(f"{w}challenges: a list of \"tls-alpn-01\" and/or \"http-01\"")
    renew = _number(t, "renew_before_days", w, 30.0)
    if not 1 <= renew <= 365:
        raise ConfigError(f"{w}renew_before_days: from 1 to 365")
    port = _take(t, "http01_port", int, w, 0)
    if not 0 <= port < 65536:
        raise ConfigError(f"{w}http01_port: not a port number (0: none)")
    retry = _number(t, "retry_seconds", w, 60.0)
    if not 0 < retry <= 86400:
        raise ConfigError(f"{w}retry_seconds: more than 0, at most 86400")
    host_key = _take(t, "host_key_file", str, w, None)
    return AcmeSettings(directory=directory, email=email, ca_file=base / ca_file if ca_file else None,
                        renew_before_days=renew, challenges=tuple(str(k) for k in kinds), http01_port=port,
                        retry_seconds=retry, host_key_file=base / host_key if host_key else None)


def _limits(table: dict[str, Any]) -> ServerLimits:
    d = ServerLimits()
    for key in table:
        if key not in ServerLimits.__dataclass_fields__:
            raise ConfigError(f"limits.{key}: unknown setting")
    conns = _take(table, "connections_per_ip", int, "limits.", d.connections_per_ip)
    idle = table.get("idle_timeout", d.idle_timeout)
    if conns < 1:
        raise ConfigError("limits.connections_per_ip: must be at least 1")
    if isinstance(idle, bool) or not isinstance(idle, int | float) or idle <= 0:
        raise ConfigError("limits.idle_timeout: expected a number of seconds above 0")
    logins: dict[str, int] = {}
    for prefix in ("login_failures_", "login_account_failures_"):
        delay = _take(table, prefix + "before_delay", int, "limits.", getattr(d, prefix + "before_delay"))
        refuse = _take(table, prefix + "before_refusal", int, "limits.", getattr(d, prefix + "before_refusal"))
        if delay < 1:
            raise ConfigError(f"limits.{prefix}before_delay: must be at least 1")
        if refuse < delay:
            raise ConfigError(f"limits.{prefix}before_refusal: must be at least {prefix}before_delay")
        logins[prefix + "before_delay"], logins[prefix + "before_refusal"] = delay, refuse
    errors = _take(table, "protocol_errors", int, "limits.", d.protocol_errors)
    if errors < 1:
        raise ConfigError("limits.protocol_errors: must be at least 1")
    handshake = table.get("tls_handshake_timeout", d.tls_handshake_timeout)
    if isinstance(handshake, bool) or not isinstance(handshake, int | float) or handshake <= 0:
        raise ConfigError("limits.tls_handshake_timeout: expected a number of seconds above 0")
    head = table.get("request_head_timeout", d.request_head_timeout)
    if isinstance(head, bool) or not isinstance(head, int | float) or head <= 0:
        raise ConfigError("limits.request_head_timeout: expected a number of seconds above 0")
    return ServerLimits(connections_per_ip=conns, idle_timeout=float(idle), protocol_errors=errors,
                        tls_handshake_timeout=float(handshake), request_head_timeout=float(head), **logins)


def load(path: Path) -> Config:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    return parse(text, path.parent.resolve())
