"""Backup repositories with the real CLI: made while a server delivers mail, incremental, verified,
restored into a new data directory a server then serves; completed after a SIGKILL in the middle;
and reached by an account's shredding at the next run."""

from __future__ import annotations

import imaplib
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.store.log import TAIL_HINT
from eventmail.tls.certs import make_self_signed

from .conftest import ROOT
from .dns_fixture import DnsServer, zone_text
from .mailserver import MailServer, stored_messages

PASSWORD = "backup test password"


def cli(directory: Path, key_file: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventmail", *argv, "--dir", str(directory), "--key-file", str(key_file)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )


def ok(directory: Path, key_file: Path, *argv: str) -> str:
    p = cli(directory, key_file, *argv)
    assert p.returncode == 0, p.stderr
    return p.stdout


def deliver(srv: MailServer, subjects: list[str], text: str = "") -> None:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        for subject in subjects:
            body = f"Subject: {subject}\r\nFrom: s@example.test\r\nTo: alice@mail.test\r\n\r\n{subject} body\r\n{text}"
            s.sendmail("s@example.test", ["alice@mail.test"], body)


def files_of(root: Path) -> dict[str, bytes]:
    """The files a backup holds: the data directory's, without the logs' tail hints (a hint only
    shortens an open; backups skip them)."""
    out = {}
    for part in ("streams", "blobs", "checkpoints", "past-checkpoints"):
        for dirpath, _, names in os.walk(root / part):
            for n in names:
                if n == TAIL_HINT:
                    continue
                p = Path(dirpath) / n
                out[str(p.relative_to(root))] = p.read_bytes()
    out["keyring"] = (root / "keyring").read_bytes()
    return out


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    zones = {"example.test": zone_text("example.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"'])}
    with DnsServer.start(tmp_path_factory.mktemp("backup-dns"), zones) as server:
        yield server


def new_server(base: Path, dns: DnsServer) -> MailServer:
    srv = MailServer(base, kinds=("smtp", "imap"), allow_plaintext_auth=True, dns_port=dns.port)
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    srv.add_account("bob", "bob@mail.test", PASSWORD)
    return srv


def test_backup_while_delivering_then_restore_and_serve(tmp_path: Path, dns: DnsServer) -> None:
    srv = new_server(tmp_path / "a", dns)
    repo = tmp_path / "repo"
    srv.start()
    try:
        deliver(srv, [f"first {i}" for i in range(20)])
        stop = threading.Event()
        sent: list[str] = []

        def keep_delivering() -> None:
            i = 0
            while not stop.is_set():
                deliver(srv, [f"during {i}"])
                sent.append(f"during {i}")
                i += 1

        t = threading.Thread(target=keep_delivering)
        t.start()
        try:
            first = ok(srv.directory, srv.key_file, "backup", "create", str(repo))
            time.sleep(0.5)
            second = ok(srv.directory, srv.key_file, "backup", "create", str(repo))
        finally:
            stop.set()
            t.join()
        assert sent, "no delivery ran during the backups"
        # Each run is consistent while mail arrives: it verifies.
        verified = ok(srv.directory, srv.key_file, "backup", "verify", str(repo))
        assert "DAMAGED" not in verified and "account/alice" in verified, verified
        last = ok(srv.directory, srv.key_file, "backup", "create", str(repo))
    finally:
        srv.stop()
    copied = [int(x.split(" copied")[0].split()[-1]) for x in (first, second, last)]
    assert copied[0] > copied[2], (first, second, last)  # incremental: later runs copy what changed

    # No plaintext in the repository: neither a subject nor a body.
    for rel, data in files_of(repo).items():
        assert b"first 1" not in data and b"during 0" not in data, rel

    new_dir = tmp_path / "restored" / "data"
    out = ok(new_dir, srv.key_file, "backup", "restore", str(repo))
    assert "DAMAGED" not in out and "account/alice" in out, out
    assert stored_messages(new_dir, srv.key_file, "alice") == stored_messages(srv.directory, srv.key_file, "alice")

    # The restored directory serves: the same mail over IMAP.
    srv2 = MailServer(tmp_path / "restored", kinds=("smtp", "imap"), allow_plaintext_auth=True, dns_port=dns.port)
    (tmp_path / "restored" / "master.key").write_bytes(srv.key_file.read_bytes())
    os.chmod(tmp_path / "restored" / "master.key", 0o600)
    make_self_signed(srv2.cert, srv2.base / "key.pem", ["localhost", "mail.test", "127.0.0.1"])
    srv2.start()
    try:
        with imaplib.IMAP4("127.0.0.1", srv2.ports["imap"], timeout=30) as m:
            m.login("alice", PASSWORD)
            typ, data = m.select("INBOX")
            assert int(data[0]) == 20 + len(sent)
    finally:
        srv2.stop()


def test_a_backup_killed_midway_is_completed_by_the_next_run(tmp_path: Path, dns: DnsServer) -> None:
    srv = new_server(tmp_path / "a", dns)
    srv.start()
    try:
        deliver(srv, [f"big {i}" for i in range(150)], text=("y" * 70 + "\r\n") * 850)
        srv.wait_for("alice", 150)
    finally:
        srv.stop()
    repo = tmp_path / "repo"
    killed = False
    for delay in (0.3, 0.15, 0.6, 1.0):
        if repo.exists():
            subprocess.run(["rm", "-rf", str(repo)], check=True)
        p = subprocess.Popen(
            [sys.executable, "-m", "eventmail", "backup", "create", str(repo), "--dir", str(srv.directory),
             "--key-file", str(srv.key_file)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            if (repo / "blobs").exists() and sum(1 for _ in (repo / "blobs").rglob("*")) > 20:
                break
            time.sleep(0.005)
        time.sleep(delay * 0.01)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
            killed = True
            break
        p.wait()
    assert killed, "the backup always finished before it could be killed"
    assert not (repo / "keyring").exists() or files_of(repo) != files_of(srv.directory)
    bad = cli(srv.directory, srv.key_file, "backup", "verify", str(repo))
    assert bad.returncode != 0  # cut short: no keyring yet, or incomplete

    ok(srv.directory, srv.key_file, "backup", "create", str(repo))
    assert files_of(repo) == files_of(srv.directory)  # complete, byte for byte
    verified = ok(srv.directory, srv.key_file, "backup", "verify", str(repo))
    assert "DAMAGED" not in verified


def test_shredding_reaches_a_backup_at_its_next_run(tmp_path: Path, dns: DnsServer) -> None:
    srv = new_server(tmp_path / "a", dns)
    srv.start()
    try:
        deliver(srv, ["secret one", "secret two"])
        srv.wait_for("alice", 2)
        repo = tmp_path / "repo"
        ok(srv.directory, srv.key_file, "backup", "create", str(repo))
        assert "account/alice" in ok(srv.directory, srv.key_file, "backup", "verify", str(repo))
        ok(srv.directory, srv.key_file, "account", "delete", "alice", "--shred")
        ok(srv.directory, srv.key_file, "backup", "create", str(repo))
    finally:
        srv.stop()
    verified = ok(srv.directory, srv.key_file, "backup", "verify", str(repo))
    assert "account/alice" not in verified and "account/bob" in verified, verified
    assert files_of(repo) == files_of(srv.directory)  # alice's log and blobs removed from the repository too
    p = cli(repo, srv.key_file, "log", "alice")
    assert p.returncode != 0


def test_a_new_master_key_rewraps_the_keyring_only(tmp_path: Path, dns: DnsServer) -> None:
    srv = new_server(tmp_path / "a", dns)
    srv.start()
    try:
        deliver(srv, ["keep me one", "keep me two"])
        srv.wait_for("alice", 2)
        new_key = tmp_path / "new.key"
        p = cli(srv.directory, srv.key_file, "key", "change", "--new-key-file", str(new_key))
        assert p.returncode != 0 and "Traceback" not in p.stderr  # not while the server runs
        assert not new_key.exists()
    finally:
        srv.stop()
    before = files_of(srv.directory)
    mail = stored_messages(srv.directory, srv.key_file, "alice")
    out = ok(srv.directory, srv.key_file, "key", "change", "--new-key-file", str(new_key))
    assert "no record or blob was rewritten" in out
    after = files_of(srv.directory)
    assert after.pop("keyring") != before.pop("keyring")
    assert after == before  # every segment, blob and checkpoint as it was
    old = cli(srv.directory, srv.key_file, "verify")
    assert old.returncode == 2 and "does not open" in old.stderr
    assert stored_messages(srv.directory, new_key, "alice") == mail

    env = {**os.environ, "EM_NEW_PASSPHRASE": "a long new passphrase"}
    p = subprocess.run(
        [sys.executable, "-m", "eventmail", "key", "change", "--new-passphrase-env", "EM_NEW_PASSPHRASE",
         "--dir", str(srv.directory), "--key-file", str(new_key)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )
    assert p.returncode == 0, p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "eventmail", "verify", "--dir", str(srv.directory), "--passphrase-env", "EM_NEW_PASSPHRASE"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )
    assert p.returncode == 0 and "account/alice" in p.stdout, p.stderr
    assert files_of(srv.directory) | {"keyring": b""} == before | {"keyring": b""}
