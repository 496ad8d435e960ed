"""FETCH items (ENVELOPE, BODYSTRUCTURE, BODY[section]<partial>, RFC822.*, INTERNALDATE) and SEARCH keys, UTF-8 included."""

from __future__ import annotations

import email
import email.policy
import imaplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imap_harness import ImapServer, corpus

MULTI = (
    "From: Zoë Bär <zoe@example.test>\r\nTo: alice@example.test, Carl <carl@example.test>\r\n"
    "Cc: dora@example.test\r\nSubject: =?utf-8?q?R=C3=A9union_pr=C3=A9vue?=\r\n"
    "Date: Tue, 3 Mar 2020 10:00:00 +0100\r\nMessage-ID: <multi@example.test>\r\n"
    "X-Project: Aurora\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
    "preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    "La r=C3=A9union est d=C3=A9plac=C3=A9e =C3=A0 jeudi.\r\n"
    "--XX\r\nContent-Type: message/rfc822\r\n\r\n"
    "From: inner@example.test\r\nSubject: inner\r\n\r\ninner body\r\n"
    "--XX--\r\n"
).encode()
PLAIN = (
    b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: budget 2021\r\n"
    b"Date: Fri, 1 Jan 2021 09:00:00 +0000\r\nMessage-ID: <plain@example.test>\r\n\r\n"
    b"The numbers are in.\r\n"
)


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        s.deliver(MULTI)
        s.deliver(PLAIN, flags=("\\Seen", "$Work"))
        yield s


def _one(c: object, line: bytes) -> bytes:
    from tests.imap_harness import RawClient
    assert isinstance(c, RawClient)
    out = c.cmd(line)
    assert out[-1].split(b" ")[1] == b"OK", out
    return out[0]


