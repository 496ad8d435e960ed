"""MIME structure parsing: exact ENVELOPE/BODYSTRUCTURE bytes and offsets for RFC-example-like messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventmail.mime import MAX_MIME_DEPTH, MimeLimits, parse_structure
from eventmail.mime.imapform import render_bodystructure, render_envelope
from eventmail.mime.structure import MAX_DEPTH_CEILING
from eventmail.proto import events_pb2

FIXTURES = Path(__file__).resolve().parent / "data" / "mime"


def msg(*lines: str | bytes) -> bytes:
    """A message from its lines, joined with CRLF."""
    return b"\r\n".join(x.encode() if isinstance(x, str) else x for x in lines)


def load_fixture(name: str) -> bytes:
    """A corpus file as a stored message: the mbox From_ line dropped, LF turned into CRLF."""
    data = (FIXTURES / name).read_bytes()
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1]
    return data.replace(b"\n", b"\r\n")


def walk(part: events_pb2.MimePart, depth: int = 0) -> list[tuple[events_pb2.MimePart, int]]:
    out = [(part, depth)]
    for child in part.parts:
        out.extend(walk(child, depth + 1))
    if part.HasField("message"):
        out.extend(walk(part.message, depth + 1))
    return out


def check_offsets(raw: bytes, part: events_pb2.MimePart) -> None:
    """Every part within its parent, header_start <= body_start <= end <= len(raw), children in order."""
    assert part.header_start <= part.body_start <= part.end <= len(raw)
    last = part.body_start
    for child in part.parts:
        assert last <= child.header_start and child.end <= part.end
        last = child.end
        check_offsets(raw, child)
    if part.HasField("message"):
        inner = part.message
        assert inner.header_start == part.body_start and inner.end == part.end
        check_offsets(raw, inner)


# RFC 3501 §7.4.2's ENVELOPE example, as a message.
RFC3501_EXAMPLE = msg(
    "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
    "From: Terry Gray <gray@cac.washington.edu>",
    "Subject: IMAP4rev1 WG mtg summary and minutes",
    "To: imap@cac.washington.edu",
    "cc: minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>",
    "Message-Id: <B27397-0100000@cac.washington.edu>",
    "MIME-Version: 1.0",
    "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII",
    "",
    "Hello Joe, do you think we can meet at 3:30 tomorrow?",
    "",
)

# multipart/alternative inside multipart/mixed with an attachment, preamble and epilogue.
MIXED = msg(
    "From: Alice <alice@example.org>",
    "To: Bob <bob@example.net>",
    "Subject: Report",
    "Date: Mon, 1 Jan 2024 10:00:00 +0100",
    "Message-ID: <m2@example.org>",
    "MIME-Version: 1.0",
    'Content-Type: multipart/mixed; boundary="outer"',
    "",
    "This is the preamble.",
    "--outer",
    "Content-Type: multipart/alternative; boundary=inner",
    "",
    "--inner",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    "Hello =C3=A9",
    "--inner",
    "Content-Type: text/html; charset=utf-8",
    "",
    "<p>Hello</p>",
    "--inner--",
    "",
    "--outer",
    'Content-Type: application/pdf; name="report.pdf"',
    "Content-Transfer-Encoding: base64",
    'Content-Disposition: attachment; filename="report.pdf"; size=3',
    "Content-ID: <pdf@example.org>",
    "Content-Description: The report",
    "Content-Language: en, de",
    "Content-Location: http://example.org/report.pdf",
    "Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==",
    "",
    "JVBE",
    "--outer--",
    "Epilogue.",
    "",
)

# A forwarded message (message/rfc822) with groups and an encoded word in the inner header.
FORWARD = msg(
    "From: a@example.org",
    "Subject: Fwd",
    "Content-Type: multipart/mixed; boundary=b1",
    "",
    "--b1",
    "Content-Type: text/plain",
    "",
    "See below.",
    "--b1",
    "Content-Type: message/rfc822",
    "Content-Disposition: inline",
    "",
    'From: "Doe, John" <john@example.com>',
    'To: group: x@example.com, "Y" <y@example.com>;, z@example.com',
    "Subject: =?utf-8?q?caf=C3=A9?=",
    "Date: Tue, 2 Jan 2024 00:00:00 +0000",
    "",
    "Inner body",
    "line 2",
    "--b1--",
    "",
)

# multipart/digest: parts without Content-Type are message/rfc822 (RFC 2046 §5.1.5).
DIGEST = msg(
    "Subject: digest",
    "Content-Type: multipart/digest; boundary=d",
    "",
    "--d",
    "",
    "Subject: one",
    "",
    "first",
    "--d",
    "Content-Type: text/plain",
    "",
    "second",
    "--d--",
)

# No header at all, and a header without a body.
BODY_ONLY = b"\r\nJust a body\r\n"
HEADER_ONLY = b"Subject: no body"

# Oddities Dovecot also meets: a boundary never used, a header cut short by a boundary line,
# whitespace after a delimiter, "--b" as a prefix of a longer line, bare LF line endings.
ODD = [
    msg("Content-Type: multipart/mixed", "", "no boundary parameter", ""),
    msg("Content-Type: multipart/mixed; boundary=zz", "", "the boundary never comes", ""),
    msg("Content-Type: multipart/mixed; boundary=zz", "", "--zz", "Content-Type: text/plain", "--zz--", ""),
    msg("Content-Type: multipart/mixed; boundary=zz", "", "--zz \t", "", "a", "--zzz", "b", "--zz--x", ""),
    b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/plain\n\nabc\n--zz--\n",
    msg("Content-Type: message/rfc822", "Content-Transfer-Encoding: base64", "", "U3ViamVjdDogeAoKeQo=", ""),
    msg(
        "Content-Type: multipart/mixed; boundary=zz",
        "",
        "--zz",
        "Content-Type: message/rfc822",
        "",
        "Content-Type: multipart/alternative; boundary=yy",
        "",
        "--yy",
        "",
        "inner, never closed",
        "--zz",
        "",
        "after",
        "--zz--",
    ),
]

# Synthetic messages that are also compared against Dovecot (tests/test_mime_dovecot.py).
SYNTHETIC = [RFC3501_EXAMPLE, MIXED, FORWARD, DIGEST, BODY_ONLY, HEADER_ONLY, *ODD]


def test_rfc3501_example_envelope_and_body() -> None:
    st = parse_structure(RFC3501_EXAMPLE)
    assert render_envelope(st.envelope) == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) (("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) ((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) NIL NIL '
        b'"<B27397-0100000@cac.washington.edu>")'
    )
    assert render_bodystructure(st.body, True) == (
        b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7bit" 55 1 NIL NIL NIL NIL)'
    )
    assert (
        render_bodystructure(st.body, False) == b'("text" "plain" ("CHARSET" "US-ASCII") NIL NIL "7bit" 55 1)'
    )
    body = st.body
    assert (body.header_start, body.end) == (0, len(RFC3501_EXAMPLE))
    assert RFC3501_EXAMPLE[body.body_start :] == b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"


def test_mixed_alternative_attachment() -> None:
    st = parse_structure(MIXED)
    assert render_bodystructure(st.body, True) == (
        b'((("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 12 0 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 12 0 NIL NIL NIL NIL) "alternative" '
        b'("boundary" "inner") NIL NIL NIL)'
        b'("application" "pdf" ("name" "report.pdf") "<pdf@example.org>" "The report" "base64" 4 '
        b'"Q2hlY2sgSW50ZWdyaXR5IQ==" ("attachment" ("filename" "report.pdf" "size" "3")) ("en" "de") '
        b'"http://example.org/report.pdf") "mixed" ("boundary" "outer") NIL NIL NIL)'
    )
    assert render_bodystructure(st.body, False) == (
        b'((("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 12 0)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 12 0) "alternative")'
        b'("application" "pdf" ("name" "report.pdf") "<pdf@example.org>" "The report" "base64" 4) "mixed")'
    )
    check_offsets(MIXED, st.body)
    alt, pdf = st.body.parts
    assert MIXED[alt.parts[0].body_start : alt.parts[0].end] == b"Hello =C3=A9"
    assert MIXED[pdf.header_start : pdf.header_start + 13] == b"Content-Type:"
    assert MIXED[pdf.body_start : pdf.end] == b"JVBE"
    # RFC 2046 §5.1.1: the preamble and epilogue belong to no part, the CRLF before a delimiter
    # belongs to the delimiter.
    assert MIXED[st.body.body_start : alt.header_start] == b"This is the preamble.\r\n--outer\r\n"
    assert MIXED[pdf.end : st.body.end] == b"\r\n--outer--\r\nEpilogue.\r\n"
    assert pdf.has_md5 and pdf.language == [b"en", b"de"] and pdf.disposition == b"attachment"


def test_forwarded_message_with_groups_and_encoded_words() -> None:
    st = parse_structure(FORWARD)
    fwd = st.body.parts[1]
    inner_header = (
        b'From: "Doe, John" <john@example.com>\r\n'
        b'To: group: x@example.com, "Y" <y@example.com>;, z@example.com\r\n'
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\nDate: Tue, 2 Jan 2024 00:00:00 +0000\r\n\r\n"
    )
    assert FORWARD[fwd.body_start : fwd.end] == inner_header + b"Inner body\r\nline 2"
    doe = b'(("Doe, John" NIL "john" "example.com"))'
    assert render_bodystructure(st.body, True) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7bit" %d '
        b'("Tue, 2 Jan 2024 00:00:00 +0000" "=?utf-8?q?caf=C3=A9?=" %s %s %s '
        b'((NIL NIL "group" NIL)(NIL NIL "x" "example.com")("Y" NIL "y" "example.com")(NIL NIL NIL NIL)'
        b'(NIL NIL "z" "example.com")) NIL NIL NIL NIL) '
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 18 1 NIL NIL NIL NIL) 6 NIL ("inline" NIL) NIL NIL)'
        b' "mixed" ("boundary" "b1") NIL NIL NIL)' % (len(inner_header) + 18, doe, doe, doe)
    )
    check_offsets(FORWARD, st.body)
    # The outer envelope: From only, so Sender and Reply-To repeat it (RFC 3501 §7.4.2).
    assert render_envelope(st.envelope) == (
        b'(NIL "Fwd" ((NIL NIL "a" "example.org")) ((NIL NIL "a" "example.org")) ((NIL NIL "a" "example.org")) '
        b"NIL NIL NIL NIL NIL)"
    )


def test_digest_defaults_to_message_rfc822() -> None:
    st = parse_structure(DIGEST)
    first, second = st.body.parts
    assert (first.type, first.subtype) == (b"message", b"rfc822")
    assert first.envelope.subject == b"one" and first.message.end - first.message.body_start == 5
    assert (second.type, second.subtype) == (b"text", b"plain")


def test_missing_headers_are_nil() -> None:
    st = parse_structure(BODY_ONLY)
    assert render_envelope(st.envelope) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert render_bodystructure(st.body, True) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 1 NIL NIL NIL NIL)'
    )
    assert (st.body.header_start, st.body.body_start, st.body.end) == (0, 2, len(BODY_ONLY))

    st = parse_structure(HEADER_ONLY)
    assert (st.body.body_start, st.body.end) == (len(HEADER_ONLY), len(HEADER_ONLY))
    assert st.envelope.subject == b"no body" and not st.envelope.has_date

    st = parse_structure(msg("Subject:", "Date: ", "", ""))  # present but empty: "" rather than NIL
    assert render_envelope(st.envelope).startswith(b'("" "" NIL')


def test_envelope_header_values_stay_raw() -> None:
    raw = msg(
        "Subject: =?iso-8859-1?q?caf=E9?=",
        " continued",
        b"From: \xc3\xa9t\xc3\xa9 <e@example.org>",
        "Reply-To: (comment only) user@example.org (Real Name)",
        "Sender: <>",
        "To: <@r1.example,@r2.example:route@example.org>, broken",
        "Message-ID: <id@example.org>",
        "In-Reply-To: <a@b>",
        " <c@d>",
        "",
        "",
    )
    st = parse_structure(raw)
    env = st.envelope
    assert env.subject == b"=?iso-8859-1?q?caf=E9?= continued"  # unfolded, encoded words kept
    assert env.in_reply_to == b"<a@b> <c@d>"
    assert render_envelope(env) == (
        b'(NIL "=?iso-8859-1?q?caf=E9?= continued" (({5}\r\n\xc3\xa9t\xc3\xa9 NIL "e" "example.org")) '
        b'((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) (("Real Name" NIL "user" "example.org")) '
        b'((NIL "@r1.example,@r2.example" "route" "example.org")(NIL NIL "broken" "MISSING_DOMAIN")) '
        b'NIL NIL "<a@b> <c@d>" "<id@example.org>")'
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('"John Q. Public" <jqp@example.com>', [(b"John Q. Public", b"", b"jqp", b"example.com")]),
        ("John Q. Public <jqp@example.com>", [(b"John Q. Public", b"", b"jqp", b"example.com")]),
        ('"a \\"b\\"" <x@y>', [(b'a "b"', b"", b"x", b"y")]),
        ('"john doe"@example.com', [(b"", b"", b"john doe", b"example.com")]),  # RFC 3501: quoting removed
        ("a@b, , c@d", [(b"", b"", b"a", b"b"), (b"", b"", b"c", b"d")]),  # RFC 5322 §4.4 null members
        ("undisclosed-recipients:;", [(b"", b"", b"undisclosed-recipients", b""), None]),
        ("g: a@b", [(b"", b"", b"g", b""), (b"", b"", b"a", b"b"), None]),  # a group without ";"
        ("x@[192.0.2.1]", [(b"", b"", b"x", b"[192.0.2.1]")]),
        ("john . doe @ example . com", [(b"", b"", b"john.doe", b"example.com")]),
        ("<unclosed@example.com", [(b"", b"", b"unclosed", b"example.com")]),
        ('"unterminated <a@b>', [(b"", b"", b"unterminated <a@b>", b"MISSING_DOMAIN")]),
        ('"": a@b;', [(b"", b"", b"a", b"b")]),  # a group without a name would read as a group end
        ("g: h: a@b;", [(b"", b"", b"g", b""), (b"", b"", b"a", b"b"), None]),  # no nested groups
        ("a@b (c1) (c2)", [(b"c2", b"", b"a", b"b")]),  # the last comment names a bare addr-spec
    ],
)
def test_address_lists(header: str, expected: list[tuple[bytes, bytes, bytes, bytes] | None]) -> None:
    env = parse_structure(msg("To: " + header, "", "")).envelope
    got = [None if a.group_end else (a.name, a.adl, a.mailbox, a.host) for a in env.to]
    assert got == expected


def test_mime_fields_and_rfc2231() -> None:
    raw = msg(
        "Content-Type: Application/X-Thing; name*0=\"long \"; name*1=name.txt; title*=us-ascii'en'%2A%2Afun",
        " ; charset=us-ascii (Plain text); Junk",
        "Content-Disposition: ATTACHMENT; filename*0*=utf-8''caf%C3%A9; filename*1=\".txt\"",
        "Content-Transfer-Encoding: BASE64 (as sent)",
        "Content-Location: http://example.org/a",
        "  b",
        "",
        "QUJD",
    )
    part = parse_structure(raw).body
    assert (part.type, part.subtype, part.encoding) == (b"application", b"x-thing", b"BASE64")
    assert [(p.name, p.value) for p in part.params] == [
        (b"name", b"long name.txt"),
        (b"title*", b"us-ascii'en'%2A%2Afun"),
        (b"charset", b"us-ascii"),
    ]
    assert part.disposition == b"attachment"
    assert [(p.name, p.value) for p in part.disposition_params] == [(b"filename*", b"utf-8''caf%C3%A9.txt")]
    assert part.location == b"http://example.org/a  b"


@pytest.mark.parametrize(
    ("ctype", "expected"),
    [
        (None, (b"text", b"plain", [(b"charset", b"us-ascii")])),  # RFC 2045 §5.2
        ("text/plain", (b"text", b"plain", [(b"charset", b"us-ascii")])),  # RFC 2046 §4.1.2
        ("text/html", (b"text", b"html", [])),
        ("text; charset=utf-8", (b"text", b"plain", [(b"charset", b"utf-8")])),  # invalid: text/plain
        ("", (b"text", b"plain", [(b"charset", b"us-ascii")])),
        ("image/jpeg (a photo); name=a.jpg", (b"image", b"jpeg", [(b"name", b"a.jpg")])),
        (
            "multipart/mixed; boundary=----=_Part_1",
            (b"multipart", b"mixed", [(b"boundary", b"----=_Part_1")]),
        ),
        (b"\xff\xfe/x", (b"text", b"plain", [(b"charset", b"us-ascii")])),
    ],
)
def test_content_type_defaults(
    ctype: str | bytes | None, expected: tuple[bytes, bytes, list[tuple[bytes, bytes]]]
) -> None:
    header: list[str | bytes] = (
        []
        if ctype is None
        else [(b"Content-Type: " + ctype) if isinstance(ctype, bytes) else "Content-Type: " + ctype]
    )
    part = parse_structure(msg(*header, "", "x")).body
    assert (part.type, part.subtype, [(p.name, p.value) for p in part.params]) == expected


def test_odd_structures() -> None:
    no_boundary, never, cut, prefix, bare_lf, b64_message, unclosed = (parse_structure(m) for m in ODD)
    # A multipart without parts is shown with one empty text/plain part, as Dovecot does.
    for st in (no_boundary, never):
        assert not st.body.parts
        assert render_bodystructure(st.body, False).startswith(
            b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed"'
        )
    # A header that runs into the next boundary line: no body.
    (only,) = cut.body.parts
    assert ODD[2][only.header_start : only.end] == b"Content-Type: text/plain"
    assert only.body_start == only.end
    # RFC 2046 §5.1.1 note: "--zzz" starts with the boundary "zz"; "--zz--x" closes.
    assert [ODD[3][p.body_start : p.end] for p in prefix.body.parts] == [b"a", b""]
    assert ODD[3][prefix.body.parts[1].header_start : prefix.body.parts[1].end] == b"b"
    assert [(p.type, bare_lf.body.parts[0].end - p.body_start) for p in bare_lf.body.parts] == [(b"text", 3)]
    # message/rfc822 that is not readable in place: no enclosed structure.
    assert not b64_message.body.HasField("message") and b64_message.body.lines == 1
    assert b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain"' in render_bodystructure(
        b64_message.body, True
    )
    # An inner multipart never closed: the outer boundary ends it and everything inside.
    fwd, after = unclosed.body.parts
    assert fwd.message.parts[0].end == fwd.end and ODD[6][after.body_start : after.end] == b"after"
    for m, st in zip(ODD, (no_boundary, never, cut, prefix, bare_lf, b64_message, unclosed), strict=True):
        check_offsets(m, st.body)


def test_message_global_only_for_imap4rev2() -> None:
    raw = msg("Content-Type: message/global", "", "Subject: g", "", "body")
    st = parse_structure(raw)
    assert st.body.message.envelope.subject == b"" and st.body.envelope.subject == b"g"
    assert render_bodystructure(st.body, False) == b'("message" "global" NIL NIL NIL "7bit" 18)'
    assert render_bodystructure(st.body, False, imap4rev2=True) == (
        b'("message" "global" NIL NIL NIL "7bit" 18 (NIL "g" NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 0) 2)'
    )


def nested(depth: int) -> bytes:
    """`depth` multiparts, each inside the previous one, with a text part at the bottom."""
    head = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%03d\r\n\r\n--b%03d\r\n" % (i, i) for i in range(depth)
    )
    tail = b"".join(b"\r\n--b%03d--" % i for i in reversed(range(depth)))
    return head + b"Content-Type: text/plain\r\n\r\nleaf" + tail


def test_depth_limit_makes_an_opaque_leaf() -> None:
    limits = MimeLimits(max_depth=5)
    st = parse_structure(nested(20), limits)
    parts = walk(st.body)
    assert max(d for _, d in parts) == 5
    deepest = [p for p, d in parts if d == 5]
    assert [(p.type, p.subtype) for p in deepest] == [(b"application", b"octet-stream")]
    check_offsets(nested(20), st.body)
    # Within the limit everything is parsed.
    st = parse_structure(nested(20))
    assert max(d for _, d in walk(st.body)) == 20 and walk(st.body)[-1][0].subtype == b"plain"


def test_default_depth_limit_survives_protobuf_round_trip() -> None:
    raw = nested(200)
    st = parse_structure(raw)
    assert max(d for _, d in walk(st.body)) == MAX_MIME_DEPTH  # the one limit of the server
    again = events_pb2.MessageStructure.FromString(st.SerializeToString())
    assert again == st
    # Nested message/rfc822 the same way, envelope included.
    raw = b"Subject: x\r\nContent-Type: message/rfc822\r\n\r\n" * 200 + b"\r\nend"
    st = parse_structure(raw)
    assert events_pb2.MessageStructure.FromString(st.SerializeToString()) == st


@pytest.mark.parametrize(
    "raw",
    [
        nested(120),
        b"To: a@b\r\nContent-Type: message/rfc822\r\n\r\n" * 120 + b"x",
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: message/rfc822\r\n\r\n"
        b"To: a@b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" * 60,
    ],
)
def test_depth_ceiling_survives_protobuf_round_trip(raw: bytes) -> None:
    st = parse_structure(raw, MimeLimits(max_depth=MAX_DEPTH_CEILING))
    assert max(d for _, d in walk(st.body)) == MAX_DEPTH_CEILING
    assert events_pb2.MessageStructure.FromString(st.SerializeToString()) == st


def test_part_limit() -> None:
    many = msg("Content-Type: multipart/mixed; boundary=p", "", *["--p", "", "x"] * 50, "--p--", "")
    st = parse_structure(many, MimeLimits(max_parts=10))
    assert len(walk(st.body)) == 10 and len(st.body.parts) == 9
    assert st.body.end == len(many)
    check_offsets(many, st.body)
    assert len(parse_structure(many).body.parts) == 50


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        MimeLimits(max_depth=1000)
    with pytest.raises(ValueError):
        MimeLimits(max_parts=0)


def test_header_field_limit() -> None:
    raw = b"X-Pad: " + b"a" * 5000 + b"\r\nContent-Type: text/html\r\n\r\nbody"
    assert parse_structure(raw).body.subtype == b"html"
    part = parse_structure(raw, MimeLimits(max_header_bytes=1000)).body
    assert part.subtype == b"plain" and raw[part.body_start :] == b"body"  # the extent is still exact


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.eml")))
def test_fixture_offsets(name: str) -> None:
    raw = load_fixture(name)
    st = parse_structure(raw)
    check_offsets(raw, st.body)
    assert st.body.end == len(raw)
