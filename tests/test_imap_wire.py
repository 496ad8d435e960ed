"""Transcript tests for the IMAP wire parser: client bytes in, exact command objects out."""

from __future__ import annotations

import datetime

import pytest

from eventmail.imap import commands as c
from eventmail.imap.commands import (
    FetchAttr,
    Section,
    SeqRange,
    SequenceSet,
)
from eventmail.imap.wire import ImapWire, Limits


def items(data: bytes, *, utf8: bool = False, **limits: int | bool) -> list[c.Item]:
    wire = ImapWire(Limits(**limits), authenticated=True)  # type: ignore[arg-type]
    if utf8:
        wire.enable_utf8()
    return wire.receive(data)


def one(data: bytes, **kw: bool) -> c.Item:
    got = items(data, **kw)
    assert len(got) == 1, got
    return got[0]


def bad(data: bytes, tag: str | None = "a", **kw: bool) -> c.ProtocolError:
    got = one(data, **kw)
    assert isinstance(got, c.ProtocolError), got
    assert got.tag == tag
    assert got.status == "BAD", got
    return got


def S(*ranges: tuple[int | None, int | None]) -> SequenceSet:
    return SequenceSet(tuple(SeqRange(a, b) for a, b in ranges))


UTC1 = datetime.timezone(datetime.timedelta(hours=1))

# -- simple commands ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"a CAPABILITY\r\n", c.Capability("a")),
        (b"a capability\r\n", c.Capability("a")),
        (b"A001 NOOP\r\n", c.Noop("A001")),
        (b"a LOGOUT\r\n", c.Logout("a")),
        (b"a STARTTLS\r\n", c.StartTls("a")),
        (b"a NAMESPACE\r\n", c.Namespace("a")),
        (b"a IDLE\r\n", c.Idle("a")),
        (b"a CHECK\r\n", c.Check("a")),
        (b"a CLOSE\r\n", c.Close("a")),
        (b"a UNSELECT\r\n", c.Unselect("a")),
        (b"a EXPUNGE\r\n", c.Expunge("a")),
        (b"a UID EXPUNGE 3000:3002,3005\r\n", c.Expunge("a", S((3000, 3002), (3005, 3005)))),
        (b"t]1 NOOP\r\n", c.Noop("t]1")),
        (b"a COMPRESS DEFLATE\r\n", c.Compress("a", "DEFLATE")),
    ],
)
def test_simple_commands(line: bytes, expected: c.Command) -> None:
    assert one(line) == expected


def test_arguments_after_argumentless_command_are_bad() -> None:
    assert bad(b"a NOOP x\r\n").text == "unexpected characters at end of command"
    bad(b"a NOOP \r\n")


def test_done_line_ends_idle() -> None:
    # RFC 2177 §3: the bare DONE line, in any case, is not a tagged command
    assert items(b"a IDLE\r\nDONE\r\nb NOOP\r\n") == [c.Idle("a"), c.IdleDone(), c.Noop("b")]
    assert items(b"done\r\n") == [c.IdleDone()]


# -- authentication -----------------------------------------------------------------------------


def test_login_forms() -> None:
    assert one(b"a LOGIN alice secret\r\n") == c.Login("a", "alice", "secret")
    assert one(b'a LOGIN "al ice" "p\\"w\\\\d"\r\n') == c.Login("a", "al ice", 'p"w\\d')
    assert items(b"a LOGIN {5}\r\nalice {6}\r\nsecret\r\n") == [
        c.Continuation("a"),
        c.Continuation("a"),
        c.Login("a", "alice", "secret"),
    ]
    assert items(b"a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n") == [c.Login("a", "alice", "secret")]
    assert one('a LOGIN "jösé" "pässwörd"\r\n'.encode()) == c.Login("a", "jösé", "pässwörd")


def test_authenticate_and_sasl_lines() -> None:
    wire = ImapWire(authenticated=True)
    assert wire.receive(b"a AUTHENTICATE PLAIN\r\n") == [c.Authenticate("a", "PLAIN")]
    # RFC 9051 §6.2.2: continuation lines are raw base64, not commands
    assert wire.receive(b"AGFsaWNlAHNlY3JldA==\r\n") == [c.SaslResponse("a", b"\x00alice\x00secret")]
    assert wire.receive(b"\r\n") == [c.SaslResponse("a", b"")]
    from eventmail.imap.responses import ok

    wire.encode(ok("a"))  # the tagged answer ends the exchange
    assert wire.receive(b"b NOOP\r\n") == [c.Noop("b")]


