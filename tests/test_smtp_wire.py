"""Transcript tests for the sans-IO SMTP core: client bytes in, exact server bytes and events out."""

from __future__ import annotations

import pytest

from eventmail.smtp import (
    AuthResponse,
    AuthStart,
    ChunkReceived,
    DataStart,
    Helo,
    Limits,
    MailFrom,
    MailParams,
    MessageComplete,
    Phase,
    ProtocolError,
    Quit,
    RcptTo,
    Reply,
    SmtpConfig,
    SmtpConnection,
    SmtpUsageError,
    StartTls,
    Vrfy,
)
from tests.test_smtp_wire_support import HOST, Session, codes, config, plain, replay

EHLO_PLAIN = (
    b"250-mx.example.org\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 10000\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-CHUNKING\r\n"
    b"250 STARTTLS\r\n"
)
EHLO_TLS = (
    b"250-mx.example.org\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 10000\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-CHUNKING\r\n"
    b"250-AUTH PLAIN LOGIN\r\n"
    b"250 REQUIRETLS\r\n"
)


def phase(s: Session) -> Phase:
    return s.conn.phase  # a call, so mypy does not keep an earlier narrowing of the property


def tls_session(**kwargs: object) -> Session:
    s = Session(config(**kwargs))
    s.write(b"EHLO client.example\r\n")
    s.write(b"STARTTLS\r\n")
    s.write(b"EHLO client.example\r\n")
    return s


# ---------------------------------------------------------------------------------------------
# Greeting and EHLO
# ---------------------------------------------------------------------------------------------


def test_greeting_and_ehlo_before_tls() -> None:
    s = Session()
    assert bytes(s.output) == b"220 mx.example.org ESMTP\r\n"
    assert s.write(b"EHLO client.example\r\n") == EHLO_PLAIN
    assert s.events == [Helo("client.example", True)]
    assert s.conn.helo_name == "client.example" and s.conn.extended


def test_ehlo_after_starttls_offers_auth_and_requiretls_not_starttls() -> None:
    s = Session()
    s.write(b"EHLO client.example\r\n")
    assert s.write(b"STARTTLS\r\n") == b"220 2.0.0 Ready to start TLS\r\n"
    assert s.conn.tls and s.conn.helo_name is None  # RFC 3207 §4.2: EHLO again
    assert s.write(b"EHLO client.example\r\n") == EHLO_TLS


def test_implicit_tls_offers_auth_at_once() -> None:
    s = Session(config(implicit_tls=True))
    assert s.write(b"EHLO c.example\r\n") == EHLO_TLS


def test_plaintext_auth_only_when_allowed() -> None:
    s = Session(config(allow_plaintext_auth=True, starttls=False))
    out = s.write(b"EHLO c.example\r\n")
    assert out.endswith(b"250 AUTH PLAIN LOGIN\r\n") and b"STARTTLS" not in out and b"REQUIRETLS" not in out


def test_minimal_config_ehlo() -> None:
    cfg = SmtpConfig(
        "mx.example.org",
        pipelining=False,
        eightbitmime=False,
        smtputf8=False,
        enhanced_status_codes=False,
        chunking=False,
        limits=Limits(max_message_size=1000),
    )
    s = Session(cfg)
    assert s.write(b"EHLO c.example\r\n") == b"250-mx.example.org\r\n250 SIZE 1000\r\n"
    # Without ENHANCEDSTATUSCODES the x.y.z codes stay off the wire.
    assert s.write(b"MAIL FROM:<a@b.example>\r\n") == b"250 OK\r\n"


def test_helo_has_no_extensions() -> None:
    s = Session()
    assert s.write(b"HELO client.example\r\n") == b"250 mx.example.org\r\n"
    assert s.events == [Helo("client.example", False)]
    assert s.write(b"MAIL FROM:<a@b.example> SIZE=10\r\n") == b"555 5.5.4 Unsupported parameter SIZE\r\n"
    assert s.write(b"MAIL FROM:<a@b.example>\r\n") == b"250 2.1.0 OK\r\n"


@pytest.mark.parametrize(
    "line", [b"EHLO\r\n", b"EHLO \r\n", b"EHLO a b\r\n", b"HELO caf\xc3\xa9.example\r\n"]
)
def test_bad_ehlo_argument(line: bytes) -> None:
    s = Session()
    out = s.write(line)
    assert out.startswith(b"501 Syntax: ")  # RFC 2034 §3: no enhanced code for HELO/EHLO
    assert s.conn.helo_name is None


def test_ehlo_resets_transaction() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    s.write(b"MAIL FROM:<a@b.example>\r\n")
    s.write(b"RCPT TO:<x@y.example>\r\n")
    assert s.conn.mail_from is not None and s.conn.recipients == 1
    s.write(b"EHLO c.example\r\n")
    assert s.conn.mail_from is None and s.conn.recipients == 0


def test_greeting_554_serves_only_quit() -> None:
    conn = SmtpConnection(config())
    assert conn.greeting(Reply(554, None, "No SMTP service here")) == b"554 No SMTP service here\r\n"
    (event,) = conn.receive(b"EHLO c.example\r\n")
    assert isinstance(event, ProtocolError) and event.reply.code == 503
    conn.send(event.reply)
    assert conn.receive(b"QUIT\r\n") == [Quit()]
    assert conn.accept() == b"221 2.0.0 mx.example.org closing connection\r\n"
    assert conn.closed


