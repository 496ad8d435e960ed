"""Hostile input to the IMAP wire: each case is refused naming its tag, and the next command parses."""

from __future__ import annotations

import zlib

import pytest

from eventmail.imap import commands as c
from eventmail.imap.responses import ok
from eventmail.imap.wire import INFLATE_PER_RECEIVE, ImapWire, Limits

NEXT = b"z NOOP\r\n"


def run(data: bytes, limits: Limits | None = None) -> list[c.Item]:
    return ImapWire(limits or Limits(), authenticated=True).receive(data)


def refused_then_next(data: bytes, limits: Limits | None = None, tag: str | None = "a") -> c.ProtocolError:
    """`data` yields exactly one error naming `tag`, and the NOOP after it still parses."""
    got = run(data + NEXT, limits)
    assert len(got) == 2, got
    err, nxt = got
    assert isinstance(err, c.ProtocolError), got
    assert err.tag == tag, err
    assert not err.close
    assert nxt == c.Noop("z"), got
    return err


# -- literal sizes ------------------------------------------------------------------------------


def test_zero_length_literals() -> None:
    assert run(b"a LOGIN {0}\r\n {0}\r\n\r\n") == [c.Continuation("a"), c.Continuation("a"), c.Login("a", "", "")]
    assert run(b"a LOGIN {0+}\r\n {0+}\r\n\r\n" + NEXT) == [c.Login("a", "", ""), c.Noop("z")]
    # an empty message is syntactically fine; the session decides
    assert run(b"a APPEND INBOX {0+}\r\n\r\n") == [c.Append("a", "INBOX", (c.AppendMessage(b""),))]


@pytest.mark.parametrize("header", [b"{-1}", b"{-1+}", b"{-0}", b"{+5}", b"{5 }", b"{ 5}", b"{5++}", b"{0x10}"])
def test_malformed_literal_headers(header: bytes) -> None:
    # not a literal by the grammar: the line is the whole (invalid) command, no data is awaited
    err = refused_then_next(b"a LOGIN " + header + b"\r\n")
    assert err.status == "BAD"


def test_literal_minus_syntax_is_refused_but_its_bytes_are_skipped() -> None:
    # RFC 7888 has no `{n-}`; a client that sends it is sending the bytes, so they are skipped
    err = refused_then_next(b"a LOGIN {6-}\r\nb NOOP {3}\r\n")
    assert err.text == "invalid literal"


def test_huge_synchronising_literal_is_refused_without_waiting() -> None:
    # RFC 9051 §7.5 / RFC 7888 §4: refused at once; the client must not send the data
    err = refused_then_next(b"a LOGIN {4294967296}\r\n")
    assert (err.status, err.code) == ("BAD", "TOOBIG")
    err = refused_then_next(b"a LOGIN {99999999999999999999999999999999}\r\n")
    assert err.code == "TOOBIG"
    # APPEND over APPENDLIMIT: NO [TOOBIG] (RFC 7889, RFC 5530)
    err = refused_then_next(b"a APPEND INBOX {52428801}\r\n")
    assert (err.status, err.code) == ("NO", "TOOBIG")
    # at the limit it is invited
    got = run(b"a APPEND INBOX {52428800}\r\n")
    assert got == [c.Continuation("a")]


def test_huge_non_synchronising_literal_closes() -> None:
    wire = ImapWire(authenticated=True)
    got = wire.receive(b"a LOGIN {4294967296+}\r\n" + NEXT)
    assert got == [
        c.ProtocolError("a", "BAD", "literal too big", "TOOBIG"),
        c.ProtocolError("a", "BYE", "literal too big to skip", close=True),
    ]
    assert wire.closed
    assert wire.receive(NEXT) == []
    assert wire.buffered == 0


