"""Webhooks against real parts: an aiohttp receiver on loopback, `eventmail serve` processes taking
mail over SMTP and sending it to a second server's MX, the CLI through the control socket. The
bodies are checked field by field against Mox's webhook.Incoming and webhook.Outgoing, and the
signature as docs/webhooks.md tells a receiver to check it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from eventmail.mail import webhooks
from eventmail.mail.moxjson import message_id
from eventmail.mail.webhookqueue import INTERVALS, HookSchedule, HookView, WebhookSender, history
from eventmail.opening import open_store
from eventmail.proto import events_pb2 as pb
from eventmail.store import QUEUE, MasterKeySource, load_master_key

from .conftest import ROOT
from .dns_fixture import DnsServer, zone_text
from .mailserver import MailServer, free_port, insecure_tls

PASSWORD = "webhook test password"
# Mox's field names, in Mox's order (webhook/webhook.go).
INCOMING_FIELDS = ["Version", "From", "To", "CC", "BCC", "ReplyTo", "Subject", "MessageID", "InReplyTo", "References",
                   "Date", "Text", "HTML", "Structure", "Meta"]
META_FIELDS = ["MsgID", "MailFrom", "MailFromValidated", "MsgFromValidated", "RcptTo", "DKIMVerifiedDomains",
               "RemoteIP", "Received", "MailboxName", "Automated"]
STRUCTURE_FIELDS = ["ContentType", "ContentTypeParams", "ContentID", "ContentDisposition", "Filename", "DecodedSize",
                    "Parts"]
OUTGOING_FIELDS = ["Version", "Event", "DSN", "Suppressing", "QueueMsgID", "FromID", "MessageID", "Subject",
                   "WebhookQueued", "SMTPCode", "SMTPEnhancedCode", "Error", "Extra"]
GO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?(Z|[+-]\d\d:\d\d)$")


@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A webhook receiver: an aiohttp server on 127.0.0.1, in a thread of its own, recording each
    request and answering `status`. Stopped, its port refuses connections."""

    def __init__(self, status: int = 200) -> None:
        self.port = free_port()
        self.status = status
        self.requests: list[Posted] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Receiver:
        started = threading.Event()

        async def handle(request: web.Request) -> web.Response:
            self.requests.append(Posted(request.path, dict(request.headers), await request.read()))
            return web.Response(status=self.status, text="thanks")

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/{tail:.*}", handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            started.set()

        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(serve(), loop)
        assert started.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._runner = self._thread = None

    def wait(self, path: str, needle: bytes = b"", timeout: float = 30) -> Posted:
        deadline = time.monotonic() + timeout
        while True:
            for r in list(self.requests):
                if r.path == path and needle in r.body:
                    return r
            if time.monotonic() > deadline:
                raise AssertionError(f"no webhook at {path} with {needle!r}; got {[r.path for r in self.requests]}")
            time.sleep(0.05)