def test_greeting_421_closes() -> None:
    conn = SmtpConnection(config())
    assert conn.greeting(Reply(421, None, "mx.example.org busy")) == b"421 mx.example.org busy\r\n"
    assert conn.closed and conn.receive(b"EHLO x\r\n") == []


# ---------------------------------------------------------------------------------------------
# Mail transactions
# ---------------------------------------------------------------------------------------------


def test_full_transaction_exact_bytes() -> None:
    s = Session()
    transcript = [
        (b"EHLO client.example\r\n", EHLO_PLAIN),
        (b"MAIL FROM:<alice@client.example>\r\n", b"250 2.1.0 OK\r\n"),
        (b"RCPT TO:<bob@example.org>\r\n", b"250 2.1.5 OK\r\n"),
        (b"DATA\r\n", b"354 End data with <CR><LF>.<CR><LF>\r\n"),
        (b"Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n", b"250 2.0.0 OK: queued as 1\r\n"),
        (b"QUIT\r\n", b"221 2.0.0 mx.example.org closing connection\r\n"),
    ]
    for client, server in transcript:
        assert s.write(client) == server
    assert s.server.messages == [b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"]
    assert s.events == [
        Helo("client.example", True),
        MailFrom("alice@client.example"),
        RcptTo("bob@example.org"),
        DataStart(),
        MessageComplete(b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"),
        Quit(),
    ]
    assert s.conn.closed and s.conn.receive(b"NOOP\r\n") == []


def test_rfc2920_pipelined_transaction_in_one_write() -> None:
    """RFC 2920 §3.1: MAIL and RCPT anywhere in a group, DATA last; replies in order."""
    s = Session()
    s.write(b"EHLO client.example\r\n")
    out = s.write(
        b"MAIL FROM:<alice@client.example>\r\n"
        b"RCPT TO:<bob@example.org>\r\n"
        b"RCPT TO:<unknown@example.org>\r\n"
        b"RCPT TO:<carol@example.org>\r\n"
        b"DATA\r\n"
    )
    assert out == (
        b"250 2.1.0 OK\r\n"
        b"250 2.1.5 OK\r\n"
        b"550 5.1.1 No such user\r\n"
        b"250 2.1.5 OK\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
    )
    # RFC 2920 §3.1: the content may open the next group, with RSET/MAIL/RCPT after it.
    out = s.write(b"hello\r\n.\r\nMAIL FROM:<alice@client.example>\r\nRCPT TO:<dave@example.org>\r\nDATA\r\n")
    assert codes(out) == [250, 250, 250, 354]
    out = s.write(b"second\r\n.\r\nQUIT\r\n")
    assert codes(out) == [250, 221]
    assert s.server.messages == [b"hello\r\n", b"second\r\n"]


def test_sequence_errors() -> None:
    s = Session()
    assert s.write(b"MAIL FROM:<a@b.example>\r\n") == b"503 5.5.1 Send HELO/EHLO first\r\n"
    s.write(b"EHLO c.example\r\n")
    assert s.write(b"RCPT TO:<a@b.example>\r\n") == b"503 5.5.1 Need MAIL command\r\n"
    assert s.write(b"DATA\r\n") == b"503 5.5.1 Need MAIL command\r\n"
    s.write(b"MAIL FROM:<a@b.example>\r\n")
    assert s.write(b"MAIL FROM:<a@b.example>\r\n") == b"503 5.5.1 Nested MAIL command\r\n"
    assert s.write(b"DATA\r\n") == b"554 5.5.1 No valid recipients\r\n"
    assert s.write(b"RCPT TO:<unknown@b.example>\r\n") == b"550 5.1.1 No such user\r\n"
    assert s.write(b"DATA\r\n") == b"554 5.5.1 No valid recipients\r\n"


def test_rejected_mail_leaves_no_transaction() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    assert s.write(b"MAIL FROM:<reject-me@b.example>\r\n") == b"550 5.7.1 Sender refused\r\n"
    assert s.write(b"RCPT TO:<x@y.example>\r\n") == b"503 5.5.1 Need MAIL command\r\n"


def test_rset() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    s.write(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    assert s.write(b"RSET\r\n") == b"250 2.0.0 OK\r\n"
    assert s.conn.mail_from is None and s.conn.recipients == 0
    assert s.write(b"RSET now\r\n") == b"501 5.5.4 Syntax: RSET\r\n"
    assert s.write(b"MAIL FROM:<a@b.example>\r\n") == b"250 2.1.0 OK\r\n"


def test_null_sender_and_postmaster() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    s.write(b"MAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\n")
    assert s.events[1:] == [MailFrom(""), RcptTo("Postmaster")]


def test_mail_params() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    out = s.write(b"MAIL FROM:<a@b.example> SIZE=500 BODY=8BITMIME SMTPUTF8\r\n")
    assert out == b"250 2.1.0 OK\r\n"
    assert s.events[-1] == MailFrom("a@b.example", MailParams(size=500, body="8BITMIME", smtputf8=True))


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"MAIL FROM:<a@b.example> SIZE=10001", b"552 5.3.4 Message size exceeds fixed maximum message size"),
        (b"MAIL FROM:<a@b.example> SIZE=x", b"501 5.5.4 Syntax: SIZE=<number>"),
        (b"MAIL FROM:<a@b.example> SIZE=1 SIZE=2", b"501 5.5.4 Duplicate parameter SIZE"),
        (b"MAIL FROM:<a@b.example> BODY=BINARYMIME", b"501 5.5.4 Syntax: BODY=7BIT or BODY=8BITMIME"),
        (b"MAIL FROM:<a@b.example> SMTPUTF8=yes", b"501 5.5.4 Syntax: SMTPUTF8 takes no value"),
        (b"MAIL FROM:<a@b.example> REQUIRETLS", b"555 5.5.4 Unsupported parameter REQUIRETLS"),
        (b"MAIL FROM:<a@b.example> AUTH=<>", b"555 5.5.4 Unsupported parameter AUTH"),
        (b"MAIL FROM:<a@b.example> RET=FULL", b"555 5.5.4 Unsupported parameter RET"),
        (b"MAIL FROM:<a@b.example> =x", b"501 5.5.4 Syntax error in parameters"),
        (
            b"MAIL FROM:<a@b.example>SIZE=1",
            b"501 5.1.7 Syntax: a space must separate the path from its parameters",
        ),
        (b"MAIL FROM:a@b.example", b"501 5.1.7 Syntax: path must be enclosed in <>"),
        (b"MAIL FROM <a@b.example>", b"501 5.5.4 Syntax: MAIL FROM:<address>"),
        (b"MAIL FROM:<a@@b.example>", b"501 5.1.7 Syntax: bad local part"),
        (b"MAIL FROM:<\xc3\xa4@b.example>", b"550 5.6.7 Non-ASCII address requires SMTPUTF8"),
        (b"MAIL FROM:<\xff@b.example> SMTPUTF8", b"501 5.6.7 Address is not valid UTF-8"),
        (b"RCPT TO:<a@b.example>", b"503 5.5.1 Need MAIL command"),
    ],
)
def test_mail_errors(line: bytes, reply: bytes) -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    assert s.write(line + b"\r\n") == reply + b"\r\n"
    assert s.conn.mail_from is None


