"""The outbound queue against real servers on loopback: delivery by MX lookup (a DNS server process
answers the MX), retries after a temporary failure, and failure notices (RFC 3464) in the sender's
INBOX for a 5xx, an NXDOMAIN and a null MX. The remote MX is a second `eventmail serve`."""

from __future__ import annotations

import email
import email.policy
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventmail import control

from .conftest import ROOT
from .dns_fixture import DnsServer, zone_text
from .mailserver import MailServer, free_port, insecure_tls

PASSWORD = "queue test password"


def submit(srv: MailServer, to: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=30) as s:
        s.starttls(context=insecure_tls())
        s.login("alice", PASSWORD)
        s.sendmail("alice@mail.test", [to], (f"From: alice@mail.test\r\nTo: {to}\r\nSubject: {subject}\r\n"
                                             f"Message-ID: <{subject.replace(' ', '-')}@mail.test>\r\n\r\nhello\r\n").encode())


def find(srv: MailServer, account: str, needle: bytes, timeout: float = 30) -> bytes:
    deadline = time.time() + timeout
    while True:
        for m in srv.messages(account):
            if needle in m:
                return m
        if time.time() > deadline:
            raise AssertionError(f"nothing with {needle!r} for {account}:\n" + "\n".join(srv.log_lines[-30:]))
        time.sleep(0.3)