def test_oversize_non_synchronising_literal_is_skipped_not_parsed() -> None:
    limits = Limits(max_literal=100)
    evil = (b"b LOGOUT\r\n" * 20)[:150]  # commands inside the literal must never run
    err = refused_then_next(b"a LOGIN {150+}\r\n" + evil + b" x\r\n", limits)
    assert (err.status, err.code) == ("BAD", "TOOBIG")
    # and a second over-limit literal later in the same refused command is skipped too
    err = refused_then_next(b"a LOGIN {150+}\r\n" + evil + b" {150+}\r\n" + evil + b"\r\n", limits)
    # a later synchronising literal in a refused command is not awaited
    err = refused_then_next(b"a LOGIN {150+}\r\n" + evil + b" {5}\r\n", limits)


def test_oversize_append_message_non_synchronising() -> None:
    limits = Limits(max_append=10, max_append_total=15)
    msg = b"0123456789AB"
    err = refused_then_next(b"a APPEND INBOX {12+}\r\n" + msg + b"\r\n", limits)
    assert (err.status, err.code) == ("NO", "TOOBIG")
    # MULTIAPPEND over the total
    err = refused_then_next(b"a APPEND INBOX {8+}\r\n01234567 {8+}\r\n01234567\r\n", limits)
    assert err.code == "TOOBIG"
    assert run(b"a APPEND INBOX {8+}\r\n01234567 {7+}\r\n0123456\r\n", limits)[0] == c.Append(
        "a", "INBOX", (c.AppendMessage(b"01234567"), c.AppendMessage(b"0123456"))
    )


def test_literal_minus_limit() -> None:
    limits = Limits(literal_minus=True, max_append=10_000)
    data = b"x" * 4097
    err = refused_then_next(b"a APPEND INBOX {4097+}\r\n" + data + b"\r\n", limits)
    assert (err.status, err.code) == ("BAD", "TOOBIG")
    # synchronising literals of that size are fine, and 4096 non-synchronising too
    assert run(b"a APPEND INBOX {4097}\r\n", limits) == [c.Continuation("a")]
    assert isinstance(run(b"a APPEND INBOX {4096+}\r\n" + data[:4096] + b"\r\n", limits)[0], c.Append)


def test_discard_cap_closes() -> None:
    wire = ImapWire(Limits(max_literal=10, max_discard=100), authenticated=True)
    got = wire.receive(b"a LOGIN {101+}\r\n" + b"x" * 101 + b"\r\n" + NEXT)
    assert got[-1] == c.ProtocolError("a", "BYE", "literal too big to skip", close=True)
    assert wire.closed


def test_too_many_literals_and_command_size() -> None:
    err = refused_then_next(b"a LOGIN {1+}\r\nx {1+}\r\ny\r\n", Limits(max_literals=1))
    assert err.code == "LIMIT"
    limits = Limits(max_literal=100, max_command=150)
    err = refused_then_next(b"a LOGIN {90+}\r\n" + b"u" * 90 + b" {90+}\r\n" + b"p" * 90 + b"\r\n", limits)
    assert err.text == "literal too big"


def test_literals_in_login_search_append_pipelined() -> None:
    data = (
        b"a LOGIN {5}\r\nalice {3+}\r\np w\r\n"
        b"b SEARCH SUBJECT {8}\r\nb NOOP\r\n\r\n"
        b"c APPEND INBOX {12}\r\nd LOGOUT\r\n\r\n\r\n"
        + NEXT
    )
    assert run(data) == [
        c.Continuation("a"),
        c.Login("a", "alice", "p w"),
        c.Continuation("b"),
        c.Search("b", c.SearchText("SUBJECT", "b NOOP\r\n")),
        c.Continuation("c"),
        c.Append("c", "INBOX", (c.AppendMessage(b"d LOGOUT\r\n\r\n"),)),
        c.Noop("z"),
    ]


def test_nul_in_literal_and_literal8_outside_append() -> None:
    assert refused_then_next(b"a LOGIN {3+}\r\na\x00b x\r\n").text == "NUL in literal (use literal8)"
    assert refused_then_next(b"a LOGIN ~{3+}\r\nabc x\r\n").text == "literal8 not allowed here"


