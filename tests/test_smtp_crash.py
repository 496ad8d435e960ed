"""A 250 is a promise: the MX SIGKILLed under load keeps every message it acknowledged, exactly once."""

import os
import random
import smtplib
import threading
import time
from pathlib import Path

import pytest

from .dns_fixture import DnsServer, zone_text
from .mailserver import MailServer

TRIALS = int(os.environ.get("EVENTMAIL_SMTP_KILL_TRIALS", "4"))
CLIENTS = 6


def load(port: int, tag: str, acked: list[str], stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        subject = f"{tag}-{i}"
        msg = f"From: s@example.test\r\nTo: alice@mail.test\r\nSubject: {subject}\r\n\r\nbody {subject}\r\n"
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                s.sendmail("s@example.test", ["alice@mail.test"], msg.encode())
            acked.append(subject)  # only after the 250 to the end of DATA
        except (OSError, smtplib.SMTPException):
            return


@pytest.mark.peers
def test_sigkill_under_smtp_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    srv = MailServer(tmp_path)
    srv.init()
    srv.add_account("alice", "alice@mail.test", "pw-alice-123")
    dns = DnsServer.start(tmp_path / "dns", {"example.test": zone_text("example.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"'])})
    srv.dns_port = dns.port
    rng = random.Random()
    acked: list[str] = []
    for trial in range(TRIALS):
        srv.start()
        stop = threading.Event()
        threads = [
            threading.Thread(target=load, args=(srv.ports["smtp"], f"t{trial}c{c}", acked, stop)) for c in range(CLIENTS)
        ]
        before = len(acked)
        for t in threads:
            t.start()
        # Kill at a random moment once the load is flowing: after a few acknowledgements of this
        # trial (however slow a busy machine makes them), not after a fixed time.
        deadline = time.monotonic() + 120
        while len(acked) < before + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        srv.kill()
        stop.set()
        for t in threads:
            t.join(30)
        srv.ports.clear()
    assert len(acked) > TRIALS * 5, "the load generator got too few messages through to test anything"
    bodies = srv.messages("alice")
    for subject in acked:
        needle = f"Subject: {subject}\r\n".encode()
        count = sum(needle in m for m in bodies)
        assert count == 1, f"{subject}: acknowledged with 250, found {count} times"
    out = srv.cli("verify")
    assert "DAMAGED" not in out
    dns.stop()
