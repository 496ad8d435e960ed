"""Every page in real headless Chromium (Debian's, driven by Playwright): the account page's login,
overview and password form, the admin page's login and sections, the webapi's documentation;
screenshots are written (to $EVENTMAIL_SCREENSHOTS when set) for a person to look at."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from aiohttp import web

from eventmail.mail import suppressions
from eventmail.mail.admin import Admin
from eventmail.sasl import LoginLimiter
from eventmail.web.account import make_account_app
from eventmail.web.admin import make_admin_app, write_admin_password
from eventmail.web.webapi import make_webapi_app

from .conftest import open_store, run

CHROMIUM = shutil.which("chromium")
pytestmark = [pytest.mark.peers, pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")]
PASSWORD = "chromium test password"
ADMIN_PASSWORD = "chromium admin password"


def test_pages_in_chromium(keyed_dir: tuple[Path, bytes], tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.async_api")
    shots = Path(os.environ.get("EVENTMAIL_SCREENSHOTS", str(tmp_path)))
    shots.mkdir(parents=True, exist_ok=True)

    async def main() -> None:
        store = await open_store(keyed_dir)
        admin = Admin(store)
        await admin.run("domain.add", {"domain": "mail.test"})
        await admin.run("account.add", {"name": "alice", "address": "alice@mail.test", "password": PASSWORD})
        await suppressions.add(store, "alice", "bounced@remote.test", "<b>550 5.1.1 no such user</b>", manual=False)
        password_file = tmp_path / "admin-password"
        write_admin_password(password_file, ADMIN_PASSWORD)
        limiter = LoginLimiter(time.monotonic)
        root = web.Application()
        root.add_subapp("/account", make_account_app(store, limiter=limiter, allow_plaintext=True))
        root.add_subapp("/admin", make_admin_app(store, limiter=limiter, password_file=password_file,
                                                 allow_plaintext=True))
        root.add_subapp("/webapi", make_webapi_app(store, limiter=limiter, allow_plaintext=True))
        runner = web.AppRunner(root)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with playwright.async_playwright() as p:
                browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                  args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
                page = await browser.new_page(viewport={"width": 900, "height": 700})
                dialogs: list[str] = []
                page.on("dialog", lambda d: dialogs.append(d.message))

                await page.goto(base + "/account/")
                await page.screenshot(path=str(shots / "account-login.png"), full_page=True)
                await page.fill("input[name=username]", "alice@mail.test")
                await page.fill("input[name=password]", PASSWORD)
                await page.click("button[type=submit]")
                await page.wait_for_selector("text=Account alice")
                assert await page.inner_text("h1") == "Account alice"
                # The bounce reason is shown as text, not markup.
                assert "<b>550 5.1.1 no such user</b>" in await page.inner_text("table")
                await page.screenshot(path=str(shots / "account.png"), full_page=True)
                await page.fill("input[name=current]", PASSWORD)
                await page.fill("input[name=new]", PASSWORD + " 2")
                await page.click("button:has-text('Change password')")
                await page.wait_for_selector("text=Password changed.")
                await page.screenshot(path=str(shots / "account-password-changed.png"), full_page=True)

                await page.goto(base + "/admin/")
                assert await page.is_visible("input[name=password]")  # the account's session is not the admin's
                await page.screenshot(path=str(shots / "admin-login.png"), full_page=True)
                await page.fill("input[name=password]", ADMIN_PASSWORD)
                await page.click("button[type=submit]")
                await page.wait_for_selector("text=Accounts and addresses")
                await page.fill("form[action='/admin/dkim/add'] input[name=domain]", "mail.test")
                await page.fill("form[action='/admin/dkim/add'] input[name=selector]", "s1")
                await page.click("button:has-text('Add key')")
                await page.wait_for_selector("text=s1._domainkey.mail.test. TXT")
                await page.fill("form[action='/admin/domain/add'] input[name=domain]", "<img src=x onerror=alert(1)>")
                await page.click("button:has-text('Add domain')")
                await page.wait_for_selector(".error")
                await page.screenshot(path=str(shots / "admin.png"), full_page=True)

                await page.goto(base + "/webapi/v0/Send")
                assert "Example request" in await page.content()
                await page.screenshot(path=str(shots / "webapi-send.png"), full_page=True)
                assert dialogs == []  # no script ran from any field
                await browser.close()
        finally:
            await runner.cleanup()
            await store.close()

    run(main())
    assert sorted(p.name for p in shots.glob("*.png")) == sorted(
        ["account-login.png", "account.png", "account-password-changed.png", "admin-login.png", "admin.png",
         "webapi-send.png"])
