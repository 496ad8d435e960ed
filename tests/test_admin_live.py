"""Every writing CLI command against a real `eventmail serve`: while it runs (through the control socket,
in effect at once, seen over IMAP and SMTP) and while it is stopped (on the store, in effect after the
start); and each validation error, with the server running and stopped."""

from __future__ import annotations

import asyncio
import imaplib
import smtplib
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from eventmail.opening import open_store
from eventmail.store import MasterKeySource, account_stream, load_master_key

from .conftest import ROOT
from .dns_fixture import DnsServer, zone_text
from .mailserver import MailServer, free_port, start_localserve

PASSWORD = "admin test password"
NEW_PASSWORD = "a new admin password"
# The accounts every case starts from (name, address); each case changes only its own.
ACCOUNTS = [("alice", "alice@mail.test"), ("carol", "carol@mail.test"), ("dave", "dave@mail.test"),
            ("erin", "erin@mail.test"), ("pat", "pat@mail.test"), ("sam", "sam@mail.test"), ("kim", "kim@mail.test"),
            ("jo", "jo@mail.test"), ("lee", "lee@mail.test"), ("max", "max@mail.test")]


def imap_login(srv: MailServer, user: str, password: str) -> bool:
    with imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=30) as m:
        try:
            m.login(user, password)
        except imaplib.IMAP4.error:
            return False
        m.logout()
        return True


