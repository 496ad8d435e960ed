"""Response encoding: exact server bytes for status responses, codes, FETCH items and strings."""

from __future__ import annotations

import datetime
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventmail.imap import responses as r
from eventmail.imap.commands import (
    FetchAttr,
    MailboxNameError,
    ProtocolError,
    Section,
    SequenceSet,
    decode_mutf7,
    encode_mutf7,
)
from eventmail.imap.responses import NIL, Atom, Literal, Mailbox, Raw, ResponseCode
from eventmail.imap.wire import ImapWire


def enc(response: r.Response, utf8: bool = False) -> bytes:
    return r.encode_response(response, utf8=utf8)


# -- status responses and codes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "wire"),
    [
        (r.ok("a1"), b"a1 OK done\r\n"),
        (r.ok("a1", "SELECT completed", ResponseCode("READ-WRITE")), b"a1 OK [READ-WRITE] SELECT completed\r\n"),
        (r.ok(None, "Predicted next UID", ResponseCode("UIDNEXT", (5,))), b"* OK [UIDNEXT 5] Predicted next UID\r\n"),
        (r.ok("A003", "APPEND completed", ResponseCode("APPENDUID", (38505, 3955))),
         b"A003 OK [APPENDUID 38505 3955] APPEND completed\r\n"),
        (r.ok("a", "Done", ResponseCode("COPYUID", (38505, SequenceSet.of(304, 319), SequenceSet.of(3956, 3957)))),
         b"a OK [COPYUID 38505 304,319 3956,3957] Done\r\n"),
        (r.ok(None, "Highest", ResponseCode("HIGHESTMODSEQ", (715194045007,))),
         b"* OK [HIGHESTMODSEQ 715194045007] Highest\r\n"),
        (r.ok(None, "Previous mailbox closed", ResponseCode("CLOSED")), b"* OK [CLOSED] Previous mailbox closed\r\n"),
        (r.ok("a", "Logged in", r.capability_code(["IMAP4rev2", "IMAP4rev1", "LITERAL+", "AUTH=PLAIN"])),
         b"a OK [CAPABILITY IMAP4rev2 IMAP4rev1 LITERAL+ AUTH=PLAIN] Logged in\r\n"),
        (r.ok(None, "Limited", ResponseCode("PERMANENTFLAGS", ((Atom("\\Deleted"), Atom("\\Seen"), Atom("\\*")),))),
         b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"),
        (r.no("a", "too big", ResponseCode("TOOBIG")), b"a NO [TOOBIG] too big\r\n"),
        (r.bad(None, "what?"), b"* BAD what?\r\n"),
        (r.bye("Logging out"), b"* BYE Logging out\r\n"),
        (r.StatusResponse("PREAUTH", "welcome"), b"* PREAUTH welcome\r\n"),
        (r.StatusResponse("OK", "", "a", ResponseCode("READ-ONLY")), b"a OK [READ-ONLY]\r\n"),
        (r.ok("a", "line\r\nbreak\x00"), b"a OK line  break \r\n"),  # text never carries CR/LF/NUL
        (r.ok("a", "café"), b"a OK caf?\r\n"),
    ],
)
def test_status_responses(response: r.Response, wire: bytes) -> None:
    assert enc(response) == wire


def test_text_is_utf8_only_when_enabled() -> None:
    assert enc(r.ok("a", "café"), utf8=True) == "a OK café\r\n".encode()


def test_continuations() -> None:
    assert enc(r.ContinuationRequest()) == b"+ Ready for literal data\r\n"
    assert enc(r.ContinuationRequest("idling")) == b"+ idling\r\n"
    assert enc(r.ContinuationRequest(challenge=b"\x00abc")) == b"+ AGFiYw==\r\n"
    assert enc(r.ContinuationRequest(challenge=b"")) == b"+ \r\n"


