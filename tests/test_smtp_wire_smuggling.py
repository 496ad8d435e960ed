"""SMTP smuggling (bare CR/LF end-of-data tricks, 2023) and STARTTLS command injection (CVE-2011-0411).

Each smuggling payload hides a second transaction (MAIL FROM/RCPT/DATA) behind a fake end of
data. RFC 5321 §4.1.1.4: only CRLF "." CRLF ends DATA; §2.3.8: a bare CR or LF refuses the
message. So exactly one message is seen, it is refused, and the smuggled commands never run.
"""

from __future__ import annotations

import itertools

import pytest

from eventmail.smtp import MailFrom, MessageComplete, ProtocolError, RcptTo, StartTls
from tests.test_smtp_wire_support import Session, codes

LF, CR, CRLF, CRCRLF = b"\n", b"\r", b"\r\n", b"\r\r\n"
ENDINGS = {"LF": LF, "CR": CR, "CRLF": CRLF, "CRCRLF": CRCRLF}

HEAD = b"From: alice@client.example\r\nTo: bob@example.org\r\nSubject: hello\r\n\r\nHello Bob"
SMUGGLED = (
    b"MAIL FROM:<ceo@example.org>\r\n"
    b"RCPT TO:<victim@example.org>\r\n"
    b"DATA\r\n"
    b"From: ceo@example.org\r\nTo: victim@example.org\r\nSubject: wire money\r\n\r\nsmuggled\r\n"
)
REAL_END = b".\r\n"


def payload(first: bytes, second: bytes) -> bytes:
    return HEAD + first + b"." + second + SMUGGLED + REAL_END


def genuine_end(first: bytes, second: bytes) -> bool:
    """The fake end is a real CRLF.CRLF after all: (CRLF, CRLF) and (CRCRLF, CRLF)."""
    return b"\r\n.\r\n" in first[-2:] + b"." + second


MATRIX = [
    pytest.param(ENDINGS[a], ENDINGS[b], id=f"{a}.{b}")
    for a, b in itertools.product(ENDINGS, ENDINGS)
    if not genuine_end(ENDINGS[a], ENDINGS[b])
]