def imap_headers(srv: MailServer, user: str, needle: str, timeout: float = 20) -> bytes:
    """The header of the INBOX message whose subject contains `needle`, read over IMAP."""
    import time

    deadline = time.monotonic() + timeout
    with imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=30) as m:
        m.login(user, PASSWORD)
        while True:
            m.select("INBOX")
            typ, data = m.search(None, "SUBJECT", f'"{needle}"')
            ids = data[0].split()
            if ids:
                typ, got = m.fetch(ids[-1], "(BODY.PEEK[HEADER])")
                item = got[0]
                assert isinstance(item, tuple)
                return item[1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no message {needle!r} for {user}")
            time.sleep(0.2)


def rcpt(srv: MailServer, address: str) -> int:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        s.ehlo("client.example.test")
        s.mail("s@example.test")
        return s.rcpt(address)[0]


def rcpt_reply(srv: MailServer, address: str) -> bytes:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        s.ehlo("client.example.test")
        s.mail("s@example.test")
        return s.rcpt(address)[1]


def deliver(srv: MailServer, address: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        s.ehlo("client.example.test")
        refused = s.sendmail("s@example.test", [address],
                             f"From: s@example.test\r\nTo: {address}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode())
        assert refused == {}


def key_id_of_last_record(srv: MailServer, account: str) -> int:
    """The data key id of the newest record of an account's log, read beside the server."""

    async def read() -> int:
        store = await open_store(srv.directory, load_master_key(srv.directory, MasterKeySource(key_file=srv.key_file)),
                                 writable=False)
        try:
            records = await store.replication.raw_records(account_stream(account), 0, limit=1 << 20)
            return records[-1].key_id
        finally:
            await store.close()

    return asyncio.run(read())


def cli(srv: MailServer, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventmail", *argv, "--dir", str(srv.directory), "--key-file", str(srv.key_file)],
        input=stdin, stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )


def ok(srv: MailServer, *argv: str, stdin: str | None = None) -> str:
    p = cli(srv, *argv, stdin=stdin)
    assert p.returncode == 0, (argv, p.stderr)
    return p.stdout


# ---------------------------------------------------------------- one case per writing command


@dataclass
class Case:
    command: str  # the control request it becomes, as the server logs it
    act: Callable[[MailServer, dict[str, object]], None]
    check: Callable[[MailServer, dict[str, object]], None]
    memo: dict[str, object] = field(default_factory=dict)


def add_act(srv: MailServer, memo: dict[str, object]) -> None:
    assert "created" in ok(srv, "account", "add", "gina", "gina@mail.test", "--password-stdin", stdin=PASSWORD + "\n")


def add_check(srv: MailServer, memo: dict[str, object]) -> None:
    assert imap_login(srv, "gina", PASSWORD)
    assert rcpt(srv, "gina@mail.test") == 250


def password_act(srv: MailServer, memo: dict[str, object]) -> None:
    ok(srv, "account", "set-password", "pat", "--password-stdin", stdin=NEW_PASSWORD + "\n")


def password_check(srv: MailServer, memo: dict[str, object]) -> None:
    assert imap_login(srv, "pat", NEW_PASSWORD)
    assert not imap_login(srv, "pat", PASSWORD)


def alias_act(srv: MailServer, memo: dict[str, object]) -> None:
    assert "address info@mail.test added" in ok(srv, "account", "add-address", "alice", "info@mail.test")


def alias_check(srv: MailServer, memo: dict[str, object]) -> None:
    assert rcpt(srv, "info@mail.test") == 250
    deliver(srv, "info@mail.test", "to the new alias")
    assert b"for <info@mail.test>" in imap_headers(srv, "alice", "to the new alias")


def catch_all_act(srv: MailServer, memo: dict[str, object]) -> None:
    assert "catch-all for catch.test added" in ok(srv, "account", "add-address", "carol", "@catch.test")


def catch_all_check(srv: MailServer, memo: dict[str, object]) -> None:
    assert rcpt(srv, "anyone.at.all@catch.test") == 250


def remove_act(srv: MailServer, memo: dict[str, object]) -> None:
    ok(srv, "account", "remove-address", "dave", "dave2@mail.test")


def remove_check(srv: MailServer, memo: dict[str, object]) -> None:
    assert rcpt(srv, "dave2@mail.test") == 550
    assert rcpt(srv, "dave@mail.test") == 250


def delete_act(srv: MailServer, memo: dict[str, object]) -> None:
    ok(srv, "account", "delete", "erin")


def delete_check(srv: MailServer, memo: dict[str, object]) -> None:
    assert not imap_login(srv, "erin", PASSWORD)
    assert rcpt(srv, "erin@mail.test") == 550


def dkim_act(srv: MailServer, memo: dict[str, object]) -> None:
    out = ok(srv, "dkim", "add", "mail.test", "fresh")
    assert out.startswith("fresh._domainkey.mail.test. TXT \"v=DKIM1; k=ed25519; p=")


def dkim_check(srv: MailServer, memo: dict[str, object]) -> None:
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=30) as s:
        s.ehlo("client.example.test")
        s.login("sam", PASSWORD)
        s.sendmail("sam@mail.test", ["sam@mail.test"],
                   b"From: sam@mail.test\r\nTo: sam@mail.test\r\nSubject: signed now\r\n\r\nhello\r\n")
    head = imap_headers(srv, "sam", "signed now").replace(b"\r\n", b"").replace(b"\t", b" ")
    assert b"DKIM-Signature:" in head and b"s=fresh;" in head.replace(b" ", b"")


def setting_act(srv: MailServer, memo: dict[str, object]) -> None:
    assert "junk.dnsbl = bl.test" in ok(srv, "account", "set", "jo", "junk.dnsbl", "BL.test")


def setting_check(srv: MailServer, memo: dict[str, object]) -> None:
    # jo has no mail yet, so the sender has no history with jo and the DNSBL, which lists
    # 127.0.0.1, decides: the message is refused (a copy kept in Rejects).
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        s.ehlo("client.example.test")
        s.mail("s@example.test")
        assert s.rcpt("jo@mail.test")[0] == 250
        code, text = s.data(b"From: s@example.test\r\nTo: jo@mail.test\r\nSubject: listed\r\n\r\nhello\r\n")
    assert code == 451, text


def junk_settings_act(srv: MailServer, memo: dict[str, object]) -> None:
    assert "account max dnsbl: bl.test" in ok(srv, "junk", "dnsbl", "max", "add", "BL.test")
    assert "account max lists: lists.example.test" in ok(srv, "junk", "lists", "max", "add", "lists.example.test")
    ok(srv, "junk", "forwarders", "max", "add", "192.0.2.7/24", "fwd.example.test")
    assert "account max forwarders: 192.0.2.0/24\n" in ok(srv, "junk", "forwarders", "max", "remove", "fwd.example.test")


def junk_settings_check(srv: MailServer, memo: dict[str, object]) -> None:
    out = ok(srv, "junk", "settings", "max")
    assert out.splitlines() == ["account max lists: lists.example.test", "account max forwarders: 192.0.2.0/24",
                                "account max dnsbl: bl.test"], out
    # The DNSBL is in force: max has no mail, and bl.test lists the sender (127.0.0.1).
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        s.ehlo("client.example.test")
        s.mail("s@example.test")
        assert s.rcpt("max@mail.test")[0] == 250
        code, text = s.data(b"From: s@example.test\r\nTo: max@mail.test\r\nSubject: listed\r\n\r\nhello\r\n")
    assert code == 451, text


def rotate_act(srv: MailServer, memo: dict[str, object]) -> None:
    memo["before"] = key_id_of_last_record(srv, "kim")
    assert "rotated the data keys" in ok(srv, "key", "rotate")


def rotate_check(srv: MailServer, memo: dict[str, object]) -> None:
    deliver(srv, "kim@mail.test", "after the rotation")
    assert b"after the rotation" in imap_headers(srv, "kim", "after the rotation")
    before = memo["before"]
    assert isinstance(before, int)
    assert key_id_of_last_record(srv, "kim") > before  # written with the new key


def domain_add_act(srv: MailServer, memo: dict[str, object]) -> None:
    assert "domain new.test added" in ok(srv, "domain", "add", "New.TEST")


def domain_add_check(srv: MailServer, memo: dict[str, object]) -> None:
    # A domain of this server: an unknown user there, no longer relaying; it may get a signing key.
    assert b"no such user" in rcpt_reply(srv, "nobody@new.test")
    assert "new.test\tadded\t0 addresses" in ok(srv, "domain", "list")


def domain_remove_act(srv: MailServer, memo: dict[str, object]) -> None:
    assert "domain gone.test removed" in ok(srv, "domain", "remove", "gone.test")


def domain_remove_check(srv: MailServer, memo: dict[str, object]) -> None:
    assert b"relaying denied" in rcpt_reply(srv, "nobody@gone.test")
    assert "gone.test" not in ok(srv, "domain", "list")


IMPORTED = [f"imported message {i}" for i in range(3)]


def import_act(srv: MailServer, memo: dict[str, object]) -> None:
    mbox = srv.directory.parent / "import.mbox"
    mbox.write_bytes(b"".join(
        f"From x@example.test Thu Jan  1 00:00:00 2026\nFrom: x@example.test\nSubject: {subject}\n\nbody\n\n".encode()
        for subject in IMPORTED))
    assert "imported 3 messages" in ok(srv, "import", "lee", str(mbox))


def import_check(srv: MailServer, memo: dict[str, object]) -> None:
    for subject in IMPORTED:
        assert b"Subject: " + subject.encode() in imap_headers(srv, "lee", subject)


def retrain_act(srv: MailServer, memo: dict[str, object]) -> None:
    memo["out"] = ok(srv, "junk", "retrain", "alice")


def retrain_check(srv: MailServer, memo: dict[str, object]) -> None:
    out = memo["out"]
    assert isinstance(out, str)
    assert out.startswith("rebuilt alice from its log") and "equal what they were" in out


CASES = {
    "domain add": Case("domain.add", domain_add_act, domain_add_check),
    "domain remove": Case("domain.remove", domain_remove_act, domain_remove_check),
    "import": Case("import", import_act, import_check),
    "junk retrain": Case("junk.retrain", retrain_act, retrain_check),
    "account add": Case("account.add", add_act, add_check),
    "account set-password": Case("account.set-password", password_act, password_check),
    "account add-address (alias)": Case("account.add-address", alias_act, alias_check),
    "account add-address (catch-all)": Case("account.add-address", catch_all_act, catch_all_check),
    "account remove-address": Case("account.remove-address", remove_act, remove_check),
    "account delete": Case("account.delete", delete_act, delete_check),
    "dkim add": Case("dkim.add", dkim_act, dkim_check),
    "account set (junk setting)": Case("account.set", setting_act, setting_check),
    "junk lists|forwarders|dnsbl": Case("junk.settings", junk_settings_act, junk_settings_check),
    "key rotate": Case("key.rotate", rotate_act, rotate_check),
}


def make_server(base: Path, dns_port: int) -> MailServer:
    imap = f'[[listener]]\nkind = "imap"\naddress = "127.0.0.1"\nport = {free_port()}\n'
    srv = MailServer(base, allow_plaintext_auth=True, extra_config=imap, dns_port=dns_port)
    srv.init()
    for name, address in ACCOUNTS:
        srv.add_account(name, address, PASSWORD)
    srv.cli("account", "add-address", "dave", "dave2@mail.test")
    srv.cli("domain", "add", "gone.test")
    return srv


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    base = tmp_path_factory.mktemp("admin-dns")
    zones = {"example.test": zone_text("example.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"']),
             "bl.test": zone_text("bl.test", ["1.0.0.127 A 127.0.0.2"])}
    with DnsServer.start(base, zones) as server:
        yield server


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, dns: DnsServer) -> Iterator[MailServer]:
    srv = make_server(tmp_path_factory.mktemp("admin-running"), dns.port)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory, dns: DnsServer) -> Iterator[MailServer]:
    """Every command run on the data directory with no server, then the server started to look."""
    srv = make_server(tmp_path_factory.mktemp("admin-stopped"), dns.port)
    for case in CASES.values():
        case.act(srv, case.memo)
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("name", list(CASES))
def test_while_running_through_the_control_socket_at_once(running: MailServer, name: str) -> None:
    case = CASES[name]
    memo: dict[str, object] = {}
    before = len(running.log_lines)
    case.act(running, memo)
    running.wait_log(f"control: {case.command} done", after=before)
    case.check(running, memo)


@pytest.mark.parametrize("name", list(CASES))
def test_while_stopped_on_the_store(stopped: MailServer, name: str) -> None:
    case = CASES[name]
    assert not any(f"control: {case.command}" in line for line in stopped.log_lines)
    case.check(stopped, case.memo)


# ---------------------------------------------------------------- validation, running and stopped


REFUSALS = [
    (["account", "add", "gina", "gina-at-example.test"], None, "address 'gina-at-example.test': expected local@domain"),
    (["account", "add", "gina", "gina@exa_mple.test"], None, "label 'exa_mple' is not a host name label"),
    (["account", "add", "gina", "gina@bad..test"], None, "empty label"),
    (["account", "add", "gina", "gina@xn--zz.test"], None, "not a valid A-label"),
    (["account", "add", "gina", "gina@☃.test"], None, "not allowed"),
    (["account", "add", "gina", "gina@10.0.0.1"], None, "the last label is all digits"),
    (["account", "add", "gina", "gina@mail.test", "--password-stdin"], "short\n", "password shorter than 8 characters"),
    (["account", "add", "gina", "gina@mail.test"], None, "no password given and no terminal to ask on"),
    (["account", "add", "system", "system@mail.test"], None, "'system' is reserved"),
    (["account", "add", "Gina", "gina@mail.test"], None, "account name 'Gina': use 1-64 of a-z"),
    (["account", "add", "alice", "alice2@mail.test", "--password-stdin"], PASSWORD + "\n", "account alice exists"),
    (["account", "add", "gina", "ALICE@mail.test", "--password-stdin"], PASSWORD + "\n", "belongs to account alice"),
    (["account", "set-password", "alice", "--password-stdin"], "1\n", "password shorter than 8 characters"),
    (["account", "set-password", "alice"], None, "no password given and no terminal to ask on"),
    (["account", "set-password", "nobody", "--password-stdin"], PASSWORD + "\n", "no account nobody"),
    (["account", "add-address", "nobody", "x@mail.test"], None, "no account nobody"),
    (["account", "add-address", "carol", "alice@MAIL.test"], None, "belongs to account alice"),
    (["account", "add-address", "carol", "no-at-sign"], None, "expected local@domain, or @domain for a catch-all"),
    (["account", "add-address", "carol", "@bad_domain.test"], None, "not a host name label"),
    (["account", "remove-address", "carol", "alice@mail.test"], None, "account carol has no address alice@mail.test"),
    (["account", "delete", "nobody"], None, "no account nobody"),
    (["dkim", "add", "unknown.test", "sel"], None, "unknown.test is not a domain here and no account has an address"),
    (["domain", "add", "bad_domain.test"], None, "not a host name label"),
    (["domain", "add", "gone.test"], None, "domain gone.test exists"),
    (["domain", "remove", "never.test"], None, "no domain never.test"),
    (["domain", "remove", "busy.test"], None, "domain busy.test still has addresses (busy@busy.test): remove them first"),
    (["import", "nobody", "/dev/null"], None, "no account nobody"),
    (["junk", "retrain", "nobody"], None, "no account nobody"),
    (["dkim", "add", "mail.test", "bad_selector"], None, "selector 'bad_selector'"),
    (["dkim", "add", "mail.test", "taken"], None, "selector taken of mail.test exists"),
    (["account", "set", "carol", "junk.nope", "x.test"], None, "setting 'junk.nope': one of"),
    (["account", "set", "carol", "junk.forwarders", "fwd.test, 300.1.2.3/8"], None, "is not an IP network"),
    (["account", "set", "carol", "junk.list-domains", "lists_x.test"], None, "not a host name label"),
    (["account", "set", "nobody", "junk.dnsbl", "bl.test"], None, "no account nobody"),
    (["junk", "dnsbl", "carol", "remove", "none.test"], None, "account carol dnsbl: no none.test"),
    (["junk", "lists", "carol", "add", "lists_x.test"], None, "not a host name label"),
    (["junk", "forwarders", "carol", "add", "300.1.2.3/8"], None, "is not an IP network"),
    (["junk", "forwarders", "nobody", "add", "fwd.test"], None, "no account nobody"),
]


def refuse(srv: MailServer, argv: list[str], stdin: str | None, needle: str) -> None:
    p = cli(srv, *argv, stdin=stdin)
    assert p.returncode == 2, (argv, p.returncode, p.stderr)
    assert needle in p.stderr, (argv, p.stderr)
    assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("eventmail: "), p.stderr
    assert p.stdout == ""


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory, dns: DnsServer) -> MailServer:
    srv = make_server(tmp_path_factory.mktemp("admin-refusing"), dns.port)
    ok(srv, "dkim", "add", "mail.test", "taken")
    ok(srv, "domain", "add", "busy.test")
    ok(srv, "account", "add-address", "carol", "busy@busy.test")
    return srv


