"""Failed-login limits against a real `eventmail serve`, as a distributed guesser meets them (issue 10, item 4):
one rule for SMTP AUTH, IMAP AUTHENTICATE and IMAP LOGIN and every mechanism, per address and per account, and
the account's own networks are not locked out by strangers' failures. Plus plaintext AUTH only from loopback
(item 9d). Many source addresses: the client binds to 127.x.y.z, all of 127/8 being loopback."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .mailserver import MailServer, free_port

scramp = pytest.importorskip("scramp", exc_type=ImportError)

RIGHT = "the right password"
WRONG = "a guess"
# Per account from networks it has not logged in from: refused after 6 failures (the first 5 go
# undelayed, the 6th waits a second). Per address: the defaults (each guesser fails once).
LIMITS = "[limits]\nlogin_account_failures_before_delay = 5\nlogin_account_failures_before_refusal = 6\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    base = tmp_path_factory.mktemp("logins")
    imap = f'[[listener]]\nkind = "imap"\naddress = "127.0.0.1"\nport = {free_port()}\n'
    # allow_plaintext_auth: no TLS needed from loopback, which every 127/8 client is.
    srv = MailServer(base, allow_plaintext_auth=True, extra_config=LIMITS + imap)
    srv.init()
    for name in ("alice", "bob", "carol", "dave", "erin"):
        srv.add_account(name, f"{name}@mail.test", RIGHT)
    srv.start()
    yield srv
    srv.stop()


# -- clients from a chosen source address ----------------------------------------------------------


class Lines:
    def __init__(self, target: tuple[str, int], source: str) -> None:
        self.sock = socket.create_connection(target, timeout=30, source_address=(source, 0))
        self.file = self.sock.makefile("rb")

    def send(self, line: bytes) -> None:
        self.sock.sendall(line + b"\r\n")

    def line(self) -> bytes:
        return self.file.readline().rstrip(b"\r\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Smtp(Lines):
    def __init__(self, srv: MailServer, source: str, target: tuple[str, int] | None = None) -> None:
        super().__init__(target or ("127.0.0.1", srv.ports["submission"]), source)
        assert self.line().startswith(b"220 ")
        self.ehlo = self.lines(b"EHLO client.test")

    def lines(self, line: bytes) -> list[bytes]:
        """Every line of the reply to `line`."""
        self.send(line)
        out = [self.line()]
        while out[-1][3:4] == b"-":
            out.append(self.line())
        return out

    def cmd(self, line: bytes) -> bytes:
        return self.lines(line)[-1]


class Imap(Lines):
    def __init__(self, srv: MailServer, source: str) -> None:
        super().__init__(("127.0.0.1", srv.ports["imap"]), source)
        assert self.line().startswith(b"* OK")

    def cmd(self, line: bytes, tag: bytes = b"a") -> bytes:
        """Send `line`; the next continuation request or the tagged reply."""
        self.send(line)
        while not (reply := self.line()).startswith(tag + b" ") and not reply.startswith(b"+"):
            pass
        return reply


def b64(data: bytes | str) -> bytes:
    return base64.b64encode(data.encode() if isinstance(data, str) else data)


def plain(user: str, password: str) -> bytes:
    return b64(f"\0{user}\0{password}")


@dataclass
class Attempt:
    """One login attempt by protocol and mechanism; `run` returns the final reply line."""

    name: str

    def run(self, srv: MailServer, source: str, user: str, password: str) -> bytes:
        proto, mech = self.name.split(":")
        if proto == "smtp":
            c: Smtp | Imap = Smtp(srv, source)
            try:
                return _smtp(c, mech, user, password)  # type: ignore[arg-type]
            finally:
                c.close()
        c = Imap(srv, source)
        try:
            return _imap(c, mech, user, password)  # type: ignore[arg-type]
        finally:
            c.close()


def _smtp(c: Smtp, mech: str, user: str, password: str) -> bytes:
    if mech == "PLAIN":
        return c.cmd(b"AUTH PLAIN " + plain(user, password))
    if mech == "LOGIN":
        reply = c.cmd(b"AUTH LOGIN " + b64(user))
        return reply if not reply.startswith(b"334") else c.cmd(b64(password))
    client = scramp.ScramClient([mech], user, password)
    reply = c.cmd(b"AUTH " + mech.encode() + b" " + b64(client.get_client_first()))
    if not reply.startswith(b"334"):
        return reply
    client.set_server_first(base64.b64decode(reply[4:]).decode())
    reply = c.cmd(b64(client.get_client_final()))
    return reply if not reply.startswith(b"334") else c.cmd(b"")


def _imap(c: Imap, mech: str, user: str, password: str) -> bytes:
    if mech == "LOGIN":
        return c.cmd(f'a LOGIN {user} "{password}"'.encode())
    if mech == "PLAIN":
        return c.cmd(b"a AUTHENTICATE PLAIN " + plain(user, password))
    client = scramp.ScramClient([mech], user, password)
    reply = c.cmd(b"a AUTHENTICATE " + mech.encode() + b" " + b64(client.get_client_first()))
    if not reply.startswith(b"+"):
        return reply
    client.set_server_first(base64.b64decode(reply[2:]).decode())
    reply = c.cmd(b64(client.get_client_final()))
    return reply if not reply.startswith(b"+") else c.cmd(b"")


SMTP_AUTH = [Attempt("smtp:PLAIN"), Attempt("smtp:LOGIN"), Attempt("smtp:SCRAM-SHA-256")]
IMAP_AUTHENTICATE = [Attempt("imap:PLAIN"), Attempt("imap:SCRAM-SHA-256")]
IMAP_LOGIN = [Attempt("imap:LOGIN")]
EVERY = SMTP_AUTH + IMAP_AUTHENTICATE + IMAP_LOGIN


def ok(reply: bytes) -> bool:
    return reply.startswith(b"235 ") or reply.startswith(b"a OK")


def refused(reply: bytes) -> bool:
    return reply.startswith(b"454 4.7.0") or reply.startswith(b"a NO [UNAVAILABLE]")


def failed(reply: bytes) -> bool:
    return reply.startswith(b"535 5.7.8") or reply.startswith(b"a NO [AUTHENTICATIONFAILED]")


# -- item 4 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("account", "net", "guesses"), [
    ("alice", 1, SMTP_AUTH),
    ("bob", 2, IMAP_AUTHENTICATE),
    ("carol", 3, IMAP_LOGIN),
], ids=["smtp-auth", "imap-authenticate", "imap-login"])
def test_a_distributed_guesser_is_refused_and_the_owner_still_gets_in(
    server: MailServer, account: str, net: int, guesses: list[Attempt],
) -> None:
    usual, stranger = f"127.{net}.0.", f"127.{net}.200."
    # The owner logs in from home, once (any protocol: the limiter is the server's).
    assert ok(EVERY[0].run(server, usual + "10", account, RIGHT))
    # Six guesses from six addresses, each address failing once, over this protocol's mechanisms.
    for i in range(6):
        reply = guesses[i % len(guesses)].run(server, f"127.{net}.{100 + i}.1", account, WRONG)
        assert failed(reply), (i, reply)
    # A new network is refused now, whatever the protocol or mechanism, even with the password:
    # the refusal comes when the account is named, before any password check.
    for attempt in EVERY:
        assert refused(attempt.run(server, stranger + "1", account, RIGHT)), attempt.name
    server.wait_log(f"{stranger}1: login refused, too many failures for account '{account}' from this network")
    # The owner's network is not locked out: another address in it gets in, on every protocol.
    for attempt in EVERY:
        assert ok(attempt.run(server, usual + "11", account, RIGHT)), attempt.name
    # Other accounts are untouched from the stranger's network.
    assert ok(IMAP_LOGIN[0].run(server, stranger + "2", "erin", RIGHT))


def test_one_budget_across_protocols(server: MailServer) -> None:
    """Failures on SMTP and on IMAP add up for the account; the refusal holds on both."""
    assert ok(IMAP_LOGIN[0].run(server, "127.8.0.1", "dave", RIGHT))
    for i in range(6):
        attempt = [SMTP_AUTH[0], IMAP_AUTHENTICATE[0], IMAP_LOGIN[0]][i % 3]
        assert failed(attempt.run(server, f"127.9.{i}.1", "dave", WRONG)), attempt.name
    assert refused(SMTP_AUTH[0].run(server, "127.9.100.1", "dave", RIGHT))
    assert refused(IMAP_LOGIN[0].run(server, "127.9.100.1", "dave", RIGHT))
    server.wait_log("authentication failed for 'dave'")
    assert ok(SMTP_AUTH[0].run(server, "127.8.0.2", "dave", RIGHT))  # dave's own network


# -- item 9d ----------------------------------------------------------------------------------------


def _local_non_loopback_address() -> str | None:
    """An address of this host that is not loopback (connecting to it never leaves the host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the source address
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_plaintext_auth_is_offered_to_loopback_only(tmp_path: Path) -> None:
    address = _local_non_loopback_address()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address to connect from")
    port = free_port()
    listener = f'[[listener]]\nkind = "submission"\naddress = "{address}"\nport = {port}\n'
    srv = MailServer(tmp_path, allow_plaintext_auth=True, extra_config=listener)
    srv.init()
    srv.add_account("alice", "alice@mail.test", RIGHT)
    srv.ports["submission"] = loopback_port = free_port()  # the listener write_config() makes
    srv.start()
    try:
        # From loopback: AUTH without TLS, as localserve needs.
        c = Smtp(srv, "127.0.0.1", ("127.0.0.1", loopback_port))
        assert any(line[4:].startswith(b"AUTH ") and b" PLAIN" in line for line in c.ehlo), str(c.ehlo)
        assert c.cmd(b"AUTH PLAIN " + plain("alice", RIGHT)).startswith(b"235")
        c.close()
        # From the host's own network address: no AUTH in EHLO, and AUTH is refused as it is
        # without allow_plaintext_auth (RFC 4954 §6: 538 5.7.11 encryption required).
        c = Smtp(srv, address, (address, port))
        assert not any(b"AUTH" in line for line in c.ehlo), c.ehlo
        assert any(b"STARTTLS" in line for line in c.ehlo)
        assert c.cmd(b"AUTH PLAIN " + plain("alice", RIGHT)).startswith(b"538 5.7.11")
        c.close()
        srv.wait_log(f"{address}: 538 ")
    finally:
        srv.stop()