# -- quoted strings, characters -----------------------------------------------------------------


@pytest.mark.parametrize("inner", [b"a\x00b", b"a\rb", b"a\nb", b"a\r\nb"])
def test_nul_cr_lf_in_quoted_string(inner: bytes) -> None:
    data = b'a LOGIN "' + inner + b'" pw\r\n'
    if b"\r\n" in inner:
        # the CRLF ends the line: the command is an unterminated string; the rest is a bad line
        got = run(data + NEXT)
        assert got[0] == c.ProtocolError("a", "BAD", "invalid quoted string")
        assert got[-1] == c.Noop("z")
        return
    err = refused_then_next(data)
    assert err.text == "NUL, CR or LF in quoted string"


@pytest.mark.parametrize(
    "data",
    [
        b'a LOGIN "\xff" pw\r\n',
        b'a LOGIN "\xc3" pw\r\n',
        b'a LOGIN "\xed\xa0\x80" pw\r\n',  # UTF-16 surrogate encoded in UTF-8
        b"a LOGIN {2+}\r\n\xc3\x28 pw\r\n",
        b'a SELECT "\xe2\x82"\r\n',
        b"a SEARCH CHARSET UTF-8 SUBJECT {1+}\r\n\xa9\r\n",
        b'a ID ("name" "\xf8\x88\x80\x80\x80")\r\n',
    ],
)
def test_invalid_utf8_is_refused(data: bytes) -> None:
    assert refused_then_next(data).status == "BAD"


def test_invalid_utf8_mailbox_in_utf8_mode() -> None:
    wire = ImapWire(authenticated=True)
    wire.enable_utf8()
    got = wire.receive(b"a SELECT {2+}\r\n\xc3\x28\r\n" + NEXT)
    assert got[0] == c.ProtocolError("a", "BAD", "invalid UTF-8 in mailbox name")
    assert got[1] == c.Noop("z")


def test_bad_escapes_and_controls() -> None:
    refused_then_next(b'a LOGIN "a\\b" pw\r\n')
    refused_then_next(b'a LOGIN "abc pw\r\n')
    refused_then_next(b"a LOGIN a\x01b pw\r\n")
    refused_then_next(b"a SELECT {3+}\r\na\x07b\r\n")  # control character in mailbox name
    # a lone CR inside a line is not a line end
    refused_then_next(b"a NOOP\rb NOOP\r\n")


# -- parentheses and nesting --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"a FETCH 1 (FLAGS\r\n",
        b"a FETCH 1 FLAGS)\r\n",
        b"a FETCH 1 ((FLAGS))\r\n",
        b"a SEARCH ((SEEN)\r\n",
        b"a SEARCH (SEEN))\r\n",
        b"a STORE 1 FLAGS ((x))\r\n",
        b"a LIST (() \"\" *\r\n",
        b"a ID (\"a\" \"b\"\r\n",
        b"a STATUS INBOX (MESSAGES\r\n",
        b")\r\n",
    ],
)
def test_unbalanced_parentheses(data: bytes) -> None:
    refused_then_next(data, tag=None if data.startswith(b")") else "a")


@pytest.mark.parametrize("depth", [33, 1000, 20000])
def test_deep_nesting_is_refused(depth: int) -> None:
    limits = Limits(max_line=500_000)
    err = refused_then_next(b"a SEARCH " + b"(" * depth + b"SEEN" + b")" * depth + b"\r\n", limits)
    assert (err.text, err.code) == ("nesting too deep", "LIMIT")
    err = refused_then_next(b"a SEARCH " + b"NOT " * depth + b"SEEN\r\n", limits)
    assert err.code == "LIMIT"
    err = refused_then_next(b"a SEARCH " + b"OR " * depth + b"SEEN SEEN" * depth + b"\r\n", limits)
    assert err.code == "LIMIT"