def test_untagged_data() -> None:
    assert enc(r.exists(172)) == b"* 172 EXISTS\r\n"
    assert enc(r.expunge(3)) == b"* 3 EXPUNGE\r\n"
    assert enc(r.capability(["IMAP4rev2", "IDLE"])) == b"* CAPABILITY IMAP4rev2 IDLE\r\n"
    assert enc(r.flags(["\\Answered", "\\Seen", "$Junk"])) == b"* FLAGS (\\Answered \\Seen $Junk)\r\n"
    assert enc(r.enabled(["CONDSTORE"])) == b"* ENABLED CONDSTORE\r\n"
    assert enc(r.vanished(SequenceSet.of(41, 43))) == b"* VANISHED 41,43\r\n"
    assert enc(r.vanished(SequenceSet.of(41), earlier=True)) == b"* VANISHED (EARLIER) 41\r\n"
    assert enc(r.search_response([2, 3, 6])) == b"* SEARCH 2 3 6\r\n"
    assert enc(r.search_response([], 5)) == b"* SEARCH (MODSEQ 5)\r\n"
    assert enc(r.esearch_response("A282", True, [("MIN", 2), ("COUNT", 3), ("ALL", SequenceSet.of(2, 10))])) == (
        b'* ESEARCH (TAG "A282") UID MIN 2 COUNT 3 ALL 2,10\r\n'
    )
    assert enc(r.status_response("blurdybloop", [("MESSAGES", 231), ("UIDNEXT", 44292)])) == (
        b'* STATUS "blurdybloop" (MESSAGES 231 UIDNEXT 44292)\r\n'
    )
    assert enc(r.list_response(["\\HasNoChildren", "\\Sent"], "/", "Sent")) == b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"\r\n'
    assert enc(r.list_response(["\\Noselect"], None, "")) == b'* LIST (\\Noselect) NIL ""\r\n'
    assert enc(r.list_response([], "/", "Foo", [("CHILDINFO", (b"SUBSCRIBED",))])) == (
        b'* LIST () "/" "Foo" ("CHILDINFO" ("SUBSCRIBED"))\r\n'
    )
    assert enc(r.id_response([("name", "eventmail"), ("version", None)])) == b'* ID ("name" "eventmail" "version" NIL)\r\n'
    assert enc(r.id_response(None)) == b"* ID NIL\r\n"
    assert enc(r.namespace_response([("", "/")])) == b'* NAMESPACE (("" "/")) NIL NIL\r\n'


def test_mailbox_names_in_responses() -> None:
    resp = r.list_response([], "/", "Entwürfe/日本語")
    assert enc(resp) == b'* LIST () "/" "Entw&APw-rfe/&ZeVnLIqe-"\r\n'
    assert enc(resp, utf8=True) == '* LIST () "/" "Entwürfe/日本語"\r\n'.encode()
    assert enc(r.Untagged((Mailbox('a"b'),))) == b'* "a\\"b"\r\n'


# -- strings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "utf8", "wire"),
    [
        ("hello", False, b'"hello"'),
        ("", False, b'""'),
        ('say "hi" \\o/', False, b'"say \\"hi\\" \\\\o/"'),
        ("two\r\nlines", False, b"{10}\r\ntwo\r\nlines"),
        ("tab\there", False, b"{8}\r\ntab\there"),
        ("café", False, b"{5}\r\ncaf\xc3\xa9"),  # 8-bit needs a literal without UTF8=ACCEPT
        ("café", True, '"café"'.encode()),
        (b"caf\xe9", True, b"{4}\r\ncaf\xe9"),  # not UTF-8: literal even when enabled
        (b"nul\x00", False, b"{4}\r\nnul\x80"),  # RFC 9051 §4.3: never NUL in a plain literal
        (None, False, b"NIL"),
        (0, False, b"0"),
        (2**63 - 1, False, b"9223372036854775807"),
        (Atom("\\Seen"), False, b"\\Seen"),
        (Literal(b"abc"), False, b"{3}\r\nabc"),
        (Literal(b"a\x00c", binary=True), False, b"~{3}\r\na\x00c"),
        (Raw(b'("text" "plain")'), False, b'("text" "plain")'),
        ((1, "a", (None, Atom("X"))), False, b'(1 "a" (NIL X))'),
        ([], False, b"()"),
        (datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=datetime.timezone(-datetime.timedelta(hours=7))), False,
         b'"17-Jul-1996 02:44:25 -0700"'),
        (datetime.datetime(2024, 3, 5, 9, 8, 7, tzinfo=datetime.UTC), False, b'" 5-Mar-2024 09:08:07 +0000"'),
    ],
)
def test_values(value: r.Value, utf8: bool, wire: bytes) -> None:
    assert r.encode_value(value, utf8=utf8) == wire


def test_astring() -> None:
    assert r.encode_astring("INBOX") == b"INBOX"
    assert r.encode_astring("a b") == b'"a b"'
    assert r.encode_astring("") == b'""'
    assert r.encode_astring("x*") == b'"x*"'


@pytest.mark.parametrize("bad", [Atom(""), Atom("a b"), Atom("caf\xe9"), Atom("x\r\n"), -1, True])
def test_unencodable_values_raise(bad: r.Value) -> None:
    with pytest.raises(r.EncodeError):
        r.encode_value(bad)


# -- FETCH ------------------------------------------------------------------------------------------


