"""The account page (/account/): log in, log out, change the password, the suppression list; server-rendered with Jinja2 (autoescaped), every write through the mail layer.

Every POST but the login carries the session's CSRF token; the login form carries a
double-submit token (session.LoginTokens). The session cookie is HttpOnly, SameSite=Strict and
Secure on HTTPS; a login always starts a new session (session.Sessions.start).
"""

from __future__ import annotations

import asyncio
import io
import logging
from urllib.parse import urlencode

import segno
from aiohttp import web

from ..mail import suppressions, webhookqueue, webhooks
from ..mail.admin import Admin, AdminError
from ..sasl import Failure, FailureReason, LoginLimiter
from ..store import Store, normalize_address
from .clientconfig import Services
from .render import HERE, Pages
from .session import LoginTokens, Session, Sessions, check_password

log = logging.getLogger("eventmail.web.account")

SESSIONS_KEY = web.AppKey("sessions", Sessions)


def make_account_app(
    store: Store, *, limiter: LoginLimiter, base: str = "/account/", allow_plaintext: bool = False,
    services: Services | None = None, profile_url: str = "",
) -> web.Application:
    """The account page as an aiohttp sub-application, to be mounted at `base` (with its trailing
    slash; aiohttp's add_subapp takes it without). `limiter` is the server's failed-login limiter;
    `allow_plaintext` lets loopback clients log in over plain HTTP (localserve), as IMAP does.
    `services` (the mail host and its client ports) and `profile_url` (where the Apple profile is
    served, without its query) fill the "set up a mail client" section."""
    sessions = Sessions("eventmail_account", base)
    login_tokens = LoginTokens("eventmail_account_login", base)
    pages = Pages("account page", base, "account/login.html", login_tokens, sessions)
    render, login_page, form_of = pages.render, pages.login_page, pages.form_of
    admin = Admin(store)

    async def index_page(s: Session, message: str = "", error: str = "", status: int = 200) -> web.Response:
        addresses = sorted(a for a, owner in store.system.addresses.items() if owner == s.account)
        # The user name a client logs in with: a real address, not a catch-all ("@domain").
        logins = [a for a in addresses if not a.startswith("@")]
        async with store.use_account(s.account) as acct:
            hooks = webhooks.settings(acct)
        recent = await asyncio.to_thread(webhookqueue.history, store, s.account, 20)
        return render("account/index.html", status=status, account=s.account, csrf=s.csrf, addresses=addresses,
                      hooks=hooks, recent_hooks=recent,
                      suppressions=suppressions.suppressions(store, s.account), message=message, error=error,
                      services=services, address=logins[0] if logins else s.account,
                      profile=profile_link(logins[0]) if profile_url and logins and services and services.imap
                      and services.submission else "",
                      qr=f"{base}profile-qr.svg?{urlencode({'address': logins[0]})}" if logins else "")

    def profile_link(address: str) -> str:
        return f"{profile_url}?{urlencode({'address': address})}"

    async def profile_qr(request: web.Request) -> web.StreamResponse:
        """The profile's address as a QR code (SVG), for a phone's camera: nothing secret in it."""
        s = pages.session(request)
        address = request.query.get("address", "")
        if (address.startswith("@") or store.system.addresses.get(normalize_address(address)) != s.account
                or not profile_url):
            raise web.HTTPNotFound()
        out = io.BytesIO()
        segno.make(profile_link(address), error="m").save(out, kind="svg", scale=4, xmldecl=False)
        return web.Response(body=out.getvalue(), content_type="image/svg+xml",
                            headers={"Cache-Control": "no-store"})

    async def index(request: web.Request) -> web.StreamResponse:
        s = sessions.get(request)
        return await index_page(s) if s is not None else login_page(request)

    async def login_post(request: web.Request) -> web.StreamResponse:
        form = await pages.login_form(request, allow_plaintext)
        if isinstance(form, web.Response):
            return form
        peer = request.remote or ""
        username, password = form.get("username"), form.get("password")
        if username is None or password is None:
            return login_page(request, "Give your email address and password.", 400)
        result = await check_password(store, limiter, username, password, peer, "account-page")
        if isinstance(result, Failure):
            if result.reason is FailureReason.LIMITED:
                return login_page(request, "Too many failed logins: try again later.", 429)
            log.warning("account page: login failed for %r from %s: %s", username, peer, result.reason.value)
            return login_page(request, "Wrong email address or password.", 401)
        pages.logged_in(request, result.username)

    async def password(request: web.Request) -> web.StreamResponse:
        s, form = await form_of(request)
        check = await check_password(store, limiter, s.account, form.get("current", ""), request.remote or "",
                                     "account-page")
        if isinstance(check, Failure):
            return await index_page(s, error="The current password is not right.", status=400)
        try:
            await admin.set_password({"name": s.account, "password": form.get("new", "")})
        except AdminError as e:
            return await index_page(s, error=str(e), status=400)
        sessions.end_account(s.account, keep=s.id)  # other sessions may be someone who knew the old one
        log.info("account page: %s changed the password", s.account)
        return await index_page(s, message="Password changed.")

    async def webhook(request: web.Request) -> web.StreamResponse:
        """Set (or clear, with an empty URL) the incoming or outgoing webhook (docs/webhooks.md)."""
        s, form = await form_of(request)
        what = form.get("what", "")
        try:
            async with store.use_account(s.account) as acct:
                if what == "incoming":
                    await webhooks.set_incoming(acct, form.get("url", "").strip(), form.get("authorization", ""))
                elif what == "outgoing":
                    await webhooks.set_outgoing(acct, form.get("url", "").strip(), form.get("authorization", ""),
                                                form.get("events", ""))
                else:
                    raise AdminError("which webhook: incoming or outgoing")
        except AdminError as e:
            return await index_page(s, error=str(e), status=400)
        log.info("account page: %s set the %s webhook", s.account, what)
        return await index_page(s, message=f"The {what} webhook is set." if form.get("url") else
                                f"The {what} webhook is cleared.")

    async def suppression_add(request: web.Request) -> web.StreamResponse:
        s, form = await form_of(request)
        address = form.get("address", "").strip()
        if "@" not in address.strip("@") or any(c.isspace() for c in address):
            return await index_page(s, error=f"{address!r} is not an email address.", status=400)
        await suppressions.add(store, s.account, address, form.get("reason", "")[:300] or "added on the account page",
                               manual=True)
        raise web.HTTPSeeOther(location=base)

    async def suppression_remove(request: web.Request) -> web.StreamResponse:
        s, form = await form_of(request)
        await suppressions.remove(store, s.account, form.get("address", ""))
        raise web.HTTPSeeOther(location=base)

    # Form bodies are held to the root application's limit (web.server.HttpLimits.max_body_bytes):
    # aiohttp ignores a sub-application's client_max_size.
    app = web.Application()
    app[SESSIONS_KEY] = sessions
    app.router.add_get("/", index)
    app.router.add_get("/login", pages.login_get)
    app.router.add_post("/login", login_post)
    app.router.add_post("/logout", pages.logout)
    app.router.add_post("/password", password)
    app.router.add_post("/suppressions/add", suppression_add)
    app.router.add_post("/suppressions/remove", suppression_remove)
    app.router.add_get("/profile-qr.svg", profile_qr)
    app.router.add_post("/webhook", webhook)
    app.router.add_static("/static", HERE / "static")
    return app


__all__ = ["make_account_app"]
