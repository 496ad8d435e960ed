"""Properties of the IMAP wire: split-invariance at every byte, fuzzing, parse round trips."""

from __future__ import annotations

import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventmail.imap import commands as c
from eventmail.imap.wire import ImapWire, Limits

# Small limits so that hostile cases (over-long lines, oversize literals) are cheap to hit.
SMALL = Limits(
    max_line=256,
    max_literal=64,
    max_append=128,
    max_append_total=200,
    max_command=512,
    max_literals=8,
    max_depth=8,
    max_discard=300,
)


def bound(limits: Limits) -> int:
    """What the wire may hold between calls: a partial line, one command's lines and
    literals, the messages of one APPEND, and the tail kept of a discarded line."""
    return limits.max_line + 1 + limits.max_command + limits.max_append_total + 64


ALLOWED = (c.Continuation, c.ProtocolError, c.IdleDone, c.SaslResponse, c.SaslCancel, *c.Command.__args__)

TRANSCRIPTS: list[bytes] = [
    # ordinary session
    b"a1 CAPABILITY\r\na2 LOGIN {5}\r\nalice {6+}\r\nsecret\r\na3 ENABLE CONDSTORE\r\n"
    b'a4 LIST (SUBSCRIBED) "" ("INBOX" %) RETURN (CHILDREN STATUS (MESSAGES))\r\n'
    b"a5 SELECT INBOX (QRESYNC (1 2 1:5 (1,3 10,30)))\r\na6 IDLE\r\nDONE\r\n"
    b"a7 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM {2+}\r\nTO)]<0.100>) (CHANGEDSINCE 5 VANISHED)\r\n"
    b'a8 UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 OR (FROM "x" NOT SEEN) SUBJECT {4}\r\n\xc3\xa9t\xc3\r\n'
    b"a9 STORE 1,3:4 (UNCHANGEDSINCE 7) +FLAGS.SILENT (\\Seen $Junk)\r\n"
    b"b1 APPEND INBOX (\\Seen) \"17-Jul-1996 02:44:25 -0700\" {11}\r\nhello\r\nbody ~{3+}\r\na\x00b\r\n"
    b"b2 UID MOVE 1:* Trash\r\nb3 UID EXPUNGE 4\r\nb4 ID (\"name\" NIL)\r\n"
    b'b6 GETQUOTAROOT INBOX\r\nb7 SETQUOTA "" (STORAGE 512)\r\nb8 GETQUOTA ""\r\n'
    b"b9 UID SEARCH EMAILID E5 THREADID T5 SAVEDSINCE 1-Jan-2020\r\nc1 UID FETCH 1 (EMAILID THREADID SAVEDATE)\r\n"
    b"b5 LOGOUT\r\n",
    # errors that must leave the wire in step
    b"a LOGIN {-1}\r\nb LOGIN {99999}\r\nc LOGIN {100+}\r\n" + b"d NOOP\r\n" * 12 + b"eeee\r\n"
    b"f NOOP\r\n" + b"g " + b"x" * 300 + b" {20+}\r\n" + b"h LOGOUT\r\n" * 2 + b"\r\n"
    b"i XFOO {3+}\r\nabc {3}\r\nj NOOP\r\n",
    b'a LOGIN "x\x00y" z\r\nb SEARCH ' + b"(" * 12 + b"SEEN" + b")" * 12 + b"\r\nc FETCH 1 (FLAGS\r\n"
    b"\r\n{5}\r\n+x NOOP\r\n" + b"y" * 400 + b"\r\nd APPEND INBOX {129}\r\ne APPEND INBOX {129+}\r\n"
    + b"m" * 129 + b"\r\nf NOOP\r\n",
    b"a AUTHENTICATE PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n*\r\nb AUTHENTICATE X =\r\n!!\r\nc NOOP\r\n"
    b"d APPEND INBOX {60+}\r\n" + b"q" * 60 + b" {60+}\r\n" + b"r" * 60 + b" {90+}\r\n" + b"s" * 90 + b"\r\ne NOOP\r\n",
    b"a LOGIN {5-}\r\nabcde\r\nb SELECT &Jjo-\r\nc SELECT &U,BTFw-\r\nd STATUS x (MESSAGES)\r\nDONE\r\n",
    b"a STARTTLS\r\nb NOOP\r\n",
    b"a LOGIN {301+}\r\n" + b"z" * 301 + b"\r\nb NOOP\r\n",
]


