"""IMAP renderings: string quoting, ENVELOPE defaults, BODY[section] extraction and BINARY decoding."""

from __future__ import annotations

import base64

import pytest

from eventmail.mime import parse_structure
from eventmail.mime.imapform import (
    decode_part,
    extract_section,
    imap_string,
    render_bodystructure,
    render_envelope,
)
from eventmail.proto import events_pb2

from .test_mime_structure import FORWARD, MIXED, RFC3501_EXAMPLE, load_fixture, msg


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"plain text", b'"plain text"'),
        (b"", b'""'),
        (b'say "hi"', b'{8}\r\nsay "hi"'),
        (b"back\\slash", b"{10}\r\nback\\slash"),
        (b"tab\there", b"{8}\r\ntab\there"),
        (b"caf\xc3\xa9", b"{5}\r\ncaf\xc3\xa9"),
        (b"line\r\nbreak", b"{11}\r\nline\r\nbreak"),
        (b"nul\x00", b"{6}\r\nnul\xef\xbf\xbd"),  # a literal may not hold NUL (RFC 9051 §4.3)
    ],
)
def test_imap_string(value: bytes, expected: bytes) -> None:
    assert imap_string(value) == expected


def test_envelope_defaults_and_groups() -> None:
    env = events_pb2.Envelope(has_subject=True, subject=b"")
    getattr(env, "from").add(name=b"A", mailbox=b"a", host=b"example.org")
    env.to.add(mailbox=b"team")
    env.to.add(mailbox=b"b", host=b"example.org")
    env.to.add(group_end=True)
    env.reply_to.add(mailbox=b"r", host=b"example.org")
    assert render_envelope(env) == (
        b'(NIL "" (("A" NIL "a" "example.org")) (("A" NIL "a" "example.org")) ((NIL NIL "r" "example.org")) '
        b'((NIL NIL "team" NIL)(NIL NIL "b" "example.org")(NIL NIL NIL NIL)) NIL NIL NIL NIL)'
    )
    assert render_envelope(events_pb2.Envelope()) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_bodystructure_of_an_arbitrary_proto_is_well_formed() -> None:
    # A message/rfc822 part without an enclosed structure and a multipart without parts still
    # render as grammar-valid BODYSTRUCTURE (RFC 3501 §9).
    part = events_pb2.MimePart(type=b"multipart", subtype=b"mixed")
    part.parts.add(type=b"message", subtype=b"rfc822", encoding=b"base64", body_start=5, end=9, lines=1)
    part.parts.add(type=b"multipart", subtype=b"related")
    empty = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
    assert render_bodystructure(part, False) == (
        b'(("message" "rfc822" NIL NIL NIL "base64" 4 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) '
        + empty
        + b" 1)("
        + empty
        + b' "related") "mixed")'
    )


def test_language_single_and_list() -> None:
    one = parse_structure(msg("Content-Language: en", "", "x")).body
    two = parse_structure(msg("Content-Language: en, (comment) de-CH", "", "x")).body
    assert render_bodystructure(one, True).endswith(b' NIL NIL "en" NIL)')
    assert render_bodystructure(two, True).endswith(b' NIL NIL ("en" "de-CH") NIL)')


# ---------------------------------------------------------------- BODY[section]


def header_of(raw: bytes) -> bytes:
    return raw[: raw.index(b"\r\n\r\n") + 4]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("", MIXED),
        ("HEADER", header_of(MIXED)),
        ("header", header_of(MIXED)),
        ("TEXT", MIXED[len(header_of(MIXED)) :]),
        (
            "1",
            b"--inner\r\n"
            + MIXED.split(b"\r\n\r\n--inner\r\n", 1)[1].split(b"\r\n\r\n--outer\r\n")[0]
            + b"\r\n",
        ),
        ("1.1", b"Hello =C3=A9"),
        (
            "1.1.MIME",
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
        ),
        ("1.2", b"<p>Hello</p>"),
        ("1.2.MIME", b"Content-Type: text/html; charset=utf-8\r\n\r\n"),
        ("1.MIME", b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"),
        ("2", b"JVBE"),
        ("HEADER.FIELDS (Subject FROM)", b"From: Alice <alice@example.org>\r\nSubject: Report\r\n\r\n"),
        ('HEADER.FIELDS ("To" X-None)', b"To: Bob <bob@example.net>\r\n\r\n"),
        (
            "HEADER.FIELDS.NOT (From To Subject Date Message-ID)",
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="outer"\r\n\r\n',
        ),
        ("3", None),
        ("1.3", None),
        ("0", None),
        ("2.1", None),  # a leaf has no sub-parts
        ("2.HEADER", None),  # HEADER and TEXT need a message/rfc822 part
        ("2.TEXT", None),
        ("MIME", None),  # MIME needs a part number
        ("BOGUS", None),
        ("TEXT (A)", None),
        ("HEADER.FIELDS", None),
    ],
)
def test_sections_of_mixed(section: str, expected: bytes | None) -> None:
    assert extract_section(MIXED, parse_structure(MIXED), section) == expected