def test_authenticate_sasl_ir_and_cancel() -> None:
    # RFC 4959: initial response on the command line, "=" for empty
    assert one(b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n") == c.Authenticate(
        "a", "PLAIN", b"\x00alice\x00secret"
    )
    assert one(b"a AUTHENTICATE EXTERNAL =\r\n") == c.Authenticate("a", "EXTERNAL", b"")
    bad(b"a AUTHENTICATE PLAIN AGF!\r\n")
    bad(b"a AUTHENTICATE PLAIN AGF\r\n")  # bad padding
    wire = ImapWire(authenticated=True)
    wire.receive(b"a AUTHENTICATE SCRAM-SHA-256\r\n")
    assert wire.receive(b"*\r\nb NOOP\r\n") == [c.SaslCancel("a"), c.Noop("b")]
    wire.receive(b"c AUTHENTICATE PLAIN\r\n")
    got = wire.receive(b"not base64!\r\nd NOOP\r\n")
    assert got == [c.ProtocolError("c", "BAD", "invalid base64 in SASL response"), c.Noop("d")]


def test_authenticate_end_authentication_method() -> None:
    wire = ImapWire(authenticated=True)
    wire.receive(b"a AUTHENTICATE PLAIN =\r\n")
    wire.end_authentication()
    assert wire.receive(b"b NOOP\r\n") == [c.Noop("b")]


def test_enable_and_id() -> None:
    assert one(b"a ENABLE CONDSTORE utf8=accept\r\n") == c.Enable("a", ("CONDSTORE", "UTF8=ACCEPT"))
    bad(b"a ENABLE\r\n")
    assert one(b'a ID ("name" "sodr" "version" NIL)\r\n') == c.Id(
        "a", (("name", "sodr"), ("version", None))
    )
    assert one(b"a ID NIL\r\n") == c.Id("a", None)
    assert one(b"a ID ()\r\n") == c.Id("a", ())
    bad(b'a ID ("name")\r\n')


# -- mailboxes ----------------------------------------------------------------------------------


def test_select_examine() -> None:
    assert one(b"a SELECT inbox\r\n") == c.Select("a", "INBOX")
    assert one(b'a EXAMINE "Sent Items"\r\n') == c.Select("a", "Sent Items", readonly=True)
    assert one(b"a SELECT INBOX (CONDSTORE)\r\n") == c.Select("a", "INBOX", condstore=True)
    # RFC 7162 §3.2.5.2 example
    got = one(b"A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n")
    assert got == c.Select(
        "A02",
        "INBOX",
        qresync=c.QresyncParams(
            67890007, 20050715194045000, S((41, 41), (43, 211), (214, 541))
        ),
    )
    got = one(b"B04 SELECT INBOX (QRESYNC (67890007 90060115194045000 1:29997 (5000,7500,9000 15000,22500,27000)))\r\n")
    assert isinstance(got, c.Select) and got.qresync is not None
    assert got.qresync.seq_match == (
        S((5000, 5000), (7500, 7500), (9000, 9000)),
        S((15000, 15000), (22500, 22500), (27000, 27000)),
    )
    got = one(b"a SELECT INBOX (QRESYNC (1 2 (1 5)) CONDSTORE)\r\n")
    assert got == c.Select(
        "a", "INBOX", condstore=True, qresync=c.QresyncParams(1, 2, None, (S((1, 1)), S((5, 5))))
    )
    bad(b"a SELECT INBOX ()\r\n")
    bad(b"a SELECT INBOX (FOO)\r\n")
    assert bad(b"a SELECT INBOX (CONDSTORE CONDSTORE)\r\n").text == "duplicate select parameter CONDSTORE"
    bad(b"a SELECT INBOX (QRESYNC (0 5))\r\n")  # uidvalidity is nz-number
    bad(b"a SELECT\r\n")


