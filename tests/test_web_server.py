"""The web listeners of a real `eventmail serve`: Thunderbird autoconfig and Outlook autodiscover for
a configured domain, the MTA-STS policy over HTTPS only, /metrics on its own listener (parsed by
prometheus-client's parser), security headers, the webapi's Send delivering, and the socket limits
(connections per network, a request head sent too slowly)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventmail.config import MtaStsSettings
from eventmail.web.clientconfig import autodiscover_address, mta_sts_id, mta_sts_policy

from .mailserver import MailServer, insecure_tls

PASSWORD = "web server test password"
KINDS = ("smtp", "submissions", "imaps", "http", "https", "metrics")
OUTLOOK_REQUEST = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
    "<Request><EMailAddress>{address}</EMailAddress>"
    "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
    "</AcceptableResponseSchema></Request></Autodiscover>"
)
AUTODISCOVER_NS = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> MailServer:
    s = MailServer(tmp_path_factory.mktemp("web"), kinds=KINDS,
                   extra_config='[limits]\nconnections_per_ip = 8\nrequest_head_timeout = 1\n'
                                '[mta_sts]\nmode = "testing"\nextra_mx = ["backup.mail.test"]\n')
    s.init()
    s.cli("domain", "add", "mail.test")
    s.add_account("alice", "alice@mail.test", PASSWORD)
    s.start()
    yield s
    s.stop()


def get(url: str, *, host: str | None = None, method: str = "GET", data: bytes | None = None,
        auth: tuple[str, str] | None = None, form: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    async def go() -> tuple[int, bytes, dict[str, str]]:
        headers = {"Host": host} if host else {}
        if auth is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        async with aiohttp.ClientSession() as session, session.request(
                method, url, headers=headers, data=form if form is not None else data,
                ssl=insecure_tls(), allow_redirects=False) as r:
            return r.status, await r.read(), dict(r.headers)
    return asyncio.run(go())


def test_thunderbird_autoconfig(server: MailServer) -> None:
    http = f"http://127.0.0.1:{server.ports['http']}"
    for url, host in ((f"{http}/mail/config-v1.1.xml?emailaddress=alice%40mail.test", "autoconfig.mail.test"),
                      (f"{http}/.well-known/autoconfig/mail/config-v1.1.xml", "mail.test")):
        status, body, headers = get(url, host=host)
        assert status == 200, body
        assert headers["Content-Type"].startswith("text/xml")
        provider = ET.fromstring(body).find("emailProvider")
        assert provider is not None and provider.get("id") == "mail.test"
        imap = provider.find("incomingServer[@type='imap']")
        smtp = provider.find("outgoingServer[@type='smtp']")
        assert imap is not None and smtp is not None
        # The ports of the listeners the server runs, implicit TLS (RFC 8314).
        assert (imap.findtext("hostname"), imap.findtext("port"), imap.findtext("socketType")) == (
            "mail.test", str(server.ports["imaps"]), "SSL")
        assert (smtp.findtext("port"), smtp.findtext("socketType")) == (str(server.ports["submissions"]), "SSL")
        assert imap.findtext("username") == "%EMAILADDRESS%"
    status, _, _ = get(f"{http}/mail/config-v1.1.xml?emailaddress=bob%40elsewhere.test", host="autoconfig.elsewhere.test")
    assert status == 404  # not a domain of this server


def test_outlook_autodiscover(server: MailServer) -> None:
    url = f"https://127.0.0.1:{server.ports['https']}/Autodiscover/Autodiscover.xml"
    status, body, _ = get(url, method="POST", data=OUTLOOK_REQUEST.format(address="alice@mail.test").encode())
    assert status == 200, body
    account = ET.fromstring(body).find(f"{AUTODISCOVER_NS}Response/{AUTODISCOVER_NS}Account")
    assert account is not None
    protocols = {p.findtext(f"{AUTODISCOVER_NS}Type"): p for p in account.findall(f"{AUTODISCOVER_NS}Protocol")}
    assert set(protocols) == {"IMAP", "SMTP"}
    assert protocols["IMAP"].findtext(f"{AUTODISCOVER_NS}Port") == str(server.ports["imaps"])
    assert protocols["SMTP"].findtext(f"{AUTODISCOVER_NS}LoginName") == "alice@mail.test"
    status, _, _ = get(url, method="POST", data=OUTLOOK_REQUEST.format(address="x@elsewhere.test").encode())
    assert status == 404
    # An entity declaration is refused before any parsing (no entity expansion, no external entity).
    bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx">]><a>&x;</a>'
    status, _, _ = get(url, method="POST", data=bomb)
    assert status == 400
    assert server.proc is not None and server.proc.poll() is None


def test_mta_sts_policy_over_https_only(server: MailServer) -> None:
    path = "/.well-known/mta-sts.txt"
    status, body, headers = get(f"https://127.0.0.1:{server.ports['https']}{path}", host="mta-sts.mail.test")
    assert status == 200, body
    text = body.decode()
    assert text.split("\r\n")[:4] == ["version: STSv1", "mode: testing", "mx: mail.test", "mx: backup.mail.test"]
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    # RFC 8461 §3.3: HTTPS only; and only for a domain of this server.
    assert get(f"http://127.0.0.1:{server.ports['http']}{path}", host="mta-sts.mail.test")[0] == 404
    assert get(f"https://127.0.0.1:{server.ports['https']}{path}", host="mta-sts.elsewhere.test")[0] == 404
    # The id of the TXT record follows the policy.
    other = mta_sts_policy("mail.test", MtaStsSettings(mode="enforce"))
    assert mta_sts_id(text) != mta_sts_id(other)


def test_security_headers(server: MailServer) -> None:
    status, _, headers = get(f"http://127.0.0.1:{server.ports['http']}/account/")
    assert status == 200
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in headers  # RFC 6797 §7.2: not over plain HTTP
    status, _, headers = get(f"https://127.0.0.1:{server.ports['https']}/no-such-page")
    assert status == 404 and headers["X-Frame-Options"] == "DENY"  # aiohttp's own errors too
    assert "Strict-Transport-Security" in headers


def test_metrics_on_their_own_listener(server: MailServer) -> None:
    status, body, headers = get(f"http://127.0.0.1:{server.ports['metrics']}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert "eventmail_queue_messages" in names
    # Not on the public listeners.
    assert get(f"http://127.0.0.1:{server.ports['http']}/metrics")[0] == 404
    assert get(f"https://127.0.0.1:{server.ports['https']}/metrics")[0] == 404
    assert get(f"http://127.0.0.1:{server.ports['metrics']}/account/")[0] == 404


def test_webapi_send_delivers_and_the_webhook_fires(server: MailServer) -> None:
    from .test_webhooks import Receiver

    receiver = Receiver().start()
    server.cli("account", "webhook", "alice", "incoming", receiver.url("/incoming"))
    before = len(server.messages("alice"))
    request = {"To": [{"Address": "alice@mail.test"}], "Subject": "through the webapi", "Text": "hello from Send"}
    status, body, _ = get(f"https://127.0.0.1:{server.ports['https']}/webapi/v0/Send", method="POST",
                          form={"request": json.dumps(request)}, auth=("alice@mail.test", PASSWORD))
    assert status == 200, body
    assert json.loads(body)["MessageID"]
    msgs = server.wait_for("alice", before + 1)
    assert any(b"through the webapi" in m for m in msgs[before:])
    try:
        hook = receiver.wait("/incoming", b"through the webapi")  # Mox's webhook.Incoming
        assert hook.json()["Subject"] == "through the webapi"
    finally:
        receiver.stop()
        server.cli("account", "webhook", "alice", "incoming", "")


def test_webapi_takes_a_send_over_the_pages_body_limit(server: MailServer) -> None:
    """The webapi's request bodies go up to webapi.MAX_REQUEST_BYTES (a Send with attachments), while
    every other path keeps the 64 KiB of HttpLimits.max_body_bytes. aiohttp applies only the root
    application's client_max_size, so a Send of 200 KB was refused with 413 before."""
    text = "a long line of text for the webapi.\n" * 6000  # 210 KB, about 280 KB form-encoded
    request = {"To": [{"Address": "alice@mail.test"}], "Subject": "a big webapi send", "Text": text}
    before = len(server.messages("alice"))
    status, body, _ = get(f"https://127.0.0.1:{server.ports['https']}/webapi/v0/Send", method="POST",
                          form={"request": json.dumps(request)}, auth=("alice@mail.test", PASSWORD))
    assert status == 200, body[:200]
    msgs = server.wait_for("alice", before + 1)
    assert any(b"a big webapi send" in m and len(m) > 200_000 for m in msgs[before:])
    status, _, _ = get(f"https://127.0.0.1:{server.ports['https']}/account/login", method="POST",
                       form={"username": "alice@mail.test", "password": "x" * 100_000})
    assert status == 413


