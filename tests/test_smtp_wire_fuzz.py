"""Properties of the SMTP core: split invariance, round trips, and fuzzing (never raises, bounded memory)."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventmail.smtp import Limits, MessageComplete, SmtpConfig
from eventmail.smtp.content import PARTIAL_FLUSH, ContentSink
from tests.test_smtp_wire_support import Session, config, plain, replay

SMALL = Limits(max_message_size=2_000, max_recipients=5, max_errors=30, max_unknown_commands=10)
CFG = config(limits=SMALL)
CFG_TLS = config(limits=SMALL, implicit_tls=True)
CFG_BIG = config(limits=Limits(max_message_size=100_000))

EHLO = b"EHLO client.example\r\n"
ENVELOPE = b"MAIL FROM:<alice@client.example> SIZE=200\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<unknown@example.org>\r\n"

# Each transcript is a list of client writes; a client that follows RFC 2920 waits for the
# replies to everything in a write before the next one.
COMPLIANT: dict[str, list[bytes]] = {
    "data": [EHLO, ENVELOPE + b"DATA\r\n", b"Subject: x\r\n\r\n..dot\r\n.x\r\nbody\r\n.\r\n", b"QUIT\r\n"],
    "pipelined-two-messages": [
        EHLO,
        ENVELOPE + b"DATA\r\n",
        b"one\r\n.\r\nRSET\r\n" + ENVELOPE + b"DATA\r\n",
        b"two\r\n\r\n.\r\nQUIT\r\n",
    ],
    "bdat": [EHLO, ENVELOPE + b"BDAT 7\r\nab\r\n.\r\nBDAT 4 LAST\r\ncd\r\n" + b"NOOP\r\n", b"QUIT\r\n"],
    "bdat-zero": [
        EHLO,
        ENVELOPE + b"BDAT 0 LAST\r\nRSET\r\n" + b"MAIL FROM:<>\r\nBDAT 3\r\nxyz",
        b"QUIT\r\n",
    ],
    "errors": [
        b"MAIL FROM:<a@b.example>\r\n",
        EHLO,
        b"RCPT TO:<a@b.example>\r\nXYZZY\r\nMAIL FROM:<a@@b>\r\nMAIL FROM:<a@b.example> FOO=1\r\nDATA\r\n",
        b"VRFY someone\r\n",
        b"HELP\r\n",
    ],
    "auth": [EHLO, b"AUTH PLAIN\r\n", plain("alice") + b"\r\n", b"AUTH LOGIN\r\n", b"NOOP\r\n"],
    "auth-login": [EHLO, b"AUTH LOGIN\r\n", b"Ym9i\r\n", b"c2VjcmV0\r\n", b"MAIL FROM:<b@c.example>\r\n"],
    "long-lines": [
        EHLO,
        b"NOOP " + b"x" * 3000 + b"\r\nNOOP\r\n",
        ENVELOPE + b"DATA\r\n",
        b"y" * 1200 + b"\r\n.\r\n",
    ],
    "oversize": [EHLO, ENVELOPE + b"DATA\r\n", (b"z" * 500 + b"\r\n") * 5 + b".\r\n", b"QUIT\r\n"],
    "smtputf8": [
        EHLO,
        'MAIL FROM:<jürgen@bücher.example> SMTPUTF8\r\nRCPT TO:<"a b"@[192.0.2.1]>\r\nDATA\r\n'.encode(),
        "Subject: grüße\r\n\r\nhallo\r\n.\r\n".encode(),
    ],
}
HOSTILE: dict[str, list[bytes]] = {
    "smuggle-lf": [EHLO, ENVELOPE + b"DATA\r\n", b"a\n.\nMAIL FROM:<e@x.example>\r\n.\r\nQUIT\r\n"],
    "smuggle-cr": [EHLO, ENVELOPE + b"DATA\r\n", b"a\r.\rMAIL FROM:<e@x.example>\r\n.\r\nQUIT\r\n"],
    "ehlo-pipelined": [EHLO + b"MAIL FROM:<a@b.example>\r\n"],
    "data-pipelined": [EHLO, ENVELOPE + b"DATA\r\nbody\r\n.\r\n"],
    "starttls-injection": [EHLO, b"STARTTLS\r\nMAIL FROM:<e@x.example>\r\n", EHLO],
    "bare-lf-commands": [EHLO, b"NOOP\nMAIL FROM:<e@x.example>\r\nNOOP\r\n"],
    "bdat-syntax": [EHLO, ENVELOPE + b"BDAT ten\r\nMAIL FROM:<e@x.example>\r\n"],
    "http": [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
    "tls-hello-on-plain-port": [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n"],
}


def outcome(writes: list[bytes], **kwargs: object) -> tuple[list[object], bytes]:
    s = replay(writes, cfg=CFG, **kwargs)  # type: ignore[arg-type]
    return list(s.events), bytes(s.output)


def cases(group: dict[str, list[bytes]]) -> list[tuple[str, int, int]]:
    """(transcript, write index, cut offset) for every byte boundary of every write."""
    return [
        (name, i, k) for name, writes in group.items() for i, w in enumerate(writes) for k in range(1, len(w))
    ]


ALL = {**COMPLIANT, **HOSTILE}


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_byte_boundary_gives_the_same_events(name: str) -> None:
    writes = ALL[name]
    expected = outcome(writes)
    assert expected[0], "the transcript produced events"
    for i, w in enumerate(writes):
        for k in range(1, len(w)):
            cuts: list[list[int]] = [[] for _ in writes]
            cuts[i] = [k]
            assert outcome(writes, cuts=cuts) == expected, (name, i, k)
    # And all at once: every write fed one octet at a time.
    assert outcome(writes, cuts=[list(range(1, len(w))) for w in writes]) == expected


@pytest.mark.parametrize("name", sorted(COMPLIANT))
def test_compliant_transcripts_do_not_depend_on_when_the_server_answers(name: str) -> None:
    """A client that keeps RFC 2920 gets the same result whether the server reads everything
    first or answers after each octet."""
    writes = COMPLIANT[name]
    expected = outcome(writes)
    assert outcome(writes, cuts=[list(range(1, len(w))) for w in writes], eager=True) == expected


def test_transcript_expectations() -> None:
    """Spot checks so the split tests above compare meaningful sessions."""
    s = replay(COMPLIANT["data"], cfg=CFG)
    assert s.server.messages == [b"Subject: x\r\n\r\n.dot\r\nx\r\nbody\r\n"]
    s = replay(COMPLIANT["bdat"], cfg=CFG)
    assert s.server.messages == [b"ab\r\n.\r\ncd\r\n"]
    s = replay(HOSTILE["smuggle-lf"], cfg=CFG)
    assert s.server.messages == [] and s.kinds().count("MailFrom") == 1
    s = replay(HOSTILE["starttls-injection"], cfg=CFG)
    assert s.server.dropped_at_tls == [len(b"MAIL FROM:<e@x.example>\r\n")]


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------

# without CR, LF and NUL, which the sink refuses (bare CR/LF: 550 5.6.0, NUL: 554 5.6.0)
line_text = st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b""))
message_lines = st.lists(
    st.one_of(line_text, line_text.map(lambda b: b"." + b), st.just(b"."), st.just(b"..")), max_size=40
)


def dot_stuff(content: bytes) -> bytes:
    return (b"\r\n" + content).replace(b"\r\n.", b"\r\n..")[2:]


@settings(max_examples=300, deadline=None)
@given(lines=message_lines, cuts=st.lists(st.integers(min_value=1, max_value=6000), max_size=8))
def test_data_round_trip(lines: list[bytes], cuts: list[int]) -> None:
    content = b"".join(line + b"\r\n" for line in lines)
    s = Session(CFG_BIG)
    s.write(EHLO)
    s.write(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    wire = dot_stuff(content) + b".\r\n"
    s.write(wire, chunks=[c for c in cuts if c < len(wire)])
    assert s.server.messages == [content]


@settings(max_examples=300, deadline=None)
@given(content=st.binary(max_size=3000), sizes=st.lists(st.integers(min_value=0, max_value=700), max_size=10))
def test_bdat_round_trip(content: bytes, sizes: list[int]) -> None:
    # Make it CRLF-clean and NUL-free, as every accepted message must be.
    content = re.sub(rb"\r?\n|\r", b"\r\n", content).replace(b"\x00", b"")
    chunks, rest = [], content
    for n in sizes:
        chunks.append(rest[:n])
        rest = rest[n:]
    chunks.append(rest)
    wire = b"".join(b"BDAT %d\r\n" % len(c) + c for c in chunks[:-1]) + b"BDAT %d LAST\r\n" % len(chunks[-1])
    wire += chunks[-1]
    s = Session(CFG_BIG)
    s.write(EHLO)
    s.write(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n" + wire)
    if any(len(line) > 998 for line in content.split(b"\r\n")):
        assert s.server.messages == []
    else:
        assert s.server.messages == [content]
    assert s.kinds().count("ChunkReceived") == len(chunks) - 1


# ---------------------------------------------------------------------------------------------
# Fuzzing: random and mutated input never raises, memory stays within the limits
# ---------------------------------------------------------------------------------------------

LINE_CAP = max(SMALL.max_command_line, SMALL.max_mail_rcpt_line, SMALL.max_auth_line)


def check_invariants(s: Session, chunk: int) -> None:
    # What a connection can hold: one read, one unfinished line (commands or DATA), one message.
    assert s.conn.buffered <= chunk + LINE_CAP + PARTIAL_FLUSH + SMALL.max_message_size
    for event in s.events:
        if isinstance(event, MessageComplete):
            data = event.data
            assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")  # no bare CR/LF
            assert len(data) <= SMALL.max_message_size
            assert all(len(line) <= 998 for line in data.split(b"\r\n"))


def feed(s: Session, data: bytes, cuts: list[int], eager: bool) -> None:
    s.write(data, chunks=[c for c in cuts if 0 < c < len(data)], eager=eager)
    check_invariants(s, len(data))


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=4000),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=10),
    eager=st.booleans(),
    tls=st.booleans(),
)
def test_random_bytes_never_raise(data: bytes, cuts: list[int], eager: bool, tls: bool) -> None:
    s = Session(CFG_TLS if tls else CFG)
    feed(s, data, cuts, eager)


TOKENS = [
    b"EHLO c.example\r\n",
    b"HELO c\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"MAIL FROM:<> SIZE=9999999\r\n",
    b"RCPT TO:<c@d.example>\r\n",
    b"RCPT TO:<unknown@d.example>\r\n",
    b"DATA\r\n",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"*\r\n",
    plain("alice") + b"\r\n",
    b".\r\n",
    b"..\r\n",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"\r\r\n",
    b"hello world\r\n",
    b"x" * 1100,
    b"\x00\xff\xfe",
    b"QUIT\r\n",
]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.sampled_from(TOKENS), max_size=40),
    mutations=st.lists(st.tuples(st.integers(min_value=0), st.binary(max_size=4)), max_size=6),
    cuts=st.lists(st.integers(min_value=1, max_value=6000), max_size=10),
    eager=st.booleans(),
    tls=st.booleans(),
)
def test_mutated_sessions_never_raise(
    parts: list[bytes], mutations: list[tuple[int, bytes]], cuts: list[int], eager: bool, tls: bool
) -> None:
    data = bytearray(b"".join(parts))
    for pos, junk in mutations:
        at = pos % (len(data) + 1)
        data[at : at + len(junk) // 2] = junk  # replace a little, insert the rest
    s = Session(CFG_TLS if tls else CFG)
    feed(s, bytes(data), cuts, eager)
    if s.conn.closed:
        assert s.conn.receive(b"NOOP\r\n") == [] and s.conn.buffered == 0


@settings(max_examples=200, deadline=None)
@given(
    valid=st.sampled_from(sorted(COMPLIANT)),
    mutations=st.lists(st.tuples(st.integers(min_value=0), st.binary(max_size=3)), min_size=1, max_size=4),
)
def test_mutated_transcripts_never_raise(valid: str, mutations: list[tuple[int, bytes]]) -> None:
    writes = [bytearray(w) for w in COMPLIANT[valid]]
    for pos, junk in mutations:
        w = writes[pos % len(writes)]
        at = pos % (len(w) + 1)
        w[at : at + 1] = junk
    s = Session(CFG)
    for w in writes:
        feed(s, bytes(w), [], eager=False)


def test_config_used_by_fuzzing_is_small() -> None:
    assert isinstance(CFG, SmtpConfig) and CFG.limits.max_message_size == 2_000


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.integers(min_value=0, max_value=40), max_size=30),
    ends=st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b""]), min_size=30, max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_content_checks_match_a_plain_reading_at_any_split(lines: list[int], ends: list[bytes], cuts: list[int]) -> None:
    """ContentSink's streaming checks (long lines, bare CR/LF) equal the obvious whole-content ones."""
    limit = 20  # max_text_line: 19 octets before the LF, the CR included
    content = b"".join(b"x" * n + ends[i] for i, n in enumerate(lines))
    sink = ContentSink(Limits(max_text_line=limit, max_message_size=1 << 20))
    points = sorted({0, len(content), *(c for c in cuts if c < len(content))})
    for a, b in itertools.pairwise(points):
        sink.feed(content[a:b])
    assert sink.long_line == any(len(seg) > limit - 1 for seg in content.split(b"\n"))
    bare = content.count(b"\r") != content.count(b"\r\n") or content.count(b"\n") != content.count(b"\r\n")
    result = sink.finish()
    assert sink.bare_newline == bare
    assert isinstance(result, bytes) == (not bare and not sink.long_line)
