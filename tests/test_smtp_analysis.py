"""`analysis_workers = 1`: incoming mail is parsed and tokenized in a worker process, with the same
results as in the server's own (a message, its junk features, and the refusal of a too-deep one)."""

from __future__ import annotations

import os
import shutil
import smtplib
from pathlib import Path

import psutil
import pytest

from .mailserver import MailServer


def test_a_worker_process_parses_and_the_refusals_cross_back(tmp_path: Path) -> None:
    srv = MailServer(tmp_path, settings="analysis_workers = 1\n", kinds=("smtp",))
    srv.init()
    srv.add_account("alice", "alice@mail.test", "worker test password")
    srv.start()
    try:
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
            s.sendmail("s@example.test", ["alice@mail.test"],
                       b"From: s@example.test\r\nSubject: parsed elsewhere\r\n\r\nhello there\r\n")
        assert srv.proc is not None
        workers = psutil.Process(srv.proc.pid).children(recursive=True)
        assert workers, "no analysis process"
        body = b""
        for level in range(40):
            body = f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n'.encode() + body
            body += f"\r\n--b{level}--\r\n".encode()
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
            s.ehlo("client.example.test")
            assert s.mail("s@example.test")[0] == 250 and s.rcpt("alice@mail.test")[0] == 250
            code, _ = s.data(b"From: s@example.test\r\nSubject: deep\r\nMIME-Version: 1.0\r\n" + body)
        assert code == 554  # MimeTooDeep, raised in the worker, answered here
        got = srv.wait_for("alice", 1)
        assert b"Subject: parsed elsewhere" in got[0]
        # Its junk features were recorded with the delivery (tokens from the worker).
        assert '"words":' in srv.cli("log", "alice") and "hello" in srv.cli("log", "alice")
    finally:
        srv.stop()
    # The worker ended with the server, which does not call that a failure.
    assert not [line for line in srv.log_lines if "worker process" in line and "ended" in line]


def test_the_server_counts_cpu_by_stage(tmp_path: Path) -> None:
    """What bench/smtp.py prints by stage comes from the server: after a delivery, each stage of
    its path (in worker threads and on the event loop) has counted CPU time, and the stages are
    within the process's total."""
    from eventmail import control

    srv = MailServer(tmp_path, kinds=("smtp",))
    srv.init()
    srv.add_account("alice", "alice@mail.test", "stage test password")
    srv.start()
    try:
        # Counting starts with the first request (it costs the loop clock reads): a delivery
        # before it is counted in no stage, one after it in each.
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
            s.sendmail("s@example.test", ["alice@mail.test"],
                       b"From: s@example.test\r\nSubject: uncounted\r\n\r\nhello there\r\n")
        first = control.request_in(srv.directory, "stages")
        assert first is not None
        staged = {k: v for k, v in first["cpu_seconds"].items() if k not in ("process", "main thread")}
        assert not any(staged.values()), staged
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
            s.sendmail("s@example.test", ["alice@mail.test"],
                       b"From: s@example.test\r\nSubject: counted\r\n\r\nhello there\r\n")
        reply = control.request_in(srv.directory, "stages")
        assert reply is not None
        seconds = reply["cpu_seconds"]
        for name in ("junk decision", "blob", "append", "projections", "smtp session", "spf", "dmarc",
                     "auth verdict", "delivery", "dkim"):
            assert seconds.get(name, 0) > 0, (name, seconds)
        # Parsing, tokens and DKIM's hashing ran in the analysis process (the default on 2 cores or
        # more) or in a thread here: counted either way, apart from this process's when elsewhere.
        for name in ("parse", "junk features"):
            assert seconds.get(name, 0) + seconds.get(f"analysis: {name}", 0) > 0, (name, seconds)
        whole = ("process", "main thread", "main thread staged")
        assert sum(v for k, v in seconds.items() if k not in whole and not k.startswith("analysis: ")) \
            < seconds["process"]
        # Stages nest exclusively: what they took on the event loop's thread is within its CPU time.
        assert 0 < seconds["main thread staged"] < seconds["main thread"] < seconds["process"]
    finally:
        srv.stop()


def test_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    """A worker that dies (killed here) costs no message: the delivery after it is analysed and
    answered 250, and the server starts a new worker process in its place."""
    import signal
    import time

    srv = MailServer(tmp_path, settings="analysis_workers = 1\n", kinds=("smtp",))
    srv.init()
    srv.add_account("alice", "alice@mail.test", "worker test password")
    srv.start()
    try:
        def send(subject: str) -> None:
            with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
                s.sendmail("s@example.test", ["alice@mail.test"],
                           f"From: s@example.test\r\nSubject: {subject}\r\n\r\nhello there\r\n".encode())

        send("first")
        assert srv.proc is not None
        (first,) = psutil.Process(srv.proc.pid).children()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        send("after the kill")
        send("and one more")
        deadline = time.monotonic() + 30
        while not [c for c in psutil.Process(srv.proc.pid).children() if c.pid != first.pid]:
            assert time.monotonic() < deadline, "no new analysis process"
            time.sleep(0.1)
        got = srv.wait_for("alice", 3)
        assert b"Subject: after the kill" in b"".join(got) and b"Subject: and one more" in b"".join(got)
        assert any("worker process" in line and "ended" in line for line in srv.log_lines)
    finally:
        srv.stop()