def test_a_request_sent_with_the_tls_finished_is_served_whole(server: MailServer) -> None:
    """A TLS 1.3 client may send its whole request, body and all, right behind its Finished; those
    bytes can reach the web listener before its TLS start has returned. Over 32 KiB of them closed
    the connection (a webapi Send over HTTPS failed now and then); now the socket waits. The client
    here puts its Finished and a 100 KB request into one write, so they always come together."""
    import urllib.parse

    form = urllib.parse.urlencode({"request": json.dumps(
        {"To": [{"Address": "alice@mail.test"}], "Subject": "sent behind the finished", "Text": "z" * 100_000})})
    auth = base64.b64encode(f"alice@mail.test:{PASSWORD}".encode()).decode()
    request = (f"POST /webapi/v0/Send HTTP/1.1\r\nHost: mail.test\r\nAuthorization: Basic {auth}\r\n"
               f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(form)}\r\n"
               f"Connection: close\r\n\r\n{form}").encode()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = insecure_tls().wrap_bio(incoming, outgoing, server_hostname="mail.test")
    with socket.create_connection(("127.0.0.1", server.ports["https"]), timeout=30) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536) or b"")
        assert tls.version() == "TLSv1.3"
        tls.write(request)
        sock.sendall(outgoing.read())  # the Finished and the whole request in one write
        answer = b""
        while data := sock.recv(65536):
            incoming.write(data)
            with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                while chunk := tls.read(65536):
                    answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"MessageID" in answer


