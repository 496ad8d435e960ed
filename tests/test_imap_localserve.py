"""`eventmail localserve` (what `make run` starts) serves IMAP: imaplib reads what submission delivered."""

from __future__ import annotations

import imaplib
import smtplib
import ssl
import time
from pathlib import Path

from tests.mailserver import start_localserve


def test_localserve_serves_imap(tmp_path: Path) -> None:
    ls = start_localserve(tmp_path / "ls", "--password", "pw-local-2")
    ports, text = ls.ports, "".join(ls.lines)
    try:
        assert f"IMAP (STARTTLS)          127.0.0.1 port {ports['imap']}" in text
        assert f"IMAP (TLS)               127.0.0.1 port {ports['imaps']}" in text
        with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=30) as s:
            s.login("you@localhost", "pw-local-2")  # plaintext on loopback: localserve allows it
            s.sendmail("you@localhost", ["someone@example.org"],
                       b"From: you@localhost\r\nTo: someone@example.org\r\nSubject: via localserve\r\n\r\nhi\r\n")
        # plaintext IMAP login on loopback, as a local mail client would
        m = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=30)
        m.login("you@localhost", "pw-local-2")
        deadline = time.monotonic() + 20
        found: list[bytes] = []
        while time.monotonic() < deadline:
            m.select("INBOX")
            typ, data = m.search(None, "SUBJECT", '"via localserve"')
            found = data[0].split()
            if found:
                break
            time.sleep(0.2)
        assert found
        typ, data = m.fetch(found[0], "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert b"Subject: via localserve" in data[0][1]  # type: ignore[index]
        assert m.select("Sent")[1] != [b"0"]  # the submission's Sent copy
        m.logout()
        # and over implicit TLS with the instance's own certificate
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ls" / "tls" / "cert.pem"))
        s2 = imaplib.IMAP4_SSL("localhost", ports["imaps"], ssl_context=ctx, timeout=30)
        s2.login("you", "pw-local-2")
        assert s2.select("INBOX")[0] == "OK"
        s2.logout()
    finally:
        ls.stop()


def test_localserve_as_a_test_bench(tmp_path: Path) -> None:
    """The password survives a restart, any @localhost recipient is accepted, and what is sent is
    DKIM-signed (issue 18)."""
    ls = start_localserve(tmp_path / "ls")
    first = ls.value_after("password: ")
    ls.stop()
    ls = start_localserve(tmp_path / "ls")
    ports, second = ls.ports, ls.value_after("password: ")
    try:
        assert second == first
        m = imaplib.IMAP4("127.0.0.1", ports["imap"], timeout=30)
        m.login("you", first)  # a client's saved login still works after the restart
        with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=30) as s:
            s.login("you@localhost", first)
            s.sendmail("you@localhost", ["anyone@localhost"],
                       b"From: you@localhost\r\nTo: anyone@localhost\r\nSubject: to anyone\r\n\r\nhi\r\n")
        deadline = time.monotonic() + 20
        found: list[bytes] = []
        while time.monotonic() < deadline and not found:
            m.select("INBOX")
            found = m.search(None, "SUBJECT", '"to anyone"')[1][0].split()
            time.sleep(0.1)
        assert found
        typ, data = m.fetch(found[0], "(BODY.PEEK[HEADER])")
        header = data[0][1]  # type: ignore[index]
        assert b"DKIM-Signature:" in header and b"d=localhost" in header and b"s=localserve" in header, header
        m.logout()
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as s:
            s.ehlo("client.example")
            s.mail("someone@example.org")
            assert s.rcpt("whoever@localhost")[0] == 250  # any local recipient
    finally:
        ls.stop()


def test_localserve_serves_the_web_pages(tmp_path: Path) -> None:
    """localserve's HTTP port: the account page takes the account's password, the admin page the
    admin password it printed, /metrics is served there, and autoconfig answers for localhost."""
    import asyncio

    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    from tests.test_web_admin import login

    ls = start_localserve(tmp_path / "ls", "--password", "pw-local-3")
    ports = ls.ports
    try:
        admin_password = ls.value_after("admin password ")
        base = f"http://127.0.0.1:{ports['http']}/"

        async def main() -> None:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
                assert await login(s, base + "account/", username="you@localhost", password="pw-local-3") == 303
                async with s.get(base + "account/") as r:
                    page = await r.text()
                    assert "Account you" in page
                    # The client settings name the login address, never the catch-all.
                    assert "<td>you@localhost</td>" in page and "<td>@localhost</td>" not in page
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
                assert await login(s, base + "admin/", password="wrong password") == 401
                assert await login(s, base + "admin/", password=admin_password) == 303
                async with s.get(base + "admin/") as r:
                    assert r.status == 200 and "localserve" in await r.text()  # its DKIM selector
                async with s.get(base + "metrics") as r:
                    names = {f.name for f in text_string_to_metric_families(await r.text())}
                    assert "eventmail_queue_messages" in names
                async with s.get(base + ".well-known/autoconfig/mail/config-v1.1.xml?emailaddress=you%40localhost") as r:
                    assert r.status == 200 and f"<port>{ports['imaps']}</port>" in await r.text()
        asyncio.run(main())
    finally:
        ls.stop()