def feed(chunks: list[bytes], limits: Limits = SMALL) -> list[c.Item]:
    wire = ImapWire(limits, authenticated=True)
    got: list[c.Item] = []
    for chunk in chunks:
        got += wire.receive(chunk)
        assert wire.buffered <= bound(limits)
    return got


def test_every_split_point_gives_the_same_items() -> None:
    for transcript in TRANSCRIPTS:
        whole = feed([transcript])
        assert whole, transcript
        for i in range(len(transcript) + 1):
            assert feed([transcript[:i], transcript[i:]]) == whole, (transcript, i)


def test_byte_at_a_time_gives_the_same_items() -> None:
    for transcript in TRANSCRIPTS:
        whole = feed([transcript])
        assert feed([transcript[i : i + 1] for i in range(len(transcript))]) == whole


def test_transcripts_produce_expected_shape() -> None:
    got = feed([TRANSCRIPTS[1]])
    errors = [x for x in got if isinstance(x, c.ProtocolError)]
    assert [e.tag for e in errors] == ["a", "b", "c", "g", "i"]
    assert [x.tag for x in got if isinstance(x, c.Noop)] == ["f", "j"]
    got = feed([TRANSCRIPTS[-1]])
    assert got[-1].close  # type: ignore[union-attr]


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    out, prev = [], 0
    for cut in cuts:
        out.append(data[prev:cut])
        prev = cut
    out.append(data[prev:])
    return out


def check(data: bytes, chunks: list[bytes], limits: Limits = SMALL) -> None:
    whole = feed([data], limits)
    for item in whole:
        assert isinstance(item, ALLOWED), item
        if isinstance(item, c.ProtocolError):
            assert item.status in ("BAD", "NO", "BYE")
            assert item.close == (item.status == "BYE")
    assert feed(chunks, limits) == whole


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.binary(max_size=2000))
def test_random_bytes_never_raise_and_stay_bounded(data: st.DataObject, raw: bytes) -> None:
    check(raw, data.draw(splits(raw)))


INTERESTING = [
    b"{", b"}", b"{5}\r\n", b"{3+}\r\n", b"{2-}\r\n", b"~{2}\r\n", b"{999999}\r\n", b"{301+}\r\n",
    b"\r\n", b"\r", b"\n", b'"', b"(", b")", b"[", b"]", b"<", b">", b"\\", b"\x00", b"\xff", b"\xc3",
    b" ", b"*", b"$", b":", b",", b"9999999999", b"0", b"NIL", b"DONE\r\n", b"UID ", b"&", b"-",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(TRANSCRIPTS[:5])))
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 3))
        if op == 0 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            data[pos:pos] = draw(st.sampled_from(INTERESTING))
        elif op == 2:
            del data[pos : pos + draw(st.integers(1, 20))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), mutated())
def test_mutated_commands_never_raise_and_split_invariant(data: st.DataObject, raw: bytes) -> None:
    check(raw, data.draw(splits(raw)))


@settings(max_examples=100, deadline=None)
@given(st.data(), mutated())
def test_mutated_commands_with_default_limits(data: st.DataObject, raw: bytes) -> None:
    check(raw, data.draw(splits(raw)), Limits())


# -- round trips: generated SEARCH programs and sequence sets parse back to what was rendered ----

seq_num = st.one_of(st.none(), st.integers(1, 2**32 - 1))
seq_sets = st.lists(st.tuples(seq_num, seq_num), min_size=1, max_size=4).map(
    lambda rs: c.SequenceSet(tuple(c.SeqRange(a, b) for a, b in rs))
)
text = st.text(st.characters(codec="utf-8", blacklist_characters="\x00"), max_size=10)
header_names = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=":"), min_size=1, max_size=8)
dates = st.dates(datetime.date(1900, 1, 1), datetime.date(2100, 12, 31))
keywords = st.text(st.sampled_from("abcXYZ$_-019"), min_size=1, max_size=6)
object_ids = st.text(st.sampled_from("aZ09_-"), min_size=1, max_size=255)  # RFC 8474 §7 objectid