def test_connections_per_network_and_slow_heads(server: MailServer) -> None:
    port = server.ports["http"]
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    try:
        extra = socket.create_connection(("127.0.0.1", port))
        extra.settimeout(10)
        assert extra.recv(100) == b""  # over the per-network cap: closed at once
        extra.close()
    finally:
        for s in held:
            s.close()
    # A head that never completes is cut off (request_head_timeout = 1 here), though bytes arrive.
    slow = socket.create_connection(("127.0.0.1", port))
    slow.settimeout(15)
    slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    closed = False
    while time.monotonic() - started < 10:
        try:
            slow.sendall(b"X-Slow: 1\r\n")
            if slow.recv(100, socket.MSG_DONTWAIT) == b"":
                closed = True
                break
        except BlockingIOError:
            pass
        except OSError:
            closed = True
            break
        time.sleep(0.2)
    slow.close()
    assert closed
    assert get(f"http://127.0.0.1:{port}/account/")[0] == 200  # and the server serves on


def test_tls_handshake_to_https_presents_the_server_certificate(server: MailServer) -> None:
    ctx = insecure_tls()
    with socket.create_connection(("127.0.0.1", server.ports["https"])) as raw, \
            ctx.wrap_socket(raw, server_hostname="mail.test") as tls:
        assert isinstance(tls, ssl.SSLSocket) and tls.getpeercert(binary_form=True)


def test_autodiscover_parser_limits() -> None:
    with pytest.raises(ValueError):
        autodiscover_address(b"<a>" + b"x" * 20000 + b"</a>")
    with pytest.raises(ValueError):
        autodiscover_address(b"not xml")
    assert autodiscover_address(OUTLOOK_REQUEST.format(address=" bob@mail.test ").encode()) == "bob@mail.test"



def test_admin_password_set_while_running_opens_the_admin_page(server: MailServer) -> None:
    from .test_web_admin import login

    base = f"https://127.0.0.1:{server.ports['https']}/admin/"

    async def attempt(password: str) -> int:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                         connector=aiohttp.TCPConnector(ssl=insecure_tls())) as s:
            return await login(s, base, password=password)

    assert asyncio.run(attempt("admin password one")) == 401  # no admin password yet: nobody gets in
    server.cli("admin", "set-password", "--password-stdin", stdin="admin password one\n")
    assert asyncio.run(attempt("admin password one")) == 303  # taken without a restart
    assert asyncio.run(attempt(PASSWORD)) == 401  # an account's password is not the admin's


