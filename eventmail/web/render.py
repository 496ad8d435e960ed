"""Server-rendered pages: the package's Jinja2 templates (autoescaped) and the render and login-page helpers the account and admin pages share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from ..sasl.guard import may_send_password
from .session import LoginTokens

HERE = Path(__file__).resolve().parent


def templates() -> jinja2.Environment:
    """The package's templates, autoescaped (every page is HTML)."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined)


class Pages:
    """One page family mounted at `base` (/account/, /admin/): its templates and login tokens."""

    def __init__(self, base: str, login_template: str, login_tokens: LoginTokens) -> None:
        self.env = templates()
        self.base = base
        self.login_template = login_template
        self.login_tokens = login_tokens

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