def test_fetch_response() -> None:
    when = datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=datetime.timezone(-datetime.timedelta(hours=7)))
    body = b"Subject: hi\r\n\r\nhello\r\n"
    resp = r.FetchResponse(
        12,
        (
            ("UID", 4),
            ("FLAGS", (Atom("\\Seen"), Atom("$Junk"))),
            ("INTERNALDATE", when),
            ("RFC822.SIZE", len(body)),
            ("MODSEQ", (624140003,)),
            ("ENVELOPE", (None, "hi", None, None, None, None, None, None, None, b"<x@y>")),
            ("BODYSTRUCTURE", Raw(b'("text" "plain" NIL NIL NIL "7bit" 5 1)')),
            (FetchAttr("BODY", Section((), "HEADER.FIELDS", ("FROM", "TO")), (0, 10)).response_name(), b"From: a"),
            ("BODY[]", body),
        ),
    )
    assert enc(resp) == (
        b'* 12 FETCH (UID 4 FLAGS (\\Seen $Junk) INTERNALDATE "17-Jul-1996 02:44:25 -0700" RFC822.SIZE 22 '
        b'MODSEQ (624140003) ENVELOPE (NIL "hi" NIL NIL NIL NIL NIL NIL NIL "<x@y>") '
        b'BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7bit" 5 1) '
        b'BODY[HEADER.FIELDS (FROM TO)]<0> "From: a" '
        b"BODY[] {22}\r\nSubject: hi\r\n\r\nhello\r\n)\r\n"
    )


def test_fetch_binary_uses_literal8_for_binary_content() -> None:
    # RFC 3516 §4.3: BINARY content with NUL goes out as literal8
    resp = r.FetchResponse(1, (("BINARY[2]", b"\x89PNG\x00\x01"), ("BINARY.SIZE[2]", 6), ("BINARY[1]", b"text\r\n")))
    assert enc(resp) == b"* 1 FETCH (BINARY[2] ~{6}\r\n\x89PNG\x00\x01 BINARY.SIZE[2] 6 BINARY[1] {6}\r\ntext\r\n)\r\n"
    assert enc(r.FetchResponse(1, (("BODY[]", b"a\x00b"),))) == b"* 1 FETCH (BODY[] {3}\r\na\x80b)\r\n"
    assert enc(r.FetchResponse(1, (("BODY[]", Literal(b"a\x00b")),))) == b"* 1 FETCH (BODY[] {3}\r\na\x80b)\r\n"
    assert enc(r.FetchResponse(1, (("BINARY[]", NIL),))) == b"* 1 FETCH (BINARY[] NIL)\r\n"


def test_fetch_item_names_are_checked() -> None:
    with pytest.raises(r.EncodeError):
        enc(r.FetchResponse(1, (("BODY [x]", 1),)))
    with pytest.raises(r.EncodeError):
        enc(r.FetchResponse(1, (("X\r\nY", 1),)))


def test_error_response() -> None:
    assert enc(r.error_response(ProtocolError("a", "BAD", "nope"))) == b"a BAD nope\r\n"
    assert enc(r.error_response(ProtocolError(None, "BAD", "nope"))) == b"* BAD nope\r\n"
    assert enc(r.error_response(ProtocolError("a", "NO", "cs", "BADCHARSET (US-ASCII UTF-8)"))) == (
        b"a NO [BADCHARSET (US-ASCII UTF-8)] cs\r\n"
    )
    assert enc(r.error_response(ProtocolError("a", "BYE", "bye", close=True))) == b"* BYE bye\r\n"


# -- the wire's encode: UTF-8 mode and compression -------------------------------------------------


def test_wire_encode_modes() -> None:
    wire = ImapWire(authenticated=True)
    assert wire.encode(r.list_response([], "/", "ü")) == b'* LIST () "/" "&APw-"\r\n'
    wire.enable_utf8()
    assert wire.utf8
    assert wire.encode(r.list_response([], "/", "ü")) == '* LIST () "/" "ü"\r\n'.encode()
    wire.start_compression()
    inflater = zlib.decompressobj(-15)
    out = b"".join(inflater.decompress(wire.encode(r.exists(n))) for n in range(3))
    assert out == b"* 0 EXISTS\r\n* 1 EXISTS\r\n* 2 EXISTS\r\n"


# -- modified UTF-7 ----------------------------------------------------------------------------------


def test_mutf7_examples() -> None:
    # RFC 3501 §5.1.3
    assert decode_mutf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-") == "~peter/mail/台北/日本語"
    assert encode_mutf7("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert encode_mutf7("a&b") == "a&-b"
    assert encode_mutf7("😀") == "&2D3eAA-"
    assert decode_mutf7("&2D3eAA-") == "😀"


@pytest.mark.parametrize(
    "bad",
    ["&", "&U,BTFw", "&U/BTFw-", "&U,BTFw=-", "&AGE-", "&2D3e-", "&U,BTFw-&ZeVnLIqe-", "caf\xe9", "a\x01", "&Jjo!-",
     "&AAA-", "&U,BTF-"],
)
def test_mutf7_invalid(bad: str) -> None:
    with pytest.raises(MailboxNameError):
        decode_mutf7(bad)


@given(st.text(st.characters(codec="utf-8")))
def test_mutf7_round_trip(name: str) -> None:
    encoded = encode_mutf7(name)
    assert encoded.isascii()
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        with pytest.raises(MailboxNameError):
            decode_mutf7(encoded)
    else:
        assert decode_mutf7(encoded) == name
