"""The HTTP and HTTPS listeners: one aiohttp application that routes by host and path to autoconfig, autodiscover, the MTA-STS policy, ACME's http-01 answers, the account and admin pages, the webapi and /metrics, behind security headers and socket limits.

One application serves every web listener, so that a session made over HTTPS is the same one
whichever listener the browser comes back on; `request.secure` tells the two apart. Connections
are accepted by our own asyncio protocol (_Guarded) rather than by aiohttp's site classes, so that
they count against the per-network limit every other listener uses (eventmail.netconn) from the
moment of accept, TLS handshake included, and so that a client cannot hold a connection open by
sending a request head slowly (aiohttp itself has no deadline for the head).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..config import MtaStsSettings
from ..evloop import start_now
from ..metrics import REGISTRY
from ..netconn import ConnectionLimiter
from ..sasl import LoginLimiter
from ..store import Store
from . import clientconfig
from .account import make_account_app
from .admin import make_admin_app
from .clientconfig import Services
from .webapi import Sender, make_webapi_app

log = logging.getLogger(__name__)

# Paths that carry credentials: over plain HTTP they are sent to HTTPS when the server has it.
_CREDENTIAL_PATHS = ("/account", "/admin", "/webapi")
_MTA_STS_PATH = "/.well-known/mta-sts.txt"
_AUTOCONFIG_PATHS = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")
_AUTODISCOVER_PATHS = ("/autodiscover/autodiscover.xml", "/autodiscover.xml")
_ACME_PREFIX = "/.well-known/acme-challenge/"
_PROFILE_PATH = "/profile.mobileconfig"

# Every response (aiohttp's own errors included). The pages load nothing from elsewhere and no
# inline script; nobody may frame them (clickjacking).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
HSTS = "max-age=31536000"


@dataclass(frozen=True)
class HttpLimits:
    """docs/security.md, "Web": the defaults are safe for a public listener."""

    request_head_timeout: float = 30.0  # from accept (or the last response) to a whole request head
    request_timeout: float = 120.0  # a handler, body read included
    keepalive_timeout: float = 30.0
    max_connections: int = 1000  # on all web listeners together, besides the per-network cap
    max_body_bytes: int = 64 * 1024  # outside the webapi (which has its own)
    max_header_bytes: int = 8190  # a request line or one header field
    max_headers: int = 64


@dataclass
class WebSettings:
    """What the web side needs from the configuration."""

    hostname: str
    services: Services
    admin_password_file: Path
    mta_sts: MtaStsSettings = field(default_factory=MtaStsSettings)
    allow_plaintext: bool = False  # loopback logins over plain HTTP (localserve)
    https_port: int | None = None  # where plain HTTP sends credential paths; None: no HTTPS here
    serve_metrics: bool = False  # /metrics on the public web listeners too (localserve only)
    public_url: str = ""  # how clients reach these pages: https://HOST[:PORT] (for the QR code's link)
    trusted_proxies: frozenset[str] = frozenset()  # whose X-Forwarded-For/-Proto are believed
    limits: HttpLimits = field(default_factory=HttpLimits)


def _host(request: web.Request) -> str:
    host = (request.host or "").lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _loopback(peer: str | None) -> bool:
    try:
        return peer is not None and ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


def _behind_proxy(request: web.Request, trusted: frozenset[str]) -> web.Request:
    """The request as the client made it, when it came through a trusted proxy: the client's
    address from the last hop of X-Forwarded-For (what the proxy itself saw; earlier entries are
    the client's to forge), HTTPS from X-Forwarded-Proto. So the login limiter counts clients, not
    the proxy, and HTTPS-only pages work behind a proxy that terminates TLS."""
    if not trusted or request.remote not in trusted:
        return request
    changes: dict[str, str] = {}
    forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
    try:
        changes["remote"] = str(ipaddress.ip_address(forwarded))
    except ValueError:
        pass
    if request.headers.get("X-Forwarded-Proto", "").strip().lower() == "https":
        changes["scheme"] = "https"
    return request.clone(**changes) if changes else request  # type: ignore[arg-type]


def _xml(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/xml", charset="utf-8")


def make_web_app(
    store: Store, settings: WebSettings, *, limiter: LoginLimiter, send: Sender | None = None,
    acme_challenge: Callable[[str], str | None] | None = None,
) -> web.Application:
    """The one application behind every HTTP and HTTPS listener. `acme_challenge` answers ACME
    http-01 (token → key authorization), `send` is the webapi's submission path."""
    limits = settings.limits

    def domain_of(name: str) -> str | None:
        d = name.strip().lower().rstrip(".")
        return d if d in store.system.domains else None

    async def mta_sts(request: web.Request) -> web.StreamResponse:
        # RFC 8461 §3.3: only at https://mta-sts.DOMAIN/, never through a redirect.
        host = _host(request)
        if not (request.secure and host.startswith("mta-sts.") and domain_of(host[len("mta-sts."):])):
            raise web.HTTPNotFound()
        return web.Response(text=clientconfig.mta_sts_policy(settings.hostname, settings.mta_sts),
                            content_type="text/plain", charset="utf-8")

    async def autoconfig(request: web.Request) -> web.StreamResponse:
        # Thunderbird asks autoconfig.DOMAIN/mail/config-v1.1.xml?emailaddress=… and, on the
        # domain itself, /.well-known/autoconfig/…; the address names the domain when given.
        host = _host(request)
        wanted = request.query.get("emailaddress", "").rpartition("@")[2] or (
            host[len("autoconfig."):] if host.startswith("autoconfig.") else host)
        domain = domain_of(wanted)
        if domain is None:
            raise web.HTTPNotFound(text="no such domain here\n")
        return _xml(clientconfig.thunderbird_autoconfig(domain, settings.services))

    async def autodiscover(request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        try:
            address = clientconfig.autodiscover_address(await request.read())
        except clientconfig.AutodiscoverError as e:
            log.info("autodiscover from %s refused: %s", request.remote, e)
            raise web.HTTPBadRequest(text=f"{e}\n") from None
        if domain_of(address.rpartition("@")[2]) is None:
            raise web.HTTPNotFound(text="no such domain here\n")
        return _xml(clientconfig.outlook_autodiscover(address, settings.services))

    async def apple_profile(request: web.Request) -> web.StreamResponse:
        address = request.query.get("address", "").strip()
        if "@" not in address or len(address) > 320 or domain_of(address.rpartition("@")[2]) is None:
            raise web.HTTPNotFound(text="no such domain here\n")
        if not (settings.services.imap and settings.services.submission):
            raise web.HTTPNotFound(text="no IMAP or submission listener\n")
        return web.Response(body=clientconfig.apple_profile(address, settings.services),
                            content_type="application/x-apple-aspen-config",
                            headers={"Content-Disposition": 'attachment; filename="mail.mobileconfig"'})

    async def acme(request: web.Request) -> web.StreamResponse:
        answer = acme_challenge(request.match_info["token"]) if acme_challenge is not None else None
        if answer is None:
            raise web.HTTPNotFound()
        return web.Response(text=answer, content_type="application/octet-stream")

    async def metrics(request: web.Request) -> web.StreamResponse:
        if not settings.serve_metrics:
            raise web.HTTPNotFound()
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(location="/account/")

    @web.middleware
    async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        _Guarded.request_started(request)
        try:
            request = _behind_proxy(request, settings.trusted_proxies)
            if (not request.secure and settings.https_port is not None and not _loopback(request.remote)
                    and request.path.startswith(_CREDENTIAL_PATHS)):
                port = "" if settings.https_port == 443 else f":{settings.https_port}"
                raise web.HTTPPermanentRedirect(location=f"https://{settings.hostname}{port}{request.path_qs}")
            async with asyncio.timeout(limits.request_timeout):
                return await handler(request)
        finally:
            _Guarded.request_done(request)

    async def headers(request: web.Request, response: web.StreamResponse) -> None:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.secure:
            response.headers["Strict-Transport-Security"] = HSTS  # RFC 6797: only over TLS

    app = web.Application(middlewares=[guard], client_max_size=limits.max_body_bytes)
    app.on_response_prepare.append(headers)
    app.router.add_get(_MTA_STS_PATH, mta_sts)
    for path in _AUTOCONFIG_PATHS:
        app.router.add_get(path, autoconfig)
    for path in _AUTODISCOVER_PATHS:
        # Outlook capitalises the path (/Autodiscover/Autodiscover.xml); both spellings are served.
        app.router.add_route("*", path, autodiscover)
        app.router.add_route("*", path.replace("/autodiscover", "/Autodiscover"), autodiscover)
    app.router.add_get(_ACME_PREFIX + "{token}", acme)
    app.router.add_get(_PROFILE_PATH, apple_profile)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", root)
    allow = settings.allow_plaintext
    app.add_subapp("/account", make_account_app(
        store, limiter=limiter, allow_plaintext=allow, services=settings.services,
        profile_url=settings.public_url + _PROFILE_PATH if settings.public_url else ""))
    app.add_subapp("/admin", make_admin_app(store, limiter=limiter, password_file=settings.admin_password_file,
                                            allow_plaintext=allow))
    app.add_subapp("/webapi", make_webapi_app(store, limiter=limiter, send=send, hostname=settings.hostname,
                                              allow_plaintext=allow))
    return app


def make_metrics_app() -> web.Application:
    """A listener of its own for /metrics (an internal address, as Mox's): nothing else on it."""
    async def metrics(request: web.Request) -> web.StreamResponse:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(SECURITY_HEADERS)

    app = web.Application(client_max_size=1024)
    app.on_response_prepare.append(headers)
    app.router.add_get("/metrics", metrics)
    return app


class WebRunner:
    """An application made ready to serve (aiohttp's AppRunner), and the listeners serving it."""

    def __init__(self, app: web.Application, limits: HttpLimits) -> None:
        self.limits = limits
        self.runner = web.AppRunner(
            app, access_log=logging.getLogger("eventmail.web.access"),
            access_log_format='%a "%r" %s %b %Tfs', keepalive_timeout=limits.keepalive_timeout,
            max_line_size=limits.max_header_bytes, max_field_size=limits.max_header_bytes,
            max_headers=limits.max_headers, handle_signals=False,
        )
        self.open = 0  # connections on all of this runner's listeners

    async def setup(self) -> None:
        await self.runner.setup()

    async def listen(self, address: str, port: int, *, tls: ssl.SSLContext | None, connections: ConnectionLimiter,
                     handshake_timeout: float) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: _Guarded(self, tls, connections, handshake_timeout), address, port, reuse_address=True)

    async def close(self) -> None:
        await self.runner.cleanup()


# The guard of each of aiohttp's live connection handlers, for the middleware to reach (the
# handler has __slots__ and takes no weak reference: entries go in connection_lost).
_GUARDS: dict[RequestHandler, _Guarded] = {}


class _Guarded(asyncio.Protocol):
    """Counts a connection from accept, starts its TLS, then hands the bytes to aiohttp's handler;
    closes it when a request head has not arrived within the limit."""

    def __init__(self, runner: WebRunner, tls: ssl.SSLContext | None, connections: ConnectionLimiter,
                 handshake_timeout: float) -> None:
        self.runner, self.tls, self.connections, self.handshake_timeout = runner, tls, connections, handshake_timeout
        self.inner: RequestHandler | None = None
        self.key: str | None = None
        self.counted = False
        self.transport: asyncio.Transport | None = None
        self.raw: asyncio.Transport | None = None  # the TCP transport (under TLS, the one start_tls wraps)
        self.deadline: asyncio.TimerHandle | None = None
        self.handshake: asyncio.Future[None] | None = None
        self.early = b""
        self.early_paused = False  # the TCP socket stopped reading while `early` is over its bound

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: uvloop's have asyncio.Transport's methods without being its subclass.
        transport = cast(asyncio.Transport, transport)
        self.transport = self.raw = transport
        peer = transport.get_extra_info("peername")
        self.key = self.connections.acquire(peer[0] if peer else "")
        if self.key is None or self.runner.open >= self.runner.limits.max_connections:
            log.info("web: connection from %s refused: too many connections", peer[0] if peer else "?")
            transport.abort()
            return
        self.runner.open += 1
        self.counted = True
        self._arm()
        if self.tls is None:
            self._serve(transport)
        else:
            # The socket goes to TLS (_start_tls's first step) before this returns and the transport
            # reads: else the ClientHello could reach data_received() here, as early plaintext.
            self.handshake = start_now(self._start_tls(transport, self.tls))

    async def _start_tls(self, transport: asyncio.Transport, tls: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        try:
            secure = await loop.start_tls(transport, self, tls, server_side=True,
                                          ssl_handshake_timeout=self.handshake_timeout)
        except (TimeoutError, OSError, ssl.SSLError) as e:
            log.info("web: TLS handshake with %s failed: %s", transport.get_extra_info("peername"), e)
            transport.abort()
            self._release()  # the TLS layer may not report the loss to us
            return
        if secure is None:
            transport.abort()
            self._release()
            return
        self.transport = secure
        self._serve(secure)

    def _serve(self, transport: asyncio.Transport) -> None:
        server = self.runner.runner.server
        assert server is not None
        self.inner = server()
        _GUARDS[self.inner] = self
        self.inner.connection_made(transport)
        early, self.early = self.early, b""
        if early:
            self.inner.data_received(early)
        if self.early_paused and self.raw is not None:
            self.early_paused = False
            self.raw.resume_reading()  # now the handler's flow control holds the client back

    def _arm(self) -> None:
        self._disarm()
        self.deadline = asyncio.get_running_loop().call_later(self.runner.limits.request_head_timeout, self._expire)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self) -> None:
        if self.transport is not None:
            log.info("web: %s sent no whole request in time; closed", self.transport.get_extra_info("peername"))
            self.transport.abort()

    @staticmethod
    def request_started(request: web.Request) -> None:
        guard = _GUARDS.get(request.protocol) if request.protocol is not None else None
        if guard is not None:
            guard._disarm()

    @staticmethod
    def request_done(request: web.Request) -> None:
        guard = _GUARDS.get(request.protocol) if request.protocol is not None else None
        if guard is not None and guard.transport is not None and not guard.transport.is_closing():
            guard._arm()

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)
            return
        # Bytes that came with the end of the TLS handshake (a TLS 1.3 client sends its request,
        # body and all, with its Finished), before _start_tls resumed: kept for the handler. Past
        # the bound the socket stops being read until _serve hands them over (TCP flow control
        # holds the client; what TLS had read already still arrives, at most one read of it). It
        # closed the connection before, and with it every POST body over 32 KiB that came early.
        self.early += data
        if (len(self.early) > self.runner.limits.max_header_bytes * 4 and not self.early_paused
                and self.raw is not None):
            self.early_paused = True
            self.raw.pause_reading()

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            self.inner.eof_received()
        return None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handshake is not None and not self.handshake.done():
            self.handshake.cancel()
        self._release()
        if self.inner is not None:
            _GUARDS.pop(self.inner, None)
            with contextlib.suppress(Exception):
                self.inner.connection_lost(exc)

    def _release(self) -> None:
        self._disarm()
        if self.key is not None:
            self.connections.release(self.key)
            self.key = None
        if self.counted:
            self.runner.open -= 1
            self.counted = False