leaf_keys: st.SearchStrategy[c.SearchKey] = st.one_of(
    st.just(c.SearchAll()),
    st.sampled_from(["\\Answered", "\\Deleted", "\\Draft", "\\Flagged", "\\Seen"]).flatmap(
        lambda f: st.booleans().map(lambda b: c.SearchFlag(f, b))
    ),
    st.builds(c.SearchFlag, keywords, st.booleans()),
    st.builds(c.SearchText, st.sampled_from(["BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"]), text),
    st.builds(c.SearchHeader, header_names.map(str.upper), text),
    st.builds(c.SearchDate, st.sampled_from(["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE",
                                             "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE"]), dates),
    st.builds(c.SearchObjectId, st.sampled_from(["EMAILID", "THREADID"]), object_ids),
    st.builds(c.SearchSize, st.booleans(), st.integers(0, 2**63 - 1)),
    st.builds(c.SearchSeq, seq_sets, st.booleans()),
    st.builds(c.SearchModseq, st.integers(0, 2**63 - 1)),
    st.builds(c.SearchAge, st.booleans(), st.integers(1, 2**32 - 1)),
)
search_keys = st.recursive(
    leaf_keys,
    lambda kids: st.one_of(
        st.builds(c.SearchNot, kids),
        st.builds(c.SearchOr, kids, kids),
        st.lists(kids, min_size=1, max_size=3).map(lambda ks: c.SearchAnd(tuple(ks))),
    ),
    max_leaves=12,
)

FLAG_KEYS = {("\\" + n.capitalize(), True): n.upper() for n in ("answered", "deleted", "draft", "flagged", "seen")}
FLAG_KEYS.update({(f, False): "UN" + n for (f, _), n in list(FLAG_KEYS.items())})
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def lit(s: str) -> bytes:
    raw = s.encode()
    return b"{%d+}\r\n" % len(raw) + raw


def render(key: c.SearchKey) -> bytes:
    if isinstance(key, c.SearchAll):
        return b"ALL"
    if isinstance(key, c.SearchFlag):
        if (key.flag, key.present) in FLAG_KEYS:
            return FLAG_KEYS[(key.flag, key.present)].encode()
        return (b"KEYWORD " if key.present else b"UNKEYWORD ") + key.flag.encode()
    if isinstance(key, c.SearchText):
        return key.where.encode() + b" " + lit(key.value)
    if isinstance(key, c.SearchHeader):
        return b"HEADER " + lit(key.field) + b" " + lit(key.value)
    if isinstance(key, c.SearchDate):
        d = key.date
        return f"{key.which} {d.day}-{MONTHS[d.month - 1]}-{d.year:04d}".encode()
    if isinstance(key, c.SearchSize):
        return (b"LARGER " if key.larger else b"SMALLER ") + str(key.size).encode()
    if isinstance(key, c.SearchSeq):
        return (b"UID " if key.uid else b"") + str(key.set).encode()
    if isinstance(key, c.SearchModseq):
        return b"MODSEQ " + str(key.modseq).encode()
    if isinstance(key, c.SearchAge):
        return (b"OLDER " if key.older else b"YOUNGER ") + str(key.seconds).encode()
    if isinstance(key, c.SearchObjectId):
        return key.which.encode() + b" " + key.object_id.encode()
    if isinstance(key, c.SearchNot):
        return b"NOT " + render(key.key)
    if isinstance(key, c.SearchOr):
        return b"OR " + render(key.left) + b" " + render(key.right)
    return b"(" + b" ".join(render(k) for k in key.keys) + b")"


def depth(key: c.SearchKey) -> int:
    if isinstance(key, c.SearchNot):
        return 1 + depth(key.key)
    if isinstance(key, c.SearchOr):
        return 1 + max(depth(key.left), depth(key.right))
    if isinstance(key, c.SearchAnd):
        return 1 + max(depth(k) for k in key.keys)
    return 1


@settings(max_examples=300, deadline=None)
@given(search_keys)
def test_search_programs_round_trip(key: c.SearchKey) -> None:
    data = b"t UID SEARCH CHARSET UTF-8 " + render(key) + b"\r\n"
    got = feed([data], Limits())
    if depth(key) > Limits().max_depth:
        assert isinstance(got[0], c.ProtocolError) and got[0].code == "LIMIT"
        return
    assert got == [c.Search("t", key, uid=True, charset="UTF-8")]


@settings(max_examples=200, deadline=None)
@given(seq_sets, st.sampled_from([b"FETCH", b"UID FETCH", b"COPY", b"UID EXPUNGE"]))
def test_sequence_sets_round_trip(seqset: c.SequenceSet, command: bytes) -> None:
    tail = {b"FETCH": b" FLAGS", b"UID FETCH": b" FLAGS", b"COPY": b" x", b"UID EXPUNGE": b""}[command]
    got = feed([b"t " + command + b" " + str(seqset).encode() + tail + b"\r\n"], Limits())
    assert len(got) == 1
    item = got[0]
    parsed = item.uids if isinstance(item, c.Expunge) else item.sequence_set  # type: ignore[union-attr]
    assert parsed == seqset