def checked_signature(secret: str, header: str, body: bytes, now: float) -> bool:
    """The receiver's check as docs/webhooks.md gives it, written from the text rather than the server's code."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    t = int(parts["t"])
    want = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return abs(now - t) <= 300 and hmac.compare_digest(want, parts["v1"])


def secret_of(cli_output: str) -> str:
    m = re.search(r"signing secret ([0-9a-f]{64})", cli_output)
    assert m, cli_output
    return m.group(1)


@dataclass
class Bed:
    sender: MailServer
    remote: MailServer
    receiver: Receiver


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    base = tmp_path_factory.mktemp("webhooks")
    mx_port = free_port()
    remote = MailServer(base / "remote", hostname="mx.remote.test", kinds=("smtp",), ports={"smtp": mx_port})
    sender = MailServer(base / "sender", kinds=("smtp", "submission"),
                        extra_config=f"[queue]\nfirst_retry = 1\nmx_port = {mx_port}\nwebhook_first_retry = 0.3\n")
    for srv in (remote, sender):
        srv.base.mkdir()
        srv.init()
    remote.add_account("bob", "bob@remote.test", PASSWORD)
    sender.add_account("alice", "alice@mail.test", PASSWORD)
    zones = {
        "remote.test": zone_text("remote.test", ["@ MX 10 mx", "mx A 127.0.0.1", '@ TXT "v=spf1 ip4:127.0.0.0/8 -all"']),
        "mail.test": zone_text("mail.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"']),
    }
    receiver = Receiver().start()
    with DnsServer.start(base / "dns", zones) as dns:
        remote.dns_port = sender.dns_port = dns.port
        sender.start()
        remote.start()
        try:
            yield Bed(sender, remote, receiver)
        finally:
            sender.stop()
            remote.stop()
            receiver.stop()


def deliver_to_alice(srv: MailServer, subject: str, body: str = "hello alice") -> bytes:
    message = (
        f"From: Carol <carol@remote.test>\r\nTo: Alice <alice@mail.test>\r\nCc: dave@remote.test\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{subject.replace(' ', '-')}@remote.test>\r\n"
        "In-Reply-To: <first@remote.test>\r\nReferences: <root@remote.test> <first@remote.test>\r\n"
        "Date: Wed, 27 Mar 2024 10:00:00 +0100\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
        f"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        f"--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>{body}</p>\r\n--b1--\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        s.sendmail("carol@remote.test", ["alice@mail.test"], message)
    return message


def submit(srv: MailServer, to: str, subject: str) -> str:
    """Submit as alice; the queue id from the 250 reply ("queued as ID")."""
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=30) as s:
        s.starttls(context=insecure_tls())
        s.login("alice", PASSWORD)
        s.mail("alice@mail.test")
        s.rcpt(to)
        code, text = s.data(f"From: alice@mail.test\r\nTo: {to}\r\nSubject: {subject}\r\n"
                            f"Message-ID: <{subject.replace(' ', '-')}@mail.test>\r\n\r\nhello\r\n".encode())
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[1]


def inbox_ids(srv: MailServer, account: str, needle: bytes) -> list[int]:
    """The webapi MsgIDs of the account's INBOX messages containing `needle`, read beside the server."""

    async def read() -> list[int]:
        key = load_master_key(srv.directory, MasterKeySource(key_file=srv.key_file))
        store = await open_store(srv.directory, key, writable=False)
        try:
            acct = await store.account(account)
            mb = acct.mailbox_required("INBOX")
            return [message_id(mb.id, m.uid) for m in acct.view.messages(mb.id)
                    if needle in acct.read_message_sync(m.blob_id)]
        finally:
            await store.close()

    return asyncio.run(read())


