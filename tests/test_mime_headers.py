"""The header reader's searches for one field name give what reading every field gives: the same fields, values, authors and cuts."""

from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.mime import headers
from eventmail.mime.addresses import read_author

# Pieces of headers that steer a reader into its corners: names in any case, WSP before the
# colon (RFC 5322 §4.5), continuation lines, lines without a colon, bare LF, blank lines, names
# that only start like the wanted one, and the names looked for in the middle of a line.
PIECES = st.sampled_from([
    b"From", b"from", b"FROM", b"Message-ID", b"message-id", b"Message-Id-Extra", b"To", b"x-eventmail-junk",
    b"Authentication-Results", b"Received", b":", b" :", b"\t:", b" ", b"\t", b"\r\n", b"\n", b"\r\n ",
    b"\r\n\t", b"\r\n\r\n", b"a@b.test", b"<id@host>", b"mail.test; spf=pass", b"x", b"\xff", b"@",
])
HEADERS = st.lists(PIECES, max_size=60).map(b"".join)
NAMES = (b"from", b"message-id", b"to", b"x-eventmail-junk", b"authentication-results")


def plain_first_value(raw: bytes, name: bytes) -> bytes | None:
    for f in headers.top_fields(raw):
        if f.name == name:
            return headers.unfold(f.value)
    return None


@settings(max_examples=600, deadline=None, database=None)
@given(HEADERS)
def test_the_fields_of_one_name_are_those_every_field_read_gives(raw: bytes) -> None:
    end = min(headers.header_end(raw), headers.MAX_HEADER_BYTES)
    every = headers.read_fields(raw, 0, end)
    for name in NAMES:
        assert headers.named_fields(raw, 0, end, name) == [f for f in every if f.name == name]
        assert headers.first_value(raw, name) == plain_first_value(raw, name)
    # an inner entity's header too: the window starts at a line start past 0
    inner = raw.find(b"\n") + 1
    if 0 < inner <= end:
        every = headers.read_fields(raw, inner, end)
        assert headers.named_fields(raw, inner, end, b"from") == [f for f in every if f.name == b"from"]


@settings(max_examples=300, deadline=None, database=None)
@given(HEADERS, st.binary(max_size=20))
def test_cutting_named_fields_cuts_what_a_walk_of_every_field_cuts(head: bytes, body: bytes) -> None:
    raw = head + b"\r\n\r\n" + body

    def drop(f: headers.Field) -> bool:
        return f.name in (b"authentication-results", b"x-eventmail-junk") and b"pass" not in f.value

    assert headers.without_fields(raw, drop, names=(b"authentication-results", b"x-eventmail-junk")) == \
        headers.without_fields(raw, drop)
    # the author is read from the From fields alone, as from a walk of every field
    author = read_author(raw)
    froms = [f for f in headers.top_fields(raw) if f.name == b"from"]
    assert author.fields == len(froms)
    assert author.space_before_colon == any(f.space_before_colon for f in froms)
