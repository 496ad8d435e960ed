"""Property tests: any bytes, mutated real messages and generated MIME trees parse without raising, within limits."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventmail.mime import MimeLimits, parse_structure
from eventmail.mime.imapform import decode_part, extract_section, render_bodystructure, render_envelope
from eventmail.proto import events_pb2

from .test_mime_structure import FIXTURES, check_offsets, load_fixture, walk

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = [load_fixture(p.name) for p in sorted(FIXTURES.glob("*.eml"))]
SECTIONS = [
    "",
    "HEADER",
    "TEXT",
    "1",
    "1.MIME",
    "1.1",
    "2",
    "2.HEADER",
    "2.TEXT",
    "1.2.1",
    "HEADER.FIELDS (FROM TO)",
]
# Byte strings that steer a parser into its interesting corners.
TOKENS = [
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\r\n--",
    b"--",
    b"\x00",
    b"\xff",
    b'"',
    b"(",
    b")",
    b"\\",
    b";",
    b":",
    b"<",
    b"\r\n ",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n",
    b"\r\n--b--\r\n",
    b"To: g: a@b, (c) <d@e>;\r\n",
    b"; name*0*=utf-8''%41; name*1=b",
]


def check(raw: bytes, limits: MimeLimits) -> None:
    st = parse_structure(raw, limits)
    check_offsets(raw, st.body)
    assert st.body.end == len(raw)
    parts = walk(st.body)
    assert len(parts) <= limits.max_parts
    assert max(d for _, d in parts) <= limits.max_depth
    assert events_pb2.MessageStructure.FromString(st.SerializeToString()) == st
    render_envelope(st.envelope)
    render_bodystructure(st.body, True)
    render_bodystructure(st.body, False, imap4rev2=True)
    for section in SECTIONS:
        extract_section(raw, st, section)
    for part, _ in parts:
        decode_part(raw, part)


SMALL = MimeLimits(max_depth=3, max_parts=6, max_header_bytes=64)


@FUZZ
@given(st.binary(max_size=3000))
def test_any_bytes(raw: bytes) -> None:
    check(raw, MimeLimits())
    check(raw, SMALL)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 12))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "flip", "truncate", "duplicate"]))
        if op == "insert":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 200))]
        elif op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "duplicate":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 500))]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_corpus_messages(raw: bytes) -> None:
    check(raw, MimeLimits())
    check(raw, SMALL)


@st.composite
def mime_tree(draw: st.DrawFn, depth: int = 0) -> bytes:
    """A MIME entity: a leaf, a multipart of entities or a message/rfc822 around one, often broken."""
    kind = draw(st.sampled_from(["leaf", "leaf", "multipart", "message"] if depth < 8 else ["leaf"]))
    if kind == "leaf":
        header = draw(
            st.sampled_from([b"", b"Content-Type: text/plain\r\n", b"Content-Transfer-Encoding: base64\r\n"])
        )
        return header + b"\r\n" + draw(st.sampled_from([b"", b"x", b"line\r\n", b"--\r\n", b"QUJD\r\n"]))
    if kind == "message":
        return b"Content-Type: message/rfc822\r\n\r\nSubject: s\r\n" + draw(mime_tree(depth + 1))
    boundary = draw(st.sampled_from([b"a", b"ab", b"b", b"a b", b"=_1"]))
    children = draw(st.lists(mime_tree(depth + 1), max_size=4))
    body = b"".join(b"\r\n--" + boundary + b"\r\n" + child for child in children)
    close = draw(st.sampled_from([b"\r\n--" + boundary + b"--\r\n", b"", b"\r\n--" + boundary + b"--"]))
    return b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\npreamble' + body + close


@FUZZ
@given(mime_tree())
def test_generated_trees(raw: bytes) -> None:
    check(raw, MimeLimits())
    check(raw, SMALL)
    check(raw, MimeLimits(max_depth=0, max_parts=1))