def cli(srv: MailServer, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventmail", *argv, "--dir", str(srv.directory),
                           "--key-file", str(srv.key_file)], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_an_smtp_delivery_fires_moxs_incoming_webhook_signed(bed: Bed) -> None:
    out = bed.sender.cli("account", "webhook", "alice", "incoming", bed.receiver.url("/in"),
                         "--authorization", "Bearer s3cret-token")
    secret = secret_of(out)
    deliver_to_alice(bed.sender, "incoming one")
    got = bed.receiver.wait("/in", b"incoming one")
    now = time.time()

    assert got.headers["Authorization"] == "Bearer s3cret-token"
    assert got.headers["Content-Type"] == "application/json; charset=utf-8"
    assert got.headers["X-Mox-Webhook-Attempt"] == "1"
    assert got.headers["X-Mox-Webhook-ID"].isdigit()
    signature = got.headers[webhooks.SIGNATURE_HEADER]
    assert checked_signature(secret, signature, got.body, now)
    assert not checked_signature(secret, signature, got.body.replace(b"incoming one", b"incoming two"), now)
    assert not checked_signature("0" * 64, signature, got.body, now)
    # The server's own helper agrees, and refuses a replay after the tolerance.
    assert webhooks.verify(secret, signature, got.body, now)
    assert not webhooks.verify(secret, signature, got.body, now + webhooks.SIGNATURE_TOLERANCE_SECONDS + 60)
    assert not webhooks.verify(secret, signature, got.body + b" ", now)

    body = got.json()
    assert list(body) == INCOMING_FIELDS
    assert list(body["Meta"]) == META_FIELDS
    assert list(body["Structure"]) == STRUCTURE_FIELDS
    assert body["Version"] == 0
    assert body["From"] == [{"Name": "Carol", "Address": "carol@remote.test"}]
    assert body["To"] == [{"Name": "Alice", "Address": "alice@mail.test"}]
    assert body["CC"] == [{"Name": "", "Address": "dave@remote.test"}]
    assert body["BCC"] == [] and body["ReplyTo"] == []
    assert body["Subject"] == "incoming one"
    assert body["MessageID"] == "<incoming-one@remote.test>"
    assert body["InReplyTo"] == "<first@remote.test>"
    assert body["References"] == ["<root@remote.test>", "<first@remote.test>"]
    assert body["Date"] == "2024-03-27T10:00:00+01:00"
    # RFC 2046 §5.1.1: the CRLF before a boundary belongs to the boundary, not to the part.
    assert body["Text"] == "hello alice" and body["HTML"] == "<p>hello alice</p>"
    st = body["Structure"]
    assert st["ContentType"] == "multipart/alternative" and st["ContentTypeParams"] == {"boundary": "b1"}
    assert [p["ContentType"] for p in st["Parts"]] == ["text/plain", "text/html"]
    assert st["Parts"][0]["ContentTypeParams"] == {"charset": "utf-8"} and st["Parts"][0]["Parts"] == []
    meta = body["Meta"]
    assert [meta["MsgID"]] == inbox_ids(bed.sender, "alice", b"Subject: incoming one")
    assert meta["MailFrom"] == "carol@remote.test" and meta["RcptTo"] == "alice@mail.test"
    assert meta["MailFromValidated"] is True  # SPF passed: 127.0.0.0/8 is in remote.test's record
    assert meta["MsgFromValidated"] is False  # remote.test publishes no DMARC record
    assert meta["DKIMVerifiedDomains"] == [] and meta["RemoteIP"] == "127.0.0.1"
    assert meta["MailboxName"] == "INBOX" and meta["Automated"] is False
    assert GO_TIME.match(meta["Received"]), meta["Received"]


def test_outgoing_delivered_and_failed_reach_the_outgoing_webhook(bed: Bed) -> None:
    bed.sender.cli("account", "webhook", "alice", "outgoing", bed.receiver.url("/out"), "--events", "delivered,failed")
    ok = submit(bed.sender, "bob@remote.test", "out ok")
    got = bed.receiver.wait("/out", b"<out-ok@mail.test>").json()
    assert list(got) == OUTGOING_FIELDS
    assert got["Event"] == "delivered" and got["Version"] == 0 and got["DSN"] is False
    assert got["QueueMsgID"] == int(ok, 16) and got["FromID"] == ok
    assert got["Subject"] == "out ok" and got["SMTPCode"] == 250
    assert got["Suppressing"] is False and got["Error"] == "" and got["Extra"] == {}
    assert GO_TIME.match(got["WebhookQueued"])

    bad = submit(bed.sender, "nobody@remote.test", "out bad")
    got = bed.receiver.wait("/out", b"<out-bad@mail.test>").json()
    assert got["Event"] == "failed" and got["FromID"] == bad
    assert got["SMTPCode"] == 550 and got["SMTPEnhancedCode"] == "5.1.1"
    assert got["Suppressing"] is True  # a hard bounce: the queue put the address on alice's suppression list
    assert "550" in got["Error"]
    # Only the events asked for: the queue's own failure notice is no "delivered" hook of another id.
    assert all(r.json()["Event"] in ("delivered", "failed") for r in bed.receiver.requests if r.path == "/out")


