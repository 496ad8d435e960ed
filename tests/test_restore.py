"""Point-in-time restore against a real `eventmail serve`: an accidental mass expunge, a changed
flag and a deleted mailbox brought back by one command while the server runs (an IDLE-ing IMAP
client sees the messages come back), byte-identical, without duplicates; the restore undone; the
dry run; one mailbox tree; and with the server stopped, the same command on the store."""

from __future__ import annotations

import imaplib
import re
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ROOT
from .dns_fixture import DnsServer, zone_text
from .mailserver import MailServer

PASSWORD = "restore test password"
Snapshot = dict[str, Counter[tuple[bytes, frozenset[str]]]]


def cli(srv: MailServer, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventmail", *argv, "--dir", str(srv.directory), "--key-file", str(srv.key_file)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, input=stdin,
    )


def ok(srv: MailServer, *argv: str) -> str:
    p = cli(srv, *argv)
    assert p.returncode == 0, p.stderr
    return p.stdout


def deliver(srv: MailServer, n: int, prefix: str) -> None:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        for i in range(n):
            body = f"Subject: {prefix} {i}\r\nFrom: s@example.test\r\nTo: alice@mail.test\r\n\r\nbody {i}\r\n"
            s.sendmail("s@example.test", ["alice@mail.test"], body)


def login(srv: MailServer, user: str = "alice") -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=30)
    m.login(user, PASSWORD)
    return m


def snapshot(srv: MailServer, user: str = "alice") -> Snapshot:
    """Every mailbox's messages as a multiset of (bytes, flags), read over IMAP (\\Recent aside:
    it belongs to a session)."""
    out: Snapshot = {}
    with login(srv, user) as m:
        typ, listing = m.list()
        names = [re.search(rb'"([^"]+)"$', line).group(1).decode() for line in listing if isinstance(line, bytes)]  # type: ignore[union-attr]
        for name in names:
            typ, count = m.select(f'"{name}"', readonly=True)
            items: Counter[tuple[bytes, frozenset[str]]] = Counter()
            out[name] = items
            if count[0] == b"0":
                continue
            typ, data = m.fetch("1:*", "(FLAGS BODY.PEEK[])")
            for item in data:
                if isinstance(item, tuple):
                    flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
                    assert flags is not None
                    kept = frozenset(f for f in flags.group(1).decode().split() if f != "\\Recent")
                    items[(item[1], kept)] += 1
    return out


def damage(srv: MailServer) -> None:
    """The accident: half the INBOX expunged, \\Seen taken off the rest, the Work mailbox deleted."""
    with login(srv) as m:
        m.select("INBOX")
        m.store("1:10", "+FLAGS", "(\\Deleted)")
        m.expunge()
        m.store("1:*", "-FLAGS", "(\\Seen)")
        m.delete("Work")


def prepare(srv: MailServer) -> None:
    deliver(srv, 20, "restore me")
    srv.wait_for("alice", 20)
    with login(srv) as m:
        m.create("Work")
        m.select("INBOX")
        m.copy("3:7", "Work")
        m.store("1:12", "+FLAGS", "(\\Seen)")
        m.store("2,4", "+FLAGS", "(\\Flagged $Label1)")
        m.select("Work")
        m.store("1", "+FLAGS", "(\\Answered)")