def test_the_worker_is_forked_at_start_and_holds_nothing_of_the_server(tmp_path: Path) -> None:
    """`eventmail serve` forks its analysis worker at its start, before any thread, port or key:
    the worker has one thread and no file descriptor but its socket (and stdin, stdout, stderr),
    while the server has threads and its ports; one killed is replaced by a new interpreter."""
    import signal
    import time

    srv = MailServer(tmp_path, settings="analysis_workers = 1\n", kinds=("smtp",))
    srv.init()
    srv.add_account("alice", "alice@mail.test", "worker test password")
    srv.start()
    try:
        assert srv.proc is not None
        server = psutil.Process(srv.proc.pid)
        (worker,) = server.children()  # before any message: forked at the start
        assert worker.name() == "analysis" and worker.cmdline() == server.cmdline()
        assert worker.num_threads() == 1 and server.num_threads() > 1
        fds = {int(fd): os.readlink(f"/proc/{worker.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{worker.pid}/fd")}
        # One socket (read and written through two descriptors), nothing else of the server's.
        assert len({fds[fd] for fd in set(fds) - {0, 1, 2}}) == 1, fds
        assert all(fds[fd].startswith("socket:") for fd in set(fds) - {0, 1, 2}), fds
        assert fds[0] == os.devnull and not worker.net_connections("inet")  # no listener, no DNS socket
        send(srv, "parsed in the forked worker")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)  # reaped by the server
        send(srv, "after the kill")
        send(srv, "and one more")
        deadline = time.monotonic() + 30
        while not [c for c in server.children() if "eventmail.smtp.analysis" in c.cmdline()]:
            assert time.monotonic() < deadline, "no new interpreter in the forked worker's place"
            time.sleep(0.1)
        got = b"".join(srv.wait_for("alice", 3))
        for subject in ("parsed in the forked worker", "after the kill", "and one more"):
            assert f"Subject: {subject}".encode() in got, subject
    finally:
        srv.stop()


def send(srv: MailServer, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        s.sendmail("s@example.test", ["alice@mail.test"],
                   f"From: s@example.test\r\nSubject: {subject}\r\n\r\nhello there\r\n".encode())


def test_workers_that_cannot_run_are_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that cannot run (here an interpreter that exits at once, as one that cannot read
    the code would) is started again for the next messages, and given up after MAX_FAILED_STARTS
    in a row: every message is still analysed (in a thread), and no more start is tried."""
    import asyncio

    from eventmail.smtp import analysis

    monkeypatch.setattr(analysis.sys, "executable", shutil.which("false") or "/bin/false")
    message = b"From: s@example.test\r\nTo: alice@mail.test\r\nSubject: still parsed\r\n\r\nhello there\r\n"

    async def run() -> analysis.Analyzer:
        analyzer = analysis.Analyzer(1)
        for _ in range(analysis.MAX_FAILED_STARTS + 2):
            incoming = await analyzer.incoming(message, "mx.example.test")
            assert incoming.parsed.structure.envelope.subject == b"still parsed"
            assert incoming.named == ("alice@mail.test",)
        return analyzer

    analyzer = asyncio.run(run())
    assert analyzer.workers == 0


def test_prefork_builds_what_the_first_message_builds_then_forks() -> None:
    """Analyzer.prefork, in a process with no thread (a new interpreter here): the parts the
    analysis builds at its first message (the public suffix list) are built before the fork, so
    the worker shares them, and the forked worker answers."""
    import subprocess
    import sys

    from .conftest import ROOT

    code = """
import asyncio
from eventmail.mailauth import psl
from eventmail.smtp import analysis

async def main():
    analyzer = analysis.Analyzer(1)
    assert not psl._DEFAULT
    await analyzer.prefork()
    assert psl._DEFAULT, "the list was not parsed before the fork"
    (worker,) = analyzer._pool
    incoming = await analyzer.incoming(b"From: x@example.test\\r\\nSubject: forked\\r\\n\\r\\nhi\\r\\n", "mx.test")
    assert incoming.parsed.structure.envelope.subject == b"forked" and worker.answered == 1
    analyzer.close()

asyncio.run(main())
print("ok")
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
