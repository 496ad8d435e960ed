"""IMAP extensions over real sockets: ENABLE, NAMESPACE, ID, UNSELECT, UIDPLUS, MOVE, LITERAL+/-, SPECIAL-USE,
LIST-EXTENDED, LIST-STATUS, ESEARCH, BINARY, APPENDLIMIT, UTF8=ACCEPT, SASL-IR, AUTHENTICATE, COMPRESS=DEFLATE."""

from __future__ import annotations

import base64
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import scramp
from imapclient import IMAPClient

from eventmail.imap import Limits
from tests.imap_harness import HOST, PASSWORD, USER, ImapServer, RawClient, simple_message


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        yield s


def _client(srv: ImapServer) -> IMAPClient:
    c = IMAPClient(HOST, port=srv.plain_port, ssl=False, timeout=30)
    c.login(USER, PASSWORD)
    return c


def _status(lines: list[bytes]) -> bytes:
    return lines[-1].split(b" ", 2)[1]


# ------------------------------------------------------------------ ENABLE, NAMESPACE, ID


def test_enable(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    # RFC 5161 §3.1: only capabilities newly enabled are listed; unknown ones are ignored
    assert c.cmd(b"e ENABLE CONDSTORE X-UNKNOWN") == [b"* ENABLED CONDSTORE", b"e OK ENABLE completed"]
    assert c.cmd(b"f ENABLE CONDSTORE") == [b"* ENABLED", b"f OK ENABLE completed"]
    assert c.cmd(b"g ENABLE QRESYNC UTF8=ACCEPT")[0] == b"* ENABLED QRESYNC UTF8=ACCEPT"
    # with CONDSTORE on, SELECT reports HIGHESTMODSEQ and FETCH carries MODSEQ
    srv.deliver(simple_message())
    out = c.cmd(b"s SELECT INBOX")
    assert any(b"[HIGHESTMODSEQ " in line for line in out)
    assert re.fullmatch(rb"\* 1 FETCH \(FLAGS \(\\Recent\) MODSEQ \(\d+\)\)", c.cmd(b"f FETCH 1 (FLAGS)")[0])
    # ENABLE before login is a BAD (RFC 5161 §3.1: authenticated state only)
    d = srv.raw()
    assert _status(d.cmd(b"e ENABLE CONDSTORE")) == b"BAD"
    c.close()
    d.close()


def test_imapclient_enable(srv: ImapServer) -> None:
    c = _client(srv)
    assert c.enable("CONDSTORE", "NOSUCH") == [b"CONDSTORE"]
    c.logout()


def test_namespace(srv: ImapServer) -> None:
    c = _client(srv)
    ns = c.namespace()
    assert ns.personal == (("", "/"),) and ns.other is None and ns.shared is None
    c.logout()


def test_id(srv: ImapServer) -> None:
    c = srv.raw()
    out = c.cmd(b'i ID ("name" "test-client" "version" "1")')
    assert out[0].startswith(b'* ID ("name" "eventmail"')
    assert out[-1] == b"i OK ID completed"
    assert c.cmd(b"j ID NIL")[-1] == b"j OK ID completed"  # ID works before login (RFC 2971 §3.1)
    c.close()
    ic = _client(srv)
    params = ic.id_({"name": "imapclient"})[0]
    assert dict(zip(params[::2], params[1::2], strict=True))[b"name"] == b"eventmail"
    ic.logout()


# ------------------------------------------------------------------ UNSELECT, UIDPLUS, MOVE


def test_unselect_keeps_deleted_messages_close_expunges(srv: ImapServer) -> None:
    for i in range(2):
        srv.deliver(simple_message(f"m{i}"))
    c = _client(srv)
    c.select_folder("INBOX")
    c.add_flags([1, 2], [b"\\Deleted"])
    c.unselect_folder()  # RFC 3691: no expunge
    assert len(srv.view_flags("INBOX")) == 2
    c.select_folder("INBOX")
    c.close_folder()  # RFC 9051 §6.4.1: CLOSE expunges \Deleted silently
    assert srv.view_flags("INBOX") == {}
    c.logout()


def test_uidplus(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    msg = simple_message()
    out = c.cmd(b"a APPEND INBOX {%d+}\r\n" % len(msg) + msg)
    m = re.fullmatch(rb"a OK \[APPENDUID (\d+) 1\] APPEND completed", out[-1])
    assert m is not None
    inbox_validity = m.group(1)
    c.cmd(b"b APPEND INBOX {%d+}\r\n" % len(msg) + msg)
    c.cmd(b"c APPEND INBOX {%d+}\r\n" % len(msg) + msg)
    c.cmd(b"s SELECT INBOX")
    out = c.cmd(b"d UID COPY 1:2 Archive")
    assert re.fullmatch(rb"d OK \[COPYUID \d+ 1:2 1:2\] COPY completed", out[-1])
    assert inbox_validity not in out[-1].split(b" ")[3:4]  # Archive has its own UIDVALIDITY
    # UID EXPUNGE removes only the named UIDs among the \Deleted ones (RFC 4315 §2.1)
    c.cmd(b"e STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    out = c.cmd(b"f UID EXPUNGE 2")
    assert out == [b"* 2 EXPUNGE", b"f OK EXPUNGE completed"]
    assert sorted(srv.view_flags("INBOX")) == [1, 3]
    c.close()


def test_move(srv: ImapServer) -> None:
    for i in range(3):
        srv.deliver(simple_message(f"m{i}"))
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    out = c.cmd(b"m MOVE 2:3 Drafts")
    # RFC 6851 §4.3: COPYUID in an untagged OK before the expunges
    assert re.fullmatch(rb"\* OK \[COPYUID \d+ 2:3 1:2\] moved", out[0])
    assert out[1:] == [b"* 3 EXPUNGE", b"* 2 EXPUNGE", b"m OK MOVE completed"]
    assert sorted(srv.view_flags("INBOX")) == [1]
    assert sorted(srv.view_flags("Drafts")) == [1, 2]
    assert _status(c.cmd(b"n MOVE 1 Nonexistent")) == b"NO"
    kinds = [e.WhichOneof("kind") for e in srv.events()]
    assert kinds[-1] == "messages_copied" and srv.events()[-1].messages_copied.move
    ic = _client(srv)
    ic.select_folder("Drafts")
    ic.move([1], "INBOX")
    assert sorted(srv.view_flags("INBOX")) == [1, 4]
    ic.logout()
    c.close()


# ------------------------------------------------------------------ literals


def test_literal_plus_needs_no_continuation(srv: ImapServer) -> None:
    c = srv.raw()
    assert b"LITERAL+" in c.greeting
    c.send(b"a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n")
    assert c.response().startswith(b"a OK")
    msg = simple_message()
    c.send(b"b APPEND INBOX {%d+}\r\n" % len(msg) + msg + b"\r\n")
    assert c.response().startswith(b"b OK [APPENDUID")
    c.close()


def test_synchronising_literal_gets_a_continuation(srv: ImapServer) -> None:
    c = srv.raw()
    c.send(b"a LOGIN {5}\r\n")
    assert c.response().startswith(b"+ ")
    c.send(b"alice {6}\r\n")
    assert c.response().startswith(b"+ ")
    c.send(b"secret\r\n")
    assert c.response().startswith(b"a OK")
    c.close()


def test_literal_minus(tmp_path: Path) -> None:
    with ImapServer(tmp_path, limits=Limits(literal_minus=True)) as srv:
        c = srv.raw()
        assert b"LITERAL-" in c.greeting and b"LITERAL+" not in c.greeting
        c.send(b"a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n")  # small ones are fine (RFC 7888 §4)
        assert c.response().startswith(b"a OK")
        # over 4096 octets a non-synchronising literal is a BAD, and its octets are not commands
        big = b"x" * 4097
        c.send(b"b APPEND INBOX {4097+}\r\n" + big + b"\r\n")
        assert c.response().startswith(b"b BAD")
        assert c.cmd(b"c NOOP") == [b"c OK NOOP completed"]
        assert srv.view_flags("INBOX") == {}
        c.close()


# ------------------------------------------------------------------ SPECIAL-USE, LIST-EXTENDED, LIST-STATUS


def test_special_use_and_create_special_use(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    out = c.cmd(b'l LIST "" "*"')
    assert b'* LIST (\\HasNoChildren \\Junk) "/" "Junk"' in out
    assert b'* LIST (\\HasNoChildren \\Sent) "/" "Sent"' in out
    # RFC 6154 §5.2: LIST (SPECIAL-USE) returns only mailboxes with a use
    out = c.cmd(b'm LIST (SPECIAL-USE) "" "*"')
    names = [line.rsplit(b" ", 1)[1] for line in out[:-1]]
    assert names == [b'"Archive"', b'"Drafts"', b'"Junk"', b'"Sent"', b'"Trash"']
    # RFC 6154 §3 CREATE-SPECIAL-USE
    assert re.fullmatch(rb"c OK \[MAILBOXID \(\w+\)\] CREATE completed", c.cmd(b"c CREATE Old (USE (\\Archive))")[-1])
    assert b'* LIST (\\HasNoChildren \\Archive) "/" "Old"' in c.cmd(b'n LIST "" Old')
    out = c.cmd(b"d CREATE Everything (USE (\\All))")
    assert out[-1].startswith(b"d NO [USEATTR]")
    assert c.cmd(b'o LIST "" Everything') == [b"o OK LIST completed"]
    c.close()
    ic = _client(srv)
    assert ic.find_special_folder(b"\\Junk") == "Junk"
    ic.logout()


def test_list_extended(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"a CREATE Lists/one")
    c.cmd(b"b SUBSCRIBE Lists/one")
    # RFC 5258: several patterns, selection and return options
    out = c.cmd(b'l LIST "" ("INBOX" "Lists/%")')
    assert out[:-1] == [b'* LIST (\\HasNoChildren) "/" "INBOX"', b'* LIST (\\HasNoChildren) "/" "Lists/one"']
    out = c.cmd(b'm LIST (SUBSCRIBED) "" "Lists*"')
    assert out[:-1] == [b'* LIST (\\HasNoChildren \\Subscribed) "/" "Lists/one"']
    out = c.cmd(b'n LIST (SUBSCRIBED RECURSIVEMATCH) "" "Lists"')
    assert out[:-1] == [b'* LIST (\\HasChildren) "/" "Lists" ("CHILDINFO" ("SUBSCRIBED"))']
    out = c.cmd(b'o LIST "" "*" RETURN (SUBSCRIBED CHILDREN)')
    assert b'* LIST (\\HasChildren) "/" "Lists"' in out
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" "Lists/one"' in out
    c.close()


def test_list_status(srv: ImapServer) -> None:
    srv.deliver(simple_message("a"))
    srv.deliver(simple_message("b"), flags=("\\Seen",))
    c = srv.raw()
    c.login()
    out = c.cmd(b'l LIST "" "INBOX" RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))')
    assert out == [b'* LIST (\\HasNoChildren) "/" "INBOX"', b'* STATUS "INBOX" (MESSAGES 2 UNSEEN 1 UIDNEXT 3)',
                   b"l OK LIST completed"]
    ic = _client(srv)
    assert ic.folder_status("INBOX", ["MESSAGES", "UNSEEN"]) == {b"MESSAGES": 2, b"UNSEEN": 1}
    ic.logout()
    c.close()


# ------------------------------------------------------------------ ESEARCH


def test_esearch(srv: ImapServer) -> None:
    for i in range(5):
        srv.deliver(simple_message(f"m{i}"), flags=("\\Seen",) if i % 2 else ())
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    out = c.cmd(b"a SEARCH RETURN (MIN MAX COUNT ALL) UNSEEN")
    assert out == [b'* ESEARCH (TAG "a") MIN 1 MAX 5 COUNT 3 ALL 1,3,5', b"a OK SEARCH completed"]
    out = c.cmd(b"b UID SEARCH RETURN () 2:4")
    assert out == [b'* ESEARCH (TAG "b") UID ALL 2:4', b"b OK SEARCH completed"]
    out = c.cmd(b"c SEARCH RETURN (COUNT) DELETED")
    assert out == [b'* ESEARCH (TAG "c") COUNT 0', b"c OK SEARCH completed"]
    # RFC 5182 SEARCHRES: SAVE, then use $
    assert c.cmd(b"d SEARCH RETURN (SAVE) SEEN") == [b"d OK SEARCH completed"]
    assert c.cmd(b"e FETCH $ (UID)")[:-1] == [b"* 2 FETCH (UID 2)", b"* 4 FETCH (UID 4)"]
    # a plain SEARCH stays the RFC 3501 form for an IMAP4rev1 client
    assert c.cmd(b"f SEARCH SEEN") == [b"* SEARCH 2 4", b"f OK SEARCH completed"]
    c.close()


# ------------------------------------------------------------------ BINARY, APPENDLIMIT


BINARY_MSG = (
    b"From: a@example.test\r\nSubject: bin\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode(b"\x00\x01\x02binary\xff") + b"\r\n--b--\r\n"
)


def test_binary_fetch(srv: ImapServer) -> None:
    srv.deliver(BINARY_MSG)
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    # RFC 3516: decoded content; with NUL it comes as a literal8
    out = c.cmd(b"a FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])")
    assert out[0] == b"* 1 FETCH (BINARY[2] ~{10}\r\n\x00\x01\x02binary\xff BINARY.SIZE[2] 10)"
    out = c.cmd(b"b FETCH 1 (BINARY.PEEK[2]<3.6>)")
    assert out[0] == b"* 1 FETCH (BINARY[2]<3> {6}\r\nbinary)"
    out = c.cmd(b"c FETCH 1 (BINARY.PEEK[1])")
    assert out[0] == b"* 1 FETCH (BINARY[1] {5}\r\nhello)"
    c.close()


def test_binary_append(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    msg = b"Subject: nul\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x00x\r\n"
    out = c.cmd(b"a APPEND INBOX ~{%d+}\r\n" % len(msg) + msg)
    assert out[-1].startswith(b"a OK [APPENDUID")
    c.cmd(b"s SELECT INBOX")
    assert c.cmd(b"b FETCH 1 BINARY.PEEK[1]")[0] == b"* 1 FETCH (BINARY[1] ~{5}\r\n\x00\x00x\r\n)"
    c.close()


def test_appendlimit(tmp_path: Path) -> None:
    with ImapServer(tmp_path, limits=Limits(max_append=2000)) as srv:
        c = srv.raw()
        c.login()
        caps = c.cmd(b"c CAPABILITY")[0]
        assert b" APPENDLIMIT=2000" in caps
        assert c.cmd(b'l LIST "" INBOX RETURN (STATUS (APPENDLIMIT))')[1] == b'* STATUS "INBOX" (APPENDLIMIT 2000)'
        # RFC 7889 §4: over the limit is refused with TOOBIG, before the data is sent
        c.send(b"a APPEND INBOX {2001}\r\n")
        assert c.response().startswith(b"a NO [TOOBIG]")
        msg = simple_message(body="x" * 1000)
        assert c.cmd(b"b APPEND INBOX {%d+}\r\n" % len(msg) + msg)[-1].startswith(b"b OK")
        c.close()


# ------------------------------------------------------------------ UTF8=ACCEPT


def test_utf8_accept(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    # without UTF8=ACCEPT names travel in modified UTF-7 (RFC 3501 §5.1.3)
    assert c.cmd(b"a CREATE &AMk-t&AOk-")[-1].startswith(b"a OK [MAILBOXID (")
    assert b'* LIST (\\HasNoChildren) "/" "&AMk-t&AOk-"' in c.cmd(b'l LIST "" "*"')
    assert c.cmd(b"e ENABLE UTF8=ACCEPT")[0] == b"* ENABLED UTF8=ACCEPT"
    # RFC 6855 §3: now as UTF-8 strings
    assert '* LIST (\\HasNoChildren) "/" "Été"'.encode() in c.cmd(b'm LIST "" "*"')
    assert c.cmd('b CREATE "Ünïcode"'.encode())[-1].startswith(b"b OK [MAILBOXID (")
    msg = "Subject: héllo\r\nFrom: zoë@exämple.test\r\n\r\nbody\r\n".encode()
    out = c.cmd(b"d APPEND \"\xc3\x9cn\xc3\xafcode\" UTF8 (~{%d+}\r\n" % len(msg) + msg + b")")
    assert out[-1].startswith(b"d OK [APPENDUID")
    c.cmd('s SELECT "Ünïcode"'.encode())
    env = c.cmd(b"f FETCH 1 ENVELOPE")[0]
    assert "héllo".encode() in env
    c.close()


def test_utf8_append_needs_enable(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    msg = "Subject: héllo\r\n\r\nbody\r\n".encode()
    out = c.cmd(b"d APPEND INBOX UTF8 (~{%d+}\r\n" % len(msg) + msg + b")")
    assert _status(out) == b"BAD"
    c.close()


# ------------------------------------------------------------------ SASL-IR, AUTHENTICATE


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_sasl_ir_plain(srv: ImapServer) -> None:
    c = srv.raw()
    assert b"SASL-IR" in c.greeting and b"AUTH=PLAIN" in c.greeting
    out = c.cmd(b"a AUTHENTICATE PLAIN " + _b64(b"\x00alice\x00secret"))
    assert out[-1].startswith(b"a OK")
    c.close()


def test_authenticate_plain_with_continuation(srv: ImapServer) -> None:
    c = srv.raw()
    c.send(b"a AUTHENTICATE PLAIN\r\n")
    assert c.response() == b"+ "
    c.send(_b64(b"\x00alice\x00wrong") + b"\r\n")
    assert c.response().startswith(b"a NO [AUTHENTICATIONFAILED]")
    c.send(b"b AUTHENTICATE PLAIN\r\n")
    assert c.response() == b"+ "
    c.send(b"*\r\n")  # RFC 9051 §6.2.2: the client cancels
    assert c.response().startswith(b"b BAD")
    c.send(b"c AUTHENTICATE PLAIN\r\n")
    c.response()
    c.send(_b64(b"\x00alice\x00secret") + b"\r\n")
    assert c.response().startswith(b"c OK")
    c.close()


def test_authenticate_scram_sha_256(srv: ImapServer) -> None:
    c = srv.raw()
    assert b"AUTH=SCRAM-SHA-256" in c.greeting
    client = scramp.ScramClient(["SCRAM-SHA-256"], USER, PASSWORD)
    c.send(b"a AUTHENTICATE SCRAM-SHA-256 " + _b64(client.get_client_first().encode()) + b"\r\n")
    challenge = c.response()
    assert challenge.startswith(b"+ ")
    client.set_server_first(base64.b64decode(challenge[2:]).decode())
    c.send(_b64(client.get_client_final().encode()) + b"\r\n")
    final = c.response()
    assert final.startswith(b"+ ")
    client.set_server_final(base64.b64decode(final[2:]).decode())  # the server proved it knows the key
    c.send(b"\r\n")
    assert c.response().startswith(b"a OK")
    assert c.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
    c.close()


def test_authenticate_scram_wrong_password(srv: ImapServer) -> None:
    c = srv.raw()
    client = scramp.ScramClient(["SCRAM-SHA-256"], USER, "wrong")
    c.send(b"a AUTHENTICATE SCRAM-SHA-256 " + _b64(client.get_client_first().encode()) + b"\r\n")
    client.set_server_first(base64.b64decode(c.response()[2:]).decode())
    c.send(_b64(client.get_client_final().encode()) + b"\r\n")
    resp = c.response()
    while resp.startswith(b"+ "):
        c.send(b"*\r\n")
        resp = c.response()
    assert resp.startswith(b"a NO") or resp.startswith(b"a BAD")
    assert _status(c.cmd(b"s SELECT INBOX")) == b"BAD"  # still not logged in
    c.close()


def test_imapclient_plain_login_and_oauth_less_auth(srv: ImapServer) -> None:
    ic = IMAPClient(HOST, port=srv.plain_port, ssl=False, timeout=30)
    ic.plain_login(USER, PASSWORD)
    assert ic.select_folder("INBOX")[b"EXISTS"] == 0
    ic.logout()


# ------------------------------------------------------------------ COMPRESS=DEFLATE


class _Deflated:
    """The raw client's socket with RFC 4978 DEFLATE both ways."""

    def __init__(self, raw: RawClient) -> None:
        self.raw = raw
        self.out = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inp = zlib.decompressobj(-15)
        self.buf = raw.buf  # nothing compressed is buffered yet
        raw.buf = b""

    def cmd(self, line: bytes) -> list[bytes]:
        tag = line.split(b" ", 1)[0]
        self.raw.sock.sendall(self.out.compress(line + b"\r\n") + self.out.flush(zlib.Z_SYNC_FLUSH))
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                self.buf += self.inp.decompress(self.raw.sock.recv(65536))
            line_, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line_)
            if line_.startswith(tag + b" "):
                return lines


def test_compress_deflate(srv: ImapServer) -> None:
    srv.deliver(simple_message(body="compressible " * 200))
    c = srv.raw()
    c.login()
    assert b"COMPRESS=DEFLATE" in c.cmd(b"k CAPABILITY")[0]
    assert c.cmd(b"z COMPRESS DEFLATE") == [b"z OK DEFLATE active"]
    d = _Deflated(c)
    out = d.cmd(b"s SELECT INBOX")
    assert out[-1].startswith(b"s OK")
    out = d.cmd(b"f FETCH 1 (RFC822.SIZE)")
    assert out[0].startswith(b"* 1 FETCH (RFC822.SIZE ")
    caps = d.cmd(b"k CAPABILITY")[0]
    assert b"COMPRESS=DEFLATE" not in caps  # RFC 4978 §3: not again once active
    assert d.cmd(b"y COMPRESS DEFLATE")[-1].startswith(b"y NO [COMPRESSIONACTIVE]")
    c.close()
