"""METADATA and NOTIFY against a real `eventmail localserve` process, with imaplib: entries survive a
restart of the server, and a message submitted over SMTP is told to a client that sent no command."""

from __future__ import annotations

import imaplib
import smtplib
from pathlib import Path

from tests.mailserver import start_localserve

PASSWORD = "pw-local-3"
# imaplib knows neither command; it sends what it is given
imaplib.Commands.setdefault("SETMETADATA", ("AUTH", "SELECTED"))
imaplib.Commands.setdefault("GETMETADATA", ("AUTH", "SELECTED"))
imaplib.Commands.setdefault("NOTIFY", ("AUTH", "SELECTED"))


def _login(port: int) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    m.login("you@localhost", PASSWORD)
    return m


def test_metadata_and_notify_on_localserve(tmp_path: Path) -> None:
    ls = start_localserve(tmp_path / "ls", "--password", PASSWORD)
    try:
        m = _login(ls.ports["imap"])
        assert "METADATA" in m.capabilities and "NOTIFY" in m.capabilities
        typ, _ = m._simple_command("SETMETADATA", "INBOX", '(/private/comment "kept across restarts")')
        assert typ == "OK"
        n = _login(ls.ports["imap"])
        typ, _ = n._simple_command("NOTIFY", "SET", "(inboxes (MessageNew MessageExpunge))")
        assert typ == "OK"
        with smtplib.SMTP("127.0.0.1", ls.ports["submission"], timeout=30) as s:
            s.login("you@localhost", PASSWORD)
            s.sendmail("you@localhost", ["you@localhost"], b"From: you@localhost\r\nSubject: told\r\n\r\nhi\r\n")
        # no command sent: the STATUS comes by itself
        line = n.readline()
        while not line.startswith(b"* STATUS"):
            line = n.readline()
        assert line.startswith(b'* STATUS "INBOX" (MESSAGES 1 ')
        n.logout()
        m.logout()
    finally:
        ls.stop()
    ls = start_localserve(tmp_path / "ls", "--password", PASSWORD)
    try:
        m = _login(ls.ports["imap"])
        typ, data = m._simple_command("GETMETADATA", "INBOX", "/private/comment")
        assert typ == "OK"
        assert m._untagged_response(typ, data, "METADATA")[1] == [b'"INBOX" (/private/comment "kept across restarts")']
        m.logout()
    finally:
        ls.stop()