def test_create_delete_rename_subscribe() -> None:
    assert one(b"a CREATE Archive/2024\r\n") == c.Create("a", "Archive/2024")
    assert one(b"a CREATE MySpecialArchive (USE (\\archive \\Junk))\r\n") == c.Create(
        "a", "MySpecialArchive", ("\\Archive", "\\Junk")
    )
    assert one(b"a CREATE X (USE ())\r\n") == c.Create("a", "X", ())
    bad(b"a CREATE X (FOO (\\All))\r\n")
    assert one(b"a DELETE foo\r\n") == c.Delete("a", "foo")
    assert one(b"a RENAME foo bar\r\n") == c.Rename("a", "foo", "bar")
    assert one(b"a SUBSCRIBE foo\r\n") == c.Subscribe("a", "foo")
    assert one(b"a UNSUBSCRIBE foo\r\n") == c.Unsubscribe("a", "foo")
    bad(b'a DELETE ""\r\n')


def test_mailbox_modified_utf7_and_utf8() -> None:
    assert one(b"a SELECT &ZeVnLIqe-\r\n") == c.Select("a", "日本語")
    assert one(b"a CREATE Entw&APw-rfe\r\n") == c.Create("a", "Entwürfe")
    assert one(b"a CREATE a&-b\r\n") == c.Create("a", "a&b")
    # invalid modified UTF-7 (RFC 3501 §5.1.3) in a well-formed atom parses, kept as sent and
    # marked: no mailbox has that name, so the command says NO, not BAD (as Dovecot)
    for name in (b"&Jjo", b"&Jjo!-", b"&AGE-", b"&ZeVnLIqe-&ZeVnLIqe-", b"&U,BTFw=-"):
        got = one(b"a SELECT " + name + b"\r\n")
        assert isinstance(got, c.Select) and isinstance(got.mailbox, c.UndecodableName), name
        assert got.mailbox == name.decode() and got.mailbox.reason, name
    # raw UTF-8 needs UTF8=ACCEPT (RFC 6855 §3); then it is taken as it is
    bad('a SELECT "Entwürfe"\r\n'.encode())
    assert one('a SELECT "Entwürfe"\r\n'.encode(), utf8=True) == c.Select("a", "Entwürfe")
    assert one(b"a SELECT &ZeVnLIqe-\r\n", utf8=True) == c.Select("a", "&ZeVnLIqe-")


def test_list_basic_and_extended() -> None:
    assert one(b'a LIST "" "*"\r\n') == c.List("a", "", ("*",))
    assert one(b"a LIST ~/Mail/ %\r\n") == c.List("a", "~/Mail/", ("%",))
    assert one(b'a LIST "" INBOX/%/x]\r\n') == c.List("a", "", ("INBOX/%/x]",))
    # RFC 5258 §5 examples
    assert one(b'A02 LIST (SUBSCRIBED) "" "*"\r\n') == c.List(
        "A02", "", ("*",), select_options=("SUBSCRIBED",), extended=True
    )
    assert one(b'A03 LIST () "" "%" RETURN (CHILDREN)\r\n') == c.List(
        "A03", "", ("%",), return_options=("CHILDREN",), extended=True
    )
    assert one(b'A04 LIST (REMOTE SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "Drafts" Sent/%)\r\n') == c.List(
        "A04",
        "",
        ("INBOX", "Drafts", "Sent/%"),
        select_options=("REMOTE", "SUBSCRIBED", "RECURSIVEMATCH"),
        extended=True,
    )
    # RFC 5819 §3 LIST-STATUS and RFC 6154 SPECIAL-USE
    assert one(b'a LIST (SPECIAL-USE) "" "*" RETURN (SUBSCRIBED SPECIAL-USE STATUS (MESSAGES UNSEEN SIZE))\r\n') == c.List(
        "a",
        "",
        ("*",),
        select_options=("SPECIAL-USE",),
        return_options=("SUBSCRIBED", "SPECIAL-USE", "STATUS"),
        status_items=("MESSAGES", "UNSEEN", "SIZE"),
        extended=True,
    )
    assert one(b'a LIST "" "*" RETURN ()\r\n') == c.List("a", "", ("*",), extended=True)
    bad(b'a LIST (RECURSIVEMATCH) "" "*"\r\n')  # RFC 5258 §3
    bad(b'a LIST (FOO) "" "*"\r\n')
    bad(b'a LIST "" "*" RETURN (BAR)\r\n')
    bad(b'a LIST "" "*" RETURN (STATUS (BOGUS))\r\n')
    bad(b'a LIST "" ()\r\n')
    bad(b'a LIST ""\r\n')