def test_a_local_submission_fires_the_recipients_incoming_webhook(bed: Bed) -> None:
    bed.sender.cli("account", "webhook", "alice", "incoming", bed.receiver.url("/self"))
    submit(bed.sender, "alice@mail.test", "note to self")
    got = bed.receiver.wait("/self", b"note to self").json()
    assert got["Meta"]["MailFrom"] == "alice@mail.test" and got["Meta"]["RcptTo"] == "alice@mail.test"
    assert [got["Meta"]["MsgID"]] == inbox_ids(bed.sender, "alice", b"Subject: note to self")


def test_a_receiver_that_is_down_gets_the_hook_when_it_comes_up(bed: Bed) -> None:
    later = Receiver()  # not started: its port refuses connections
    bed.sender.cli("account", "webhook", "alice", "incoming", later.url("/later"))
    before = len(bed.sender.log_lines)
    deliver_to_alice(bed.sender, "while down")
    failed = bed.sender.wait_log("try 1 to 127.0.0.1 failed", after=before, timeout=30)
    hook_id = re.search(r"webhook (\d+):", failed)
    assert hook_id and "next try in" in failed
    later.start()
    try:
        got = later.wait("/later", b"while down")
        assert got.headers["X-Mox-Webhook-ID"] == hook_id.group(1)
        assert int(got.headers["X-Mox-Webhook-Attempt"]) >= 2
        bed.sender.wait_log(f"webhook {hook_id.group(1)} delivered", after=before)
    finally:
        later.stop()


def test_bad_settings_are_refused_with_a_clear_error(bed: Bed) -> None:
    cases = [
        (["alice", "incoming", "http://hooks.example.org/in"], "https is required"),
        (["alice", "incoming", "ftp://hooks.example.org/in"], "expected https://HOST/PATH"),
        (["alice", "incoming", "https://" + "a" * 2050 + ".example/"], "longer than 2048"),
        (["alice", "incoming", "https://user:pw@hooks.example.org/"], "no user or password in the URL"),
        (["alice", "incoming", "https://hooks.example.org/", "--authorization", "Bearer x\r\nX-Evil: 1"],
         "control characters"),
        (["alice", "outgoing", "https://hooks.example.org/", "--events", "delivered,bounced"], "webhook event 'bounced'"),
        (["nobody", "incoming", "https://hooks.example.org/"], "no account nobody"),
    ]
    for argv, error in cases:
        p = cli(bed.sender, "account", "webhook", *argv)
        assert p.returncode == 2 and error in p.stderr, (argv, p.stderr)
    shown = bed.sender.cli("account", "webhook", "alice", "show")
    assert "example.org" not in shown  # nothing of the refused settings was written


def test_a_pending_hook_is_sent_after_a_sigkill_and_restart(bed: Bed) -> None:
    later = Receiver()
    bed.sender.cli("account", "webhook", "alice", "incoming", later.url("/after-kill"))
    before = len(bed.sender.log_lines)
    deliver_to_alice(bed.sender, "before the kill")
    failed = bed.sender.wait_log("try 1 to 127.0.0.1 failed", after=before, timeout=30)
    hook_id = re.search(r"webhook (\d+):", failed)
    assert hook_id
    bed.sender.kill()
    later.start()
    try:
        bed.sender.start()
        got = later.wait("/after-kill", b"before the kill")
        assert got.headers["X-Mox-Webhook-ID"] == hook_id.group(1)
        assert int(got.headers["X-Mox-Webhook-Attempt"]) >= 2  # the tries before the kill are in the log
        # At least once, not again and again: after delivery nothing more is posted for it.
        bed.sender.wait_log(f"webhook {hook_id.group(1)} delivered")
        time.sleep(1.0)
        assert sum(1 for r in later.requests if b"before the kill" in r.body) == 1
    finally:
        later.stop()


