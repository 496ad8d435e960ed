"""The author of a message, read once: on arbitrary header blocks the From the submission check accepts is
the From that ENVELOPE serves and the one DMARC aligns with, or the check refuses the message."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.mailauth.dmarc import author_domains
from eventmail.mime.addresses import addr_spec, read_author, usable
from eventmail.mime.headers import header_fields, read_fields
from eventmail.mime.parsed import parse_message
from eventmail.mime.structure import parse_structure
from eventmail.smtp.submission import author_refusal

OWN = frozenset({"alice@mail.test", "info@mail.test"})

NAMES = st.sampled_from([b"From", b"from", b"FROM", b"fRoM", b"To", b"Subject", b"Sender", b"Reply-To",
                         b"X-From", b"From-X", b"Content-Type", b"Fr om", b"From\x00", b"\x0bFrom"])
SPACE = st.sampled_from([b"", b"", b" ", b"\t", b"  \t"])
VALUES = st.sampled_from([
    b"alice@mail.test", b"<alice@mail.test>", b'"Alice" <alice@mail.test>', b"info@mail.test, alice@mail.test",
    b'"CEO" <ceo@bank.example>', b"ceo@bank.example", b"=?utf-8?q?ceo=40bank.example?= <alice@mail.test>",
    b"=?utf-8?b?Y2VvQGJhbmsuZXhhbXBsZQ==?=", b"undisclosed:;", b"team: alice@mail.test;", b"alice",
    b"@mail.test", b"alice@mail.test (comment) <ceo@bank.example>", b"<alice@mail.test", b"",
    b"alice@mail.test\r\n\tceo@bank.example", b"\"a\\\"b\" <alice@mail.test>", b"alice@[127.0.0.1]",
    b"J\xc3\xb6rg <alice@mail.test>", b"\xff\xfe garbage", b"alice@mail.test,", b",,alice@mail.test",
])
FOLD = st.sampled_from([b"", b"\r\n ", b"\r\n\t", b"\n "])
EOL = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"])


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    """A header of 0-6 fields, each maybe folded, with white space before its colon or not, then a body."""
    out = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(NAMES)
        value = draw(VALUES)
        fold = draw(FOLD)
        if fold and b" " in value:
            value = value.replace(b" ", fold, 1)
        garbage = draw(st.binary(max_size=6)) if draw(st.integers(0, 9)) == 0 else b""
        out.append(name + draw(SPACE) + b":" + (b" " if value else b"") + value + garbage + draw(EOL))
    return b"".join(out) + b"\r\nFrom: body@bank.example\r\n"


def accepted_author(raw: bytes) -> list[str] | None:
    """What the submission check decides: the From addresses it accepted, or None for a refusal."""
    parsed = parse_message(raw)
    if author_refusal(parsed.author):
        return None
    senders = parsed.author.mailboxes()
    return senders if all(s.lower() in OWN for s in senders) else None


@settings(max_examples=600, deadline=None)
@given(header_blocks())
def test_the_checked_from_is_the_served_and_aligned_from(raw: bytes) -> None:
    senders = accepted_author(raw)
    if senders is None:
        return
    # What is stored: trace fields and a signature in front, parsed once and shifted.
    prefix = b"Received: from x by mail.test; Mon, 1 Jan 2024 00:00:00 +0000\r\nDKIM-Signature: v=1; d=mail.test\r\n"
    final = prefix + raw
    parsed = parse_message(raw)
    for structure in (parsed.structure_with_prefix(len(prefix)), parse_structure(final)):
        served = [addr_spec(a) for a in getattr(structure.envelope, "from")]  # IMAP ENVELOPE from
        assert served == senders
    # DMARC, from the bytes as the MX would have them.
    assert author_domains(final) == (("mail.test",), "")
    # SEARCH FROM reads the one From field there is.
    top = parse_structure(final).body
    assert [n for n, *_ in header_fields(final, top.header_start, top.body_start)].count(b"from") == 1


@settings(max_examples=300, deadline=None)
@given(header_blocks())
def test_a_prefix_of_whole_fields_only_shifts_the_structure(raw: bytes) -> None:
    prefix = b"Received: from x\r\n\tby y; z\r\nAuthentication-Results: mail.test; none\r\n"
    assert parse_message(raw).structure_with_prefix(len(prefix)) == parse_structure(prefix + raw)


@given(st.binary(max_size=300))
def test_any_bytes_get_an_author_or_a_reason(data: bytes) -> None:
    author = read_author(b"From: " + data + b"\r\n\r\n")
    assert author.ambiguous or (author.addresses and all(usable(a) for a in author.addresses))


def test_white_space_before_the_colon_is_from_for_every_reader() -> None:
    raw = b'From: alice@mail.test\r\nFrom :  "CEO" <ceo@bank.example>\r\nSubject: s\r\n\r\nbody\r\n'
    author = read_author(raw)
    assert (author.fields, author.space_before_colon) == (2, True)
    assert author_refusal(author) == "2 From fields (RFC 5322 §3.6 allows one)"
    assert [f.space_before_colon for f in read_fields(raw, 0, len(raw)) if f.name == b"from"] == [False, True]
    assert author_domains(raw)[0] == ("mail.test", "bank.example")  # DMARC checks both: adding one cannot dodge
    alone = read_author(b'From : "CEO" <ceo@bank.example>\r\n\r\n')
    assert not alone.ambiguous and alone.mailboxes() == ["ceo@bank.example"]
    assert author_refusal(alone).startswith("white space before the colon of From")
    assert author_domains(alone) == (("bank.example",), "")


def test_the_stdlib_reading_that_let_the_spoof_through_is_gone() -> None:
    # The stdlib header parser stops at "From :" and saw only the first From; ours sees both.
    raw = b'From: alice@mail.test\r\nFrom : "CEO" <ceo@bank.example>\r\n\r\nbody\r\n'
    assert accepted_author(raw) is None
    assert accepted_author(b'From: "Alice" <alice@mail.test>\r\n\r\nbody\r\n') == ["alice@mail.test"]