def test_envelope_and_bodystructure(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    env = _one(c, b"a FETCH 1 ENVELOPE")
    # 8-bit header text goes out as it is stored, in a literal (Dovecot does the same)
    zoe = b'(({9}\r\nZo\xc3\xab B\xc3\xa4r NIL "zoe" "example.test"))'
    assert env == (
        b'* 1 FETCH (ENVELOPE ("Tue, 3 Mar 2020 10:00:00 +0100" "=?utf-8?q?R=C3=A9union_pr=C3=A9vue?=" '
        + zoe + b" " + zoe + b" " + zoe + b' ((NIL NIL "alice" "example.test")("Carl" NIL "carl" "example.test")) '
        b'((NIL NIL "dora" "example.test")) NIL NIL "<multi@example.test>"))'
    )
    bs = _one(c, b"b FETCH 1 BODYSTRUCTURE")
    assert bs.startswith(b'* 1 FETCH (BODYSTRUCTURE (("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" ')
    assert b'("message" "rfc822" NIL NIL NIL "7bit" ' in bs and b'"mixed" ("boundary" "XX")' in bs
    body = _one(c, b"c FETCH 1 BODY")
    assert b"BODY ((" in body and b'"mixed")' in body  # BODY: no extension data
    c.close()


def test_body_sections_and_partial(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    out = _one(c, b"a FETCH 1 (BODY.PEEK[1] BODY.PEEK[2.HEADER] BODY.PEEK[1.MIME])")
    assert b"BODY[1] {52}\r\nLa r=C3=A9union est d=C3=A9plac=C3=A9e =C3=A0 jeudi. " in out
    assert b"BODY[2.HEADER] {44}\r\nFrom: inner@example.test\r\nSubject: inner\r\n\r\n" in out
    assert b"BODY[1.MIME] {" in out and b"Content-Type: text/plain; charset=utf-8\r\n" in out
    out = _one(c, b"b FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODY.PEEK[TEXT]<4.7>)")
    assert b"BODY[HEADER.FIELDS (SUBJECT FROM)] {48}\r\nFrom: bob@example.test\r\nSubject: budget 2021\r\n\r\n" in out
    assert b"BODY[TEXT]<4> {7}\r\nnumbers" in out
    out = _one(c, b"c FETCH 2 (BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT FROM DATE TO)])")
    assert out.endswith(b"{36}\r\nMessage-ID: <plain@example.test>\r\n\r\n)")
    out = _one(c, b"d FETCH 2 (RFC822.HEADER RFC822.SIZE INTERNALDATE FLAGS)")
    assert b"RFC822.SIZE %d" % len(PLAIN) in out and b'INTERNALDATE "' in out and b"$Work" in out
    out = _one(c, b"e FETCH 1 (BODY.PEEK[]<0.4>)")
    assert out == b"* 1 FETCH (BODY[]<0> {4}\r\nFrom)"
    assert srv.view_flags("INBOX")[1] == ()  # PEEK leaves \Seen alone
    out = _one(c, b"f FETCH 1 RFC822.TEXT")  # RFC822.TEXT sets \Seen
    assert "\\Seen" in srv.view_flags("INBOX")[1]
    c.close()


def test_fetch_corpus_messages_parse_back(srv: ImapServer) -> None:
    """Real messages come back byte for byte, and their headers parse the same."""
    msgs = corpus(20)
    for raw in msgs:
        srv.deliver(raw)
    m = srv.imap()
    m.select("INBOX", readonly=True)
    typ, data = m.fetch("3:22", "(RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK"
    bodies = [d[1] for d in data if isinstance(d, tuple)]
    assert bodies == msgs
    typ, data = m.fetch("3:22", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    for raw, d in zip(msgs, [d for d in data if isinstance(d, tuple)], strict=True):
        want = email.message_from_bytes(raw, policy=email.policy.compat32)["Message-ID"]
        got = email.message_from_bytes(d[1], policy=email.policy.compat32)["Message-ID"]
        assert got == want
    m.logout()


@pytest.mark.parametrize(("key", "want"), [
    (b"ALL", b"1 2"),
    (b"SEEN", b"2"),
    (b"UNSEEN", b"1"),
    (b"KEYWORD $Work", b"2"),
    (b"UNKEYWORD $Work", b"1"),
    (b"FROM zoe", b"1"),
    (b"TO carl", b"1"),
    (b"CC dora", b"1"),
    (b"SUBJECT budget", b"2"),
    (b'HEADER X-Project "aurora"', b"1"),
    (b"HEADER X-Project \"\"", b"1"),
    (b"BODY numbers", b"2"),
    (b"TEXT inner", b"1"),
    (b"SENTBEFORE 1-Jan-2021", b"1"),
    (b"SENTON 1-Jan-2021", b"2"),
    (b"SENTSINCE 2-Jan-2021", b""),
    (b"LARGER 400", b"1"),
    (b"SMALLER 400", b"2"),
    (b"OR FROM bob SUBJECT nothing", b"2"),
    (b"NOT FROM bob", b"1"),
    (b"(SEEN FROM bob)", b"2"),
    (b"UID 2", b"2"),
    (b"2:*", b"2"),
    (b"SINCE 1-Jan-2000", b"1 2"),
    (b"BEFORE 1-Jan-2000", b""),
    (b"YOUNGER 3600", b"1 2"),
    (b"OLDER 3600", b""),
    (b"DELETED", b""),
    (b"NEW", b"1"),  # both arrived before any session selected INBOX: recent (RFC 3501 §2.3.2)
])
def test_search_keys(srv: ImapServer, key: bytes, want: bytes) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    out = c.cmd(b"a SEARCH " + key)
    assert out[0] == (b"* SEARCH " + want if want else b"* SEARCH"), key
    assert out[-1] == b"a OK SEARCH completed"
    c.close()


def test_search_utf8(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    # decoded header text and decoded body text, case-insensitively (RFC 9051 §6.4.4)
    assert c.cmd("a SEARCH CHARSET UTF-8 SUBJECT \"réunion\"".encode())[0] == b"* SEARCH 1"
    assert c.cmd("b SEARCH CHARSET UTF-8 BODY \"DÉPLACÉE\"".encode())[0] == b"* SEARCH 1"
    assert c.cmd("c SEARCH CHARSET UTF-8 FROM \"bär\"".encode())[0] == b"* SEARCH 1"
    lit = "déplacée".encode()
    c.send(b"d SEARCH CHARSET UTF-8 TEXT {%d+}\r\n" % len(lit) + lit + b"\r\n")
    assert c.until(b"d")[0] == b"* SEARCH 1"
    latin = "réunion".encode("iso-8859-1")
    c.send(b"e SEARCH CHARSET ISO-8859-1 SUBJECT {%d+}\r\n" % len(latin) + latin + b"\r\n")
    assert c.until(b"e")[0] == b"* SEARCH 1"
    out = c.cmd(b"f SEARCH CHARSET X-UNKNOWN SUBJECT x")
    assert out[-1].startswith(b"f NO [BADCHARSET")
    c.close()


def test_imaplib_uid_search_and_fetch(srv: ImapServer) -> None:
    m = srv.imap()
    m.select("INBOX")
    typ, data = m.uid("SEARCH", None, "UNSEEN")
    assert (typ, data) == ("OK", [b"1"])
    with pytest.raises(imaplib.IMAP4.error):
        m.fetch("7", "(FLAGS)")  # no message 7: BAD (RFC 9051 §9 seq-number)
    typ, data = m.uid("FETCH", "7", "(FLAGS)")  # no UID 7: nothing, OK
    assert typ == "OK" and data == [None]
    m.logout()


def test_bodies_are_read_in_few_trips_off_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FETCH and text SEARCH over many messages read their bytes in batches (one thread hop per
    message made every FETCH of a busy mailbox slow: imaptest's stress run measured 150 ms)."""
    from eventmail.store import Account

    trips: list[int] = []
    real_many, real_one = Account.read_messages, Account.read_message

    async def many(self: Account, blob_ids: list[bytes]) -> list[bytes]:
        trips.append(len(blob_ids))
        return await real_many(self, blob_ids)

    async def one(self: Account, blob_id: bytes) -> bytes:
        trips.append(1)
        return await real_one(self, blob_id)

    monkeypatch.setattr(Account, "read_messages", many)
    monkeypatch.setattr(Account, "read_message", one)
    with ImapServer(tmp_path) as srv:
        for i in range(150):
            srv.deliver(f"From: a@example.test\r\nSubject: m{i}\r\n\r\nbody {i}\r\n".encode())
        m = srv.imap()
        m.select("INBOX", readonly=True)
        typ, data = m.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK" and sum(1 for d in data if isinstance(d, tuple)) == 150
        assert trips == [64, 64, 22]
        trips.clear()
        typ, data = m.search(None, "BODY", '"body 149"')
        assert typ == "OK" and data[0] == b"150"
        assert trips == [64, 64, 22]
        m.logout()
