"""Properties of the SMTP client's reply parser: round trips, split invariance, and fuzzing (only ClientProtocolError, bounded memory)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.smtp.client import ClientLimits, ClientProtocolError, ReplyParser, ServerReply, SmtpClient
from eventmail.smtp.reply import Reply

LIMITS = ClientLimits(max_line=300, max_lines=20, max_reply=2000)

text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(str.strip)
codes = st.sampled_from([220, 221, 250, 251, 334, 354, 421, 450, 451, 452, 500, 501, 503, 550, 552, 553, 554])


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    code = draw(codes)
    enhanced = None
    if code >= 400 or (code in (250, 251) and draw(st.booleans())):
        enhanced = f"{str(code)[0]}.{draw(st.integers(0, 7))}.{draw(st.integers(0, 30))}"
    lines = tuple(draw(st.lists(text, min_size=1, max_size=5)))
    return Reply(code, enhanced, lines if len(lines) > 1 else lines[0])


def parse_all(chunks: list[bytes], limits: ClientLimits = LIMITS) -> list[ServerReply]:
    p = ReplyParser(limits)
    out: list[ServerReply] = []
    for c in chunks:
        out += p.feed(c)
    return out


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(st.lists(replies(), min_size=1, max_size=6), st.lists(st.integers(0, 2000), max_size=12))
def test_round_trip_and_split_invariance(rs: list[Reply], cuts: list[int]) -> None:
    wire = b"".join(r.encode() for r in rs)
    whole = parse_all([wire])
    assert parse_all(splits(wire, cuts)) == whole
    assert [(p.code, p.enhanced) for p in whole] == [(r.code, r.enhanced) for r in rs]
    for p, r in zip(whole, rs, strict=True):
        if r.enhanced is None:
            continue
        assert p.lines == r.lines


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=400), max_size=20))
def test_any_bytes_only_protocol_errors_and_bounded(chunks: list[bytes]) -> None:
    p = ReplyParser(LIMITS)
    try:
        for c in chunks:
            p.feed(c)
            # What it holds never passes a reply plus one line.
            assert p.buffered <= LIMITS.max_reply + LIMITS.max_line + 400
    except ClientProtocolError:
        pass


reply_ish = st.lists(
    st.one_of(
        codes.map(lambda c: f"{c} ok\r\n".encode()),
        codes.map(lambda c: f"{c}-more\r\n".encode()),
        st.binary(max_size=30),
        st.just(b"250-" + b"x" * 400 + b"\r\n"),
        st.just(b"\r\n"),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(reply_ish)
def test_client_survives_any_server(chunks: list[bytes]) -> None:
    # The client with a full transaction outstanding meets arbitrary reply-like input: it gives
    # answers in order or raises ClientProtocolError; nothing else.
    c = SmtpClient(LIMITS)
    seen = 0
    try:
        seen += len(c.receive(b"220 hi\r\n"))
        c.ehlo("me.test")
        seen += len(c.receive(b"250-mx\r\n250 PIPELINING\r\n"))
        c.mail("a@x.test")
        c.rcpt("b@y.test")
        c.data()
        for chunk in chunks:
            seen += len(c.receive(chunk))
    except ClientProtocolError:
        pass
    assert seen <= 5