def test_nesting_at_the_limit_is_fine() -> None:
    got = run(b"a SEARCH " + b"(" * 31 + b"SEEN" + b")" * 31 + b"\r\n")
    assert isinstance(got[0], c.Search)


# -- line length --------------------------------------------------------------------------------


def test_overlong_line_discarded_then_bad() -> None:
    limits = Limits(max_line=1000)
    err = refused_then_next(b"a NOOP " + b"x" * 5000 + b"\r\n", limits)
    assert (err.text, err.code) == ("command line too long", "TOOBIG")
    # no tag to name: untagged BAD
    refused_then_next(b"x" * 5000 + b"\r\n", limits, tag=None)


def test_overlong_line_fed_slowly_stays_bounded() -> None:
    limits = Limits(max_line=1000)
    wire = ImapWire(limits, authenticated=True)
    got: list[c.Item] = []
    got += wire.receive(b"a SEARCH TEXT ")
    for _ in range(200):
        got += wire.receive(b"y" * 997)
        assert wire.buffered <= limits.max_line + 100
    assert got == []  # BAD comes once the line has ended
    got += wire.receive(b"\r" )
    got += wire.receive(b"\n" + NEXT)
    assert got == [c.ProtocolError("a", "BAD", "command line too long", "TOOBIG"), c.Noop("z")]


def test_overlong_line_ending_in_literal_keeps_sync() -> None:
    limits = Limits(max_line=1000)
    literal = b"b LOGOUT\r\n"
    err = refused_then_next(b"a LOGIN " + b"x" * 3000 + b" {10+}\r\n" + literal + b"\r\n", limits)
    assert err.text == "command line too long"
    # a synchronising one is not awaited
    refused_then_next(b"a LOGIN " + b"x" * 3000 + b" {10}\r\n", limits)


def test_overlong_continuation_line() -> None:
    limits = Limits(max_line=100)
    err = refused_then_next(b"a LOGIN {3+}\r\nabc " + b"p" * 500 + b"\r\n", limits)
    assert err.text == "command line too long"


def test_overlong_sasl_line() -> None:
    wire = ImapWire(Limits(max_line=100), authenticated=True)
    wire.receive(b"a AUTHENTICATE PLAIN\r\n")
    got = wire.receive(b"A" * 1000 + b"\r\n" + NEXT)
    assert got == [c.ProtocolError("a", "BAD", "SASL response line too long"), c.Noop("z")]


# -- rejected before literal data ---------------------------------------------------------------


def test_unknown_command_with_literals_keeps_sync() -> None:
    refused_then_next(b"a XFOO {8+}\r\nb LOGOUT\r\n")
    refused_then_next(b"a XFOO {3+}\r\nabc {5}\r\n")  # sync literal in a refused command
    # an invalid tag is refused before its literal is invited
    assert run(b"{5}\r\n" + NEXT) == [c.ProtocolError(None, "BAD", "invalid tag"), c.Noop("z")]
    assert run(b"a {5}\r\n" + NEXT) == [c.ProtocolError("a", "BAD", "missing command"), c.Noop("z")]


def test_syntax_error_after_literal_keeps_sync() -> None:
    # the literal was accepted, so the command is framed to its end before the BAD
    got = run(b"a LOGIN {5}\r\nalice\r\n" + NEXT)
    assert got == [c.Continuation("a"), c.ProtocolError("a", "BAD", "expected SP"), c.Noop("z")]


# -- STARTTLS and COMPRESS ----------------------------------------------------------------------


