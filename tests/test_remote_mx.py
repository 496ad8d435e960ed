"""Outbound delivery by MX lookup to Postfix in a namespace whose DNS is a validating unbound over a signed zone: DANE, MTA-STS, fallbacks, 4xx/5xx, NXDOMAIN, null MX, blackhole.

The bed is tests/remote_mx.py. Each test plans with `plan_delivery` (the real resolver path: MX,
A/AAAA, TLSA with the AD bit, the `_mta-sts` TXT record and the HTTPS fetch) and carries the
message with `attempt` to the address the plan gives, port 25, then reads what Postfix put in
its maildir. Postfix refuses a bare LF from every client (smtpd_forbid_bare_newline, no
exclusions), and its Received field records the TLS of the session.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.smtp.attempt import AttemptResult, Outcome, Timeouts, attempt
from eventmail.smtp.destination import DeliveryPlan
from eventmail.smtp.tlspolicy import TlsMode, TlsRequirement

from .mailserver import insecure_tls
from .remote_mx import RELAY, RELAY_PORT, Bed, RemoteMx, unavailable

REASON = unavailable()
pytestmark = [pytest.mark.peers, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

SENDER = "alice@client.test"


@pytest.fixture(scope="module")
def bed() -> Iterator[RemoteMx]:
    with RemoteMx.start(relay=True) as b:
        yield b


def message(tag: str, body: bytes = b"Hello from the bed.\r\n") -> bytes:
    return (f"From: Alice <{SENDER}>\r\nTo: bob@remote.test\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@client.test>\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n\r\n").encode() + body


def received_by_mx(data: bytes) -> bytes:
    """The Received field Postfix added on acceptance (the first one), unfolded."""
    head = data.split(b"\n\n", 1)[0]
    unfolded = head.replace(b"\n\t", b" ").replace(b"\n ", b" ")
    return next(line for line in unfolded.split(b"\n") if line.startswith(b"Received:"))


def only(results: list[AttemptResult]) -> AttemptResult:
    assert len(results) == 1, results
    return results[0]


def test_delivered_by_mx_lookup_with_dane_verified(bed: RemoteMx) -> None:
    async def go() -> tuple[DeliveryPlan, list[AttemptResult]]:
        plan = await bed.plan(Bed.GOOD.domain)
        return plan, await bed.deliver(plan, SENDER, ["bob@remote.test"], message("dane-ok"))

    plan, results = bed.run(go())
    assert plan.ok and plan.policy == "dane", plan
    # DANE took precedence over the domain's enforced MTA-STS policy, which was fetched (RFC 8461 §2).
    assert any("fetched MTA-STS policy" in n and "mode=enforce" in n for n in plan.notes)
    expected = ["::1", Bed.GOOD.address] if bed.v6 else [Bed.GOOD.address]
    assert [r.address for r in plan.routes] == expected
    result = results[0]
    assert result.rcpts[0].outcome is Outcome.DELIVERED, result
    assert result.tls.policy == "dane" and result.tls.verified and result.tls.verified_by == "dane-ee", result.tls
    data = bed.arrived(b"Subject: dane-ok")
    received = received_by_mx(data)
    assert b"by mx.remote.test (Postfix)" in received and b"(using TLSv1." in received, received


def test_an_internationalized_domain_is_looked_up_by_its_a_label(bed: RemoteMx) -> None:
    async def go() -> tuple[DeliveryPlan, list[AttemptResult]]:
        plan = await bed.plan("bücher.remote.test")
        return plan, await bed.deliver(plan, SENDER, [f"bob@{Bed.IDN.domain}"], message("idn"))

    plan, results = bed.run(go())
    # IDNA2008 / RFC 5890: the U-label domain's MX RRset is the A-label's.
    assert plan.domain == Bed.IDN.domain and {r.host for r in plan.routes} == {Bed.GOOD.host}, plan
    assert plan.policy == "dane" and results[0].rcpts[0].outcome is Outcome.DELIVERED, results
    assert b"for <bob@xn--bcher-kva.remote.test>" in received_by_mx(bed.arrived(b"Subject: idn"))


def test_wrong_tlsa_means_no_delivery_under_dane(bed: RemoteMx) -> None:
    async def go(dane: bool, tag: str) -> tuple[DeliveryPlan, list[AttemptResult]]:
        plan = await bed.plan(Bed.BAD_TLSA.domain, dane=dane)
        return plan, await bed.deliver(plan, SENDER, ["bob@badtlsa.remote.test"], message(tag))

    plan, results = bed.run(go(True, "dane-wrong-tlsa"))
    assert plan.policy == "dane"
    result = only(results)
    assert result.rcpts[0].outcome is Outcome.TEMPORARY, result  # RFC 7672 §2.2: defer, never downgrade
    assert result.tls.started and not result.tls.verified
    assert result.tls.failure is not None and result.tls.failure.startswith("DANE:"), result.tls
    assert not any(r.stage in ("mail", "rcpt", "data") for r in result.replies)  # stopped before MAIL
    # The same MX takes the message when DANE is not asked for: the TLSA record is what stopped it.
    plan, results = bed.run(go(False, "dane-wrong-tlsa-control"))
    assert plan.policy == "opportunistic" and only(results).rcpts[0].outcome is Outcome.DELIVERED
    bed.arrived(b"Subject: dane-wrong-tlsa-control")
    assert bed.arrivals(b"Subject: dane-wrong-tlsa\n") == []


def test_no_starttls_under_dane_means_no_delivery(bed: RemoteMx) -> None:
    async def go() -> tuple[DeliveryPlan, list[AttemptResult]]:
        plan = await bed.plan(Bed.DANE_NO_TLS.domain)
        return plan, await bed.deliver(plan, SENDER, ["bob@danenotls.remote.test"], message("dane-no-tls"))

    plan, results = bed.run(go())
    assert plan.policy == "dane", plan
    result = only(results)
    # RFC 7672 §2.2: TLS is mandatory under DANE; no plaintext fallback, the message waits.
    assert result.rcpts[0].outcome is Outcome.TEMPORARY and not result.tls.started, result
    assert result.error == "STARTTLS not offered and dane requires TLS", result
    assert not any(r.stage == "mail" for r in result.replies)
    assert bed.arrivals(b"Subject: dane-no-tls") == []


def test_mta_sts_enforce_refuses_a_certificate_for_another_host(bed: RemoteMx) -> None:
    async def go(domain: str, tag: str) -> tuple[DeliveryPlan, list[AttemptResult]]:
        plan = await bed.plan(domain)
        return plan, await bed.deliver(plan, SENDER, [f"bob@{domain}"], message(tag))

    plan, results = bed.run(go(Bed.STS_MISMATCH.domain, "sts-mismatch"))
    assert plan.policy.startswith("mta-sts:enforce id="), plan
    result = only(results)
    assert result.rcpts[0].outcome is Outcome.TEMPORARY, result  # RFC 8461 §5: no delivery, retry
    assert result.tls.failure is not None and "TLS handshake failed" in result.tls.failure, result.tls
    assert "mx.stsbad.remote.test" in result.tls.failure or "hostname" in result.tls.failure.lower()
    assert not result.tls.fallback and not any(r.stage == "mail" for r in result.replies)
    # Same CA, same policy, a certificate that names the MX: delivered, verified by PKIX.
    plan, results = bed.run(go(Bed.STS_OK.domain, "sts-ok"))
    ok = only(results)
    assert ok.rcpts[0].outcome is Outcome.DELIVERED and ok.tls.verified and ok.tls.verified_by == "pkix", ok
    assert b"(using TLSv1." in received_by_mx(bed.arrived(b"Subject: sts-ok"))
    assert bed.arrivals(b"Subject: sts-mismatch") == []


def test_opportunistic_delivers_in_the_clear_when_the_mx_has_no_starttls(bed: RemoteMx) -> None:
    async def go() -> tuple[DeliveryPlan, list[AttemptResult]]:
        plan = await bed.plan(Bed.NO_TLS.domain)
        return plan, await bed.deliver(plan, SENDER, ["bob@notls.remote.test"], message("no-tls"))

    plan, results = bed.run(go())
    assert plan.policy == "opportunistic"
    result = only(results)
    assert result.rcpts[0].outcome is Outcome.DELIVERED, result
    assert not result.tls.started and result.tls.failure == "STARTTLS not offered"
    assert b"using TLS" not in received_by_mx(bed.arrived(b"Subject: no-tls"))


def test_opportunistic_falls_back_to_the_clear_after_a_failed_handshake(bed: RemoteMx) -> None:
    async def go() -> list[AttemptResult]:
        plan = await bed.plan(Bed.OLD_TLS.domain)
        assert plan.policy == "opportunistic"
        return await bed.deliver(plan, SENDER, ["bob@oldtls.remote.test"], message("tls-fallback"))

    result = only(bed.run(go()))
    # RFC 7435 §3: a second connection without STARTTLS, recorded as a fallback.
    assert result.rcpts[0].outcome is Outcome.DELIVERED, result
    assert result.tls.fallback and not result.tls.started
    assert result.tls.failure is not None and result.tls.failure.startswith("TLS handshake failed")
    assert b"using TLS" not in received_by_mx(bed.arrived(b"Subject: tls-fallback"))

    # A verifying policy never falls back: the same MX under DANE (a TLSA record it would match)
    # and under PKIX defers instead.
    async def required(tls: TlsRequirement) -> AttemptResult:
        return await attempt(Bed.OLD_TLS.host, Bed.OLD_TLS.address, 25, SENDER, ["bob@oldtls.remote.test"],
                             message("tls-no-fallback"), tls=tls, helo="client.test", timeouts=Timeouts.all(10.0))

    for tls in (TlsRequirement.pkix(Bed.OLD_TLS.host, cafile=str(bed.certs.ca_pem)),
                TlsRequirement(TlsMode.DANE, host_name=Bed.OLD_TLS.host, policy="dane:unusable")):
        refused = bed.run(required(tls))
        assert refused.rcpts[0].outcome is Outcome.TEMPORARY and not refused.tls.fallback, refused
    assert bed.arrivals(b"Subject: tls-no-fallback") == []


def test_bare_lf_is_never_relayed(bed: RemoteMx) -> None:
    msg = message("bare-lf", b"line one\nline two\rline three\n.\nafter a lone dot\n").replace(b"\r\n", b"\n")

    async def go() -> list[AttemptResult]:
        plan = await bed.plan(Bed.GOOD.domain)
        return await bed.deliver(plan, SENDER, ["bob@remote.test"], msg)

    result = bed.run(go())[0]
    assert result.rcpts[0].outcome is Outcome.DELIVERED, result
    assert result.normalised == msg.count(b"\n") + 1  # every bare LF and the bare CR made CRLF
    data = bed.arrived(b"Subject: bare-lf")
    # Postfix stores LF line ends: the bare CR arrived as a line break, the lone dot as a line.
    assert data.endswith(b"\n\nline one\nline two\nline three\n.\nafter a lone dot\n"), data

    # The bed would have caught a bare LF: the MX refuses one from any client.
    async def raw() -> bytes:
        reader, writer = await asyncio.open_connection(Bed.GOOD.address, 25)
        replies = b""
        for line in (b"EHLO client.test\r\n", b"MAIL FROM:<alice@client.test>\r\n", b"RCPT TO:<bob@remote.test>\r\n",
                     b"DATA\r\n", b"Subject: raw-bare-lf\r\n\r\nbare\nlf\r\n.\r\n"):
            writer.write(line)
            await writer.drain()
            await asyncio.sleep(0.2)
            with_timeout = asyncio.wait_for(reader.read(4096), 10)
            replies += await with_timeout
        writer.close()
        return replies

    replies = bed.run(raw())
    assert b"bare <LF> received" in replies, replies
    assert bed.arrivals(b"raw-bare-lf") == []


def test_greylisting_mx_defers_then_accepts_per_recipient(bed: RemoteMx) -> None:
    async def go(rcpts: list[str], tag: str) -> list[AttemptResult]:
        plan = await bed.plan(Bed.GREYLIST.domain)
        return await bed.deliver(plan, SENDER, rcpts, message(tag))

    first = only(bed.run(go(["bob@grey.remote.test"], "greylisted")))
    rcpt = first.rcpts[0]
    assert rcpt.outcome is Outcome.TEMPORARY and rcpt.reply is not None, first
    assert rcpt.reply.stage == "rcpt" and rcpt.reply.code == 450 and rcpt.reply.enhanced == "4.7.1", rcpt
    assert bed.arrivals(b"Subject: greylisted") == []
    second = only(bed.run(go(["bob@grey.remote.test"], "greylisted")))  # the queue's retry
    assert second.rcpts[0].outcome is Outcome.DELIVERED, second
    bed.arrived(b"Subject: greylisted")
    # One transaction, two recipients: bob is known by now, carol is new. Each gets its own result.
    both = only(bed.run(go(["bob@grey.remote.test", "carol@grey.remote.test"], "greylisted-two")))
    assert [(r.rcpt, r.outcome) for r in both.rcpts] == [
        ("bob@grey.remote.test", Outcome.DELIVERED), ("carol@grey.remote.test", Outcome.TEMPORARY)], both
    assert b"for <bob@grey.remote.test>" in received_by_mx(bed.arrived(b"Subject: greylisted-two"))


def test_a_5xx_mx_is_permanent(bed: RemoteMx) -> None:
    async def go() -> list[AttemptResult]:
        plan = await bed.plan(Bed.REJECT.domain)
        return await bed.deliver(plan, SENDER, ["bob@reject.remote.test"], message("rejected"))

    rcpt = only(bed.run(go())).rcpts[0]
    assert rcpt.outcome is Outcome.PERMANENT and rcpt.reply is not None, rcpt
    assert rcpt.reply.code == 554 and rcpt.reply.enhanced == "5.7.1", rcpt
    assert bed.arrivals(b"Subject: rejected") == []


def test_nxdomain_and_null_mx_fail_permanently_before_any_connection(bed: RemoteMx) -> None:
    async def go() -> tuple[DeliveryPlan, DeliveryPlan]:
        return await bed.plan(Bed.NXDOMAIN.domain), await bed.plan(Bed.NULL_MX.domain)

    nx, null = bed.run(go())
    assert nx.failure is not None and nx.failure.permanent and nx.failure.code == "5.1.2", nx
    # RFC 7505 §4.1: a domain that publishes a null MX accepts no mail.
    assert null.failure is not None and null.failure.permanent and null.failure.code == "5.1.10", null
    assert nx.routes == () and null.routes == ()


def test_a_blackhole_mx_times_out_as_temporary(bed: RemoteMx) -> None:
    async def go() -> list[AttemptResult]:
        plan = await bed.plan(Bed.BLACKHOLE.domain)
        return await bed.deliver(plan, SENDER, ["bob@blackhole.remote.test"], message("blackhole"),
                                 timeouts=Timeouts.all(1.0))

    result = only(bed.run(go()))
    assert result.rcpts[0].outcome is Outcome.TEMPORARY, result
    assert result.error == "timed out waiting for the server" and result.replies == [], result


def test_postfix_delivers_by_mx_lookup_with_dane_through_the_same_dns(bed: RemoteMx) -> None:
    """The bed seen by an independent client: Postfix (smtp_tls_security_level = dane) agrees."""

    def submit(rcpt: str, tag: str) -> None:
        with smtplib.SMTP(RELAY, RELAY_PORT, local_hostname="client.test", timeout=20) as s:
            s.sendmail(SENDER, [rcpt], message(tag))

    bed.call(submit, "bob@remote.test", "postfix-dane")
    bed.arrived(b"Subject: postfix-dane")
    assert "Verified TLS connection established to mx.remote.test" in bed.relay_log()
    bed.call(submit, "bob@badtlsa.remote.test", "postfix-wrong-tlsa")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "status=deferred" not in bed.relay_log():
        time.sleep(0.2)
    log = bed.relay_log()
    assert "to=<bob@badtlsa.remote.test>" in log and "status=deferred" in log, log[-2000:]
    assert bed.arrivals(b"Subject: postfix-wrong-tlsa") == []


def test_eventmail_serve_runs_inside_the_bed(bed: RemoteMx, tmp_path: Path) -> None:
    """`bed.mail_server` starts `eventmail serve` inside the namespace: a submission there reaches
    the bed's MX through `smarthost = "mx.remote.test:25"` (the smarthost transport)."""
    srv = bed.mail_server(tmp_path, hostname="mail.client.test", kinds=("submission",),
                          smarthost=f"{Bed.GOOD.host}:25")
    srv.add_account("alice", SENDER, "bed test password")
    srv.start()
    try:
        def submit() -> None:
            with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=20) as s:
                s.starttls(context=insecure_tls())
                s.login(SENDER, "bed test password")
                s.sendmail(SENDER, ["bob@remote.test"], message("eventmail-in-bed"))

        bed.call(submit)
        data = bed.arrived(b"Subject: eventmail-in-bed")
    finally:
        srv.stop()
    assert b"by mail.client.test (eventmail)" in data and b"(using TLSv1." in received_by_mx(data), data[:600]