def test_lsub_status_namespace() -> None:
    assert one(b'a LSUB "" "*"\r\n') == c.Lsub("a", "", "*")
    assert one(b"a STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT)\r\n") == c.Status(
        "a", "INBOX", ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT")
    )
    assert one(b"a STATUS blurdybloop (highestmodseq appendlimit)\r\n") == c.Status(
        "a", "blurdybloop", ("HIGHESTMODSEQ", "APPENDLIMIT")
    )
    bad(b"a STATUS INBOX ()\r\n")
    bad(b"a STATUS INBOX (MESSAGES BOGUS)\r\n")
    bad(b"a STATUS INBOX MESSAGES\r\n")


# -- APPEND -------------------------------------------------------------------------------------

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


def test_append_forms() -> None:
    lit = b"{%d}\r\n" % len(MSG) + MSG
    assert items(b"a APPEND INBOX " + lit + b"\r\n") == [
        c.Continuation("a"),
        c.Append("a", "INBOX", (c.AppendMessage(MSG),)),
    ]
    got = items(b'a APPEND saved-messages (\\Seen $Forwarded) "17-Jul-1996 02:44:25 -0700" ' + lit + b"\r\n")
    tz = datetime.timezone(-datetime.timedelta(hours=7))
    assert got[-1] == c.Append(
        "a",
        "saved-messages",
        (c.AppendMessage(MSG, ("\\Seen", "$Forwarded"), datetime.datetime(1996, 7, 17, 2, 44, 25, tzinfo=tz)),),
    )
    # day-fixed with a leading space (RFC 9051 §9 date-day-fixed)
    got = items(b'a APPEND INBOX () " 7-Jul-1996 02:44:25 +0000" {1+}\r\nx\r\n')
    assert got == [
        c.Append(
            "a",
            "INBOX",
            (c.AppendMessage(b"x", (), datetime.datetime(1996, 7, 7, 2, 44, 25, tzinfo=datetime.UTC)),),
        )
    ]


def test_append_multiappend_literal8_and_utf8() -> None:
    # RFC 3502 MULTIAPPEND, RFC 3516 literal8, RFC 6855 UTF8 (~{n})
    data = b"a APPEND INBOX (\\Seen) {3+}\r\none ~{4+}\r\nt\x00wo UTF8 (~{5+}\r\nthree) {4+}\r\nfour\r\n"
    assert items(data) == [
        c.Append(
            "a",
            "INBOX",
            (
                c.AppendMessage(b"one", ("\\Seen",)),
                c.AppendMessage(b"t\x00wo", binary=True),
                c.AppendMessage(b"three", binary=True, utf8=True),
                c.AppendMessage(b"four"),
            ),
        )
    ]


def test_append_errors() -> None:
    bad(b"a APPEND INBOX\r\n")
    bad(b'a APPEND INBOX "hello"\r\n')  # message data must be a literal
    assert items(b"a APPEND INBOX {3+}\r\na\x00b\r\n")[0] == c.ProtocolError(
        "a", "BAD", "NUL in literal (use literal8)"
    )
    bad(b"a APPEND INBOX UTF8 ({3+}\r\nabc)\r\n")  # UTF8 needs literal8
    bad(b'a APPEND INBOX "99-Jul-1996 02:44:25 -0700" {1+}\r\nx\r\n')
    bad(b"a APPEND INBOX (\\Seen {1+}\r\nx\r\n")


# -- SEARCH -------------------------------------------------------------------------------------


def search_key(criteria: bytes, **kw: bool) -> c.SearchKey:
    got = one(b"a SEARCH " + criteria + b"\r\n", **kw)
    assert isinstance(got, c.Search), got
    return got.key


D = datetime.date


