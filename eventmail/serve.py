"""Running a server process: the store, the listeners of the configuration, the queue runner, until stopped."""

import asyncio
import contextlib
import ctypes
import dataclasses
import functools
import gc
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import generate_latest

from . import cputime, privileges
from .config import Config, Listener, SmarthostSettings
from .control import ControlServer
from .mail.admin import Admin, Policy, shred_when_due
from .mail.queue import OutboundPolicy, Schedule
from .mail.retention import collect_when_due
from .mail.webhookqueue import HookSchedule, send_webhooks
from .mailauth.resolver import Resolver, ResolverConfig
from .metrics import REGISTRY, STORE_FSYNC_SECONDS
from .netconn import ConnectionLimiter, SocketLimits
from .opening import open_store
from .sasl.ratelimit import DEFAULT_ACCOUNT_POLICY, DEFAULT_ADDRESS_POLICY, LoginLimiter
from .smtp.analysis import Analyzer
from .smtp.attempt import Auth
from .smtp.delivery import InboundDelivery
from .smtp.outbound import QueueRunner, Smarthost
from .smtp.submission import Submission
from .store import MasterKeySource, Store, load_master_key
from .tls.certs import CertificateHolder, read_host_key, server_context

if TYPE_CHECKING:
    from replica.service import RunningReplica

    from .mail.certificates import CertificateManager
    from .web.webapi import Outgoing, Sender

log = logging.getLogger(__name__)


@dataclass
class Running:
    """What a started server holds, for tests and for stopping it."""

    store: Store
    servers: list[asyncio.Server]
    tasks: list["asyncio.Task[None]"]
    ports: dict[str, int]
    # Stopped before the store closes (replication: its gRPC server, follower, control socket).
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # The certificates every TLS listener presents (`tls.context`), and their ACME upkeep.
    tls: CertificateHolder | None = None
    certificates: "CertificateManager | None" = None

    async def stop(self) -> None:
        for s in self.servers:
            s.close()
        for t in self.tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for s in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 5)
        for close in self.closers:
            await close()
        await self.store.close()