def test_mail_params_under_tls_and_auth() -> None:
    s = tls_session()
    s.write(b"AUTH PLAIN " + plain("alice") + b"\r\n")
    assert s.write(b"MAIL FROM:<a@b.example> REQUIRETLS AUTH=a+2Bb@b.example\r\n") == b"250 2.1.0 OK\r\n"
    assert s.events[-1] == MailFrom("a@b.example", MailParams(requiretls=True, auth="a+b@b.example"))
    s.write(b"RSET\r\n")
    assert (
        s.write(b"MAIL FROM:<a@b.example> AUTH=a+zz\r\n") == b"501 5.5.4 Syntax: AUTH= value is not xtext\r\n"
    )


def test_utf8_recipient_needs_smtputf8() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    s.write(b"MAIL FROM:<a@b.example>\r\n")
    assert (
        s.write("RCPT TO:<jürgen@b.example>\r\n".encode())
        == b"553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
    )
    s.write(b"RSET\r\nMAIL FROM:<a@b.example> SMTPUTF8\r\n")
    assert s.write("RCPT TO:<jürgen@bücher.example>\r\n".encode()) == b"250 2.1.5 OK\r\n"
    assert s.events[-1] == RcptTo("jürgen@bücher.example")


def test_too_many_recipients() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    s.write(b"MAIL FROM:<a@b.example>\r\n")
    s.write(b"".join(b"RCPT TO:<r%d@b.example>\r\n" % i for i in range(5)))
    assert s.conn.recipients == 5
    assert s.write(b"RCPT TO:<r6@b.example>\r\n") == b"452 4.5.3 Too many recipients\r\n"
    assert s.conn.recipients == 5


def test_refused_recipients_do_not_count_toward_limit() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    s.write(b"MAIL FROM:<a@b.example>\r\n")
    s.write(b"".join(b"RCPT TO:<unknown%d@b.example>\r\n" % i for i in range(6)))
    assert s.write(b"RCPT TO:<real@b.example>\r\n") == b"250 2.1.5 OK\r\n"


def test_vrfy_expn_help_noop() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    assert s.write(b"VRFY alice\r\n") == (
        b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    )
    assert s.write("VRFY jürgen SMTPUTF8\r\n".encode()).startswith(b"252 ")
    assert s.events[-1] == Vrfy("jürgen", smtputf8=True)
    assert s.write(b"VRFY\r\n") == b"501 5.5.4 Syntax: VRFY string\r\n"
    assert s.write(b"EXPN staff\r\n").startswith(b"252 2.5.0 ")
    assert s.write(b"HELP\r\n").startswith(b"214 2.0.0 ")
    assert s.write(b"NOOP hello\r\n") == b"250 2.0.0 OK\r\n"


def test_vrfy_reply_may_carry_utf8_only_when_asked() -> None:
    conn = SmtpConnection(config())
    conn.greeting()
    conn.receive(b"EHLO c.example\r\n")
    conn.accept()
    conn.receive("VRFY jürgen SMTPUTF8\r\n".encode())
    assert conn.send(Reply(250, "2.1.5", "Jürgen <jürgen@b.example>")) == (
        "250 2.1.5 Jürgen <jürgen@b.example>\r\n".encode()
    )
    conn.receive(b"VRFY juergen\r\n")
    assert conn.send(Reply(250, "2.1.5", "Jürgen <j@b.example>")) == b"250 2.1.5 J?rgen <j@b.example>\r\n"


# ---------------------------------------------------------------------------------------------
# DATA content
# ---------------------------------------------------------------------------------------------


