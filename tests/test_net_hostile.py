"""Hostile clients at the socket level, over real loopback sockets (issue 10, items 1, 3, 5, 10): plaintext
injected behind STARTTLS, too many connections from one network, stalled TLS handshakes, clients that never read."""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.imap import start_imap
from eventmail.netconn import ConnectionLimiter
from tests.imap_harness import ImapServer, RawClient

from .mailserver import MailServer, ipv6_loopback

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")

PASSWORD = "net test password"
CAP = 3  # [limits] connections_per_ip of the server
IDLE = 3  # [limits] idle_timeout: also how long a client may leave output unread
HANDSHAKE = 2  # [limits] tls_handshake_timeout
LIMITS = f"[limits]\nconnections_per_ip = {CAP}\nidle_timeout = {IDLE}\ntls_handshake_timeout = {HANDSHAKE}\n"
ALL = ("smtp", "submission", "submissions", "imap", "imaps")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    srv = MailServer(tmp_path_factory.mktemp("net"), extra_config=LIMITS, kinds=ALL)
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    srv.start()
    yield srv
    srv.stop()


def connect(port: int, source: str, rcvbuf: int | None = None) -> socket.socket:
    """A TCP connection from a chosen loopback address (the limits are per network).
    `rcvbuf`: a small receive buffer, so a client that never reads fills up quickly."""
    s = socket.socket()
    s.settimeout(20)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_line(s: socket.socket) -> bytes:
    """One line, read byte by byte so that nothing after it is consumed (TLS may follow)."""
    out = b""
    while not out.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            break
        out += c
    return out


def reply(f: socket.socket) -> list[bytes]:
    """A whole SMTP reply (its lines)."""
    lines = [read_line(f)]
    while lines[-1][3:4] == b"-":
        lines.append(read_line(f))
    return lines


