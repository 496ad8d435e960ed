"""The account page over a real loopback socket with a cookie-keeping HTTP client: login, session
cookie flags, session fixation, CSRF refusals, password change, and fields shown escaped (XSS)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
from aiohttp import web

from eventmail.mail import suppressions
from eventmail.mail.admin import Admin
from eventmail.sasl import LoginLimiter
from eventmail.store import QUEUE, Store
from eventmail.web.account import make_account_app

from .conftest import open_store, run

PASSWORD = "account page password"
NEW_PASSWORD = "a brand new password"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@asynccontextmanager
async def served(store: Store) -> AsyncIterator[str]:
    root = web.Application()
    root.add_subapp("/account", make_account_app(store, limiter=LoginLimiter(time.monotonic), allow_plaintext=True))
    runner = web.AppRunner(root)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/account/"
    finally:
        await runner.cleanup()


async def setup(keyed: tuple[Path, bytes]) -> Store:
    store = await open_store(keyed)
    admin = Admin(store)
    await admin.run("domain.add", {"domain": "mail.test"})
    await admin.run("account.add", {"name": "alice", "address": "alice@mail.test", "password": PASSWORD})
    return store


def client() -> aiohttp.ClientSession:
    # unsafe=True: keep cookies for an IP-address host (the loopback server).
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def csrf_of(s: aiohttp.ClientSession, url: str) -> str:
    async with s.get(url) as r:
        assert r.status == 200
        m = CSRF.search(await r.text())
        assert m is not None
        return m.group(1)


async def login(s: aiohttp.ClientSession, base: str, password: str = PASSWORD) -> aiohttp.ClientResponse:
    token = await csrf_of(s, base + "login")
    async with s.post(base + "login", data={"csrf": token, "username": "alice@mail.test", "password": password},
                      allow_redirects=False) as r:
        await r.read()
        return r


def test_login_cookie_fixation_and_logout(keyed_dir: tuple[Path, bytes]) -> None:
    async def main() -> None:
        store = await setup(keyed_dir)
        async with served(store) as base, client() as s:
            async with s.get(base, allow_redirects=False) as r:
                assert "Log in to your account" in await r.text()
            r = await login(s, base, "wrong password!")
            assert r.status == 401
            # An attacker plants a session id before the login (fixation).
            s.cookie_jar.update_cookies({"eventmail_account": "planted-by-attacker"})
            r = await login(s, base)
            assert r.status == 303
            header = r.headers.getall("Set-Cookie")
            session_cookie = next(h for h in header if h.startswith("eventmail_account="))
            assert "HttpOnly" in session_cookie and "SameSite=Strict" in session_cookie
            assert "planted-by-attacker" not in session_cookie
            async with s.get(base) as r:
                page = await r.text()
                assert "Account alice" in page and "alice@mail.test" in page
            async with client() as attacker:
                attacker.cookie_jar.update_cookies({"eventmail_account": "planted-by-attacker"})
                async with attacker.get(base) as r:
                    assert "Log in to your account" in await r.text()
            token = await csrf_of(s, base)
            async with s.post(base + "logout", data={"csrf": token}) as r:
                assert "Log in to your account" in await r.text()
            async with s.get(base) as r:
                assert "Log in to your account" in await r.text()
        await store.close()
    run(main())


def test_csrf_refused(keyed_dir: tuple[Path, bytes]) -> None:
    async def main() -> None:
        store = await setup(keyed_dir)
        async with served(store) as base, client() as s:
            # The login form without its token (a cross-site form cannot read the cookie).
            async with s.post(base + "login", data={"username": "alice", "password": PASSWORD}) as r:
                assert r.status == 403
            assert (await login(s, base)).status == 303
            for path, data in [("password", {"current": PASSWORD, "new": NEW_PASSWORD}),
                               ("suppressions/add", {"address": "x@remote.test"}),
                               ("logout", {})]:
                async with s.post(base + path, data=data) as r:
                    assert r.status == 403, path
                async with s.post(base + path, data={**data, "csrf": "wrong"}) as r:
                    assert r.status == 403, path
            assert list(store.stream(QUEUE).events()) == []
            async with s.get(base) as r:  # still logged in: the refused logout did nothing
                assert "Account alice" in await r.text()
        await store.close()
    run(main())


def test_password_change_and_escaping(keyed_dir: tuple[Path, bytes]) -> None:
    async def main() -> None:
        store = await setup(keyed_dir)
        # A reason that a webapi client chose, shown on the page: it must come out as text.
        await suppressions.add(store, "alice", "bob@remote.test", '<script>alert("x")</script><img src=x onerror=1>',
                               manual=False)
        async with served(store) as base, client() as s:
            assert (await login(s, base)).status == 303
            async with s.get(base) as r:
                page = await r.text()
                assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=1&gt;" in page
                assert "<script>" not in page and "<img" not in page
            token = await csrf_of(s, base)
            async with s.post(base + "password", data={"csrf": token, "current": "not it at all",
                                                       "new": NEW_PASSWORD}) as r:
                assert r.status == 400 and "current password is not right" in await r.text()
            async with s.post(base + "password", data={"csrf": token, "current": PASSWORD, "new": NEW_PASSWORD}) as r:
                assert r.status == 200 and "Password changed." in await r.text()
            async with s.post(base + "suppressions/remove", data={"csrf": token, "address": "bob@remote.test"}) as r:
                assert r.status == 200
            assert suppressions.suppressions(store, "alice") == []
        async with served(store) as base, client() as s:
            assert (await login(s, base, PASSWORD)).status == 401
            assert (await login(s, base, NEW_PASSWORD)).status == 303
        await store.close()
    run(main())