# ---------------------------------------------------------------- the schedule and the log, in one process


def test_the_schedule_is_moxs() -> None:
    s = HookSchedule()
    minutes = [(s.next_attempt(n, 0.0, 0.0)) / 60 for n in range(1, len(INTERVALS) + 1)]
    assert minutes == [1, 2, 4, 7.5, 15, 30, 60, 120, 240, 480, 960]
    assert s.next_attempt(len(INTERVALS) + 1, 0.0, 0.0) == 0.0  # the 12th failed try is the last
    assert HookSchedule(0.6).next_attempt(4, 100.0, 0.0) == pytest.approx(100.0 + 4.5)


def test_a_failing_receiver_is_given_up_after_twelve_tries(keyed_dir: tuple[Path, bytes]) -> None:
    from eventmail.mail import ingest
    from eventmail.mail.admin import Admin
    from eventmail.mime.parsed import parse_message

    from .conftest import open_store as open_test_store
    from .conftest import run

    refusing = Receiver(status=500).start()

    async def go() -> list[pb.WebhookAttempt]:
        store = await open_test_store(keyed_dir)
        try:
            await Admin(store).run("account.add", {"name": "alice", "address": "alice@mail.test",
                                                   "password": PASSWORD})
            raw = b"From: carol@remote.test\r\nTo: alice@mail.test\r\nSubject: refused\r\n\r\nhi\r\n"
            async with store.use_account("alice") as acct:
                await webhooks.set_incoming(acct, refusing.url("/refuse"))
                await ingest.deliver(store, acct, "INBOX", parse_message(raw), b"", key_basis=raw,
                                     origin=pb.Origin(kind="smtp", remote_ip="127.0.0.1", mail_from="carol@remote.test",
                                                      rcpt_to=["alice@mail.test"]))
                # An APPEND is no delivery: no hook for it.
                await ingest.import_message(acct, "INBOX", raw.replace(b"refused", b"imported"), [], None,
                                            pb.Origin(kind="import"))
            task = asyncio.get_running_loop().create_task(WebhookSender(store, HookSchedule(0.001)).run())
            try:
                for _ in range(600):
                    attempts = [c.event.webhook_attempt for c in store.stream(QUEUE).events()
                                if c.event.WhichOneof("kind") == "webhook_attempt"]
                    if attempts and attempts[-1].next_attempt == 0:
                        break
                    await asyncio.sleep(0.05)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            queued = [c for c in store.stream(QUEUE).events() if c.event.WhichOneof("kind") == "webhook_queued"]
            assert len(queued) == 1 and queued[0].event.webhook_queued.event == "incoming"
            view = HookView()
            for c in store.stream(QUEUE).events():
                view.apply(c.seq, c.time_us / 1e6, c.event)
            assert view.pending == {}  # given up: nothing left to send
            (record,) = history(store, "alice")
            assert (record.event, record.state, record.attempts, record.last_status) == ("incoming", "given up", 12, 500)
            return attempts
        finally:
            await store.close()

    try:
        attempts = run(go())
    finally:
        refusing.stop()
    assert [a.attempt for a in attempts] == list(range(1, 13))
    assert all(a.status == 500 and not a.delivered for a in attempts)
    assert all(a.next_attempt > 0 for a in attempts[:-1]) and attempts[-1].next_attempt == 0
    assert attempts[0].response == "thanks"
    assert [r.headers["X-Mox-Webhook-Attempt"] for r in refusing.requests] == [str(n) for n in range(1, 13)]