@pytest.mark.parametrize(
    ("criteria", "key"),
    [
        (b"ALL", c.SearchAll()),
        (b"ANSWERED", c.SearchFlag("\\Answered", True)),
        (b"UNANSWERED", c.SearchFlag("\\Answered", False)),
        (b"DELETED", c.SearchFlag("\\Deleted", True)),
        (b"UNDELETED", c.SearchFlag("\\Deleted", False)),
        (b"DRAFT", c.SearchFlag("\\Draft", True)),
        (b"UNDRAFT", c.SearchFlag("\\Draft", False)),
        (b"FLAGGED", c.SearchFlag("\\Flagged", True)),
        (b"UNFLAGGED", c.SearchFlag("\\Flagged", False)),
        (b"SEEN", c.SearchFlag("\\Seen", True)),
        (b"unseen", c.SearchFlag("\\Seen", False)),
        (b"RECENT", c.SearchFlag("\\Recent", True)),
        (b"OLD", c.SearchFlag("\\Recent", False)),
        (b"NEW", c.SearchAnd((c.SearchFlag("\\Recent", True), c.SearchFlag("\\Seen", False)))),
        (b"KEYWORD $Junk", c.SearchFlag("$Junk", True)),
        (b"UNKEYWORD $Junk", c.SearchFlag("$Junk", False)),
        (b"BCC bob", c.SearchText("BCC", "bob")),
        (b'BODY "hello world"', c.SearchText("BODY", "hello world")),
        (b"CC bob", c.SearchText("CC", "bob")),
        (b"FROM smith", c.SearchText("FROM", "smith")),
        (b"SUBJECT {5+}\r\nhello", c.SearchText("SUBJECT", "hello")),
        (b"TEXT x", c.SearchText("TEXT", "x")),
        (b"TO x", c.SearchText("TO", "x")),
        (b'HEADER Message-ID "<x@y>"', c.SearchHeader("MESSAGE-ID", "<x@y>")),
        (b'HEADER "List-Id" ""', c.SearchHeader("LIST-ID", "")),
        (b"BEFORE 1-Feb-1994", c.SearchDate("BEFORE", D(1994, 2, 1))),
        (b'ON "01-feb-1994"', c.SearchDate("ON", D(1994, 2, 1))),
        (b"SINCE 31-Dec-2023", c.SearchDate("SINCE", D(2023, 12, 31))),
        (b"SENTBEFORE 1-Jan-2000", c.SearchDate("SENTBEFORE", D(2000, 1, 1))),
        (b"SENTON 1-Jan-2000", c.SearchDate("SENTON", D(2000, 1, 1))),
        (b"SENTSINCE 1-Jan-2000", c.SearchDate("SENTSINCE", D(2000, 1, 1))),
        (b"LARGER 10000", c.SearchSize(True, 10000)),
        (b"SMALLER 5000000000", c.SearchSize(False, 5000000000)),
        (b"UID 1:5,7,9:*", c.SearchSeq(S((1, 5), (7, 7), (9, None)), uid=True)),
        (b"2:4,*", c.SearchSeq(S((2, 4), (None, None)), uid=False)),
        (b"$", c.SearchSeq(SequenceSet(saved=True), uid=False)),
        (b"UID $", c.SearchSeq(SequenceSet(saved=True), uid=True)),
        (b"NOT SEEN", c.SearchNot(c.SearchFlag("\\Seen", True))),
        (b"OR SEEN FLAGGED", c.SearchOr(c.SearchFlag("\\Seen", True), c.SearchFlag("\\Flagged", True))),
        (b"MODSEQ 620162338", c.SearchModseq(620162338)),
        (b'MODSEQ "/flags/\\\\draft" all 620162338', c.SearchModseq(620162338, "\\draft", "all")),
        (b"MODSEQ 0", c.SearchModseq(0)),
        (b"OLDER 3600", c.SearchAge(True, 3600)),
        (b"YOUNGER 60", c.SearchAge(False, 60)),
        (b"(SEEN)", c.SearchAnd((c.SearchFlag("\\Seen", True),))),
        (
            b"OR (FROM a NOT (TO b)) NOT NOT 5",
            c.SearchOr(
                c.SearchAnd((c.SearchText("FROM", "a"), c.SearchNot(c.SearchAnd((c.SearchText("TO", "b"),))))),
                c.SearchNot(c.SearchNot(c.SearchSeq(S((5, 5)), uid=False))),
            ),
        ),
        (
            b"DELETED FROM \"SMITH\" SINCE 1-Feb-1994",
            c.SearchAnd(
                (c.SearchFlag("\\Deleted", True), c.SearchText("FROM", "SMITH"), c.SearchDate("SINCE", D(1994, 2, 1)))
            ),
        ),
    ],
)
def test_search_keys(criteria: bytes, key: c.SearchKey) -> None:
    assert search_key(criteria) == key