def test_sections_of_forward() -> None:
    st = parse_structure(FORWARD)
    inner = FORWARD.split(b"Content-Disposition: inline\r\n\r\n", 1)[1].split(b"\r\n--b1--")[0]
    inner_header, inner_body = inner.split(b"\r\n\r\n", 1)
    inner_header += b"\r\n\r\n"
    assert extract_section(FORWARD, st, "2") == inner
    assert (
        extract_section(FORWARD, st, "2.MIME")
        == b"Content-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
    )
    assert extract_section(FORWARD, st, "2.HEADER") == inner_header
    assert extract_section(FORWARD, st, "2.TEXT") == inner_body == b"Inner body\r\nline 2"
    # RFC 9051 §6.4.5: the enclosed message is not multipart, so its only part 1 is its body,
    # and the MIME header of that part is the enclosed message's header.
    assert extract_section(FORWARD, st, "2.1") == inner_body
    assert extract_section(FORWARD, st, "2.1.MIME") == inner_header
    assert extract_section(FORWARD, st, "2.2") is None
    assert (
        extract_section(FORWARD, st, "2.HEADER.FIELDS (subject)") == b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\n"
    )


def test_sections_of_single_part_message() -> None:
    raw = RFC3501_EXAMPLE
    st = parse_structure(raw)
    body = b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"
    assert extract_section(raw, st, "1") == body == extract_section(raw, st, "TEXT")
    assert extract_section(raw, st, "1.MIME") == header_of(raw)
    assert extract_section(raw, st, "1.1") is None
    assert extract_section(raw, st, "2") is None


def test_header_fields_keep_folding_and_the_blank_line_rule() -> None:
    raw = msg("Subject: a", " b", "X-A: 1", "subject: second", "", "body")
    st = parse_structure(raw)
    assert (
        extract_section(raw, st, "HEADER.FIELDS (SUBJECT)") == b"Subject: a\r\n b\r\nsubject: second\r\n\r\n"
    )
    # RFC 9051 §6.4.5: no blank line for a message that has no body and no blank line.
    raw = b"Subject: x\r\nFrom: a@b"
    assert extract_section(raw, parse_structure(raw), "HEADER.FIELDS (From)") == b"From: a@b\r\n"
    assert extract_section(raw, parse_structure(raw), "HEADER") == raw


def test_empty_multipart_has_an_empty_part_one() -> None:
    raw = msg("Content-Type: multipart/mixed; boundary=zz", "", "no delimiter", "")
    st = parse_structure(raw)
    assert extract_section(raw, st, "1") == b""
    assert extract_section(raw, st, "1.MIME") == b""
    assert extract_section(raw, st, "1.TEXT") is None
    assert extract_section(raw, st, "2") is None


def test_nested_fixture_sections() -> None:
    raw = load_fixture("report-rfc822-signed.eml")
    st = parse_structure(raw)
    signature = extract_section(raw, st, "3.2")
    assert signature is not None and signature.startswith(b"MIAGCSqGSIb3DQEHAq")
    assert extract_section(raw, st, "3.2.MIME") == (
        b'Content-Type: application/x-pkcs7-signature;\r\n\tname="smime.p7s"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment;\r\n\tfilename="smime.p7s"\r\n\r\n'
    )
    header = extract_section(raw, st, "3.HEADER")
    assert header is not None and header.startswith(b"Received: ") and header.endswith(b"\r\n\r\n")


# ---------------------------------------------------------------- BINARY


def part_with(encoding: str, body: bytes) -> tuple[bytes, events_pb2.MimePart]:
    raw = msg("Content-Transfer-Encoding: " + encoding, "", body)
    return raw, parse_structure(raw).body


@pytest.mark.parametrize(
    ("encoding", "body", "decoded"),
    [
        ("7bit", b"plain\r\n", b"plain\r\n"),
        ("8BIT", b"caf\xc3\xa9", b"caf\xc3\xa9"),
        ("binary", b"\x00\x01", b"\x00\x01"),
        (
            "base64",
            base64.encodebytes(b"%PDF-1.4 \x00\xff" * 20).replace(b"\n", b"\r\n"),
            b"%PDF-1.4 \x00\xff" * 20,
        ),
        ("Base64", b"QUJD\r\nRA", b"ABCD"),  # missing padding
        ("base64", b"QU*JD\r\n!!", b"ABC"),  # characters outside the alphabet are ignored
        ("base64", b"QQ==\r\nQkM=", b"A"),  # data ends at the padding
        ("base64", b"QUJDR", b"ABC"),  # a lone sextet is dropped
        ("quoted-printable", b"caf=C3=A9 =\r\nsoft  \r\nend=3d", b"caf\xc3\xa9 soft\r\nend="),
        ("quoted-printable", b"a=  \r\nb =ZZ", b"ab =ZZ"),  # RFC 2045 §6.7 (3) and note (2)
    ],
)
def test_decode_part(encoding: str, body: bytes, decoded: bytes) -> None:
    raw, part = part_with(encoding, body)
    assert decode_part(raw, part) == decoded


def test_decode_part_unknown_encoding() -> None:
    raw, part = part_with("x-uuencode", b"begin 644 a\r\n")
    assert decode_part(raw, part) is None


def test_decode_mixed_parts() -> None:
    st = parse_structure(MIXED)
    assert decode_part(MIXED, st.body.parts[0].parts[0]) == "Hello é".encode()
    assert decode_part(MIXED, st.body.parts[1]) == b"%PD"


def test_hostile_sections() -> None:
    st = parse_structure(MIXED)
    for section in [
        "9" * 5000,
        "HEADER.FIELDS (\ud800 \udcff)",
        "1." * 10_000 + "1",
        "HEADER.FIELDS (" + "A " * 10_000 + ")",
        "1.1.1",
        "(",
        ")",
        "\x00",
    ]:
        extract_section(MIXED, st, section)  # no exception
    raw = msg("Content-Type: multipart/mixed; boundary=zz", "", "no delimiter", "")
    assert extract_section(raw, parse_structure(raw), "1.1") is None