async def start(cfg: Config, store: Store | None = None) -> Running:
    """Open the store and start every listener of `cfg`; port 0 picks a free port (see `ports`).

    Started as root with `cfg.user` set, the keys are read and the ports bound as root, and
    everything else runs as that user (eventmail.privileges)."""
    who = privileges.target(cfg.user) if store is None else None
    if who is not None:
        privileges.check_owned(cfg.data_dir, who)
    # Parsing, tokenizing and DKIM's hashing (eventmail/smtp/analysis.py) in processes forked from
    # this one as it is now: every module imported, no thread yet, no key read, no port bound.
    analyzer = Analyzer(cfg.analysis_workers)
    await analyzer.prefork(lambda: privileges.drop(who))
    holder = CertificateHolder(server_context(cfg.tls_cert, cfg.tls_key))
    tls = holder.context
    if store is None:
        source = MasterKeySource.default(cfg.data_dir, str(cfg.key_file) if cfg.key_file else None, cfg.passphrase_env,
                                         allow_loose_mode=cfg.allow_key_file_mode)
        if cfg.replication is not None:
            from replica.service import bootstrap

            # A new secondary is made from the primary's keyring with our key file, read as root.
            early = load_master_key(cfg.data_dir, source) if cfg.key_file is not None else None
            with privileges.acting_as(who):
                await bootstrap(cfg, early)
        master = load_master_key(cfg.data_dir, source)  # as root: the key file may be root's alone
        with privileges.acting_as(who):  # what the store creates is the user's
            store = await open_store(cfg.data_dir, master)
    store.on_fsync = STORE_FSYNC_SECONDS.observe  # the store imports no metrics: it is told where
    resolver = Resolver(ResolverConfig(nameservers=cfg.resolver.nameservers, port=cfg.resolver.port))
    inbound = InboundDelivery(store, resolver, cfg.hostname, analyzer=analyzer)
    closers: list[Callable[[], Awaitable[None]]] = []
    # ACME (docs/acme.md): the stored certificates (or self-signed ones) before any listener starts.
    certificates = None
    if cfg.acme is not None:
        from .mail.certificates import CertificateManager  # the ACME client's code, only with ACME

        host_key = read_host_key(cfg.acme.host_key_file) if cfg.acme.host_key_file else None  # as root
        certificates = CertificateManager(store, holder, cfg.acme, cfg.hostname, host_key_pem=host_key)
    if certificates is not None:
        certificates.install_stored()

    async def close_analyzer() -> None:
        analyzer.close()

    closers.append(close_analyzer)
    if cfg.replication is not None:
        from replica.service import start as start_replication

        with privileges.acting_as(who):
            replication, inbound.handoff = await start_replication(store, cfg.replication)
        closers.append(replication.stop)
    # The suppression list and the daily sending limits, folded from the queue stream for the life
    # of the server (eventmail/mail/queue.py).
    policy = OutboundPolicy(cfg.queue.messages_per_day, cfg.queue.first_time_recipients_per_day)
    follow = asyncio.get_running_loop().create_task(policy.follow(store))

    async def stop_following() -> None:
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow

    closers.append(stop_following)
    submission = Submission(store, cfg.hostname, cfg.deliver_all_to, policy=policy)
    limiter = LoginLimiter(time.monotonic, address_policy=dataclasses.replace(
        DEFAULT_ADDRESS_POLICY, delay_after=cfg.limits.login_failures_before_delay,
        refuse_after=cfg.limits.login_failures_before_refusal,
    ), account_policy=dataclasses.replace(
        DEFAULT_ACCOUNT_POLICY, delay_after=cfg.limits.login_account_failures_before_delay,
        refuse_after=cfg.limits.login_account_failures_before_refusal,
    ))
    # One count of open connections per network for all listeners (docs/security.md says why).
    connections = ConnectionLimiter(cfg.limits.connections_per_ip)
    servers: list[asyncio.Server] = []
    ports: dict[str, int] = {}
    bound: list[tuple[str, int]] = []
    mail_listeners = [li for li in cfg.listeners if li.kind not in WEB_KINDS]
    for listener in mail_listeners:
        server = await _start_listener(listener.kind, listener.address, listener.port, cfg, store, tls,
                                       inbound, submission, limiter, connections)
        servers.append(server)
        bound.append((listener.kind, server.sockets[0].getsockname()[1]))
    web_listeners = [li for li in cfg.listeners if li.kind in WEB_KINDS]
    if web_listeners:
        # After the mail listeners: autoconfig names their ports.
        web_servers, web_bound, close_web = await _start_web(cfg, store, holder, web_listeners, bound, submission,
                                                             limiter, connections)
        servers += web_servers
        bound += web_bound
        closers.append(close_web)
    for (kind, port), listener in zip(bound, mail_listeners + web_listeners, strict=True):
        ports[kind] = port
        log.info("%s listening on %s port %d", kind, listener.address, port)
    if cfg.acme is not None and cfg.acme.http01_port:
        from .tls.acme import serve_http01  # only with ACME

        addresses = list(dict.fromkeys(listener.address for listener in cfg.listeners))
        closers.insert(0, await serve_http01(holder, addresses, cfg.acme.http01_port))
    privileges.drop(who)  # every port is bound: root is not needed any more
    # Last, so that a command answered through it finds every listener up; first to stop. After
    # the drop, so that the socket and its directory belong to the server's user.
    closers.insert(0, await _start_control(cfg, store, replication if cfg.replication is not None else None))
    tasks = []
    if cfg.deliver_all_to is None:  # localserve delivers everything locally: nothing is queued
        runner = _queue_runner(cfg, store, resolver)
        # Of a pair, only the primary sends the queue out (else both nodes would send each message).
        work = replication.while_primary(runner.run) if cfg.replication is not None else runner.run()
        tasks.append(asyncio.get_running_loop().create_task(work))
    # Webhooks are posted by the primary only, as the queue is sent (eventmail/mail/webhookqueue.py).
    hooks = functools.partial(send_webhooks, schedule=HookSchedule(cfg.queue.webhook_first_retry))
    # Deleted accounts are shredded when their grace period ends — by the primary only: the
    # secondary follows its events and its keyring.
    # So are the blobs of messages expunged before each account's retention window.
    for job in (shred_when_due, collect_when_due, hooks):
        work = (replication.while_primary(functools.partial(job, store)) if cfg.replication is not None
                else job(store))
        tasks.append(asyncio.get_running_loop().create_task(work))
    if certificates is not None:  # of a pair, the primary orders; the secondary has the events
        work = replication.while_primary(certificates.run) if cfg.replication is not None else certificates.run()
        tasks.append(asyncio.get_running_loop().create_task(work))
    return Running(store, servers, tasks, ports, closers, holder, certificates)


def _queue_runner(cfg: Config, store: Store, resolver: Resolver) -> QueueRunner:
    q = cfg.queue
    schedule = Schedule(first_retry=q.first_retry, give_up=q.give_up_days * 86400,
                        delay_notice=q.delay_notice_hours * 3600)
    def relay(sh: SmarthostSettings) -> Smarthost:
        return Smarthost(sh.host, sh.port, Auth(sh.user, sh.password) if sh.user and sh.password else None)

    smarthost = relay(cfg.smarthost) if cfg.smarthost is not None else None
    routes = {domain: relay(sh) for domain, sh in cfg.routes}
    return QueueRunner(store, cfg.hostname, resolver, smarthost=smarthost, routes=routes, schedule=schedule,
                       mx_port=q.mx_port)