def test_starttls_drops_pipelined_plaintext() -> None:
    # RFC 9051 §6.2.1: commands sent before the TLS negotiation must not be run
    wire = ImapWire(authenticated=True)
    assert wire.receive(b"a STARTTLS\r\nb LOGIN mallory x\r\n") == [c.StartTls("a")]
    assert wire.receive(b"c LOGIN mallory x\r\n") == []
    wire.encode(ok("a", "begin TLS"))
    assert wire.start_tls() == 2 * len(b"b LOGIN mallory x\r\n")  # what was dropped, for the log
    assert wire.receive(b"d CAPABILITY\r\n") == [c.Capability("d")]


def test_refused_starttls_resumes() -> None:
    wire = ImapWire(authenticated=True)
    wire.receive(b"a STARTTLS\r\n")
    from eventmail.imap.responses import bad

    wire.encode(bad("a", "already in TLS"))
    assert wire.receive(b"b NOOP\r\n") == [c.Noop("b")]


def test_compress_round_trip() -> None:
    wire = ImapWire(authenticated=True)
    assert wire.receive(b"a COMPRESS DEFLATE\r\nb NOOP\r\n") == [c.Compress("a", "DEFLATE")]
    assert wire.encode(ok("a", "DEFLATE active")) == b"a OK DEFLATE active\r\n"
    wire.start_compression()
    assert wire.compressing
    client = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = client.compress(b"c NOOP\r\nd LOGIN {5+}\r\nalice pw\r\n") + client.flush(zlib.Z_SYNC_FLUSH)
    got: list[c.Item] = []
    for i in range(len(data)):
        got += wire.receive(data[i : i + 1])
    assert got == [c.Noop("c"), c.Login("d", "alice", "pw")]
    inflater = zlib.decompressobj(-15)
    out = inflater.decompress(wire.encode(ok("c")) + wire.encode(ok("d")))
    assert out == b"c OK done\r\nd OK done\r\n"


def _compressed_wire(limits: Limits | None = None) -> ImapWire:
    wire = ImapWire(limits, authenticated=True)
    wire.receive(b"a COMPRESS DEFLATE\r\n")
    wire.encode(ok("a"))
    wire.start_compression()
    return wire


def _deflate(*pieces: bytes) -> bytes:
    client = zlib.compressobj(9, zlib.DEFLATED, -15)
    return b"".join(client.compress(p) for p in pieces) + client.flush(zlib.Z_SYNC_FLUSH)


def _drain(wire: ImapWire, first: list[c.Item]) -> list[c.Item]:
    """The items of one receive() and of the receive(b"") calls input_pending asks for."""
    got = list(first)
    while wire.input_pending:
        got += wire.receive(b"")
    return got


def test_compression_bomb_line_closes() -> None:
    """20 MiB of one line in < 100 KB deflated: past max_line the connection is closed (RFC 4978
    §6), rather than inflating and discarding the rest of the line."""
    wire = _compressed_wire(Limits(max_line=4096))
    bomb = _deflate(b"x" * (20 * 1024 * 1024), b"\r\n" + NEXT)
    assert len(bomb) < 100_000
    got = wire.receive(bomb)
    assert got == [c.ProtocolError(None, "BYE", "command line too long in compressed input", close=True)]
    assert wire.closed and not wire.input_pending
    assert wire.buffered < 10_000


def test_one_receive_inflates_a_bounded_slice() -> None:
    """A deflated run of 512 Ki NOOPs (4 MiB inflated) is not framed in one receive(): each call
    inflates at most INFLATE_PER_RECEIVE, input_pending says more is there, and the commands
    come out whole and in order over the following receive(b"") calls."""
    count = 512 * 1024
    wire = _compressed_wire()
    first = wire.receive(_deflate(b"n NOOP\r\n" * count))
    assert len(first) <= INFLATE_PER_RECEIVE // len(b"n NOOP\r\n")
    assert wire.input_pending
    got = _drain(wire, first)
    assert len(got) == count and set(got) == {c.Noop("n")}
    assert not wire.input_pending


