"""The sans-IO SMTP client core: reply parsing, capabilities, the message on the wire, the transaction plan, DANE."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from eventmail.smtp.client import (
    Capabilities,
    ClientLimits,
    ClientProtocolError,
    Command,
    Envelope,
    Refusal,
    ReplyParser,
    ServerReply,
    SmtpClient,
    TransactionPlan,
    dot_stuff,
    parse_ehlo,
    plan_transaction,
    prepare_message,
)
from eventmail.smtp.dane import verify_chain
from eventmail.smtp.reply import SmtpUsageError
from eventmail.smtp.tlspolicy import Tlsa, usable
from tests.smtp_certs import make_certs

EHLO_REPLY = (
    b"250-mx.remote.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    b"250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-REQUIRETLS\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"
)


def test_multiline_reply_and_enhanced_code() -> None:
    p = ReplyParser()
    assert p.feed(b"250-first\r\n250-second\r") == []
    (r,) = p.feed(b"\n250 last\r\n")
    assert (r.code, r.lines) == (250, ("first", "second", "last"))
    (r,) = p.feed(b"550-5.1.1 no such user\r\n550 5.1.1 really\r\n")
    assert (r.code, r.enhanced, r.lines) == (550, "5.1.1", ("no such user", "really"))
    (r,) = p.feed(b"451 5.1.1 class differs from the reply\r\n")
    assert r.enhanced is None  # RFC 3463 §2: the class must repeat the first digit
    (r,) = p.feed(b"250\r\n")
    assert r.lines == ("",)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"hello\r\n", "malformed"),
        (b"25 short\r\n", "malformed"),
        (b"250x text\r\n", "malformed"),
        (b"250-one\r\n251 two\r\n", "code changed"),
        (b"600 no such class\r\n", "malformed"),
    ],
)
def test_malformed_replies_are_protocol_errors(data: bytes, why: str) -> None:
    with pytest.raises(ClientProtocolError, match=why):
        ReplyParser().feed(data)


def test_reply_bounds() -> None:
    limits = ClientLimits(max_line=100, max_lines=5, max_reply=300)
    with pytest.raises(ClientProtocolError, match="longer"):
        ReplyParser(limits).feed(b"250 " + b"x" * 200)  # no CRLF yet: refused as soon as it is over
    with pytest.raises(ClientProtocolError, match="lines"):
        ReplyParser(limits).feed(b"250-x\r\n" * 6)
    with pytest.raises(ClientProtocolError, match="octets"):
        ReplyParser(limits).feed(b"250-" + b"y" * 90 + b"\r\n" + b"250-" + b"y" * 90 + b"\r\n" * 1 + b"250-" + b"y" * 90 + b"\r\n" + b"250-" + b"y" * 90 + b"\r\n")


def test_ehlo_capabilities() -> None:
    (r,) = ReplyParser().feed(EHLO_REPLY)
    caps = parse_ehlo(r)
    assert caps == Capabilities(
        extended=True, pipelining=True, size=10240000, eightbitmime=True, smtputf8=True, starttls=True,
        auth=frozenset({"PLAIN", "LOGIN"}), requiretls=True, enhancedstatuscodes=True, chunking=True,
        keywords=caps.keywords,
    )
    (r,) = ReplyParser().feed(b"250-x\r\n250 SIZE\r\n")
    assert parse_ehlo(r).size == 0 and not parse_ehlo(r).pipelining


def test_bare_cr_and_lf_become_crlf_and_are_counted() -> None:
    m = prepare_message(b"Subject: x\n\nline1\rline2\r\n.dot\nend")
    assert m.data == b"Subject: x\r\n\r\nline1\r\nline2\r\n.dot\r\nend\r\n"
    assert m.normalised == 4
    rest = m.data.replace(b"\r\n", b"")
    assert b"\r" not in rest and b"\n" not in rest
    assert prepare_message(b"a\r\n").normalised == 0


def test_dot_stuffing() -> None:
    assert dot_stuff(b".a\r\nb\r\n.\r\n..c\r\n") == b"..a\r\nb\r\n..\r\n...c\r\n.\r\n"
    assert dot_stuff(b"") == b".\r\n"
    with pytest.raises(SmtpUsageError):
        dot_stuff(b"a\nb\r\n")  # never a bare LF on the wire (RFC 5321 §2.3.8)


CAPS = Capabilities(extended=True, pipelining=True, size=1000, eightbitmime=True, smtputf8=True, requiretls=True)
ASCII = prepare_message(b"Subject: x\r\n\r\nhi\r\n")


def test_plan_parameters() -> None:
    plan = plan_transaction(CAPS, Envelope("a@x.test", ("b@y.test",)), ASCII, verified_tls=False)
    assert plan == TransactionPlan((f"SIZE={ASCII.size}",), False)
    eight = prepare_message("Subject: x\r\n\r\ngrüße\r\n".encode())
    plan = plan_transaction(CAPS, Envelope("a@x.test", ("jörg@y.test",), requiretls=True), eight, verified_tls=True)
    assert plan == TransactionPlan((f"SIZE={eight.size}", "BODY=8BITMIME", "SMTPUTF8", "REQUIRETLS"), True)


@pytest.mark.parametrize(
    ("caps", "envelope", "message", "verified", "code"),
    [
        (CAPS, Envelope("a@x.test", ("b@y.test",)), prepare_message(b"x" * 2000), False, "5.3.4"),
        (Capabilities(extended=True), Envelope("a@x.test", ("jörg@y.test",)), ASCII, False, "5.6.7"),
        (Capabilities(extended=True), Envelope("a@x.test", ("b@y.test",)),
         prepare_message("Subject: ü\r\n\r\n".encode()), False, "5.6.9"),
        (Capabilities(extended=True), Envelope("a@x.test", ("b@y.test",)),
         prepare_message("S: x\r\n\r\nü\r\n".encode()), False, "5.6.3"),
        (CAPS, Envelope("a@x.test", ("b@y.test",), requiretls=True), ASCII, False, "5.7.30"),
        (Capabilities(extended=True), Envelope("a@x.test", ("b@y.test",), requiretls=True), ASCII, True, "5.7.30"),
    ],
)
def test_plan_refusals(caps: Capabilities, envelope: Envelope, message: object, verified: bool, code: str) -> None:
    plan = plan_transaction(caps, envelope, message, verified_tls=verified)  # type: ignore[arg-type]
    assert isinstance(plan, Refusal) and plan.enhanced == code and plan.code >= 500


def test_pipelined_transaction_matches_replies_in_order() -> None:
    c = SmtpClient()
    assert [a.command for a in c.receive(b"220 hi\r\n")] == [Command.GREETING]
    c.ehlo("me.test")
    c.receive(EHLO_REPLY)
    batch = c.mail("a@x.test", ("SIZE=10",)) + c.rcpt("b@y.test") + c.rcpt("c@y.test") + c.data()
    assert batch == b"MAIL FROM:<a@x.test> SIZE=10\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n"
    answers = c.receive(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 nope\r\n354 go on\r\n")
    assert [(a.command, a.rcpt, a.reply.code) for a in answers] == [
        (Command.MAIL, None, 250), (Command.RCPT, "b@y.test", 250), (Command.RCPT, "c@y.test", 550), (Command.DATA, None, 354)
    ]
    assert c.message(b".x\r\n") == b"..x\r\n.\r\n"
    (a,) = c.receive(b"250 2.0.0 queued\r\n")
    assert a.command is Command.MESSAGE and a.reply.enhanced == "2.0.0"


def test_rfc2920_rules_on_our_side() -> None:
    c = SmtpClient()
    c.receive(b"220 hi\r\n")
    c.ehlo("me.test")
    with pytest.raises(SmtpUsageError):
        c.mail("a@x.test")  # EHLO's reply first
    c.receive(b"250 mx\r\n")  # no PIPELINING
    c.mail("a@x.test")
    with pytest.raises(SmtpUsageError):
        c.rcpt("b@y.test")
    c.receive(b"250 ok\r\n")
    c.rcpt("b@y.test")
    c.receive(b"250 ok\r\n")
    with pytest.raises(SmtpUsageError):
        c.message(b"x\r\n")  # no 354 yet
    with pytest.raises(SmtpUsageError):
        c.rcpt("x@y.test>\r\nRSET")  # nothing can close the path or the line


def test_unsolicited_reply_and_starttls_injection() -> None:
    c = SmtpClient()
    c.receive(b"220 hi\r\n")
    with pytest.raises(ClientProtocolError, match="nobody asked"):
        c.receive(b"250 surprise\r\n")
    c = SmtpClient()
    c.receive(b"220 hi\r\n")
    c.ehlo("me.test")
    c.receive(b"250-mx\r\n250 STARTTLS\r\n")
    c.starttls()
    # RFC 3207 §4.2: a reply behind the 220, in the same read, would be read as if after TLS.
    with pytest.raises(ClientProtocolError, match="after the 220"):
        c.receive(b"220 go ahead\r\n250-mx\r\n250 AUTH PLAIN\r\n")


def test_auth_only_over_tls() -> None:
    c = SmtpClient()
    c.receive(b"220 hi\r\n")
    with pytest.raises(SmtpUsageError):
        c.auth_plain("u", "p")
    c.implicit_tls()
    c.ehlo("me")
    c.receive(b"250-mx\r\n250 AUTH PLAIN\r\n")
    assert c.auth_plain("u", "p") == b"AUTH PLAIN AHUAcA==\r\n"


def test_dane_verification(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    der = serialization.Encoding.DER
    chain = [certs.leaf.public_bytes(der), certs.ca.public_bytes(der)]
    ok = verify_chain(chain, [certs.tlsa_ee()], ("mx.remote.test",))
    assert ok.verified and ok.method == "dane-ee"
    # DANE-EE ignores the name (RFC 7672 §3.1.1); DANE-TA does not (§3.2.2).
    assert verify_chain(chain, [certs.tlsa_ee()], ("other.test",)).verified
    ta = verify_chain(chain, [certs.tlsa_ta()], ("mx.remote.test",))
    assert ta.verified and ta.method == "dane-ta"
    wrong_name = verify_chain(chain, [certs.tlsa_ta()], ("other.test",))
    assert not wrong_name.verified and "other.test" in wrong_name.reason
    bad = verify_chain(chain, [Tlsa(3, 1, 1, b"\0" * 32)], ("mx.remote.test",))
    assert not bad.verified and "does not match" in bad.reason
    sha512 = Tlsa(3, 0, 2, hashlib.sha512(chain[0]).digest())
    assert verify_chain(chain, [sha512], ()).verified
    # RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) are unusable; so is an unknown matching type.
    unusable = [Tlsa(1, 1, 1, certs.tlsa_ee().data), Tlsa(0, 0, 1, certs.tlsa_ta().data), Tlsa(3, 1, 9, b"")]
    assert usable(unusable) == ()
    assert not verify_chain(chain, unusable, ("mx.remote.test",)).verified
    # The TA must be in the presented chain and the leaf must chain to it.
    assert not verify_chain(chain[:1], [certs.tlsa_ta()], ("mx.remote.test",)).verified


def test_server_reply_text() -> None:
    r = ServerReply(550, "5.1.1", ("no", "such user"))
    assert str(r) == "550 5.1.1 no / such user" and r.permanent


def test_auth_login_and_helo() -> None:
    c = SmtpClient()
    c.receive(b"220 hi\r\n")
    assert c.ehlo("me") == b"EHLO me\r\n"
    (a,) = c.receive(b"502 5.5.1 what\r\n")
    assert a.command is Command.EHLO and a.capabilities == Capabilities()
    assert c.helo("me") == b"HELO me\r\n"
    c.receive(b"250 mx\r\n")
    assert not c.capabilities.extended
    c.implicit_tls()
    assert c.auth_login("user", "pass") == b"AUTH LOGIN\r\n"
    c.receive(b"334 VXNlcm5hbWU6\r\n")
    assert c.auth_continue() == b"dXNlcg==\r\n"
    c.receive(b"334 UGFzc3dvcmQ6\r\n")
    assert c.auth_continue() == b"cGFzcw==\r\n"
    (a,) = c.receive(b"235 2.7.0 ok\r\n")
    assert a.command is Command.AUTH and a.reply.positive
