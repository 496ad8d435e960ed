"""The configured max_message_bytes is the limit of both SMTP (SIZE, RFC 1870) and IMAP APPEND (APPENDLIMIT, RFC 7889) of a running server."""

from __future__ import annotations

import imaplib
import smtplib
from pathlib import Path

from .mailserver import MailServer

LIMIT = 3 * 1024 * 1024


def test_smtp_and_imap_take_the_same_configured_size(tmp_path: Path) -> None:
    srv = MailServer(tmp_path, max_message_bytes=LIMIT, kinds=("smtp", "imap"))
    srv.init()
    srv.start()
    try:
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
            s.ehlo("client.example")
            assert s.esmtp_features["size"] == str(LIMIT)
        with imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=30) as m:
            assert f"APPENDLIMIT={LIMIT}" in m.capabilities
    finally:
        srv.stop()
