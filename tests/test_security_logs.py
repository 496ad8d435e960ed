"""Log abuse against a real `eventmail serve`, its real log output read (issue 10, item 7): a connection that
sends nothing but errors is closed after a few, so it cannot flood the log, and no client text can span or
forge a log line."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from .mailserver import MailServer, free_port

ERRORS = 5  # [limits] protocol_errors of this server
FORGED = b"2026-01-01 00:00:00,000 WARNING eventmail.forged: admin logged in from 10.0.0.1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    base = tmp_path_factory.mktemp("logs")
    imap = f'[[listener]]\nkind = "imap"\naddress = "127.0.0.1"\nport = {free_port()}\n'
    srv = MailServer(base, extra_config=f"[limits]\nprotocol_errors = {ERRORS}\n" + imap)
    srv.init()
    srv.start()
    yield srv
    srv.stop()


class Client:
    def __init__(self, port: int, source: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
        self.file = self.sock.makefile("rb")

    def line(self) -> bytes:
        return self.file.readline().rstrip(b"\r\n")

    def send_then_read_to_close(self, lines: list[bytes]) -> list[bytes]:
        """Send `lines` at once, then read every line until the server closes. (Only as many as
        the server will read: a close with unread input would be a reset, losing replies.)"""
        self.sock.sendall(b"".join(line + b"\r\n" for line in lines))
        replies = []
        while line := self.file.readline():
            replies.append(line.rstrip(b"\r\n"))
        self.file.close()
        self.sock.close()
        return replies


def lines_of(srv: MailServer, source: str) -> list[str]:
    return [line for line in srv.log_lines if f" {source}" in line]


def test_imap_closes_after_a_few_protocol_errors(server: MailServer) -> None:
    source = "127.0.7.1"
    c = Client(server.ports["imap"], source)
    assert c.line().startswith(b"* OK")
    # As many as it takes: without the limit, the server answered (and logged) 20,000 in a second.
    replies = c.send_then_read_to_close([b"a%d FROB" % i for i in range(ERRORS)])
    assert replies == [b"a%d BAD unknown command FROB" % i for i in range(ERRORS - 1)] + [
        b"a%d BAD unknown command FROB" % (ERRORS - 1), b"* BYE too many errors"], replies[:10]
    server.wait_log(f"{source}: {ERRORS} protocol errors, closing the connection")
    server.wait_log(f"{source}: disconnected")
    # connected, ERRORS BADs, BYE, the closing line, disconnected: not 20,000 lines
    assert len(lines_of(server, source)) <= ERRORS + 6, lines_of(server, source)


def test_smtp_closes_after_a_few_protocol_errors(server: MailServer) -> None:
    source = "127.0.7.2"
    c = Client(server.ports["smtp"], source)
    assert c.line().startswith(b"220 ")
    c.sock.sendall(b"EHLO client.test\r\n")  # RFC 2920 §3.1: EHLO ends a pipelined group
    while c.line()[3:4] == b"-":
        pass
    replies = c.send_then_read_to_close([b"RCPT TO:<someone@mail.test>"] * ERRORS)  # 503: no MAIL first
    assert [r[:3] for r in replies] == [b"503"] * ERRORS + [b"421"], replies[:10]
    assert replies[-1] == b"421 4.7.0 Too many errors, closing connection"
    server.wait_log(f"{source}: 421 Too many errors")
    assert len(lines_of(server, source)) <= ERRORS + 4, lines_of(server, source)


def test_a_client_cannot_forge_a_log_line(server: MailServer) -> None:
    source = "127.0.7.3"
    c = Client(server.ports["imap"], source)
    assert c.line().startswith(b"* OK")
    value = b"x\n" + FORGED + b"\r\n" + FORGED + b"\x1b[2K\x07\xc2\x85\xe2\x80\xa8end"
    c.sock.sendall(b'a ID ("name" {%d+}\r\n' % len(value) + value + b")\r\n")
    while not (reply := c.line()).startswith(b"a "):
        pass
    assert reply.startswith(b"a OK"), reply
    assert c.send_then_read_to_close([b"b LOGOUT"])[-1].startswith(b"b OK")
    line = server.wait_log(f"{source}: client id name=")
    # the value is on the record's own line, every control character escaped
    assert "name=x\\n" + FORGED.decode() + "\\r\\n" + FORGED.decode() + "\\x1b[2K\\x07\\x85\\u2028end" in line, line
    assert not any(line.startswith(FORGED.decode()[:30]) for line in server.log_lines)
    assert not any("eventmail.forged" in line and "client id" not in line for line in server.log_lines)
