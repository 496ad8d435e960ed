"""Server-rendered pages: the package's Jinja2 templates (autoescaped), and the rendering, login page and session handling the account and admin pages share."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NoReturn

import jinja2
from aiohttp import web

from ..sasl.guard import may_send_password
from .session import LoginTokens, Session, Sessions, csrf_ok

log = logging.getLogger("eventmail.web")

HERE = Path(__file__).resolve().parent


def templates() -> jinja2.Environment:
    """The package's templates, autoescaped (every page is HTML)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined)


class Pages:
    """One page family mounted at `base` (/account/, /admin/), named `name` in logs: its templates,
    login tokens and sessions."""

    def __init__(self, name: str, base: str, login_template: str, login_tokens: LoginTokens,
                 sessions: Sessions) -> None:
        self.env = templates()
        self.name = name
        self.base = base
        self.login_template = login_template
        self.login_tokens = login_tokens
        self.sessions = sessions

    def render(self, name: str, status: int = 200, **values: Any) -> web.Response:
        page = self.env.get_template(name).render(
            {"base": self.base, "static": self.base + "static", "message": "", "error": "", **values})
        # Pages show account data: never kept by a browser or a proxy.
        return web.Response(text=page, status=status, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def login_form(self, request: web.Request, allow_plaintext: bool) -> dict[str, str] | web.Response:
        """A login POST's text fields, or the page refusing it: the double-submit token must match
        (403 raised otherwise) and a password travels only over TLS or, where allowed, loopback."""
        form = await request.post()
        if not self.login_tokens.ok(request, form.get("csrf")):
            raise web.HTTPForbidden(text="403 - missing or wrong CSRF token\n")
        if not may_send_password(tls=request.secure, peer=request.remote or "", allow_plaintext=allow_plaintext):
            return self.login_page(request, "Log in over HTTPS.", 403)
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def login_page(self, request: web.Request, error: str = "", status: int = 200) -> web.Response:
        """The login form with a fresh double-submit token (session.LoginTokens)."""
        token = self.login_tokens.value(request)
        response = self.render(self.login_template, status=status, csrf=token, error=error)
        self.login_tokens.set(request, response, token)
        return response

    def session(self, request: web.Request) -> Session:
        """The request's session, or the redirect to the login page raised."""
        s = self.sessions.get(request)
        if s is None:
            raise web.HTTPSeeOther(location=self.base + "login")
        return s

    async def form_of(self, request: web.Request) -> tuple[Session, dict[str, str]]:
        """The session and form of a state-changing request, or the refusal raised: the form must
        carry the session's CSRF token."""
        s = self.session(request)
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if not csrf_ok(s.csrf, form.get("csrf")):
            log.warning("%s: %s sent a request without a valid CSRF token from %s", self.name, s.account,
                        request.remote)
            raise web.HTTPForbidden(text="403 - missing or wrong CSRF token\n")
        return s, form

    async def login_get(self, request: web.Request) -> web.StreamResponse:
        if self.sessions.get(request) is not None:
            raise web.HTTPSeeOther(location=self.base)
        return self.login_page(request)

    def logged_in(self, request: web.Request, account: str) -> NoReturn:
        """Start `account`'s session after a good login and send the browser to the page."""
        response = web.HTTPSeeOther(location=self.base)
        self.sessions.start(response, request, account)
        response.del_cookie(self.login_tokens.cookie, path=self.base)
        log.info("%s: %s logged in from %s", self.name, account, request.remote or "")
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        await self.form_of(request)
        response = web.HTTPSeeOther(location=self.base + "login")
        self.sessions.end(request, response)
        raise response