class Idler:
    """An IMAP client in IDLE on INBOX (RFC 2177), collecting the untagged EXISTS it is sent."""

    def __init__(self, srv: MailServer) -> None:
        self.sock = socket.create_connection(("127.0.0.1", srv.ports["imap"]), timeout=30)
        self.file = self.sock.makefile("rb")
        self.exists: list[int] = []
        self.file.readline()
        for line in (b"a LOGIN alice \"" + PASSWORD.encode() + b"\"\r\n", b"b SELECT INBOX\r\n", b"c IDLE\r\n"):
            self.sock.sendall(line)
            tag = line.split(b" ")[0]
            while True:
                got = self.file.readline()
                if got.startswith(b"+") or got.startswith(tag + b" "):
                    break
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.file:
                m = re.match(rb"\* (\d+) EXISTS", line)
                if m:
                    self.exists.append(int(m.group(1)))
        except OSError:
            pass

    def wait_exists(self, n: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not (self.exists and self.exists[-1] >= n):
            if time.monotonic() > deadline:
                raise AssertionError(f"the IDLE client saw EXISTS {self.exists}, not {n}")
            time.sleep(0.05)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    """The sender's domain, so that delivery checks answer at once."""
    zones = {"example.test": zone_text("example.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"'])}
    with DnsServer.start(tmp_path_factory.mktemp("restore-dns"), zones) as server:
        yield server


@pytest.fixture
def server(tmp_path: Path, dns: DnsServer) -> Iterator[MailServer]:
    srv = MailServer(tmp_path, kinds=("smtp", "imap"), allow_plaintext_auth=True, dns_port=dns.port)
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def moment() -> str:
    """A moment between two steps of a test: the log's times are microseconds, and a short sleep
    on each side keeps the steps apart."""
    time.sleep(0.05)
    at = f"{time.time():.6f}"
    time.sleep(0.05)
    return at


def test_a_mass_expunge_is_restored_while_the_server_runs_and_undone(server: MailServer) -> None:
    prepare(server)
    before = snapshot(server)
    at = moment()
    damage(server)
    damaged = snapshot(server)
    assert sum(damaged["INBOX"].values()) == 10 and "Work" not in damaged

    dry = ok(server, "restore", "alice", "--at", at, "--dry-run")
    assert "INBOX: 10 messages back, flags changed on 2" in dry, dry
    assert "Work: 5 messages back, mailbox recreated" in dry, dry
    assert "dry run" in dry
    assert snapshot(server) == damaged  # the dry run changed nothing

    idler = Idler(server)
    try:
        out = ok(server, "restore", "alice", "--at", at)
        restore_id = out.strip().splitlines()[-1]
        assert re.fullmatch(r"r[0-9a-f]{10}", restore_id), out
        idler.wait_exists(20)  # the client in IDLE sees the messages come back
    finally:
        idler.close()
    assert snapshot(server) == before  # byte-identical, flags and mailboxes back

    again = ok(server, "restore", "alice", "--at", at)
    assert "nothing to restore" in again  # no duplicates
    assert snapshot(server) == before

    undone = ok(server, "restore", "alice", "--undo", restore_id)
    assert "15 messages removed" in undone, undone
    assert "Work" in undone
    assert snapshot(server) == damaged
    twice = cli(server, "restore", "alice", "--undo", restore_id)
    assert twice.returncode != 0 and "undone already" in twice.stderr


def test_one_mailbox_tree_restored_with_the_server_stopped(server: MailServer) -> None:
    prepare(server)
    before = snapshot(server)
    at = moment()
    damage(server)
    damaged = snapshot(server)
    server.stop()

    out = ok(server, "restore", "alice", "--at", at, "--mailbox", "Work")
    assert "Work: 5 messages back, mailbox recreated" in out and "INBOX" not in out, out
    server.start()
    now = snapshot(server)
    assert now["Work"] == before["Work"]
    assert now["INBOX"] == damaged["INBOX"]  # outside the tree: untouched


def test_times_that_cannot_be_restored_to_are_clear_errors(server: MailServer) -> None:
    deliver(server, 1, "one")
    cases = [
        (["--at", "2h"], "before account alice existed"),
        (["--at", "1999-01-01T00:00:00"], "before account alice existed"),
        (["--at", str(time.time() + 3600)], "in the future"),
        (["--at", "yesterday"], "expected ISO 8601"),
        (["--at", "1", "--undo", "rdeadbeef00"], "takes no --at"),
        ([], "give --at TIME"),
    ]
    for argv, needle in cases:
        p = cli(server, "restore", "alice", *argv)
        assert p.returncode == 2, (argv, p.stdout, p.stderr)
        assert needle in p.stderr and "Traceback" not in p.stderr, (argv, p.stderr)
    p = cli(server, "restore", "alice", "--undo", "rdeadbeef00")
    assert p.returncode != 0 and "no restore rdeadbeef00" in p.stderr
    p = cli(server, "restore", "nobody", "--at", "1h")
    assert p.returncode != 0 and "no account nobody" in p.stderr


def imap_ok(srv: MailServer) -> bool:
    try:
        with login(srv) as m:
            return m.select("INBOX")[0] == "OK"
    except imaplib.IMAP4.error:
        return False


def rcpt_code(srv: MailServer, address: str) -> int:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        s.ehlo("client.example.test")
        s.mail("s@example.test")
        return s.rcpt(address)[0]


def test_a_deleted_account_is_brought_back_within_its_grace_period(server: MailServer) -> None:
    prepare(server)
    before = snapshot(server)
    out = ok(server, "account", "delete", "alice")
    assert "restore alice` brings it back" in out, out
    assert not imap_ok(server) and rcpt_code(server, "alice@mail.test") == 550  # gone for mail and logins
    listing = cli(server, "account", "list")  # read-only beside the running server
    assert "alice\talice@mail.test\tdeleted: restorable until" in listing.stdout, listing
    p = cli(server, "account", "add", "alice", "other@mail.test", "--password-stdin", stdin=PASSWORD + "\n")
    assert p.returncode != 0 and "grace period" in p.stderr

    out = ok(server, "restore", "alice")
    assert "account alice brought back with alice@mail.test" in out, out
    assert imap_ok(server) and rcpt_code(server, "alice@mail.test") == 250
    assert snapshot(server) == before  # its mail, flags and mailboxes, as they were


def test_shredding_now_and_at_the_end_of_the_grace_period(tmp_path: Path, dns: DnsServer) -> None:
    srv = MailServer(tmp_path, kinds=("smtp", "imap"), allow_plaintext_auth=True, dns_port=dns.port,
                     settings="deletion_grace_days = 0.00003\n")  # 2.6 seconds
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    srv.add_account("bob", "bob@mail.test", PASSWORD)
    srv.start()
    try:
        deliver(srv, 2, "shred me")
        srv.wait_for("alice", 2)
        streams = len(list((srv.directory / "streams").iterdir()))
        assert "shredded" in ok(srv, "account", "delete", "bob", "--shred")
        ok(srv, "account", "delete", "alice")
        srv.wait_log("account alice shredded: its grace period after deletion ended", timeout=30)
        for name in ("alice", "bob"):
            p = cli(srv, "restore", name)
            assert p.returncode != 0 and f"no account {name}" in p.stderr, p.stderr
    finally:
        srv.stop()
    verify = cli(srv, "verify")
    assert verify.returncode == 0, verify.stderr
    assert len(verify.stdout.strip().splitlines()) == 2  # system and queue: no account stream left
    assert len(list((srv.directory / "streams").iterdir())) == streams - 2  # their logs are gone too


def test_shredding_reaches_the_secondary_and_a_restore_works_after_a_takeover(tmp_path: Path) -> None:
    from eventmail.opening import open_store
    from eventmail.store import MasterKeySource, load_master_key

    from .replica_pair import caught_up, close_pair, make_pair, wait_until

    a, b = make_pair(tmp_path)
    for node in (a, b):
        node.kinds = (*node.kinds, "imap")
        node.allow_plaintext_auth = True
    a.add_account("bob", "bob@mail.test", "pw-bob-12345")
    a.cli("account", "set-password", "alice", "--password-stdin", stdin=PASSWORD + "\n")

    def keyring_streams(node: MailServer) -> set[str]:
        async def read() -> set[str]:
            key = load_master_key(node.directory, MasterKeySource(key_file=node.key_file))
            store = await open_store(node.directory, key, writable=False)
            try:
                return set(store.keyring.streams)
            finally:
                await store.close()

        import asyncio

        return asyncio.run(read())

    try:
        a.start()
        b.start()
        with smtplib.SMTP("127.0.0.1", a.ports["smtp"], timeout=30) as s:
            for i, rcpt in enumerate(("alice@mail.test", "alice@mail.test", "alice@mail.test", "bob@mail.test")):
                s.sendmail("s@example.test", [rcpt], f"Subject: {i} to {rcpt}\r\n\r\nhello\r\n")
        assert len(a.wait_for("alice", 3)) == 3
        wait_until(lambda: caught_up(b, a), 60, "the secondary to catch up")
        before = snapshot(a)
        at = moment()
        with login(a) as m:
            m.select("INBOX")
            m.store("1:*", "+FLAGS", "(\\Deleted)")
            m.expunge()
        assert "account/bob" in keyring_streams(b)
        ok(a, "account", "delete", "bob", "--shred")
        wait_until(lambda: caught_up(b, a), 60, "the secondary to catch up")
        wait_until(lambda: "account/bob" not in keyring_streams(b), 30, "the secondary to drop bob's keys")
        p = cli(b, "log", "bob")
        assert p.returncode != 0

        a.kill()  # the primary is lost; the secondary takes over
        b.replica("promote")
        out = ok(b, "restore", "alice", "--at", at)
        assert "INBOX: 3 messages back" in out, out
        assert snapshot(b)["INBOX"] == before["INBOX"]
    finally:
        close_pair(a, b)


def blob_files(srv: MailServer) -> int:
    return sum(1 for f in (srv.directory / "blobs").rglob("*") if f.is_file())


def test_retention_collects_expunged_mail_past_its_window_and_restore_says_so(server: MailServer) -> None:
    deliver(server, 4, "kept a while")
    server.wait_for("alice", 4)
    early = moment()
    with login(server) as m:
        m.select("INBOX")
        m.store("1:2", "+FLAGS", "(\\Deleted)")
        m.expunge()
    files = blob_files(server)
    out = ok(server, "retention", "collect", "alice")
    assert "alice: 0 expunged messages removed" in out, out  # inside the 30-day default window
    assert "2 messages back" in ok(server, "restore", "alice", "--at", early, "--dry-run")

    p = cli(server, "account", "set", "alice", "retention.days", "soon")
    assert p.returncode == 2 and "number of days" in p.stderr
    ok(server, "account", "set", "alice", "retention.days", "0.00001")  # 0.9 seconds
    time.sleep(1.5)
    out = ok(server, "retention", "collect", "alice")
    assert "alice: 2 expunged messages removed" in out, out
    assert blob_files(server) == files - 2
    p = cli(server, "restore", "alice", "--at", early)
    assert p.returncode == 2 and "older than the retention window" in p.stderr, p.stderr
    assert len(snapshot(server)["INBOX"]) == 2  # what is still in the mailbox stays
    assert "0 expunged messages removed" in ok(server, "retention", "collect", "alice")
    server.stop()
    verified = cli(server, "verify")
    assert verified.returncode == 0 and "DAMAGED" not in verified.stdout, verified  # collected blobs are recorded


def test_restore_into_a_new_account(server: MailServer) -> None:
    prepare(server)
    before = snapshot(server)
    at = moment()
    damage(server)
    damaged = snapshot(server)
    dry = ok(server, "restore", "alice", "--at", at, "--into", "alice2", "--dry-run")
    assert "into a new account alice2" in dry and "Work: 5 messages back, mailbox recreated" in dry, dry
    assert "alice2" not in ok(server, "account", "list")
    out = ok(server, "restore", "alice", "--at", at, "--into", "alice2")
    assert "INBOX: 20 messages back" in out, out
    p = cli(server, "account", "set-password", "alice2", "--password-stdin", stdin=PASSWORD + "\n")
    assert p.returncode == 0, p.stderr
    assert snapshot(server, "alice2") == before  # the past, byte for byte, in its own account
    assert snapshot(server) == damaged  # the original untouched
    p = cli(server, "restore", "alice", "--at", at, "--into", "alice2")
    assert p.returncode == 2 and "alice2 exists" in p.stderr


def test_a_view_of_the_past_from_a_kept_checkpoint_equals_a_replay_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past checkpoints shorten a view of the past (restore, export --at); they must not change it."""
    import asyncio

    from eventmail.opening import REGISTRATION, open_store
    from eventmail.proto import events_pb2 as pb
    from eventmail.store import MasterKeySource, Projector, init_directory, load_master_key
    from eventmail.store import account as account_mod

    monkeypatch.setattr(account_mod, "CHECKPOINT_EVERY", 40)
    source = MasterKeySource(key_file=tmp_path / "master.key")
    init_directory(tmp_path / "data", source)
    key = load_master_key(tmp_path / "data", source)

    async def main() -> None:
        store = await open_store(tmp_path / "data", key)
        await store.create_account("alice", ["alice@example.test"], None)
        moments = []
        async with store.use_account("alice") as acct:
            inbox = acct.mailbox_required("INBOX").id
            for i in range(300):
                raw = f"Subject: {i}\r\n\r\nbody {i}\r\n".encode()
                await acct.add_message("INBOX", raw, flags=["\\Seen"] if i % 3 else [])
                if i % 7 == 6:
                    uids = [m.uid for m in acct.view.messages(inbox)][:2]
                    await acct.expunge(inbox, uids)
                if i % 50 == 25:
                    await acct.append([pb.Event(account_setting=pb.AccountSetting(key=f"k{i}", value="v"))])
                    if acct._checkpointing is not None:
                        await acct._checkpointing
                    moments.append(int(time.time() * 1e6))
            if acct._checkpointing is not None:
                await acct._checkpointing
            from eventmail.store import checkpoint as checkpoint_mod

            kept = checkpoint_mod.past(acct._checkpoint_path)
            assert len(kept) == checkpoint_mod.KEEP_PAST  # several written, the oldest pruned
            assert acct._past_checkpoint(moments[-1])[1] > 0  # the view of the past starts from one
            for at in moments:
                full = Projector(REGISTRATION)
                full.apply((c.seq, c.time_us, c.event) for c in acct.events() if c.time_us <= at)
                assert acct.projector_at(at).view.dump() == full.view.dump()
                assert acct.projector_at(at).view.seq == full.view.seq
        await store.close()

    asyncio.run(main())