def data_session(cfg: SmtpConfig | None = None) -> Session:
    s = Session(cfg or config())
    s.write(b"EHLO c.example\r\n")
    s.write(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    assert s.output.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")
    assert s.conn.phase is Phase.DATA
    return s


@pytest.mark.parametrize(
    ("wire", "content"),
    [
        (b".\r\n", b""),
        (b"\r\n.\r\n", b"\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"a\r\n...\r\nb\r\n.\r\n", b"a\r\n..\r\nb\r\n"),
        (b".x\r\n.\r\n", b"x\r\n"),  # RFC 5321 §4.5.2: the first dot goes, whatever follows
        (b"x\r\n. \r\n.\r\n", b"x\r\n \r\n"),
        (b"\x01\x80\xff binary-ish 8bit\r\n.\r\n", b"\x01\x80\xff binary-ish 8bit\r\n"),  # NUL: refused
    ],
)
def test_data_dot_unstuffing(wire: bytes, content: bytes) -> None:
    s = data_session()
    assert s.write(wire) == b"250 2.0.0 OK: queued as 1\r\n"
    assert s.server.messages == [content]
    assert s.conn.phase is Phase.COMMAND and s.conn.mail_from is None


def test_data_line_length_limit() -> None:
    s = data_session()
    ok = b"x" * 998 + b"\r\n"  # RFC 5321 §4.5.3.1.6: 1000 octets with CRLF
    stuffed = b"." + b"." * 998 + b"\r\n"  # the transparency dot does not count
    assert s.write(ok + stuffed + b".\r\n") == b"250 2.0.0 OK: queued as 1\r\n"
    s.write(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    out = s.write(b"y" * 999 + b"\r\n.\r\n")
    assert out == b"500 5.5.2 Line too long (RFC 5321 section 4.5.3.1.6)\r\n"
    assert s.conn.mail_from is None  # the refusal ends the transaction
    assert s.write(b"NOOP\r\n") == b"250 2.0.0 OK\r\n"


def test_data_size_limit_reads_to_end_without_storing() -> None:
    s = data_session()
    line = b"z" * 98 + b"\r\n"
    peak = 0
    for _ in range(300):  # 30 000 octets against a 10 000 limit
        s.write(line)
        peak = max(peak, s.conn.buffered)
    assert peak <= 10_000 + 200
    assert s.write(b".\r\n") == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    assert s.server.messages == []
    assert s.write(b"MAIL FROM:<a@b.example>\r\n") == b"250 2.1.0 OK\r\n"


def test_data_endless_line_is_bounded() -> None:
    s = data_session()
    for _ in range(100):
        s.write(b"q" * 5000)
        assert s.conn.buffered < 20_000
    assert s.write(b"\r\n.\r\n").startswith(b"552 5.3.4 ")


def test_data_refused_by_policy() -> None:
    conn = SmtpConnection(config())
    conn.greeting()
    for line in (b"EHLO c.example\r\n", b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<c@d.example>\r\n"):
        conn.receive(line)
        conn.accept()
    assert conn.receive(b"DATA\r\n") == [DataStart()]
    assert conn.send(Reply(451, "4.3.0", "Try later")) == b"451 4.3.0 Try later\r\n"
    assert conn.phase is Phase.COMMAND and conn.recipients == 1
    (event,) = conn.receive(b"hello\r\n")
    assert isinstance(event, ProtocolError) and event.reply.code == 500


def test_message_rejected_by_policy_ends_transaction() -> None:
    conn = SmtpConnection(config())
    conn.greeting()
    for line in (b"EHLO c\r\n", b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<c@d.example>\r\n", b"DATA\r\n"):
        conn.receive(line)
        conn.accept()
    (event,) = conn.receive(b"spam\r\n.\r\n")
    assert isinstance(event, MessageComplete) and event.data == b"spam\r\n" and event.size == 6
    assert conn.reject_message(Reply(550, "5.7.1", "Spam")) == b"550 5.7.1 Spam\r\n"
    assert conn.mail_from is None


# ---------------------------------------------------------------------------------------------
# Command lines: length, bare CR/LF, unknown and junk commands
# ---------------------------------------------------------------------------------------------


def test_command_line_limits() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    assert s.write(b"NOOP " + b"x" * 505 + b"\r\n") == b"250 2.0.0 OK\r\n"  # 512 with CRLF
    assert s.write(b"NOOP " + b"x" * 506 + b"\r\n") == b"500 5.5.2 Line too long\r\n"
    # MAIL carries extension parameters: more room (RFC 5321 §4.5.3.1.4).
    long_local = b"v" * 200
    line = b"MAIL FROM:<" + long_local + b"@b.example> SIZE=100 BODY=8BITMIME AUTH=<>" + b" " * 300
    assert 512 < len(line) + 2 <= 2048
    assert codes(s.write(line + b"\r\n")) == [555]  # AUTH= is not offered before TLS; not too long
    assert s.write(b"MAIL FROM:<a@b.example>" + b" " * 2100 + b"\r\n") == b"500 5.5.2 Line too long\r\n"


def test_endless_command_line_is_skipped_to_its_crlf() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    for _ in range(50):
        assert s.write(b"A" * 4096) == b""
        assert s.conn.buffered <= 12_300
    # One 500 once the line ends, then the next command is read normally (resynchronised).
    assert s.write(b"\r\nNOOP\r\n") == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"


def test_endless_line_ending_in_cr_across_reads() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    s.write(b"B" * 20000 + b"\r")
    assert s.write(b"\nNOOP\r\n") == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"


@pytest.mark.parametrize("sep", [b"\n", b"\r", b"\r\r"])
def test_bare_cr_or_lf_in_command_line(sep: bytes) -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    out = s.write(b"NOOP" + sep + b"MAIL FROM:<evil@x.example>\r\n")
    assert out == b"500 5.5.2 Bare CR or LF in command line\r\n"
    assert not any(isinstance(e, MailFrom) for e in s.events)
    assert s.conn.mail_from is None


def test_unknown_commands_then_421() -> None:
    s = Session()
    out = s.write(b"".join(b"XYZZY%d\r\n" % i for i in range(5)))
    assert out == b"500 5.5.1 Command not recognized\r\n" * 5
    assert s.write(b"XYZZY\r\n") == b"421 4.7.0 Too many unrecognized commands, closing\r\n"
    assert s.conn.closed


def test_too_many_errors_then_421() -> None:
    s = Session(config(limits=Limits(max_errors=3)))
    s.write(b"EHLO c.example\r\n")
    assert codes(s.write(b"RCPT TO:<a@b.example>\r\n" * 3)) == [503, 503, 503, 421]
    assert s.output.endswith(b"421 4.7.0 Too many errors, closing connection\r\n")
    assert s.conn.closed


def test_junk_command_limit() -> None:
    s = Session(config(limits=Limits(max_junk_commands=3)))
    assert codes(s.write(b"NOOP\r\n")) == [250]
    assert codes(s.write(b"NOOP\r\n")) == [250]
    assert codes(s.write(b"RSET\r\n")) == [250]
    assert s.write(b"NOOP\r\n") == b"421 4.7.0 Too many commands without mail, closing\r\n"
    assert s.conn.closed


def test_http_request_is_closed_at_once() -> None:
    s = Session()
    out = s.write(b"POST / HTTP/1.1\r\n")
    assert out == b"421 4.7.0 This is an SMTP server, closing connection\r\n"
    assert s.conn.closed


def test_421_from_server_closes() -> None:
    conn = SmtpConnection(config())
    conn.greeting()
    conn.receive(b"EHLO c.example\r\n")
    # RFC 2034 §3: replies to EHLO carry no enhanced code, even a 421.
    assert conn.send(Reply(421, "4.3.2", "Shutting down")) == b"421 Shutting down\r\n"
    assert conn.closed


# ---------------------------------------------------------------------------------------------
# Pipelining rules (RFC 2920 §3.1)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("write", "first"),
    [
        (b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\n", EHLO_PLAIN),
        (b"NOOP\r\nMAIL FROM:<a@b.example>\r\n", b"250 2.0.0 OK\r\n"),
        (
            b"VRFY x\r\nNOOP\r\n",
            b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n",
        ),
    ],
)
def test_commands_pipelined_behind_group_end_are_refused(write: bytes, first: bytes) -> None:
    s = Session()
    out = s.write(write)
    assert out == first + b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
    assert s.conn.closed
    assert not any(isinstance(e, MailFrom) for e in s.events)


def test_body_pipelined_behind_data_is_refused() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    out = s.write(
        b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n"
    )
    assert codes(out) == [250, 250, 354, 554]
    assert s.server.messages == [] and s.conn.closed


def test_body_sent_in_a_later_read_before_354_is_refused() -> None:
    conn = SmtpConnection(config())
    conn.greeting()
    for line in (b"EHLO c\r\n", b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<c@d.example>\r\n"):
        conn.receive(line)
        conn.accept()
    assert conn.receive(b"DATA\r\n") == [DataStart()]
    assert conn.receive(b"Subject: early\r\n") == []  # arrived before the 354 went out
    assert conn.accept() == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    (event,) = conn.next_events()
    assert event == ProtocolError(Reply(554, "5.5.0", "Error: SMTP protocol synchronization"), close=True)
    conn.send(event.reply)
    assert conn.closed


def test_talking_before_the_greeting_is_refused() -> None:
    conn = SmtpConnection(config())
    assert conn.receive(b"EHLO early.example\r\n") == []
    assert conn.greeting() == b"220 mx.example.org ESMTP\r\n"
    (event,) = conn.next_events()
    assert isinstance(event, ProtocolError) and event.close and event.reply.code == 554


def test_content_then_commands_is_a_legal_group() -> None:
    s = data_session()
    out = s.write(b"body\r\n.\r\nRSET\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nQUIT\r\n")
    assert codes(out) == [250, 250, 250, 250, 221]
    assert s.server.messages == [b"body\r\n"]


def test_data_arriving_while_a_pipelinable_reply_is_pending_is_kept() -> None:
    conn = SmtpConnection(config())
    conn.greeting()
    conn.receive(b"EHLO c\r\n")
    conn.accept()
    assert conn.receive(b"MAIL FROM:<a@b.example>\r\n") == [MailFrom("a@b.example")]
    assert conn.receive(b"RCPT TO:<c@d.example>\r\n") == []  # buffered, in order
    conn.accept()
    assert conn.next_events() == [RcptTo("c@d.example")]


def test_buffered_input_is_bounded_when_caller_never_answers() -> None:
    conn = SmtpConnection(config(limits=Limits(max_buffered_input=1000)))
    conn.greeting()
    conn.receive(b"EHLO c\r\n")
    conn.accept()
    assert conn.receive(b"MAIL FROM:<a@b.example>\r\n")
    for _ in range(20):
        conn.receive(b"RCPT TO:<c@d.example>\r\n" * 10)
        assert conn.buffered <= 1000
    conn.accept()
    (event,) = conn.next_events()
    assert isinstance(event, ProtocolError) and event.reply.code == 421 and event.close


# ---------------------------------------------------------------------------------------------
# STARTTLS
# ---------------------------------------------------------------------------------------------


def test_starttls_errors() -> None:
    s = Session()
    assert s.write(b"STARTTLS\r\n") == b"503 5.5.1 Send EHLO first\r\n"
    s.write(b"EHLO c.example\r\n")
    assert s.write(b"STARTTLS now\r\n") == b"501 5.5.4 Syntax: STARTTLS\r\n"
    s.write(b"STARTTLS\r\n")
    s.write(b"EHLO c.example\r\n")
    assert s.write(b"STARTTLS\r\n") == b"503 5.5.1 STARTTLS not available\r\n"
    s2 = Session(config(starttls=False))
    s2.write(b"EHLO c.example\r\n")
    assert s2.write(b"STARTTLS\r\n") == b"502 5.5.1 STARTTLS not available\r\n"


def test_starttls_refused_by_server_keeps_plaintext_session() -> None:
    conn = SmtpConnection(config())
    conn.greeting()
    conn.receive(b"EHLO c\r\n")
    conn.accept()
    assert conn.receive(b"STARTTLS\r\n") == [StartTls()]
    assert conn.send(Reply(454, "4.7.0", "TLS not available")) == b"454 4.7.0 TLS not available\r\n"
    assert not conn.tls and conn.phase is Phase.COMMAND and conn.helo_name == "c"
    with pytest.raises(SmtpUsageError):
        conn.tls_started()


def test_starttls_resets_session_and_auth_mechanisms_can_change() -> None:
    conn = SmtpConnection(config(allow_plaintext_auth=True))
    conn.greeting()
    conn.receive(b"EHLO c\r\n")
    conn.accept()
    conn.receive(b"AUTH PLAIN " + plain("alice") + b"\r\n")
    conn.auth_succeeded("alice")
    assert conn.authenticated_user == "alice"
    conn.receive(b"STARTTLS\r\n")
    conn.accept_starttls()
    assert conn.phase is Phase.TLS_HANDSHAKE
    assert conn.tls_started(auth_mechanisms=("SCRAM-SHA-256-PLUS", "PLAIN")) == 0
    assert conn.authenticated_user is None and conn.helo_name is None  # RFC 3207 §4.2
    conn.receive(b"EHLO c\r\n")
    assert b"250-AUTH SCRAM-SHA-256-PLUS PLAIN\r\n" in conn.accept()


# ---------------------------------------------------------------------------------------------
# AUTH (RFC 4954)
# ---------------------------------------------------------------------------------------------


def test_auth_plain_with_initial_response() -> None:
    s = tls_session()
    ir = plain("alice")
    assert s.write(b"AUTH PLAIN " + ir + b"\r\n") == b"235 2.7.0 Authentication successful\r\n"
    assert s.events[-1] == AuthStart("PLAIN", ir)
    assert s.conn.authenticated_user == "alice"
    assert s.write(b"AUTH PLAIN " + ir + b"\r\n") == b"503 5.5.1 Already authenticated\r\n"


def test_auth_plain_with_empty_challenge() -> None:
    s = tls_session()
    assert s.write(b"auth plain\r\n") == b"334 \r\n"  # RFC 4954 §4: "334" SP [base64]
    assert s.conn.phase is Phase.AUTH
    assert s.write(plain("bob") + b"\r\n") == b"235 2.7.0 Authentication successful\r\n"
    assert s.events[-2:] == [AuthStart("PLAIN", None), AuthResponse(plain("bob"))]
    assert phase(s) is Phase.COMMAND and s.conn.authenticated_user == "bob"


def test_auth_login_exchange() -> None:
    s = tls_session()
    assert s.write(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert s.write(b"Y2Fyb2w=\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert s.write(b"d3Jvbmc=\r\n") == b"535 5.7.8 Authentication credentials invalid\r\n"
    assert s.conn.authenticated_user is None and s.conn.phase is Phase.COMMAND


def test_auth_cancel() -> None:
    s = tls_session()
    s.write(b"AUTH PLAIN\r\n")
    assert s.write(b"*\r\n") == b"501 5.7.0 Authentication cancelled\r\n"
    event = s.events[-1]
    assert isinstance(event, AuthResponse) and event.cancelled
    assert s.conn.phase is Phase.COMMAND


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"AUTH", b"501 5.5.4 Syntax: AUTH mechanism [initial-response]"),
        (b"AUTH PLAIN a b", b"501 5.5.4 Syntax: AUTH mechanism [initial-response]"),
        (b"AUTH CRAM-MD5", b"504 5.5.4 Unrecognized authentication type"),
        (b"AUTH PLA\xc4\xb1N", b"504 5.5.4 Unrecognized authentication type"),
    ],
)
def test_auth_errors(line: bytes, reply: bytes) -> None:
    s = tls_session()
    assert s.write(line + b"\r\n") == reply + b"\r\n"


def test_auth_needs_tls_unless_allowed() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    assert (
        s.write(b"AUTH PLAIN\r\n")
        == b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    )
    s2 = Session(config(auth_mechanisms=()))
    s2.write(b"EHLO c.example\r\n")
    assert s2.write(b"AUTH PLAIN\r\n") == b"502 5.5.1 AUTH not available\r\n"


def test_auth_not_during_transaction() -> None:
    s = tls_session()
    s.write(b"MAIL FROM:<a@b.example>\r\n")
    assert s.write(b"AUTH PLAIN\r\n") == b"503 5.5.1 AUTH not permitted during a mail transaction\r\n"


def test_auth_line_too_long() -> None:
    s = tls_session()
    s.write(b"AUTH PLAIN\r\n")
    out = s.write(b"A" * 13000 + b"\r\n")
    assert out == b"500 5.5.6 Authentication Exchange line is too long\r\n"
    assert s.conn.phase is Phase.COMMAND
    # An AUTH command line may be 12288 octets (RFC 4954 §4).
    ir = b"A" * (12288 - len(b"AUTH PLAIN \r\n"))
    assert s.write(b"AUTH PLAIN " + ir + b"\r\n") == b"501 5.5.2 Cannot Base64-decode client response\r\n"


def test_commands_pipelined_behind_auth_are_refused() -> None:
    s = tls_session()
    out = s.write(b"AUTH PLAIN " + plain("alice") + b"\r\nMAIL FROM:<a@b.example>\r\n")
    assert out == b"235 2.7.0 Authentication successful\r\n554 5.5.0 Error: SMTP protocol synchronization\r\n"
    assert s.conn.closed


def test_auth_usage_errors() -> None:
    conn = SmtpConnection(config(implicit_tls=True))
    conn.greeting()
    conn.receive(b"EHLO c\r\n")
    conn.accept()
    conn.receive(b"AUTH PLAIN\r\n")
    with pytest.raises(SmtpUsageError):
        conn.accept()
    with pytest.raises(SmtpUsageError):
        conn.send(Reply(235, "2.7.0", "ok"))
    with pytest.raises(SmtpUsageError):
        conn.auth_succeeded("x", Reply(250, "2.0.0", "ok"))
    assert conn.auth_failed() == b"535 5.7.8 Authentication credentials invalid\r\n"


# ---------------------------------------------------------------------------------------------
# BDAT (RFC 3030)
# ---------------------------------------------------------------------------------------------


def bdat_session() -> Session:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    s.write(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    return s


def test_bdat_single_chunk() -> None:
    s = bdat_session()
    body = b"Subject: x\r\n\r\n.\r\n..\r\nMAIL FROM:<evil@x.example>\r\n"
    assert s.write(b"BDAT %d LAST\r\n" % len(body) + body) == b"250 2.0.0 OK: queued as 1\r\n"
    assert s.server.messages == [body]  # no dot-stuffing: octets as sent
    assert s.events[-1] == MessageComplete(body, chunked=True)
    assert not any(isinstance(e, MailFrom) and e.address.startswith("evil") for e in s.events)


def test_bdat_chunks_and_zero_last() -> None:
    s = bdat_session()
    out = s.write(b"BDAT 5\r\nhello" + b"BDAT 8\r\n world\r\n" + b"bdat 0 last\r\n")
    assert (
        out == b"250 2.0.0 5 octets received\r\n250 2.0.0 8 octets received\r\n250 2.0.0 OK: queued as 1\r\n"
    )
    assert s.server.messages == [b"hello world\r\n"]
    assert [type(e) for e in s.events[-3:]] == [ChunkReceived, ChunkReceived, MessageComplete]


def test_bdat_whole_transaction_pipelined_in_one_write() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    body = b"x\r\n"
    out = s.write(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 3 LAST\r\n" + body + b"QUIT\r\n")
    assert codes(out) == [250, 250, 250, 221]


def test_bdat_zero_last_alone_is_an_empty_message() -> None:
    s = bdat_session()
    assert s.write(b"BDAT 0 LAST\r\n") == b"250 2.0.0 OK: queued as 1\r\n"
    assert s.server.messages == [b""]


def test_bdat_split_across_reads() -> None:
    s = bdat_session()
    assert s.write(b"BDAT 10 LAST\r\nabc") == b""
    assert s.conn.phase is Phase.BDAT
    assert s.write(b"defghij") == b"250 2.0.0 OK: queued as 1\r\n"
    assert s.server.messages == [b"abcdefghij"]


def test_data_after_bdat_is_refused() -> None:
    s = bdat_session()
    s.write(b"BDAT 3\r\nabc")
    assert s.write(b"DATA\r\n") == b"503 5.5.1 DATA cannot follow BDAT in one transaction\r\n"
    assert s.write(b"RSET\r\n") == b"250 2.0.0 OK\r\n"
    s.write(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    assert s.write(b"DATA\r\n").startswith(b"354 ")


def test_bdat_after_refused_data_is_refused() -> None:
    conn = SmtpConnection(config())
    conn.greeting()
    for line in (b"EHLO c\r\n", b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<c@d.example>\r\n"):
        conn.receive(line)
        conn.accept()
    conn.receive(b"DATA\r\n")
    conn.send(Reply(451, "4.3.0", "Not now"))
    (event,) = conn.receive(b"BDAT 3 LAST\r\nabc")
    assert event == ProtocolError(Reply(503, "5.5.1", "BDAT cannot follow DATA in one transaction"))
    conn.send(event.reply)
    assert conn.mail_from is None  # LAST ended the transaction


def test_bdat_without_transaction_still_reads_its_octets() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    smuggled = b"MAIL FROM:<evil@x.test>\r\n"
    out = s.write(b"BDAT %d\r\n" % len(smuggled) + smuggled + b"NOOP\r\n")
    assert out == b"503 5.5.1 Need MAIL command\r\n250 2.0.0 OK\r\n"
    assert not any(isinstance(e, MailFrom) for e in s.events)


def test_bdat_without_chunking_still_reads_its_octets() -> None:
    s = Session(config(chunking=False))
    s.write(b"EHLO c.example\r\n")
    assert b"CHUNKING" not in s.output
    assert s.write(b"BDAT 6\r\nRSET\r\nNOOP\r\n") == b"502 5.5.1 BDAT not available\r\n250 2.0.0 OK\r\n"


def test_bdat_without_recipients() -> None:
    s = Session()
    s.write(b"EHLO c.example\r\n")
    s.write(b"MAIL FROM:<a@b.example>\r\n")
    assert s.write(b"BDAT 2 LAST\r\nhi") == b"554 5.5.1 No valid recipients\r\n"


def test_bdat_over_size_is_discarded_and_later_chunks_refused() -> None:
    s = bdat_session()
    assert s.write(b"BDAT 6000\r\n" + b"a" * 6000) == b"250 2.0.0 6000 octets received\r\n"
    out = s.write(b"BDAT 6000\r\n" + b"b" * 6000)
    assert out == b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    assert s.conn.buffered == 0
    # RFC 3030 §2: later chunks are read and discarded; LAST ends the transaction.
    assert codes(s.write(b"BDAT 10 LAST\r\n" + b"c" * 10)) == [552]
    assert s.conn.mail_from is None
    assert s.write(b"MAIL FROM:<a@b.example>\r\n") == b"250 2.1.0 OK\r\n"


def test_bdat_huge_chunk_is_streamed_not_stored() -> None:
    s = bdat_session()
    s.write(b"BDAT 1000000 LAST\r\n")
    for _ in range(100):
        s.write(b"z" * 10_000)
        assert s.conn.buffered == 0
    assert s.output.endswith(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n")


def test_bdat_chunk_refused_by_server_fails_the_rest() -> None:
    conn = SmtpConnection(config())
    conn.greeting()
    for line in (b"EHLO c\r\n", b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<c@d.example>\r\n"):
        conn.receive(line)
        conn.accept()
    assert conn.receive(b"BDAT 2\r\nab") == [ChunkReceived(2)]
    assert conn.send(Reply(452, "4.3.1", "Out of space")) == b"452 4.3.1 Out of space\r\n"
    (event,) = conn.receive(b"BDAT 2 LAST\r\ncd")
    assert event == ProtocolError(Reply(452, "4.3.1", "Out of space"))
    conn.send(event.reply)
    assert conn.mail_from is None


@pytest.mark.parametrize(
    "arg", [b"BDAT\r\n", b"BDAT x\r\n", b"BDAT 5 MORE\r\n", b"BDAT 123456789012345678901\r\n"]
)
def test_bdat_syntax_error_closes(arg: bytes) -> None:
    s = bdat_session()
    out = s.write(arg + b"MAIL FROM:<evil@x.example>\r\n")
    assert out == b"501 5.5.4 Syntax: BDAT chunk-size [LAST]; closing connection\r\n"
    assert s.conn.closed


def test_rset_after_bdat_chunk() -> None:
    s = bdat_session()
    s.write(b"BDAT 3\r\nabc")
    assert s.write(b"RSET\r\n") == b"250 2.0.0 OK\r\n"
    assert s.conn.buffered == 0 and s.conn.mail_from is None


def test_rcpt_after_bdat_is_refused() -> None:
    s = bdat_session()
    s.write(b"BDAT 3\r\nabc")
    assert s.write(b"RCPT TO:<x@y.example>\r\n") == b"503 5.5.1 RCPT after BDAT\r\n"


# ---------------------------------------------------------------------------------------------
# Usage errors and replies
# ---------------------------------------------------------------------------------------------


def test_usage_errors() -> None:
    conn = SmtpConnection(config())
    with pytest.raises(SmtpUsageError):
        conn.accept()
    conn.greeting()
    with pytest.raises(SmtpUsageError):
        conn.greeting()
    with pytest.raises(SmtpUsageError):
        conn.send(Reply(250, "2.0.0", "OK"))
    conn.receive(b"EHLO c\r\n")
    with pytest.raises(SmtpUsageError):
        conn.accept_rcpt()
    with pytest.raises(SmtpUsageError):
        conn.reject(Reply(250, "2.0.0", "OK"))
    conn.accept_helo()
    conn.receive(b"STARTTLS\r\n")
    with pytest.raises(SmtpUsageError):
        conn.send(Reply(250, "2.0.0", "OK"))


def test_reply_encoding() -> None:
    assert Reply(250, None, ("a", "b", "c")).encode() == b"250-a\r\n250-b\r\n250 c\r\n"
    assert Reply(550, "5.1.1", ("x", "y")).encode() == b"550-5.1.1 x\r\n550 5.1.1 y\r\n"
    assert Reply(550, "5.1.1", "x").encode(enhanced=False) == b"550 x\r\n"
    assert Reply(250).encode() == b"250\r\n"
    assert Reply(250, "2.0.0").encode() == b"250 2.0.0\r\n"
    # Reply text can never inject a line.
    assert Reply(550, "5.0.0", "a\r\n250 ok").encode() == b"550 5.0.0 a  250 ok\r\n"
    long = Reply(250, "2.0.0", "x" * 1000).encode()
    assert len(long) == 512 and long.endswith(b"\r\n")
    with pytest.raises(ValueError):
        Reply(250, "5.0.0", "class mismatch")
    with pytest.raises(ValueError):
        Reply(99)
    assert Reply(452, "4.5.3").transient and Reply(554).permanent and Reply(354).intermediate


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SmtpConfig(HOST, eightbitmime=False)  # RFC 6531: SMTPUTF8 needs 8BITMIME
    with pytest.raises(ValueError):
        SmtpConfig("bad host")


def test_replay_helper_runs_a_whole_session() -> None:
    s = replay([b"EHLO c\r\n", b"QUIT\r\n"])
    assert s.kinds() == ["Helo", "Quit"] and s.conn.closed