@pytest.mark.parametrize(("argv", "stdin", "needle"), REFUSALS, ids=[" ".join(r[0]) for r in REFUSALS])
def test_refusals_with_the_server_stopped(refusing: MailServer, argv: list[str], stdin: str | None, needle: str) -> None:
    refuse(refusing, argv, stdin, needle)


def test_refusals_through_the_running_server(refusing: MailServer) -> None:
    refusing.start()
    try:
        listing = ok(refusing, "account", "list")
        for argv, stdin, needle in REFUSALS:
            before = len(refusing.log_lines)
            refuse(refusing, argv, stdin, needle)
            if (stdin is not None or argv[0] in ("dkim", "domain", "import", "junk")
                    or argv[1] in ("add-address", "remove-address", "delete", "set")):
                # Refused by the server's mail layer, not by the CLI before sending.
                refusing.wait_log("refused: ", after=before)
        assert ok(refusing, "account", "list") == listing  # nothing was written
    finally:
        refusing.stop()


def test_a_minimum_password_length_from_the_configuration(tmp_path: Path) -> None:
    srv = MailServer(tmp_path, extra_config="")
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    config = srv.write_config()
    config.write_text("min_password_length = 24\n" + config.read_text())
    srv.write_config = lambda: config  # type: ignore[method-assign]
    srv.start()
    try:
        refuse(srv, ["account", "set-password", "alice", "--password-stdin"], "twenty-three characters\n",
               "password shorter than 24 characters")
        ok(srv, "account", "set-password", "alice", "--password-stdin", stdin="twenty-four characters!!\n")
    finally:
        srv.stop()


def test_localserve_is_administered_while_running(tmp_path: Path) -> None:
    directory = tmp_path / "ls"
    ls = start_localserve(directory, "--password", PASSWORD)
    ports = ls.ports
    try:
        srv = MailServer(tmp_path, ports=ports)  # only its ports: the IMAP helpers take a MailServer
        key_file = directory / "keys" / "master.key"

        def run_cli(*argv: str, stdin: str) -> None:
            p = subprocess.run([sys.executable, "-m", "eventmail", *argv, "--dir", str(directory), "--key-file",
                                str(key_file)], input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT)
            assert p.returncode == 0, p.stderr

        run_cli("account", "add", "gina", "gina@localhost", "--password-stdin", stdin=PASSWORD + "\n")
        assert imap_login(srv, "gina", PASSWORD)
        run_cli("account", "set-password", "you", "--password-stdin", stdin=NEW_PASSWORD + "\n")
        assert imap_login(srv, "you", NEW_PASSWORD) and not imap_login(srv, "you", PASSWORD)
    finally:
        ls.stop()