def test_search_charset_return_and_uid() -> None:
    got = one(b"a UID SEARCH RETURN (MIN MAX COUNT ALL SAVE) CHARSET utf-8 SUBJECT \"\xc3\xa9t\xc3\xa9\"\r\n")
    assert got == c.Search(
        "a", c.SearchText("SUBJECT", "été"), uid=True, charset="UTF-8", return_options=("MIN", "MAX", "COUNT", "ALL", "SAVE")
    )
    assert one(b"a SEARCH RETURN () ALL\r\n") == c.Search("a", c.SearchAll(), return_options=())
    # literals decode by the named charset
    got = one(b"a SEARCH CHARSET ISO-8859-1 TEXT {3+}\r\n\xe9t\xe9\r\n")
    assert got == c.Search("a", c.SearchText("TEXT", "été"), charset="ISO-8859-1")
    got = one(b"a SEARCH CHARSET X-UNKNOWN ALL\r\n")
    assert got == c.ProtocolError("a", "NO", "unsupported charset X-UNKNOWN", "BADCHARSET (US-ASCII UTF-8)")
    bad(b"a SEARCH CHARSET US-ASCII TEXT {2+}\r\n\xe9\xe9\r\n")
    bad(b"a SEARCH TEXT {2+}\r\n\xff\xfe\r\n")  # invalid UTF-8 (the default)


@pytest.mark.parametrize(
    "criteria",
    [b"", b"BOGUS", b"FROM", b"OR SEEN", b"NOT", b"(SEEN", b"SEEN)", b"()", b"BEFORE 32-Jan-2020",
     b"BEFORE 1-Foo-2020", b"LARGER x", b"UID", b"0", b"1:0x", b"MODSEQ \"/x\" all 1", b"MODSEQ \"/flags/\\\\Seen\" some 1",
     b"RETURN (FOO) ALL", b"HEADER \"a:b\" x", b"KEYWORD", b"4294967296", b"SEEN  SEEN"],
)
def test_search_errors(criteria: bytes) -> None:
    bad(b"a SEARCH " + criteria + b"\r\n")


# -- FETCH --------------------------------------------------------------------------------------


def fetch(spec: bytes, uid: bool = False) -> c.Fetch:
    got = one(b"a " + (b"UID " if uid else b"") + b"FETCH " + spec + b"\r\n")
    assert isinstance(got, c.Fetch), got
    return got


A = FetchAttr


def test_fetch_macros() -> None:
    assert fetch(b"1 ALL").items == (A("FLAGS"), A("INTERNALDATE"), A("RFC822.SIZE"), A("ENVELOPE"))
    assert fetch(b"1 fast").items == (A("FLAGS"), A("INTERNALDATE"), A("RFC822.SIZE"))
    f = fetch(b"1 FULL")
    assert f.macro == "FULL" and f.items[-1] == A("BODY")