async def _start_control(cfg: Config, store: Store, replication: "RunningReplica | None") -> Callable[[], Awaitable[None]]:
    """The control socket in the data directory: the mail layer's admin operations and, on a
    replicating node, replication's commands (docs/operations.md)."""
    control = ControlServer()
    control.register(Admin(store, Policy(cfg.min_password_length, cfg.deletion_grace_days)).commands())

    async def metrics(args: Mapping[str, Any]) -> dict[str, Any]:
        return {"metrics": generate_latest(REGISTRY).decode()}

    async def stages(args: Mapping[str, Any]) -> dict[str, Any]:
        return {"cpu_seconds": cputime.totals()}  # bench/smtp.py: core-ms per message by stage

    async def collector(args: Mapping[str, Any]) -> dict[str, Any]:
        # The garbage collector's state (tune_gc): what is frozen, the thresholds, and the
        # collections per generation so far (for a latency outlier's suspects).
        return {"frozen": gc.get_freeze_count(), "threshold": list(gc.get_threshold()), "generations": gc.get_stats()}

    control.register({"metrics": metrics, "stages": stages, "gc": collector})
    if replication is not None:
        control.register(replication.control_commands())
        # The configured replication.control path: the same server, kept for existing setups.
        await control.listen(replication.node.settings.control)
    await control.listen_in(cfg.data_dir)
    return control.close


WEB_KINDS = ("http", "https", "metrics")


async def _start_web(
    cfg: Config, store: Store, holder: CertificateHolder, listeners: list[Listener], mail_ports: list[tuple[str, int]],
    submission: Submission, limiter: LoginLimiter, connections: ConnectionLimiter,
) -> tuple[list[asyncio.Server], list[tuple[str, int]], Callable[[], Awaitable[None]]]:
    """The web listeners: one application for http and https, one for metrics (eventmail/web/server.py)."""
    from .web.admin import ADMIN_PASSWORD_FILE
    from .web.clientconfig import services_from_listeners
    from .web.server import HttpLimits, WebRunner, WebSettings, make_metrics_app, make_web_app

    limits = HttpLimits(request_head_timeout=cfg.limits.request_head_timeout)
    https = [li for li in listeners if li.kind == "https"]
    settings = WebSettings(
        hostname=cfg.hostname, services=services_from_listeners(cfg.hostname, mail_ports),
        admin_password_file=cfg.data_dir / ADMIN_PASSWORD_FILE, mta_sts=cfg.mta_sts,
        allow_plaintext=cfg.allow_plaintext_auth, https_port=https[0].port if https else None,
        serve_metrics=cfg.localserve, limits=limits, public_url=_public_url(cfg, listeners),
        trusted_proxies=frozenset(cfg.trusted_proxies),
    )
    runners: dict[str, WebRunner] = {}

    async def runner_for(kind: str) -> WebRunner:
        key = "metrics" if kind == "metrics" else "web"
        if key not in runners:
            app = (make_metrics_app() if key == "metrics" else
                   make_web_app(store, settings, limiter=limiter, send=_webapi_sender(submission),
                                acme_challenge=holder.http01.get))
            runners[key] = WebRunner(app, limits)
            await runners[key].setup()
        return runners[key]

    servers, bound = [], []
    for li in listeners:
        runner = await runner_for(li.kind)
        server = await runner.listen(li.address, li.port, tls=holder.context if li.kind == "https" else None,
                                     connections=connections, handshake_timeout=cfg.limits.tls_handshake_timeout)
        servers.append(server)
        bound.append((li.kind, server.sockets[0].getsockname()[1]))

    async def close() -> None:
        for r in runners.values():
            await r.close()
    return servers, bound, close


def _public_url(cfg: Config, listeners: list[Listener]) -> str:
    """Where clients reach the pages: the HTTPS listener under the host name, else (localserve)
    the first HTTP one."""
    for kind, scheme, default in (("https", "https", 443), ("http", "http", 80)):
        for li in listeners:
            if li.kind == kind:
                return f"{scheme}://{cfg.hostname}" + ("" if li.port == default else f":{li.port}")
    return ""


