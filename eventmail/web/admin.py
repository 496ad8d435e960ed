"""The admin page (/admin/): its own credential (Argon2id, in a file beside the data), domains, accounts and addresses, DKIM keys with their DNS records, the outbound queue; writes through the mail layer's Admin operations.

The admin credential is not an account's: an account's password never opens this page, and
the admin's session cookie has its own name and path. The credential is a PasswordSet (the
same Argon2id string accounts have) serialized into a file of mode 0600, set with
`write_admin_password` (localserve and quickstart print the password they generate).
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from ..mail import audit
from ..mail.admin import Admin, AdminError
from ..mail.queue import QueueOps
from ..mailauth.dkim import public_key_record, zone_txt
from ..proto import events_pb2 as pb
from ..sasl import Failure, FailureReason, LoginLimiter, make_password_set
from ..store import Store
from .render import HERE, Pages
from .session import LoginTokens, Session, Sessions, check_password

log = logging.getLogger("eventmail.web.admin")

ADMIN_USER = "admin"
# The admin credential's file in the data directory (serve, localserve, quickstart, `admin set-password`).
ADMIN_PASSWORD_FILE = "admin-password"


def write_admin_password(path: Path, password: str) -> None:
    """Store the admin password's Argon2id hash at `path` (0600), replacing any before it."""
    ps = make_password_set(ADMIN_USER, password)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(ps.SerializeToString())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_admin_password(path: Path) -> pb.PasswordSet | None:
    try:
        return pb.PasswordSet.FromString(path.read_bytes())
    except FileNotFoundError:
        return None


def make_admin_app(
    store: Store, *, limiter: LoginLimiter, password_file: Path, base: str = "/admin/", allow_plaintext: bool = False,
) -> web.Application:
    """The admin page as an aiohttp sub-application, to be mounted at `base`. `password_file`
    holds the admin credential (write_admin_password); with no file, nobody can log in."""
    sessions = Sessions("eventmail_admin", base)
    login_tokens = LoginTokens("eventmail_admin_login", base)
    admin = Admin(store)
    queue = QueueOps(store)

    def lookup(name: str) -> pb.PasswordSet | None:
        return _read_admin_password(password_file) if name == ADMIN_USER else None

    pages = Pages("admin page", base, "admin/login.html", login_tokens, sessions)
    render, login_page, form_of = pages.render, pages.login_page, pages.form_of

    async def index_page(s: Session, message: str = "", error: str = "", status: int = 200) -> web.Response:
        system = store.system
        accounts = [(name, sorted(a for a, owner in system.addresses.items() if owner == name))
                    for name in sorted(system.accounts)]
        dkim = [(d, zone_txt(public_key_record(d.algorithm, d.private_key)))
                for _, d in sorted(system.dkim.items())]
        queued = (await queue.list({}))["message"]
        entries = [(datetime.fromtimestamp(e.time_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S"), e)
                   for e in audit.entries(store, 50)]
        return render("admin/index.html", status=status, csrf=s.csrf, domains=sorted(system.domains),
                      accounts=accounts, dkim=dkim, queue=queued, audit=entries, message=message, error=error)

    async def index(request: web.Request) -> web.StreamResponse:
        s = sessions.get(request)
        return await index_page(s) if s is not None else login_page(request)

    async def login_post(request: web.Request) -> web.StreamResponse:
        form = await pages.login_form(request, allow_plaintext)
        if isinstance(form, web.Response):
            return form
        peer = request.remote or ""
        password = form.get("password")
        if password is None:
            return login_page(request, "Give the admin password.", 400)
        result = await check_password(store, limiter, ADMIN_USER, password, peer, "admin-page", lookup=lookup)
        if isinstance(result, Failure):
            if result.reason is FailureReason.LIMITED:
                return login_page(request, "Too many failed logins: try again later.", 429)
            log.warning("admin page: login failed from %s: %s", peer, result.reason.value)
            return login_page(request, "Wrong password.", 401)
        pages.logged_in(request, ADMIN_USER)

    def operation(command: str, fields: tuple[str, ...]) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            s, form = await form_of(request)
            args = {f: form.get(f, "").strip() if f != "password" else form.get(f, "") for f in fields}
            remote = request.remote or ""
            try:
                result = await admin.run(command, args)
            except AdminError as e:
                await audit.record(store, s.account, remote, command, args, f"refused: {e}")
                return await index_page(s, error=str(e), status=400)
            # The edit itself is an event in the system stream (mail.admin); this one says who.
            await audit.record(store, s.account, remote, command, args, "ok")
            log.info("admin page: %s by %s from %s: %s", command, s.account, request.remote,
                     {k: v for k, v in args.items() if k != "password"})
            return await index_page(s, message=str(result.get("message", "done")))
        return handler

    # Form bodies are held to the root application's limit (web.server.HttpLimits.max_body_bytes):
    # aiohttp ignores a sub-application's client_max_size.
    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/login", pages.login_get)
    app.router.add_post("/login", login_post)
    app.router.add_post("/logout", pages.logout)
    app.router.add_post("/domain/add", operation("domain.add", ("domain",)))
    app.router.add_post("/account/add", operation("account.add", ("name", "address", "password")))
    app.router.add_post("/address/add", operation("account.add-address", ("name", "address")))
    app.router.add_post("/address/remove", operation("account.remove-address", ("name", "address")))
    app.router.add_post("/dkim/add", operation("dkim.add", ("domain", "selector", "algorithm")))
    app.router.add_static("/static", HERE / "static")
    return app


async def write_admin_password_async(path: Path, password: str) -> None:
    await asyncio.to_thread(write_admin_password, path, password)


__all__ = ["ADMIN_PASSWORD_FILE", "ADMIN_USER", "make_admin_app", "write_admin_password", "write_admin_password_async"]
