"""Parsing a big message does not stall other clients: one parse per message, off the event loop, shared by every
recipient account (issue 10, item 6). Over real sockets: an SMTP NOOP client is timed while the message is delivered."""

from __future__ import annotations

import imaplib
import shutil
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from eventmail.mime.structure import parse_structure
from eventmail.smtp.analysis import mime_shape
from eventmail.smtp.delivery import MAX_MIME_DEPTH, MAX_MIME_PARTS

from .dns_fixture import DnsServer, zone_text
from .mailserver import MailServer, insecure_tls

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")]


def crafted(depth: int = 25, leaves: int = 1500, lines_per_leaf: int = 400) -> bytes:
    """~26 MB nested `depth` deep with `leaves` parts, every part full of lines that begin like a
    boundary but are none: each costs the MIME parser a lookup per level, as the probe's message did."""
    bnd = [b"b%02d" % i + b"z" * i for i in range(depth)]  # a distinct length per level
    leaf = (b"--" + b"y" * 40 + b"\r\n") * lines_per_leaf
    out = [b"From: news@example.test\r\nTo: alice@mail.test, bob@mail.test\r\nSubject: big\r\nMIME-Version: 1.0\r\n"]
    out.append(b'Content-Type: multipart/mixed; boundary="' + bnd[0] + b'"\r\n\r\n')
    for i in range(1, depth):
        out.append(b"--" + bnd[i - 1] + b'\r\nContent-Type: multipart/mixed; boundary="' + bnd[i] + b'"\r\n\r\n')
    for _ in range(leaves):
        out.append(b"--" + bnd[-1] + b"\r\nContent-Type: text/plain\r\n\r\n" + leaf)
    out.extend(b"--" + b + b"--\r\n" for b in reversed(bnd))
    return b"".join(out)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    base = tmp_path_factory.mktemp("offloop")
    srv = MailServer(base, kinds=("smtp", "imaps"))
    srv.init()
    srv.add_account("alice", "alice@mail.test", "offloop password")
    srv.add_account("bob", "bob@mail.test", "offloop password")
    zones = {"example.test": zone_text("example.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"'])}
    with DnsServer.start(base / "dns", zones) as dns:
        srv.dns_port = dns.port
        srv.start()
        yield srv
        srv.stop()


def parse_seconds_of(message: bytes) -> float:
    """How long one parse of `message` takes here: what it would stall the event loop for."""
    started = time.perf_counter()
    depth, parts = mime_shape(parse_structure(message))
    assert depth <= MAX_MIME_DEPTH and parts <= MAX_MIME_PARTS  # within the limits: it is accepted
    return time.perf_counter() - started


def longest_noop_gap(server: MailServer, action: Callable[[ssl.SSLContext], None]) -> float:
    """The longest wait between answers another user's IMAP NOOPs see while `action` runs."""
    ctx = insecure_tls()
    other_user = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=ctx, timeout=120)
    other_user.login("alice", "offloop password")
    gaps: list[float] = []
    answers: list[str] = []
    done = threading.Event()

    def noop_client() -> None:
        last = time.perf_counter()
        while not done.is_set():
            answers.append(other_user.noop()[0])
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    other = threading.Thread(target=noop_client)
    other.start()
    try:
        action(ctx)
    finally:
        done.set()
        other.join(60)
        other_user.logout()
    assert gaps and set(answers) == {"OK"}, "the other client was not answered"
    return max(gaps)


def test_a_big_multipart_to_two_accounts_does_not_stall_other_clients(server: MailServer) -> None:
    message = crafted()
    parse_seconds = parse_seconds_of(message)

    def deliver(_: ssl.SSLContext) -> None:
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=300) as s:
            s.sendmail("news@example.test", ["alice@mail.test", "bob@mail.test"], message)

    longest = longest_noop_gap(server, deliver)
    line = server.wait_log("delivered (alice: accepted")
    assert "bob: " in line
    # Before: one parse at DATA and one per account on the loop, ~3 × parse_seconds without an answer.
    assert longest < parse_seconds / 2, f"longest NOOP gap {longest:.3f}s, one parse takes {parse_seconds:.3f}s"


def test_a_big_append_does_not_stall_other_clients(server: MailServer) -> None:
    message = crafted()
    parse_seconds = parse_seconds_of(message)

    def append(ctx: ssl.SSLContext) -> None:
        with imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], ssl_context=ctx, timeout=300) as c:
            c.login("bob", "offloop password")
            typ, data = c.append("INBOX", None, None, message)
            assert typ == "OK", data

    longest = longest_noop_gap(server, append)
    assert longest < parse_seconds / 2, f"longest NOOP gap {longest:.3f}s, one parse takes {parse_seconds:.3f}s"
