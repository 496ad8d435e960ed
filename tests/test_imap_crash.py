"""An IMAP OK is a promise: `eventmail serve` SIGKILLed under APPEND and STORE load keeps every acknowledged change."""

from __future__ import annotations

import imaplib
import os
import random
import threading
import time
from pathlib import Path

import pytest

from eventmail.opening import open_store
from eventmail.store import MasterKeySource, load_master_key

from .mailserver import MailServer, free_port

TRIALS = int(os.environ.get("EVENTMAIL_IMAP_KILL_TRIALS", "2"))
CLIENTS = 4


class ImapMailServer(MailServer):
    """The `eventmail serve` test instance with an implicit-TLS IMAP listener."""

    def write_config(self) -> Path:
        path = super().write_config()
        port = self.ports.get("imaps") or free_port()
        path.write_text(path.read_text() + f'[[listener]]\nkind = "imaps"\naddress = "127.0.0.1"\nport = {port}\n')
        return path


def load(srv: ImapMailServer, tag: str, appended: list[str], flagged: list[str], stop: threading.Event) -> None:
    import ssl
    try:
        m = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], timeout=10,
                              ssl_context=ssl.create_default_context(cafile=str(srv.cert)))
        m.login("alice", "pw-alice-123")
        m.select("INBOX")
        i = 0
        while not stop.is_set():
            i += 1
            subject = f"{tag}-{i}"
            msg = f"From: s@example.test\r\nSubject: {subject}\r\n\r\nbody {subject}\r\n".encode()
            typ, data = m.append("INBOX", None, None, msg)
            if typ != "OK":
                return
            appended.append(subject)  # only after the tagged OK
            uid = data[0].split()[2].rstrip(b"]").decode()  # [APPENDUID v uid]
            typ, _ = m.uid("STORE", uid, "+FLAGS.SILENT", "(\\Flagged)")
            if typ != "OK":
                return
            flagged.append(subject)
    except (OSError, imaplib.IMAP4.error):
        return


@pytest.mark.peers
def test_sigkill_under_imap_load_loses_no_acknowledged_change(tmp_path: Path) -> None:
    srv = ImapMailServer(tmp_path)
    srv.init()
    srv.add_account("alice", "alice@mail.test", "pw-alice-123")
    rng = random.Random()
    appended: list[str] = []
    flagged: list[str] = []
    for trial in range(TRIALS):
        srv.start()
        stop = threading.Event()
        threads = [threading.Thread(target=load, args=(srv, f"t{trial}c{c}", appended, flagged, stop))
                   for c in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(2.0, 4.0))
        srv.kill()
        stop.set()
        for t in threads:
            t.join(30)
        srv.ports.clear()
    assert len(appended) > TRIALS * 5, "too few APPENDs got through to test anything"
    stored = _subjects_and_flags(srv)
    for subject in appended:
        assert stored.get(subject, (0, False))[0] == 1, f"{subject}: APPEND acknowledged, stored {stored.get(subject)}"
    for subject in flagged:
        assert stored[subject][1], f"{subject}: STORE acknowledged, \\Flagged lost"
    assert "DAMAGED" not in srv.cli("verify")


def _subjects_and_flags(srv: MailServer) -> dict[str, tuple[int, bool]]:
    import asyncio

    async def read() -> dict[str, tuple[int, bool]]:
        key = load_master_key(srv.directory, MasterKeySource(key_file=srv.key_file))
        store = await open_store(srv.directory, key, writable=False)
        try:
            acct = await store.account("alice")
            mb = acct.mailbox_required("INBOX")
            out: dict[str, tuple[int, bool]] = {}
            for m in acct.view.messages(mb.id):
                raw = acct.read_message_sync(m.blob_id)
                subject = raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
                count, flag = out.get(subject, (0, False))
                out[subject] = (count + 1, flag or "\\Flagged" in m.flags)
            return out
        finally:
            await store.close()

    return asyncio.run(read())