def _webapi_sender(submission: Submission) -> "Sender":
    """The webapi's Send through the submission path, as an authenticated SMTP client's message."""
    from .smtp.delivery import Transaction
    from .web.webapi import ApiError

    async def send(out: "Outgoing") -> str:
        tx = Transaction(remote_ip=out.remote_ip, helo="webapi", tls=True, mail_from=out.mail_from,
                         authenticated=out.account, requiretls=out.requiretls,
                         recipients={r: submission.store.system.account_for(r) or "" for r in out.recipients})
        reply = await submission.submit(tx, out.message)
        if not reply.positive:
            raise ApiError("server" if reply.code < 500 else "user", str(reply.text))
        return tx.transaction_id
    return send


async def _start_listener(
    kind: str, address: str, port: int, cfg: Config, store: Store, tls: ssl.SSLContext,
    inbound: InboundDelivery, submission: Submission, limiter: LoginLimiter, connections: ConnectionLimiter,
) -> asyncio.Server:
    socket_limits = SocketLimits(handshake_timeout=cfg.limits.tls_handshake_timeout)
    if kind in ("imap", "imaps"):
        # The IMAP server's modules (3.5 MB of anonymous memory at start) only with an IMAP listener.
        from .imap.server import start_imap
        from .imap.wire import Limits as ImapLimits

        server: asyncio.Server = await start_imap(
            store, address, port,
            tls_context=tls if kind == "imaps" else None,
            starttls_context=tls if kind == "imap" else None,
            allow_plaintext_auth=cfg.allow_plaintext_auth, limiter=limiter, connections=connections,
            send_timeout=cfg.limits.idle_timeout, socket_limits=socket_limits,
            # One message size for SMTP and APPEND (a client saving a large sent message to Sent
            # must not meet a smaller limit than the SMTP server took it with); MULTIAPPEND and a
            # refused literal read and thrown away stay at twice it, as their defaults are.
            limits=ImapLimits(max_errors=cfg.limits.protocol_errors, max_append=cfg.max_message_bytes,
                              max_append_total=2 * cfg.max_message_bytes, max_discard=2 * cfg.max_message_bytes),
            analyze=inbound.analyzer.analyze,
        )
        return server
    from .smtp.server import SmtpRole, start_smtp, tls_channel_bindings

    role = SmtpRole.MX if kind == "smtp" else SmtpRole.SUBMISSION
    return await start_smtp(
        address, port, role=role, hostname=cfg.hostname, store=store,
        inbound=inbound, submission=submission, limiter=limiter,
        tls_context=tls, implicit_tls=kind == "submissions",
        allow_plaintext_auth=cfg.allow_plaintext_auth, max_message_bytes=cfg.max_message_bytes,
        connections=connections, idle_timeout=cfg.limits.idle_timeout,
        channel_bindings=tls_channel_bindings(cfg.tls_cert), socket_limits=socket_limits,
        max_errors=cfg.limits.protocol_errors, inject_errors=cfg.localserve,
    )


MALLOC_ARENAS = 1
_M_ARENA_MAX = -8  # glibc's malloc.h


def share_malloc_arenas() -> None:
    """Let every thread share MALLOC_ARENAS malloc arenas. glibc gives each thread that allocates
    an arena of its own (up to eight per core), each keeping the memory freed in it; the GIL lets
    one thread run Python at a time, so sharing costs little: bench/smtp.py measured 85-86 MB
    resident after 1,000 deliveries with one arena, 87 with two, 88-91 unbounded, at the same
    speed. Call before the server starts threads; a no-op where the C library is not glibc."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, MALLOC_ARENAS)


# Young objects allocated between two collections of the cyclic garbage collector (CPython's
# default is 700). A server allocates and drops thousands of objects per message; at 700 the
# collector ran every few hundred microseconds of work and moved objects that were still in use
# (a session's, a commit's) into the older generations, which made the full collections come sooner.
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Once the server has started: collect, then freeze every object alive (modules, caches,
    the configuration, the projections' Python side) out of the collector's sight, and let more
    young objects accumulate between collections.

    A full (generation 2) collection walks every tracked object: in a started server that took
    46-48 ms here (docs/replication.md, "Where a replicated commit's time goes"), a stall of the
    event loop that shows as the worst latency of anything in flight (a replicated commit's lag,
    an SMTP reply). Frozen objects are never walked again, so later full collections cost what
    was allocated since. Nothing frozen is freed by the collector, which is why garbage is
    collected first; what startup leaves alive lives as long as the process anyway."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


async def run_until_signalled(starter: Callable[[], Awaitable[Running]], on_started: Callable[[Running], None]) -> None:
    """Start, report, and stop cleanly on SIGINT or SIGTERM."""
    running = await starter()
    tune_gc()
    on_started(running)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await running.stop()


def default_localserve_dir() -> Path:
    return Path.home() / ".local" / "share" / "eventmail-localserve"