def test_a_newer_result_supersedes_a_pending_hook_about_the_same_recipient(keyed_dir: tuple[Path, bytes]) -> None:
    """As in Mox: a "delayed" hook still waiting for its receiver is retired unsent when the
    message is delivered; the receiver, once up, gets the "delivered" one only. The queue's
    results are appended as the queue runner records them."""
    from eventmail.mail.admin import Admin

    from .conftest import open_store as open_test_store
    from .conftest import run

    receiver = Receiver()  # down until the second result is in
    queue_id = "00000000abcd"

    def hooks(store: Any) -> list[Any]:
        return [c for c in store.stream(QUEUE).events() if c.event.WhichOneof("kind") == "webhook_queued"]

    async def until(check: Any) -> None:
        for _ in range(400):
            if check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("timed out")

    async def go() -> None:
        store = await open_test_store(keyed_dir)
        try:
            await Admin(store).run("account.add", {"name": "alice", "address": "alice@mail.test", "password": PASSWORD})
            async with store.use_account("alice") as acct:
                await webhooks.set_outgoing(acct, receiver.url("/sup"), "Bearer not-shown")
                shown = webhooks.settings(acct).public()
            assert shown["outgoing"] == {"url": receiver.url("/sup"), "authorization": True}
            assert "not-shown" not in json.dumps(shown) and len(shown["secret"]) == 64
            message = b"From: alice@mail.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: <sup@mail.test>\r\n\r\nhi\r\n"
            blob = await store.stream(QUEUE).put_blob(message)
            await store.stream(QUEUE).append([pb.Event(outbound_queued=pb.OutboundQueued(
                id=queue_id, account="alice", mail_from="alice@mail.test", rcpt_to=["bob@remote.test"], blob_id=blob,
                size=len(message)))])
            await store.stream(QUEUE).append([pb.Event(outbound_attempt=pb.OutboundAttempt(
                id=queue_id, rcpt_to="bob@remote.test", reply="451 4.3.0 try again later", attempt=1,
                next_attempt=time.time() + 100))])
            task = asyncio.get_running_loop().create_task(WebhookSender(store, HookSchedule(0.05)).run())
            try:
                await until(lambda: any(c.event.WhichOneof("kind") == "webhook_attempt"
                                        for c in store.stream(QUEUE).events()))
                (delayed,) = hooks(store)
                assert delayed.event.webhook_queued.event == "delayed"
                await store.stream(QUEUE).append([pb.Event(outbound_attempt=pb.OutboundAttempt(
                    id=queue_id, rcpt_to="bob@remote.test", delivered=True, reply="250 2.0.0 ok", attempt=2))])
                await until(lambda: len(hooks(store)) == 2)
                delivered = hooks(store)[1].event.webhook_queued
                assert delivered.event == "delivered" and delivered.supersedes == delayed.seq
                receiver.start()
                await until(lambda: history(store, "alice")[0].state == "delivered")
                assert [h.state for h in history(store, "alice")] == ["delivered", "superseded"]
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        finally:
            await store.close()

    try:
        run(go())
    finally:
        receiver.stop()
    (got,) = receiver.requests
    assert got.headers["Authorization"] == "Bearer not-shown"
    body = got.json()
    assert list(body) == OUTGOING_FIELDS
    assert body["Event"] == "delivered" and body["QueueMsgID"] == 0xABCD and body["FromID"] == queue_id
    assert body["MessageID"] == "<sup@mail.test>" and body["Subject"] == "café"
    assert (body["SMTPCode"], body["SMTPEnhancedCode"], body["Error"]) == (250, "2.0.0", "")


def test_the_view_is_a_pure_fold() -> None:
    """Folding the same events twice gives the same pending hooks; an attempt's decision is what
    moves a hook, nothing else."""
    events = [
        (1, 10.0, pb.Event(webhook_queued=pb.WebhookQueued(account="a", url="https://h/", event="incoming", payload="{}"))),
        (2, 11.0, pb.Event(webhook_queued=pb.WebhookQueued(account="a", url="https://h/", event="delayed",
                                                          queue_id="q", rcpt_to="r", source_seq=1))),
        (3, 12.0, pb.Event(webhook_attempt=pb.WebhookAttempt(hook=1, attempt=1, status=503, next_attempt=72.0))),
        (4, 13.0, pb.Event(webhook_queued=pb.WebhookQueued(account="a", url="https://h/", event="delivered",
                                                          queue_id="q", rcpt_to="r", source_seq=3, supersedes=2))),
        (5, 14.0, pb.Event(webhook_attempt=pb.WebhookAttempt(hook=4, attempt=1, status=200, delivered=True))),
    ]
    views = []
    for _ in range(2):
        v = HookView()
        for seq, t, e in events:
            v.apply(seq, t, e)
        views.append(v)
    a, b = views
    assert sorted(a.pending) == sorted(b.pending) == [1]
    assert (a.pending[1].attempts, a.pending[1].next_at) == (1, 72.0)
    assert a.pending[1].hook.payload == ""  # bodies stay in the log
    assert a.by_recipient == {} and a.reported == 3