@pytest.mark.parametrize(
    ("spec", "attr", "response_name"),
    [
        (b"ENVELOPE", A("ENVELOPE"), "ENVELOPE"),
        (b"FLAGS", A("FLAGS"), "FLAGS"),
        (b"INTERNALDATE", A("INTERNALDATE"), "INTERNALDATE"),
        (b"RFC822", A("RFC822"), "RFC822"),
        (b"RFC822.HEADER", A("RFC822.HEADER"), "RFC822.HEADER"),
        (b"RFC822.SIZE", A("RFC822.SIZE"), "RFC822.SIZE"),
        (b"RFC822.TEXT", A("RFC822.TEXT"), "RFC822.TEXT"),
        (b"BODY", A("BODY"), "BODY"),
        (b"BODYSTRUCTURE", A("BODYSTRUCTURE"), "BODYSTRUCTURE"),
        (b"UID", A("UID"), "UID"),
        (b"MODSEQ", A("MODSEQ"), "MODSEQ"),
        (b"BODY[]", A("BODY", Section()), "BODY[]"),
        (b"body.peek[]", A("BODY", Section(), peek=True), "BODY[]"),
        (b"BODY[]<0.2048>", A("BODY", Section(), (0, 2048)), "BODY[]<0>"),
        (b"BODY[HEADER]", A("BODY", Section((), "HEADER")), "BODY[HEADER]"),
        (b"BODY[TEXT]<100.5>", A("BODY", Section((), "TEXT"), (100, 5)), "BODY[TEXT]<100>"),
        (
            b"BODY.PEEK[HEADER.FIELDS (DATE FROM)]",
            A("BODY", Section((), "HEADER.FIELDS", ("DATE", "FROM")), peek=True),
            "BODY[HEADER.FIELDS (DATE FROM)]",
        ),
        (
            b'BODY[HEADER.FIELDS.NOT ("X-Spam" {4+}\r\nX-Ab)]',
            A("BODY", Section((), "HEADER.FIELDS.NOT", ("X-SPAM", "X-AB"))),
            "BODY[HEADER.FIELDS.NOT (X-SPAM X-AB)]",
        ),
        (b"BODY[1]", A("BODY", Section((1,))), "BODY[1]"),
        (b"BODY[4.2.2.1]", A("BODY", Section((4, 2, 2, 1))), "BODY[4.2.2.1]"),
        (b"BODY[3.HEADER]", A("BODY", Section((3,), "HEADER")), "BODY[3.HEADER]"),
        (b"BODY[3.1.MIME]", A("BODY", Section((3, 1), "MIME")), "BODY[3.1.MIME]"),
        (b"BODY[2.TEXT]", A("BODY", Section((2,), "TEXT")), "BODY[2.TEXT]"),
        (
            b"BODY[2.HEADER.FIELDS (SUBJECT)]",
            A("BODY", Section((2,), "HEADER.FIELDS", ("SUBJECT",))),
            "BODY[2.HEADER.FIELDS (SUBJECT)]",
        ),
        (b"BINARY[]", A("BINARY", Section()), "BINARY[]"),
        (b"BINARY.PEEK[1.2]<0.10>", A("BINARY", Section((1, 2)), (0, 10), peek=True), "BINARY[1.2]<0>"),
        (b"BINARY.SIZE[3]", A("BINARY.SIZE", Section((3,))), "BINARY.SIZE[3]"),
    ],
)
def test_fetch_items(spec: bytes, attr: FetchAttr, response_name: str) -> None:
    got = fetch(b"1:* " + spec)
    assert got.items == (attr,)
    assert got.items[0].response_name() == response_name
    assert fetch(b"1 (FLAGS " + spec + b")").items == (A("FLAGS"), attr)


def test_fetch_modifiers_and_sets() -> None:
    f = fetch(b"2:4,7,* (FLAGS) (CHANGEDSINCE 12345)")
    assert f.sequence_set == S((2, 4), (7, 7), (None, None)) and f.changedsince == 12345
    f = fetch(b"300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)", uid=True)
    assert f.uid and f.vanished and f.changedsince == 12345
    assert fetch(b"$ UID").sequence_set == SequenceSet(saved=True)
    assert fetch(b"4294967295 UID").sequence_set == S((4294967295, 4294967295))
    assert fetch(b"5:2 UID").sequence_set.ranges[0].bounds(10) == (2, 5)


@pytest.mark.parametrize(
    "spec",
    [b"1", b"1 ()", b"1 BOGUS", b"1 BODY[", b"1 BODY[HEADER.FIELDS]", b"1 BODY[MIME]", b"1 BODY[0]",
     b"1 BODY[1.]", b"1 BODY[]<0>", b"1 BODY[]<0.0>", b"1 BODY.PEEK", b"1 BINARY[HEADER]", b"1 BINARY.SIZE[1]<0.1>",
     b"0 FLAGS", b"1:4294967296 FLAGS", b"1, FLAGS", b"1 (FLAGS) (VANISHED)", b"1 (FLAGS) (CHANGEDSINCE 0)",
     b"1 (FLAGS) (CHANGEDSINCE 1 CHANGEDSINCE 2)", b"1 (FLAGS) (FOO)", b"1 FLAGS ENVELOPE", b"1 RFC822.FOO",
     b"1 (FLAGS", b"1 FLAGS)", b"1 BODY[HEADER.FIELDS (a:b)]", b"a:b FLAGS", b"1 (FLAGS) (CHANGEDSINCE 9223372036854775808)"],
)
def test_fetch_errors(spec: bytes) -> None:
    bad(b"a FETCH " + spec + b"\r\n")


