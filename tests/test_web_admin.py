"""The admin page over a real loopback socket beside the account page: its own credential (an
account's password and an account's session are refused), domains, accounts and DKIM keys added
through it as system events, the DNS record shown, CSRF refused, rejected input shown escaped."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp import web

from eventmail.mail.admin import Admin
from eventmail.sasl import LoginLimiter
from eventmail.store import SYSTEM, Store
from eventmail.web.account import make_account_app
from eventmail.web.admin import make_admin_app, write_admin_password

from .conftest import open_store, run

ADMIN_PASSWORD = "the admin's own password"
PASSWORD = "account page password"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@asynccontextmanager
async def served(store: Store, password_file: Path) -> AsyncIterator[str]:
    limiter = LoginLimiter(time.monotonic)
    root = web.Application()
    root.add_subapp("/account", make_account_app(store, limiter=limiter, allow_plaintext=True))
    root.add_subapp("/admin", make_admin_app(store, limiter=limiter, password_file=password_file,
                                             allow_plaintext=True))
    runner = web.AppRunner(root)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def token(s: aiohttp.ClientSession, url: str) -> str:
    async with s.get(url) as r:
        m = CSRF.search(await r.text())
        assert m is not None, url
        return m.group(1)


async def login(s: aiohttp.ClientSession, url: str, **fields: str) -> int:
    t = await token(s, url + "login")
    async with s.post(url + "login", data={"csrf": t, **fields}, allow_redirects=False) as r:
        return r.status


def test_admin_page(keyed_dir: tuple[Path, bytes], tmp_path: Path) -> None:
    async def main() -> None:
        store = await open_store(keyed_dir)
        await Admin(store).run("domain.add", {"domain": "mail.test"})
        await Admin(store).run("account.add", {"name": "alice", "address": "alice@mail.test", "password": PASSWORD})
        password_file = tmp_path / "admin-password"
        write_admin_password(password_file, ADMIN_PASSWORD)
        assert password_file.stat().st_mode & 0o777 == 0o600
        assert ADMIN_PASSWORD.encode() not in password_file.read_bytes()
        async with served(store, password_file) as root:
            admin = root + "admin/"
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as user:
                # An account's password does not open the admin page, nor does its session.
                assert await login(user, admin, password=PASSWORD) == 401
                assert await login(user, root + "account/", username="alice@mail.test", password=PASSWORD) == 303
                async with user.get(admin) as r:
                    page = await r.text()
                    assert "Admin password" in page and "Accounts and addresses" not in page
                async with user.post(admin + "domain/add", data={"domain": "evil.test"}, allow_redirects=False) as r:
                    assert r.status == 303 and r.headers["Location"] == "/admin/login"
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
                assert await login(s, admin, password=ADMIN_PASSWORD) == 303
                t = await token(s, admin)
                async with s.post(admin + "domain/add", data={"domain": "other.test"}) as r:
                    assert r.status == 403
                async with s.post(admin + "domain/add", data={"csrf": t, "domain": "other.test"}) as r:
                    assert r.status == 200 and "domain other.test added" in await r.text()
                async with s.post(admin + "account/add", data={"csrf": t, "name": "bob", "address": "bob@other.test",
                                                               "password": "bob's password"}) as r:
                    assert r.status == 200 and "account bob created" in await r.text()
                async with s.post(admin + "dkim/add", data={"csrf": t, "domain": "other.test", "selector": "s1",
                                                            "algorithm": "ed25519-sha256"}) as r:
                    page = await r.text()
                    assert r.status == 200 and "s1._domainkey.other.test. TXT" in page and "k=ed25519" in page
                async with s.post(admin + "domain/add", data={"csrf": t, "domain": "<script>alert(1)</script>"}) as r:
                    page = await r.text()
                    assert r.status == 400 and "&lt;script&gt;" in page and "<script>" not in page
                    # The audit view: who did what, refusals included, no password.
                    assert "account.add" in page and "name=bob" in page and "bob&#39;s password" not in page
        assert "other.test" in store.system.domains and store.system.account_for("bob@other.test") == "bob"
        kinds = [c.event.WhichOneof("kind") for c in store.stream(SYSTEM).events()]
        assert "dkim_selector" in kinds and "domain_added" in kinds
        audits = [c.event.admin_audit for c in store.stream(SYSTEM).events() if c.event.HasField("admin_audit")]
        assert [(a.actor, a.command, a.result[:7]) for a in audits] == [
            ("admin", "domain.add", "ok"), ("admin", "account.add", "ok"), ("admin", "dkim.add", "ok"),
            ("admin", "domain.add", "refused")]
        assert all(a.remote_ip == "127.0.0.1" for a in audits)
        assert all("password" not in a.args_json for a in audits)
        await store.close()
    run(main())
