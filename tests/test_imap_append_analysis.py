"""APPEND parses and tokenizes a message once, where the server analyses incoming mail (a worker process with `analysis_workers`), and stores the features `stored_features` gives."""

from __future__ import annotations

import asyncio
import imaplib
from pathlib import Path

import psutil
import pytest

from eventmail.junk.features import sent_recipients, stored_features, with_identities
from eventmail.mail import ingest
from eventmail.mime import MimeTooDeep, parse_incoming
from eventmail.proto import events_pb2 as pb
from tests.imap_harness import corpus

from .mailserver import MailServer


@pytest.mark.parametrize("special_use", [pb.SPECIAL_USE_NONE, pb.SPECIAL_USE_SENT, pb.SPECIAL_USE_JUNK])
def test_one_analysis_gives_the_stored_features(special_use: int) -> None:
    """The structure and content features of `analyze_append`, completed as ingest.append
    completes them, equal a fresh parse and `stored_features` (what an APPEND stored before)."""
    origin = pb.Origin(kind="imap-append", remote_ip="127.0.0.1")
    for raw in [*corpus(40), *corpus(20, "spam")]:
        structure, content = asyncio.run(ingest.analyze_append(raw))
        assert structure == parse_incoming(raw)
        sent_to = sent_recipients(raw, origin) if special_use == pb.SPECIAL_USE_SENT else ()
        assert with_identities(content, sent_to=sent_to) == stored_features(raw, origin, special_use)


def test_too_deep_is_raised_by_the_analysis() -> None:
    body = b""
    for level in range(40):
        body = f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'.encode() + body
        body += f"\r\n--b{level}--\r\n".encode()
    with pytest.raises(MimeTooDeep):
        asyncio.run(ingest.analyze_append(b"Subject: deep\r\nMIME-Version: 1.0\r\n" + body))


def test_append_is_analysed_in_the_worker_process(tmp_path: Path) -> None:
    """With `analysis_workers = 1` an APPEND's parse and tokens come from the worker (its CPU is
    counted as the analysis process's, and no SMTP message was received), its features are
    recorded, and a too-deep message is refused with NO [LIMIT] from there."""
    from eventmail import control

    srv = MailServer(tmp_path, settings="analysis_workers = 1\n", kinds=("imap",), allow_plaintext_auth=True)
    srv.init()
    srv.add_account("alice", "alice@mail.test", "append worker password")
    srv.start()
    try:
        assert srv.proc is not None
        assert psutil.Process(srv.proc.pid).children(recursive=True), "no analysis process"
        assert control.request_in(srv.directory, "stages") is not None  # counting by stage from here
        with imaplib.IMAP4("127.0.0.1", srv.ports["imap"], timeout=30) as m:
            m.login("alice", "append worker password")
            typ, _ = m.append("INBOX", "", None, b"From: s@example.test\r\nSubject: appended\r\n\r\nzebra crossing\r\n")
            assert typ == "OK"
            reply = control.request_in(srv.directory, "stages")
            assert reply is not None
            seconds = reply["cpu_seconds"]
            assert seconds.get("analysis: parse", 0) > 0 and not seconds.get("parse"), seconds
            body = b""
            for level in range(40):
                body = f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'.encode() + body
                body += f"\r\n--b{level}--\r\n".encode()
            typ, data = m.append("INBOX", "", None, b"From: s@example.test\r\nMIME-Version: 1.0\r\n" + body)
            assert typ == "NO" and b"[LIMIT]" in data[0]
            m.logout()
        log = srv.cli("log", "alice")
        assert '"words":' in log and "zebra" in log
    finally:
        srv.stop()