def start_data(s: Session) -> None:
    s.write(b"EHLO client.example\r\n")
    s.write(b"MAIL FROM:<alice@client.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
    assert s.output.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n")


def assert_not_smuggled(s: Session) -> None:
    contents = [e for e in s.events if isinstance(e, MessageComplete | ProtocolError)]
    assert len(contents) == 1, contents  # exactly one message: the whole payload
    (refused,) = contents
    assert isinstance(refused, ProtocolError)
    assert (refused.reply.code, refused.reply.enhanced) == (550, "5.6.0")
    assert s.server.messages == []
    assert [e.address for e in s.events if isinstance(e, MailFrom)] == ["alice@client.example"]
    assert [e.address for e in s.events if isinstance(e, RcptTo)] == ["bob@example.org"]


@pytest.mark.parametrize(("first", "second"), MATRIX)
def test_smuggling_matrix_one_refused_message(first: bytes, second: bytes) -> None:
    s = Session()
    start_data(s)
    out = s.write(payload(first, second))
    assert out == b"550 5.6.0 Message contains bare CR or LF; lines must end with CRLF\r\n"
    assert_not_smuggled(s)
    # The stream is in step: the next command is a command.
    assert s.write(b"QUIT\r\n") == b"221 2.0.0 mx.example.org closing connection\r\n"


@pytest.mark.parametrize(("first", "second"), MATRIX)
def test_smuggling_matrix_in_one_write_with_quit(first: bytes, second: bytes) -> None:
    s = Session()
    start_data(s)
    out = s.write(payload(first, second) + b"QUIT\r\n")
    assert codes(out) == [550, 221]
    assert_not_smuggled(s)


@pytest.mark.parametrize(("first", "second"), MATRIX)
def test_smuggling_matrix_byte_by_byte(first: bytes, second: bytes) -> None:
    s = Session()
    start_data(s)
    data = payload(first, second)
    s.write(data, chunks=range(1, len(data)), eager=True)
    assert_not_smuggled(s)


@pytest.mark.parametrize(("first", "second"), MATRIX)
def test_smuggling_matrix_over_bdat(first: bytes, second: bytes) -> None:
    """BDAT has no end marker to fake, but content relayed on by DATA must not carry bare
    CR/LF either: the same refusal."""
    s = Session()
    s.write(b"EHLO client.example\r\n")
    data = payload(first, second)
    out = s.write(
        b"MAIL FROM:<alice@client.example>\r\nRCPT TO:<bob@example.org>\r\nBDAT %d LAST\r\n" % len(data)
        + data
    )
    assert codes(out) == [250, 250, 550]
    assert_not_smuggled(s)


@pytest.mark.parametrize(("first", "second"), [(CRLF, CRLF), (CRCRLF, CRLF)])
def test_genuine_end_of_data_controls(first: bytes, second: bytes) -> None:
    """With a real CRLF.CRLF the data does end there and what follows are real commands. Its
    DATA has the second body pipelined behind it, which RFC 2920 §3.1 forbids: 554, closed."""
    s = Session()
    start_data(s)
    out = s.write(payload(first, second))
    assert [e.address for e in s.events if isinstance(e, MailFrom)] == [
        "alice@client.example",
        "ceo@example.org",
    ]
    if first == CRLF:
        assert codes(out) == [250, 250, 250, 354, 554]
        assert s.server.messages == [HEAD + b"\r\n"]
    else:  # "Hello Bob\r\r\n": the first message has a bare CR and is refused
        assert codes(out) == [550, 250, 250, 354, 554]
        assert s.server.messages == []
    assert s.conn.closed


def test_dot_line_with_bare_lf_is_not_unstuffed_into_an_end() -> None:
    """aiosmtpd's `\\r\\n.\\n` case: the line `.\\nMAIL ...` must not lose its dot and the content
    must not be delivered at all."""
    s = Session()
    start_data(s)
    s.write(b"hi\r\n.\nMAIL FROM:<evil@x.example>\r\n.\r\n")
    assert s.server.messages == []
    assert isinstance(s.events[-1], ProtocolError)


def test_nul_does_not_end_data_and_is_refused() -> None:
    """Only CR and LF frame lines: a NUL before the dot does not make an end either. The message
    is then refused for its NUL (554 5.6.0), and the connection serves the next transaction."""
    s = Session()
    start_data(s)
    out = s.write(b"hi\r\n\x00.\r\nMAIL FROM:<evil@x.example>\r\n.\r\n")
    assert out == b"554 5.6.0 Message contains NUL bytes\r\n"
    assert s.server.messages == []
    assert [e.address for e in s.events if isinstance(e, MailFrom)] == ["alice@client.example"]
    s.write(b"MAIL FROM:<alice@client.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
    assert s.write(b"clean\r\n.\r\n") == b"250 2.0.0 OK: queued as 1\r\n"
    assert s.server.messages == [b"clean\r\n"]


@pytest.mark.parametrize("cut", [0, 1, 5, 9])
def test_nul_in_any_bdat_chunk_is_refused(cut: int) -> None:
    """BDAT: a NUL in any chunk (or split across chunk edges) refuses the message at LAST."""
    s = Session()
    s.write(b"EHLO client.example\r\n")
    body = b"Subject: x\r\n\r\nab\x00cd\r\n"
    first, last = body[:cut], body[cut:]
    out = s.write(
        b"MAIL FROM:<alice@client.example>\r\nRCPT TO:<bob@example.org>\r\n"
        + b"BDAT %d\r\n" % len(first) + first + b"BDAT %d LAST\r\n" % len(last) + last
    )
    assert codes(out) == [250, 250, 250, 554]
    assert out.endswith(b"554 5.6.0 Message contains NUL bytes\r\n")
    assert s.server.messages == []
    assert codes(s.write(b"RSET\r\nNOOP\r\n")) == [250, 250]


# ---------------------------------------------------------------------------------------------
# STARTTLS command injection (CVE-2011-0411, RFC 3207 §4.2)
# ---------------------------------------------------------------------------------------------

INJECTED = b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.org>\r\n"


def test_commands_in_the_same_read_as_starttls_are_discarded() -> None:
    s = Session()
    s.write(b"EHLO client.example\r\n")
    out = s.write(b"STARTTLS\r\n" + INJECTED)
    assert out == b"220 2.0.0 Ready to start TLS\r\n"
    assert s.server.dropped_at_tls == [len(INJECTED)]
    assert s.events[-1] == StartTls()
    # Under TLS nothing of it survived: no transaction, no EHLO.
    assert s.conn.tls and s.conn.mail_from is None and s.conn.helo_name is None
    assert s.write(b"RCPT TO:<victim@example.org>\r\n") == b"503 5.5.1 Need MAIL command\r\n"
    assert not any(isinstance(e, MailFrom) for e in s.events)


def test_commands_sent_before_the_handshake_are_discarded() -> None:
    s = Session()
    s.write(b"EHLO client.example\r\n")
    conn = s.conn
    assert conn.receive(b"STARTTLS\r\n") == [StartTls()]
    assert conn.receive(INJECTED[:20]) == []  # before our 220
    conn.accept_starttls()
    assert conn.receive(INJECTED[20:]) == []  # after the 220, before the handshake finished
    assert conn.tls_started() == len(INJECTED)
    assert conn.next_events() == []
    (event,) = conn.receive(b"MAIL FROM:<a@b.example>\r\n")
    assert isinstance(event, ProtocolError) and event.reply.code == 503  # EHLO first, again


@pytest.mark.parametrize("cut", range(1, len(b"STARTTLS\r\n" + INJECTED)))
def test_starttls_injection_at_every_split(cut: int) -> None:
    s = Session()
    s.write(b"EHLO client.example\r\n")
    s.write(b"STARTTLS\r\n" + INJECTED, chunks=[cut])
    assert s.server.dropped_at_tls == [len(INJECTED)]
    assert not any(isinstance(e, MailFrom | RcptTo) for e in s.events)
