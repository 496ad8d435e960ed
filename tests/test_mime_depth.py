"""One MIME nesting limit everywhere (mime.MAX_MIME_DEPTH): every walker of raw MIME or of a parsed
structure stays within it on arbitrarily deep input, none raises RecursionError, and mail coming in
deeper than it is refused (issue 10, item 10)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventmail.imap.search import _part_text
from eventmail.junk.features import message_features
from eventmail.junk.tokenize import tokenize
from eventmail.mime import (
    MAX_MIME_DEPTH,
    MimeTooDeep,
    parse_incoming,
    parse_structure,
    render_bodystructure,
    render_envelope,
    structure_depth,
)
from eventmail.mime.imapform import extract_section
from eventmail.proto import events_pb2
from eventmail.smtp.analysis import mime_shape

DEEP = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
LEVELS = st.lists(st.sampled_from(["multipart", "message", "digest"]), max_size=1200)


def nested(levels: list[str], text: bytes = b"the innermost words\r\n") -> bytes:
    """A message whose body nests one container per entry of `levels`, a text part inside."""
    head = b"From: a@example.test\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
    tail = b""
    for i, kind in enumerate(levels):
        if kind == "message":
            head += b"Content-Type: message/rfc822\r\n\r\nSubject: level %d\r\n" % i
        else:
            sub = b"digest" if kind == "digest" else b"mixed"
            head += b'Content-Type: multipart/%s; boundary="b%d"\r\n\r\n--b%d\r\n' % (sub, i, i)
            tail = b"\r\n--b%d--\r\n" % i + tail
    return head + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + text + tail


def _deep_structure(depth: int) -> events_pb2.MimePart:
    """A parsed-looking tree `depth` multiparts deep, as a peer or an older store could hold."""
    leaf = events_pb2.MimePart(type=b"text", subtype=b"plain", body_start=0, end=0)
    for _ in range(depth):
        outer = events_pb2.MimePart(type=b"multipart", subtype=b"mixed")
        outer.parts.append(leaf)
        leaf = outer
    return leaf


@DEEP
@given(LEVELS)
def test_every_walker_is_bounded_on_any_nesting(levels: list[str]) -> None:
    raw = nested(levels)
    st_ = parse_structure(raw)
    assert structure_depth(st_.body) <= MAX_MIME_DEPTH
    depth, _parts = mime_shape(st_)
    assert depth <= MAX_MIME_DEPTH + 1
    for ext in (True, False):
        for rev2 in (True, False):
            assert render_bodystructure(st_.body, ext, imap4rev2=rev2).startswith(b"(")
    render_envelope(st_.envelope)
    extract_section(raw, st_, ".".join(["1"] * min(len(levels) + 1, 200)))
    extract_section(raw, st_, "TEXT")
    out: list[str] = []
    _part_text(raw, st_.body, out, top=True)
    tokens = tokenize(raw)
    assert "s:nested" in tokens
    message_features(raw)
    if len(levels) <= MAX_MIME_DEPTH:
        assert parse_incoming(raw) == st_
        assert "innermost" in tokens  # within the limit nothing is lost
        assert any("innermost" in t for t in out)
    else:
        try:
            parse_incoming(raw)
        except MimeTooDeep as e:
            assert e.limit == MAX_MIME_DEPTH
        else:
            raise AssertionError("a message nested past the limit was accepted")


def test_the_limit_is_exact() -> None:
    parse_incoming(nested(["multipart"] * MAX_MIME_DEPTH))
    parse_incoming(nested(["message"] * MAX_MIME_DEPTH))
    for kind in ("multipart", "message"):
        try:
            parse_incoming(nested([kind] * (MAX_MIME_DEPTH + 1)))
        except MimeTooDeep:
            continue
        raise AssertionError(f"{kind} one past the limit was accepted")


def test_the_junk_tokenizer_survives_ten_thousand_levels() -> None:
    """The stdlib parser recurses a level at a time: 1,000 levels gave RecursionError."""
    for kind in ("multipart", "message"):
        tokens = tokenize(nested([kind] * 10_000))
        assert "s:nested" in tokens


def test_structures_deeper_than_the_parser_makes_are_walked_within_the_limit() -> None:
    """Protobuf decodes trees up to ~100 deep; the renderers and SEARCH stop at MAX_MIME_DEPTH."""
    body = _deep_structure(95)
    rendered = render_bodystructure(body, True)
    assert rendered.count(b'"multipart"') == 0 and rendered.count(b"(") <= MAX_MIME_DEPTH + 2
    assert b'"application" "octet-stream"' in rendered
    out: list[str] = []
    _part_text(b"", body, out, top=True)
    assert out == []
