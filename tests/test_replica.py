"""Replication between two real `eventmail serve` processes: log shipping over mutual TLS."""

import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .replica_pair import caught_up, close_pair, make_pair, wait_until


def send(port: int, subject: str, to: str = "alice@mail.test") -> None:
    msg = f"From: s@example.test\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\nbody {subject}\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        s.sendmail("s@example.test", [to], msg.encode())


@pytest.mark.peers
def test_secondary_copies_every_stream_verbatim_and_sees_new_accounts(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    a.start()
    b.start()  # its data directory is made from a's keyring over the replication link
    try:
        started = time.time()
        for i in range(5):
            send(a.ports["smtp"], f"m{i}")
        wait_until(lambda: caught_up(b, a), what="b to catch up")
        # Same records: the heads (seq and chain value) agree stream by stream.
        assert b.heads() == {s: h for s, h in a.heads().items()}
        assert [m.split(b"Subject: ")[1][:2] for m in b.messages("alice")] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        st = b.status()
        assert st["role"] == "secondary" and st["we_follow_peer"]
        rows = {r["stream"]: r for r in st["streams"]}  # type: ignore[union-attr, index]
        assert rows["account/alice"]["lag_records"] == 0 and rows["account/alice"]["position"] >= 11
        # When its position became durable here (bench/replica.py's lag by the secondary's clock):
        # after the first message was sent, at the latest when this status was asked for.
        assert started < rows["account/alice"]["durable_at"] <= time.time()
        # A new account on the primary reaches the running secondary (the primary restarts to
        # run the CLI beside its data; the secondary keeps running).
        a.stop()
        a.add_account("bob", "bob@mail.test", "pw-bob-12345")
        a.ports.clear()
        a.start()
        send(a.ports["smtp"], "for-bob", to="bob@mail.test")
        wait_until(lambda: caught_up(b, a), what="b to catch up with bob")
        assert len(b.messages("bob")) == 1
        text = b.replica("status").stdout
        assert "account/bob" in text and "follower" in text
    finally:
        close_pair(a, b)


@pytest.mark.peers
def test_a_node_without_the_pinned_certificate_is_refused(tmp_path: Path) -> None:
    from eventmail.tls.certs import make_self_signed

    a, b = make_pair(tmp_path)
    # b presents a certificate a does not pin: mutual TLS refuses it, and b never gets data.
    make_self_signed(b.base / "repl-cert.pem", b.base / "repl-key.pem", ["b"])
    a.start()
    b.proc = subprocess.Popen(  # not b.start(): it waits for a keyring that never comes
        [sys.executable, "-m", "eventmail", "serve", "--config", str(b.write_config())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        time.sleep(4)
        assert not (b.directory / "keyring").exists()
    finally:
        close_pair(a, b)