def test_mail_client_setup_on_the_account_page_and_the_apple_profile(server: MailServer) -> None:
    import io
    import plistlib

    import segno

    from .test_web_admin import login

    https = f"https://127.0.0.1:{server.ports['https']}"
    status, body, headers = get(f"{https}/profile.mobileconfig?address=alice%40mail.test")
    assert status == 200 and headers["Content-Type"].startswith("application/x-apple-aspen-config")
    profile = plistlib.loads(body)
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed" and mail["EmailAddress"] == "alice@mail.test"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"]) == ("mail.test", server.ports["imaps"])
    assert mail["OutgoingMailServerPortNumber"] == server.ports["submissions"]
    assert get(f"{https}/profile.mobileconfig?address=x%40elsewhere.test")[0] == 404

    async def page() -> tuple[str, bytes]:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                         connector=aiohttp.TCPConnector(ssl=insecure_tls())) as s:
            assert await login(s, https + "/account/", username="alice@mail.test", password=PASSWORD) == 303
            async with s.get(https + "/account/") as r:
                html = await r.text()
            async with s.get(https + "/account/profile-qr.svg?address=alice%40mail.test") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("image/svg+xml")
                svg = await r.read()
            async with s.get(https + "/account/profile-qr.svg?address=bob%40mail.test") as r:
                assert r.status == 404  # not one of alice's addresses
            return html, svg

    html, svg = asyncio.run(page())
    assert "Set up a mail client" in html and f"<td>{server.ports['imaps']}</td>" in html
    # The QR code holds the profile's public address (https://HOST:PORT/profile.mobileconfig?address=...).
    expected = io.BytesIO()
    segno.make(f"https://mail.test:{server.ports['https']}/profile.mobileconfig?address=alice%40mail.test",
               error="m").save(expected, kind="svg", scale=4, xmldecl=False)
    assert svg == expected.getvalue()


def test_webhook_settings_on_the_account_page(server: MailServer) -> None:
    from .test_web_admin import login, token

    https = f"https://127.0.0.1:{server.ports['https']}/account/"

    async def main() -> tuple[int, str, int, str, str]:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                         connector=aiohttp.TCPConnector(ssl=insecure_tls())) as s:
            assert await login(s, https, username="alice@mail.test", password=PASSWORD) == 303
            t = await token(s, https)
            async with s.post(https + "webhook", data={"csrf": t, "what": "outgoing", "url": "ftp://hooks.example/x"}) as r:
                bad = (r.status, await r.text())
            async with s.post(https + "webhook", data={"csrf": t, "what": "outgoing", "url": "https://hooks.example/out",
                                                       "authorization": "Bearer s3cret", "events": "delivered,failed"}) as r:
                good = (r.status, await r.text())
            async with s.post(https + "webhook", data={"what": "incoming", "url": "https://evil.example/"}) as r:
                forged = r.status  # no CSRF token: refused
            return bad[0], bad[1], good[0], good[1], str(forged)

    bad_status, bad_page, status, page, forged = asyncio.run(main())
    assert bad_status == 400 and "webhook URL" in bad_page
    assert status == 200 and "https://hooks.example/out (delivered, failed)" in page
    assert "Bearer s3cret" not in page  # the Authorization value is never shown back
    assert forged == "403"
    shown = server.cli("account", "webhook", "alice", "show")
    assert "https://hooks.example/out" in shown and "evil.example" not in shown
    server.cli("account", "webhook", "alice", "outgoing", "")


def test_behind_a_trusted_proxy(tmp_path: Path) -> None:
    """trusted_proxies: the forwarded client address and scheme count (HTTPS-only pages work, the
    login limiter and the log see the client); from an untrusted peer the headers are ignored."""
    s = MailServer(tmp_path, kinds=("smtp", "imaps", "submissions", "http"), settings='trusted_proxies = ["127.0.0.1"]\n',
                   extra_config='[mta_sts]\nmode = "testing"\n')
    s.init()
    s.cli("domain", "add", "mail.test")
    s.start()
    try:
        http = f"http://127.0.0.1:{s.ports['http']}"
        proxied = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7", "X-Forwarded-Proto": "https"}

        def fetch(path: str, headers: dict[str, str], method: str = "GET", host: str = "") -> int:
            async def go() -> int:
                async with aiohttp.ClientSession() as c, c.request(method, http + path, allow_redirects=False,
                                                                   headers={**headers, "Host": host or "mail.test"}) as r:
                    return r.status
            return asyncio.run(go())

        assert fetch("/.well-known/mta-sts.txt", proxied, host="mta-sts.mail.test") == 200
        assert fetch("/.well-known/mta-sts.txt", {}, host="mta-sts.mail.test") == 404  # plain HTTP, no proxy word
        before = len(s.log_lines)
        wrong = {"Authorization": "Basic " + base64.b64encode(b"nobody@mail.test:wrong").decode()}
        assert fetch("/webapi/v0/SuppressionList", {**proxied, **wrong}, method="POST") == 401
        # The last hop of X-Forwarded-For is the client the proxy saw; the rest is the client's to forge.
        assert "198.51.100.7" in s.wait_log("webapi: authentication failed", after=before)
    finally:
        s.stop()