def test_incoming_body_of_list_mail_with_an_attached_message() -> None:
    """Mox's shape for a forward: an attached message is a leaf of the structure (only multiparts
    have Parts), and list mail is Automated."""
    raw = (b"From: list@lists.example\r\nTo: alice@mail.test\r\nList-Id: <talk.lists.example>\r\n"
           b"Subject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n"
           b"--x\r\nContent-Type: text/plain\r\n\r\nsee below\r\n"
           b"--x\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d.example\r\nSubject: inner\r\n\r\nbody\r\n--x--\r\n")
    origin = pb.Origin(kind="smtp", mail_from="bounces@lists.example", rcpt_to=["alice@mail.test"], remote_ip="::1")
    body = json.loads(webhooks.incoming_payload(raw, msg_id=message_id(1, 7), origin=origin, received=0.5,
                                                mailbox="INBOX"))
    parts = body["Structure"]["Parts"]
    assert [p["ContentType"] for p in parts] == ["text/plain", "message/rfc822"]
    assert parts[1]["Parts"] == [] and parts[1]["DecodedSize"] == len(b"From: c@d.example\r\nSubject: inner\r\n\r\nbody")
    assert body["Text"] == "see below" and body["HTML"] == ""
    assert body["Date"] is None and body["InReplyTo"] == "" and body["References"] == []
    meta = body["Meta"]
    assert meta["Automated"] is True and meta["MsgID"] == (1 << 32) + 7
    assert meta["Received"] == "1970-01-01T00:00:00.5Z"
    assert (meta["MailFromValidated"], meta["MsgFromValidated"], meta["DKIMVerifiedDomains"]) == (False, False, [])


@pytest.mark.peers
def test_of_a_pair_only_the_primary_posts_and_a_backup_mx_delivery_fires_once(tmp_path: Path) -> None:
    """The secondary has the hooks in its copy of the queue stream and posts none; a message the
    backup MX accepted while the primary was down fires the incoming hook when the primary files it."""
    from .replica_pair import caught_up, close_pair, make_pair, wait_until
    from .test_replica import send

    receiver = Receiver().start()
    a, b = make_pair(tmp_path)
    a.start()
    b.start()
    try:
        a.cli("account", "webhook", "alice", "incoming", receiver.url("/pair"))
        wait_until(lambda: caught_up(b, a), what="catch-up")
        send(a.ports["smtp"], "to-primary")
        receiver.wait("/pair", b"to-primary")
        a.stop()
        send(b.ports["smtp"], "via-backup")  # the primary is down: the backup MX accepts and hands off
        a.ports.clear()
        a.start()
        got = receiver.wait("/pair", b"via-backup")
        assert got.json()["Meta"]["MailFrom"] == "s@example.test"
        wait_until(lambda: caught_up(b, a), what="catch-up after the hand-off")
        a.wait_log(f"webhook {got.headers['X-Mox-Webhook-ID']} delivered")
        assert [r.json()["Subject"] for r in receiver.requests] == ["to-primary", "via-backup"]
        assert not any("webhook" in line and "delivered to" in line for line in b.log_lines)
    finally:
        close_pair(a, b)
        receiver.stop()