def closed_by_server(s: socket.socket, timeout: float = 20) -> bool:
    """True when the server ends the connection (EOF or reset) within `timeout`."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
        return True
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def send_in_background(s: socket.socket, data: bytes) -> threading.Thread:
    """sendall() in a thread: a server that stops reading must not block the test."""
    def go() -> None:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server closed the connection, as it may
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def client_context(srv: MailServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(srv.cert))


# -- item 1: STARTTLS injection (CVE-2011-0411) -----------------------------------------------------

SIZES = {"64KiB": 64 << 10, "300KiB": 300 << 10, "2MiB": 2 << 20}


def _filler(commands: bytes, size: int) -> bytes:
    return (commands * (size // len(commands) + 1))[:size - size % len(commands)] or commands


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["smtp", "submission", "imap"])
def test_plaintext_behind_starttls_never_runs_inside_tls(server: MailServer, kind: str, size: str) -> None:
    """Plaintext pushed behind STARTTLS in the same send, of any size, is dropped: the client's
    handshake either fails (the rest reached TLS as garbage) or works and no pipelined command
    is answered inside TLS. The drop is logged."""
    source = f"127.0.1.{list(SIZES).index(size) * 3 + ['smtp', 'submission', 'imap'].index(kind) + 1}"
    s = connect(server.ports[kind], source)
    if kind == "imap":
        assert read_line(s).startswith(b"* OK")
        command = b"a STARTTLS\r\n"
        injected = _filler(f"b LOGIN alice \"{PASSWORD}\"\r\nc NOOP\r\nd CREATE Injected\r\n".encode(), SIZES[size])
    else:
        assert read_line(s).startswith(b"220 ")
        s.sendall(b"EHLO inject.example.test\r\n")
        assert reply(s)[-1].startswith(b"250 ")
        command = b"STARTTLS\r\n"
        injected = _filler(b"MAIL FROM:<evil@example.test>\r\nRCPT TO:<alice@mail.test>\r\nNOOP\r\n", SIZES[size])
    sender = send_in_background(s, command + injected)
    first = read_line(s)
    assert first.startswith(b"a OK" if kind == "imap" else b"220 "), first
    sender.join(30)
    assert not sender.is_alive()
    try:
        tls = client_context(server).wrap_socket(s, server_hostname="localhost")
        _no_injected_replies(tls, kind)
        tls.close()
    except (ssl.SSLError, ConnectionError, TimeoutError):
        pass  # the server read the rest as TLS records and gave up (with TLS 1.3 the client may
        # see that only after its side of the handshake is done): nothing ran either
    s.close()
    line = server.wait_log(f"{source}: dropped ")
    assert "octets pipelined behind STARTTLS" in line


def _no_injected_replies(tls: ssl.SSLSocket, kind: str) -> None:
    """Inside TLS the first replies are those to our own commands, not to injected ones."""
    if kind == "imap":
        tls.sendall(b"e CAPABILITY\r\n")
        first = read_line(tls)
        if not first:
            return  # closed: the server gave up on the handshake
        assert first.startswith(b"* CAPABILITY"), first  # not "b OK" of an injected LOGIN
        assert read_line(tls).startswith(b"e OK")
        tls.sendall(b"f SELECT INBOX\r\n")
        assert read_line(tls).startswith(b"f BAD")  # still not logged in
    else:
        tls.sendall(b"EHLO inject.example.test\r\n")
        lines = reply(tls)
        if lines == [b""]:
            return
        assert lines[0].startswith(b"250-mail.test"), lines  # not the reply to an injected MAIL
        tls.sendall(b"DATA\r\n")
        assert read_line(tls).startswith(b"503")  # no transaction was opened


# -- items 3 and 10: connections per network, stalled handshakes ------------------------------------


def _refused_plain(server: MailServer, kind: str, source: str) -> bytes:
    s = connect(server.ports[kind], source)
    first = read_line(s)
    assert closed_by_server(s)
    s.close()
    return first


def test_connections_are_capped_per_network_across_all_listeners(server: MailServer) -> None:
    source = "127.0.2.1"
    # held on IMAP (pre-auth timeout 60 s) so that none ends by the SMTP idle timeout meanwhile
    held = [connect(server.ports["imap"], source), connect(server.ports["imap"], source),
            client_context(server).wrap_socket(connect(server.ports["imaps"], source), server_hostname="localhost")]
    for h in held:
        assert read_line(h).startswith(b"* OK")
    # the cap is the server's, not each listener's: one more connection on any port is refused
    for kind in ("smtp", "submission"):
        assert _refused_plain(server, kind, source).startswith(b"421 4.7.0 ")
    server.wait_log(f"{source}: too many connections ({CAP} from {source}), refused: 421 4.7.0")
    assert _refused_plain(server, "imap", source).startswith(b"* BYE ")
    server.wait_log(f"{source}: too many connections ({CAP} from {source}), refused: * BYE")
    for kind in ("submissions", "imaps"):  # no TLS yet to speak in: just closed
        s = connect(server.ports[kind], source)
        assert closed_by_server(s)
        s.close()
    server.wait_log(f"{source}: too many connections ({CAP} from {source}), closed before TLS")
    # another network is not affected
    other = connect(server.ports["smtp"], "127.0.2.2")
    assert read_line(other).startswith(b"220 ")
    other.close()
    # a closed connection frees its slot
    held.pop().close()
    deadline = time.monotonic() + 15
    while True:
        again = connect(server.ports["smtp"], source)
        if read_line(again).startswith(b"220 "):
            break
        again.close()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for h in [*held, again]:
        h.close()


@pytest.mark.parametrize("kind", ["submissions", "imaps"])
def test_stalled_tls_handshakes_are_counted_and_time_out(server: MailServer, kind: str) -> None:
    source = "127.0.3.1" if kind == "submissions" else "127.0.3.2"
    stalled = [connect(server.ports[kind], source) for _ in range(CAP)]  # connect, send nothing
    extra = connect(server.ports[kind], source)
    assert closed_by_server(extra)  # counted from accept: the handshakes in progress fill the cap
    extra.close()
    server.wait_log(f"{source}: too many connections ({CAP} from {source}), closed before TLS")
    # after the handshake timeout the stalled ones are closed and their slots are free again
    for s in stalled:
        assert closed_by_server(s, timeout=HANDSHAKE + 20)
        s.close()
    server.wait_log(f"{source}: TLS handshake not done in {HANDSHAKE} s, closed")
    tls = client_context(server).wrap_socket(connect(server.ports[kind], source), server_hostname="localhost")
    assert read_line(tls)[:4] in (b"220 ", b"* OK")
    tls.close()


def test_the_cap_keys_networks_as_the_login_limiter_does() -> None:
    limiter = ConnectionLimiter(2)
    assert limiter.acquire("2001:db8::1") == "2001:db8::/64"
    assert limiter.acquire("2001:db8::ffff:2") == "2001:db8::/64"
    assert limiter.acquire("2001:db8::3") is None  # the same /64: one end site
    assert limiter.acquire("2001:db8:0:1::1") == "2001:db8:0:1::/64"
    assert limiter.acquire("192.0.2.1") == "192.0.2.1"
    assert limiter.acquire("::ffff:192.0.2.1") == "192.0.2.1"  # IPv4-mapped is that IPv4 address
    assert limiter.acquire("::ffff:192.0.2.1") is None
    limiter.release("192.0.2.1")
    assert limiter.count("192.0.2.1") == 1
    assert limiter.acquire("192.0.2.1") == "192.0.2.1"


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_connections_are_counted_by_64(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="eventmail.imap")
    with ImapServer(tmp_path) as srv:
        listener = srv.call(start_imap(srv.store, "::1", 0, connections=ConnectionLimiter(1)))
        port = listener.sockets[0].getsockname()[1]
        try:
            first = socket.create_connection(("::1", port), timeout=20)
            assert read_line(first).startswith(b"* OK")
            second = socket.create_connection(("::1", port), timeout=20)
            assert read_line(second).startswith(b"* BYE too many connections")
            assert closed_by_server(second)
            assert _logged(caplog, "too many connections (1 from ::/64), refused: * BYE")
            first.close()
            second.close()
        finally:
            # asyncio.Server is not thread-safe: close it on the loop that owns it
            async def close_listener() -> None:
                listener.close()
                await listener.wait_closed()
            srv.call(close_listener())


# -- item 5: clients that never read --------------------------------------------------------------


def _logged(caplog: pytest.LogCaptureFixture, needle: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout  # the server thread logs as it goes
    while time.monotonic() < deadline:
        if any(needle in r.getMessage() for r in list(caplog.records)):
            return True
        time.sleep(0.05)
    return False


def _still_serving(srv: ImapServer) -> None:
    fresh = srv.raw()
    fresh.login()
    assert fresh.cmd(b"zs SELECT INBOX")[-1].startswith(b"zs OK")
    fresh.close()


def test_preauth_imap_client_that_never_reads_is_closed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="eventmail.imap")
    with ImapServer(tmp_path, preauth_timeout=2) as srv:
        s = connect(srv.plain_port, "127.0.0.1", rcvbuf=4096)
        # every CAPABILITY has a few hundred octets of answer the client never takes
        sender = send_in_background(s, b"a CAPABILITY\r\n" * 40_000)
        assert _logged(caplog, "client read nothing for 2 s with")
        assert closed_by_server(s)
        sender.join(20)
        s.close()
        _still_serving(srv)


def test_logged_in_imap_client_that_never_reads_a_big_fetch_is_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="eventmail.imap")
    with ImapServer(tmp_path, autologout=3) as srv:
        body = ("x" * 998 + "\r\n") * 8_000  # 8 MB, far more than the socket buffers hold
        srv.deliver(b"From: a@example.test\r\nSubject: big\r\n\r\n" + body.encode())
        c = RawClient("127.0.0.1", srv.plain_port)
        c.login()
        assert c.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.send(b"f UID FETCH 1 BODY.PEEK[]\r\n")  # and never read
        assert _logged(caplog, "client read nothing for 3 s with")
        _still_serving(srv)  # meanwhile and after, others are served
        assert c.closed(timeout=20)
        c.close()


def test_smtp_client_that_never_reads_is_closed(server: MailServer) -> None:
    source = "127.0.4.1"
    s = connect(server.ports["smtp"], source, rcvbuf=4096)
    assert read_line(s).startswith(b"220 ")
    s.sendall(b"EHLO reader.example.test\r\n")
    assert reply(s)[-1].startswith(b"250 ")
    # RFC 3030 §4.2: BDAT chunks may be pipelined; each gets a reply the client never reads
    flood = b"MAIL FROM:<s@example.test>\r\nRCPT TO:<alice@mail.test>\r\n" + b"BDAT 1\r\nx" * 300_000
    sender = send_in_background(s, flood)
    server.wait_log(f"{source}: client read nothing for {IDLE} s with", timeout=60)
    assert closed_by_server(s)
    sender.join(20)
    s.close()
    fresh = connect(server.ports["smtp"], source)
    assert read_line(fresh).startswith(b"220 ")
    fresh.sendall(b"QUIT\r\n")
    assert read_line(fresh).startswith(b"221")
    fresh.close()


@pytest.mark.parametrize("kind", ["smtp", "imap"])
def test_a_half_closed_client_still_gets_its_replies(server: MailServer, kind: str) -> None:
    """A client that sends its last command and shuts down its side (nc -N) is answered before
    the server closes: the socket layer keeps a half-closed plain socket open."""
    s = connect(server.ports[kind], "127.0.5.1")
    read_line(s)
    s.sendall(b"a LOGOUT\r\n" if kind == "imap" else b"QUIT\r\n")
    s.shutdown(socket.SHUT_WR)
    rest = b""
    while chunk := s.recv(65536):
        rest += chunk
    assert rest.endswith(b"a OK LOGOUT completed\r\n" if kind == "imap" else b"\r\n")
    assert rest.startswith(b"* BYE" if kind == "imap" else b"221 ")
    s.close()