def test_the_queue_delivers_by_mx_with_dane_and_bounces_what_cannot_go(bed: RemoteMx, tmp_path: Path) -> None:
    """`eventmail serve` with no smarthost, inside the bed: the queue finds the MX through the
    validating resolver, delivers under DANE and records it; a wrong TLSA defers (never sent in
    the clear); a 5xx and a null MX come back as failure notices in the sender's INBOX."""
    srv = bed.mail_server(tmp_path, hostname="mail.client.test", kinds=("submission",),
                          extra_config="[queue]\nfirst_retry = 300\n")
    srv.add_account("alice", SENDER, "bed test password")
    srv.start()
    try:
        def submit(to: str, subject: str) -> None:
            with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=20) as s:
                s.starttls(context=insecure_tls())
                s.login(SENDER, "bed test password")
                s.sendmail(SENDER, [to], message(subject))

        bed.call(submit, "bob@remote.test", "queue-dane")
        data = bed.arrived(b"Subject: queue-dane")
        assert b"by mail.client.test (eventmail)" in data and b"(using TLSv1." in received_by_mx(data)
        line = srv.wait_log("bob@remote.test delivered", timeout=30)
        assert "via mx.remote.test [" in line and "(dane; tls TLSv1.3 verified by dane-ee)" in line, line
        bed.call(submit, f"bob@{Bed.BAD_TLSA.domain}", "queue-bad-tlsa")
        srv.wait_log(f"bob@{Bed.BAD_TLSA.domain} deferred", timeout=60)
        assert bed.arrivals(b"Subject: queue-bad-tlsa") == []
        for domain, status in ((Bed.REJECT.domain, "5."), (Bed.NULL_MX.domain, "5.1.10")):
            bed.call(submit, f"bob@{domain}", f"queue-{domain}")
            notice = srv.wait_for("alice", 1, timeout=60)
            found = [m for m in srv.messages("alice") if f"Final-Recipient: rfc822; bob@{domain}".encode() in m]
            deadline = time.monotonic() + 60
            while not found and time.monotonic() < deadline:
                time.sleep(0.3)
                found = [m for m in srv.messages("alice") if f"Final-Recipient: rfc822; bob@{domain}".encode() in m]
            assert found, notice
            assert f"Status: {status}".encode() in found[0] and b"Action: failed" in found[0]
    finally:
        srv.stop()


def test_the_queue_records_an_mta_sts_policy_once_and_keeps_it_across_a_restart(bed: RemoteMx, tmp_path: Path) -> None:
    """RFC 8461 §5.1: a fetched policy is used until max_age. The queue records it as an event, so
    a restarted server has it without fetching again (one event after two deliveries)."""
    srv = bed.mail_server(tmp_path, hostname="mail.client.test", kinds=("submission",))
    srv.add_account("alice", SENDER, "bed test password")

    def submit(subject: str) -> None:
        with smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=20) as s:
            s.starttls(context=insecure_tls())
            s.login(SENDER, "bed test password")
            s.sendmail(SENDER, [f"bob@{Bed.STS_OK.domain}"], message(subject))

    for n in range(2):
        srv.ports.pop("submission", None)
        srv.start()
        try:
            bed.call(submit, f"sts-{n}")
            line = srv.wait_log(f"bob@{Bed.STS_OK.domain} delivered", timeout=60)
            assert "mta-sts:enforce" in line and "verified by pkix" in line, line
        finally:
            srv.stop()
    events = [e for e in srv.cli("log", "queue").splitlines() if "mtaStsPolicy" in e]
    assert len(events) == 1 and '"mode":"enforce"' in events[0], events