def test_vanished_requires_uid_fetch() -> None:
    assert bad(b"a FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n").text == "VANISHED is only allowed with UID FETCH"
    assert bad(b"a UID FETCH 1 (FLAGS) (VANISHED)\r\n").text == "VANISHED requires CHANGEDSINCE"
    assert bad(b"a UID FETCH 1 (FLAGS) (VANISHED CHANGEDSINCE 1 VANISHED)\r\n").text == "duplicate fetch modifier VANISHED"


# -- STORE, COPY, MOVE --------------------------------------------------------------------------


def test_store() -> None:
    assert one(b"a STORE 2:4 +FLAGS (\\Deleted)\r\n") == c.Store(
        "a", S((2, 4)), c.StoreMode.ADD, ("\\Deleted",)
    )
    assert one(b"a STORE 1 -FLAGS.SILENT \\seen $Junk\r\n") == c.Store(
        "a", S((1, 1)), c.StoreMode.REMOVE, ("\\Seen", "$Junk"), silent=True
    )
    assert one(b"a UID STORE 1:* FLAGS ()\r\n") == c.Store(
        "a", S((1, None)), c.StoreMode.REPLACE, (), uid=True
    )
    # RFC 7162 §3.1.3 example
    assert one(b"d105 STORE 7,5,9 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT (\\Deleted)\r\n") == c.Store(
        "d105", S((7, 7), (5, 5), (9, 9)), c.StoreMode.ADD, ("\\Deleted",), silent=True, unchangedsince=320162338
    )
    assert one(b"a STORE 1 (UNCHANGEDSINCE 0) FLAGS (x)\r\n") == c.Store(
        "a", S((1, 1)), c.StoreMode.REPLACE, ("x",), unchangedsince=0
    )
    for spec in (b"1 FLAGS", b"1 +FLAG (x)", b"1 FLAGS.LOUD (x)", b"1 (FOO 1) FLAGS (x)", b"1 *FLAGS (x)",
                 b"1 FLAGS (\\)", b"1 FLAGS (a b", b"FLAGS (x)"):
        bad(b"a STORE " + spec + b"\r\n")


def test_copy_move() -> None:
    assert one(b"a COPY 2:4 MEETING\r\n") == c.Copy("a", S((2, 4)), "MEETING")
    assert one(b"a UID COPY 1,3 \"Sent Items\"\r\n") == c.Copy("a", S((1, 1), (3, 3)), "Sent Items", uid=True)
    assert one(b"a MOVE 1:* Trash\r\n") == c.Move("a", S((1, None)), "Trash")
    assert one(b"a UID MOVE 42 {5+}\r\nTrash\r\n") == c.Move("a", S((42, 42)), "Trash", uid=True)
    bad(b"a MOVE Trash\r\n")
    bad(b"a UID LIST \"\" *\r\n")
    bad(b"a UID\r\n")


def test_unknown_and_malformed_commands() -> None:
    assert one(b"a XYZZY\r\n") == c.ProtocolError("a", "BAD", "unknown command XYZZY")
    assert one(b"a SETACL INBOX bob lr\r\n") == c.ProtocolError("a", "BAD", "unknown command SETACL")
    assert one(b"a\r\n") == c.ProtocolError("a", "BAD", "missing command")
    assert one(b"\r\n") == c.ProtocolError(None, "BAD", "empty command line")
    assert one(b"+a NOOP\r\n") == c.ProtocolError(None, "BAD", "invalid tag")
    assert one(b"* NOOP\r\n") == c.ProtocolError(None, "BAD", "invalid tag")
    assert one(b"a  NOOP\r\n") == c.ProtocolError("a", "BAD", "missing command")


def test_pipelined_commands_in_one_read() -> None:
    data = b"a NOOP\r\nb SELECT INBOX\r\nc FETCH 1 FLAGS\r\nd LOGOUT\r\n"
    got = items(data)
    assert [type(x) for x in got] == [c.Noop, c.Select, c.Fetch, c.Logout]
    assert [getattr(x, "tag", None) for x in got] == ["a", "b", "c", "d"]


def test_sequence_set_helpers() -> None:
    s = S((1, 3), (7, None))
    assert str(s) == "1:3,7:*"
    assert list(s.iter_bounds(10)) == [(1, 3), (7, 10)]
    assert s.contains(9, 10) and not s.contains(5, 10)
    assert str(SequenceSet(saved=True)) == "$"
    assert str(SequenceSet.of(4, 5)) == "4,5"