def report(notice: bytes) -> tuple[email.message.Message, list[dict[str, str]]]:
    """The notice parsed as a mail client would, and its per-recipient delivery-status blocks."""
    msg = email.message_from_bytes(notice, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = parts[1].get_payload()
    blocks = [dict(block.items()) for block in status[1:]] if isinstance(status, list) else []
    return msg, blocks


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MailServer, MailServer, DnsServer]]:
    base = tmp_path_factory.mktemp("queue")
    mx_port = free_port()
    remote = MailServer(base / "remote", hostname="mx.remote.test", kinds=("smtp",), ports={"smtp": mx_port})
    sender = MailServer(base / "sender", extra_config=f"[queue]\nfirst_retry = 1\nmx_port = {mx_port}\n"
                        f'[[route]]\ndomain = "routed.test"\nsmarthost = "127.0.0.1:{mx_port}"\n')
    for srv in (remote, sender):
        srv.base.mkdir()
        srv.init()
    remote.add_account("bob", "bob@remote.test", PASSWORD)
    remote.cli("account", "add-address", "bob", "bob@later.test")
    remote.cli("account", "add-address", "bob", "bob@routed.test")
    sender.add_account("alice", "alice@mail.test", PASSWORD)
    dkim_record = sender.cli("dkim", "add", "mail.test", "sel").strip()  # sel._domainkey.mail.test. TXT "..."
    zones = {
        "remote.test": zone_text("remote.test", ["@ MX 10 mx", "mx A 127.0.0.1", '@ TXT "v=spf1 ip4:127.0.0.0/8 -all"']),
        "mail.test": zone_text("mail.test", ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"', dkim_record]),
        "nullmx.test": zone_text("nullmx.test", ["@ MX 0 ."]),
        "later.test": zone_text("later.test", ["@ MX 10 mx.remote.test."]),
    }
    with DnsServer.start(base / "dns", zones) as dns:
        remote.dns_port = sender.dns_port = dns.port
        sender.start()
        remote.start()
        try:
            yield sender, remote, dns
        finally:
            sender.stop()
            remote.stop()


def test_delivered_by_mx_lookup_signed_and_recorded(pair: tuple[MailServer, MailServer, DnsServer]) -> None:
    sender, remote, _ = pair
    submit(sender, "bob@remote.test", "by mx")
    got = find(remote, "bob", b"Subject: by mx")
    assert b"DKIM-Signature:" in got and b"s=sel;" in got.replace(b" ", b"")
    assert b"dkim=pass" in got  # the remote verified our signature against the DNS
    line = sender.wait_log("bob@remote.test delivered")
    assert "via mx.remote.test [127.0.0.1]" in line and "opportunistic" in line
    log = sender.cli("log", "queue")
    assert '"deliveredTo"' not in log and '"delivered":true' in log and '"tlsPolicy":"opportunistic"' in log


def test_a_5xx_comes_back_as_a_failure_notice(pair: tuple[MailServer, MailServer, DnsServer]) -> None:
    sender, _, _ = pair
    submit(sender, "nobody@remote.test", "to nobody")
    notice = find(sender, "alice", b"Final-Recipient: rfc822; nobody@remote.test")
    msg, blocks = report(notice)
    assert msg["To"].addresses[0].addr_spec == "alice@mail.test" and msg["Auto-Submitted"] == "auto-replied"
    assert blocks[0]["Action"] == "failed" and blocks[0]["Status"] == "5.1.1"
    assert blocks[0]["Remote-MTA"] == "dns; mx.remote.test"
    assert "550" in blocks[0]["Diagnostic-Code"]
    assert b"Subject: to nobody" in notice  # the original's header travels with it


@pytest.mark.parametrize(("domain", "status"), [("nowhere.test", "5.1.2"), ("nullmx.test", "5.1.10")])
def test_nxdomain_and_null_mx_fail_at_once(pair: tuple[MailServer, MailServer, DnsServer], domain: str,
                                           status: str) -> None:
    sender, _, _ = pair
    submit(sender, f"someone@{domain}", f"to {domain}")
    notice = find(sender, "alice", f"Final-Recipient: rfc822; someone@{domain}".encode())
    _, blocks = report(notice)
    assert blocks[0]["Status"] == status


def test_a_temporary_failure_is_retried_then_delivered(pair: tuple[MailServer, MailServer, DnsServer]) -> None:
    sender, remote, dns = pair
    remote.stop()  # the MX is down: connection refused, a temporary failure
    before = len(sender.log_lines)
    submit(sender, "bob@later.test", "after a retry")
    sender.wait_log("bob@later.test deferred", after=before, timeout=30)
    remote.start()
    find(remote, "bob", b"Subject: after a retry", timeout=60)
    line = sender.wait_log("bob@later.test delivered", after=before, timeout=30)
    assert "mx.remote.test" in line
    # No failure notice for a recipient that was only deferred.
    assert not any(b"someone@later.test" in m or b"bob@later.test" in m for m in sender.messages("alice"))


def submit_id(srv: MailServer, to: str, subject: str) -> str:
    """Submit and return the queue id from the 250 reply ("queued as ID")."""
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=30) as s:
        s.starttls(context=insecure_tls())
        s.login("alice", PASSWORD)
        s.mail("alice@mail.test")
        s.rcpt(to)
        code, text = s.data(f"From: alice@mail.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode())
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[1]


def test_the_queue_commands_through_the_running_server(pair: tuple[MailServer, MailServer, DnsServer]) -> None:
    sender, remote, _ = pair
    remote.stop()
    try:
        before = len(sender.log_lines)
        queue_id = submit_id(sender, "bob@remote.test", "stuck for a while")
        sender.wait_log(f"queue {queue_id}: bob@remote.test deferred", after=before, timeout=30)
        assert queue_id in sender.cli("queue", "list")
        shown = sender.cli("queue", "show", queue_id)
        assert "<bob@remote.test>" in shown and "tries" in shown
        assert "held" in sender.cli("queue", "hold", queue_id)
        sender.wait_log("control: queue.hold done", after=before)
        assert f"{queue_id}\t" in sender.cli("queue", "list") and "held" in sender.cli("queue", "list")
        assert "released" in sender.cli("queue", "release", queue_id)
        assert "dropped" in sender.cli("queue", "drop", queue_id)
        assert queue_id not in sender.cli("queue", "list")
        p = subprocess.run([sys.executable, "-m", "eventmail", "queue", "show", "nosuchid", "--dir", str(sender.directory),
                            "--key-file", str(sender.key_file)], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert p.returncode == 2 and "no queued message nosuchid" in p.stderr
    finally:
        remote.start()


def test_metrics_count_tries_by_result(pair: tuple[MailServer, MailServer, DnsServer]) -> None:
    sender, _, _ = pair
    submit(sender, "bob@remote.test", "counted")
    sender.wait_log("bob@remote.test delivered", timeout=30)
    reply = control.request_in(sender.directory, "metrics")
    assert reply is not None
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(reply["metrics"]) for s in family.samples}
    assert samples[("eventmail_queue_attempts_total", (("result", "delivered"),))] >= 1
    assert samples[("eventmail_queue_attempts_total", (("result", "failed"),))] >= 1  # the 5xx test's
    assert ("eventmail_queue_messages", ()) in samples


def test_the_queue_survives_a_sigkill_without_a_second_delivery(pair: tuple[MailServer, MailServer, DnsServer]) -> None:
    """Deferred messages are delivered after the sender is killed and restarted, each once; the
    delivered ones before the kill are not sent again (their attempts are in the stream)."""
    sender, remote, _ = pair
    submit(sender, "bob@remote.test", "before the kill")
    find(remote, "bob", b"Subject: before the kill")
    remote.stop()
    subjects = [f"killed {i}" for i in range(3)]
    before = len(sender.log_lines)
    for s in subjects:
        submit(sender, "bob@remote.test", s)
    sender.wait_log("bob@remote.test deferred", after=before, timeout=30)
    sender.kill()
    remote.start()
    sender.ports.pop("submission", None)
    sender.start()
    for s in subjects:
        find(remote, "bob", f"Subject: {s}\r\n".encode(), timeout=60)
    deadline = time.time() + 30
    while "the queue is empty" not in sender.cli("queue", "list"):  # nothing left that could be sent again
        assert time.time() < deadline, sender.cli("queue", "list")
        time.sleep(0.3)
    msgs = remote.messages("bob")
    for s in [*subjects, "before the kill"]:
        assert sum(f"Subject: {s}\r\n".encode() in m for m in msgs) == 1, s


def test_the_runner_folds_each_event_once_in_any_order(keyed_dir: tuple[Path, bytes]) -> None:
    """A submission committed before the runner's own record of a try, but read from the
    subscription after it, is still folded (the bench lost 9 of 200 messages that way); the
    runner's own records are folded once, not again when the subscription brings them back."""
    from eventmail.mailauth.resolver import Resolver, ResolverConfig
    from eventmail.proto import events_pb2 as pb
    from eventmail.smtp.outbound import QueueRunner
    from eventmail.store import Committed

    from .conftest import open_store, run

    async def go() -> None:
        store = await open_store(keyed_dir)
        try:
            runner = QueueRunner(store, "mail.test", Resolver(ResolverConfig(nameservers=("127.0.0.1",), port=1)))
            queued = [Committed("queue", n, n * 1_000_000, pb.Event(outbound_queued=pb.OutboundQueued(
                id=f"m{n}", mail_from="a@mail.test", rcpt_to=["b@remote.test"]))) for n in (1, 2)]
            runner._apply(queued[:1])
            tried = Committed("queue", 3, 3_000_000, pb.Event(outbound_attempt=pb.OutboundAttempt(
                id="m1", rcpt_to="b@remote.test", next_attempt=99.0)))
            runner._apply([tried], own=True)
            runner._apply([queued[1], tried])  # the subscription: m2 (seq 2) after our own seq 3
            assert sorted(runner.view.items) == ["m1", "m2"]
            assert runner.view.items["m1"].recipients["b@remote.test"].attempts == 1
        finally:
            await store.close()

    run(go())


def eventually(check: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            return False
        time.sleep(0.1)
    return True


def rcpt_reply(srv: MailServer, to: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=30) as s:
        s.starttls(context=insecure_tls())
        s.login("alice", PASSWORD)
        code, text = s.mail("alice@mail.test")
        if code != 250:
            return code, text
        return s.rcpt(to)


def test_a_hard_bounce_suppresses_the_address_until_an_operator_lifts_it(
        pair: tuple[MailServer, MailServer, DnsServer]) -> None:
    sender, _, _ = pair
    submit(sender, "ghost@remote.test", "to a ghost")
    sender.wait_log("ghost@remote.test suppressed for alice (hard bounce)", timeout=30)
    assert "alice\tghost@remote.test" in sender.cli("queue", "suppressions", "alice")
    code, text = rcpt_reply(sender, "Ghost@remote.test")
    assert code == 550 and b"suppression list" in text
    assert "taken off" in sender.cli("queue", "unsuppress", "alice", "ghost@remote.test")
    assert rcpt_reply(sender, "ghost@remote.test")[0] == 250
    assert "suppressed" in sender.cli("queue", "suppress", "alice", "someone@remote.test", "--reason", "asked us")
    assert rcpt_reply(sender, "someone@remote.test")[0] == 550


def test_daily_limits_per_account(tmp_path: Path) -> None:
    """Mox's limits, made small: 2 messages a day, 2 new recipients a day."""
    srv = MailServer(tmp_path, kinds=("submission",),
                     extra_config="[queue]\nmessages_per_day = 2\nfirst_time_recipients_per_day = 2\n")
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    srv.start()
    try:
        with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=30) as s:
            s.starttls(context=insecure_tls())
            s.login("alice", PASSWORD)
            assert s.mail("alice@mail.test")[0] == 250
            assert s.rcpt("one@far.test")[0] == 250 and s.rcpt("two@far.test")[0] == 250
            code, text = s.rcpt("three@far.test")  # a third new recipient today
            assert code == 451 and b"new recipients a day" in text
            assert s.data(b"From: alice@mail.test\r\nSubject: first\r\n\r\nx\r\n")[0] == 250
        srv.wait_log("alice submitted to 0 local and 2 remote recipients")
        # The queue stream is folded by a subscription: wait for it to have the message.
        assert eventually(lambda: rcpt_reply(srv, "four@far.test")[0] == 451)
        assert rcpt_reply(srv, "one@far.test")[0] == 250  # known now: not new
        submit(srv, "one@far.test", "second")
        # The third message today: refused at MAIL.
        assert eventually(lambda: rcpt_reply(srv, "one@far.test")[0] == 451)
        assert b"messages a day" in rcpt_reply(srv, "one@far.test")[1]
    finally:
        srv.stop()


def test_a_route_sends_one_domain_through_its_relay(pair: tuple[MailServer, MailServer, DnsServer]) -> None:
    """routed.test has no DNS at all: only its [[route]] gets the message there."""
    sender, remote, _ = pair
    submit(sender, "bob@routed.test", "by route")
    find(remote, "bob", b"Subject: by route")
    line = sender.wait_log("bob@routed.test delivered", timeout=30)
    assert "via 127.0.0.1" in line and "smarthost:starttls" in line


def test_a_delay_notice_while_still_trying(pair: tuple[MailServer, MailServer, DnsServer], tmp_path: Path) -> None:
    """An MX that never answers: tries go on (deferred), and after `delay_notice_hours` the sender
    gets one notice with Action: delayed (RFC 3464), then no failure notice while time is left."""
    _, _, dns = pair
    dead_port = free_port()  # nothing listens: connection refused, a temporary failure
    srv = MailServer(tmp_path, dns_port=dns.port, kinds=("submission",),
                     extra_config=f"[queue]\nfirst_retry = 1\ndelay_notice_hours = 0.0005\nmx_port = {dead_port}\n")
    srv.init()
    srv.add_account("alice", "alice@mail.test", PASSWORD)
    srv.start()
    try:
        submit(srv, "bob@remote.test", "slow road")
        notice = find(srv, "alice", b"Action: delayed", timeout=60)
        _, blocks = report(notice)
        assert blocks[0]["Final-Recipient"] == "rfc822; bob@remote.test" and blocks[0]["Status"].startswith("4.")
        srv.wait_log("bob@remote.test deferred")
        notices = [m for m in srv.messages("alice") if b"multipart/report" in m]
        assert len(notices) == 1  # one delay notice, and no failure notice
    finally:
        srv.stop()