def test_big_rejected_literal_in_compressed_input_closes() -> None:
    wire = _compressed_wire(Limits(max_literal=100))
    got = wire.receive(_deflate(b"a SEARCH TEXT {200000+}\r\n" + b"x" * 200_000 + b"\r\n" + NEXT))
    assert got == [c.ProtocolError("a", "BAD", "literal too big", "TOOBIG"),
                   c.ProtocolError("a", "BYE", "literal too big to skip in compressed input", close=True)]
    assert wire.closed


def test_small_rejected_literal_in_compressed_input_is_skipped() -> None:
    wire = _compressed_wire()
    got = _drain(wire, wire.receive(_deflate(b"a FROB {5+}\r\nhello\r\n" + NEXT)))
    assert got == [c.ProtocolError("a", "BAD", "unknown command FROB"), c.Noop("z")]


def test_big_append_arrives_over_several_receives() -> None:
    body = bytes(range(1, 256)) * (3 * 1024 * 1024 // 255)  # 3 MiB, little to compress away
    wire = _compressed_wire()
    got = _drain(wire, wire.receive(_deflate(b"a APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\n" + NEXT)))
    assert got == [c.Append("a", "INBOX", (c.AppendMessage(body),)), c.Noop("z")]


def test_invalid_compressed_data_closes() -> None:
    wire = ImapWire(authenticated=True)
    wire.receive(b"a COMPRESS DEFLATE\r\n")
    wire.encode(ok("a"))
    wire.start_compression()
    got = wire.receive(b"\xff\xff\xff\xff garbage")
    assert got == [c.ProtocolError(None, "BYE", "invalid compressed data", close=True)]
    assert wire.closed


def test_refusal_comes_after_the_skipped_literal() -> None:
    # the client is sending the literal anyway; the BAD follows the end of the command
    wire = ImapWire(Limits(max_literal=100), authenticated=True)
    assert wire.receive(b"a LOGIN {150+}\r\n" + b"x" * 149) == []
    assert wire.receive(b"x") == []
    assert wire.receive(b" pw\r\n") == [c.ProtocolError("a", "BAD", "literal too big", "TOOBIG")]
    # a refused synchronising literal is answered at once: the client is waiting
    assert wire.receive(b"b LOGIN {150}\r\n") == [c.ProtocolError("b", "BAD", "literal too big", "TOOBIG")]


def test_large_append_streams_through() -> None:
    wire = ImapWire(authenticated=True)
    size = 20 * 1024 * 1024
    got = wire.receive(b"a APPEND INBOX {%d}\r\n" % size)
    assert got == [c.Continuation("a")]
    chunk = b"0123456789abcdef" * 4096
    for _ in range(size // len(chunk)):
        assert wire.receive(chunk) == []
    got = wire.receive(b"\r\n")
    assert len(got) == 1 and isinstance(got[0], c.Append)
    assert len(got[0].messages[0].data) == size
    assert wire.buffered == 0


@pytest.mark.parametrize(
    ("prefix", "limit_status"),
    [(b"a LOGIN ", "BAD"), (b"a LOGIN alice ", "BAD"), (b"a SEARCH SUBJECT ", "BAD"), (b"a SEARCH CHARSET ", "BAD"),
     (b"a APPEND INBOX ", "NO"), (b"a APPEND INBOX (\\Seen) ", "NO"), (b"a APPEND ", "NO")],
)
@pytest.mark.parametrize("nonsync", [False, True])
def test_oversize_literal_in_login_search_append(prefix: bytes, limit_status: str, nonsync: bool) -> None:
    limits = Limits(max_literal=16, max_append=32)
    n = 40
    header = b"{%d%s}\r\n" % (n, b"+" if nonsync else b"")
    # a non-synchronising literal's bytes arrive anyway (and look like commands); a refused
    # synchronising one is not sent by the client
    body = (b"b LOGOUT\r\n" * 4) + b" rest\r\n" if nonsync else b""
    err = refused_then_next(prefix + header + body, limits)
    assert (err.status, err.code) == (limit_status, "TOOBIG")
