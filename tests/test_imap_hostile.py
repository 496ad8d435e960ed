"""Hostile input over real sockets: each case gets BAD or NO (or BYE) and a log line, and neither the session nor
the server is harmed (issue 6, item 5)."""

from __future__ import annotations

import logging
import socket
import ssl
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.imap import Limits
from eventmail.mime import MAX_MIME_DEPTH
from eventmail.sasl import LimitPolicy, LoginLimiter
from eventmail.store import MAX_KEYWORDS_PER_MAILBOX, MAX_KEYWORDS_PER_MESSAGE
from tests.imap_harness import HOST, ImapServer, RawClient, simple_message
from tests.test_mime_depth import nested


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        s.deliver(simple_message())
        yield s


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="eventmail.imap")
    return caplog


def _logged(logs: pytest.LogCaptureFixture, *needles: str) -> bool:
    deadline = time.monotonic() + 5  # the server thread logs as it writes
    while time.monotonic() < deadline:
        text = "\n".join(r.getMessage() for r in logs.records)
        if all(n in text for n in needles):
            return True
        time.sleep(0.05)
    return False


def _still_serving(srv: ImapServer, c: RawClient | None = None) -> None:
    """The session (when given) and the server both answer normally."""
    if c is not None:
        assert c.cmd(b"zz NOOP")[-1] == b"zz OK NOOP completed"
    fresh = srv.raw()
    fresh.login()
    assert fresh.cmd(b"zs SELECT INBOX")[-1].startswith(b"zs OK")
    fresh.close()


@pytest.mark.parametrize(("line", "status"), [
    (b"a LOGIN {-1}", b"BAD"),
    (b"a LOGIN {4294967296}", b"BAD"),
    (b"a LOGIN {99999999999999999999999}", b"BAD"),
    (b'a LOGIN "al\x00ice" secret', b"BAD"),
    (b'a LOGIN "al\rice" secret', b"BAD"),
    (b"a FETCH 1 (FLAGS", b"BAD"),
    (b"a FETCH 1 FLAGS)", b"BAD"),
    (b"a SEARCH " + b"(" * 200 + b"ALL" + b")" * 200, b"BAD"),
    (b"a SEARCH " + b"NOT " * 200 + b"ALL", b"BAD"),
    (b"a CREATE \"\xff\xfe\"", b"BAD"),
    (b"a FROB", b"BAD"),
    (b"a FETCH 0:4294967296 FLAGS", b"BAD"),
])
def test_bad_lines(srv: ImapServer, logs: pytest.LogCaptureFixture, line: bytes, status: bytes) -> None:
    c = srv.raw()
    if b"LOGIN" not in line:
        c.login()
        c.cmd(b"s SELECT INBOX")
    out = c.cmd(line)
    assert out[-1].startswith(b"a " + status), out
    assert _logged(logs, f"a {status.decode()}")
    # the session keeps its state: still logged in (or not) and still selected
    if b"LOGIN" not in line:
        assert c.cmd(b"f FETCH 1 (UID)")[0] == b"* 1 FETCH (UID 1)"
    else:
        assert c.cmd(b"f SELECT INBOX")[-1].startswith(b"f BAD")
    _still_serving(srv, c)
    c.close()


def test_zero_length_literal(srv: ImapServer, logs: pytest.LogCaptureFixture) -> None:
    c = srv.raw()
    c.send(b"a LOGIN {0}\r\n")
    assert c.response().startswith(b"+ ")
    c.send(b" {0}\r\n")
    assert c.response().startswith(b"+ ")
    c.send(b"\r\n")
    assert c.response().startswith(b"a NO [AUTHENTICATIONFAILED]")
    assert _logged(logs, "a NO [AUTHENTICATIONFAILED]")
    c.login()
    _still_serving(srv, c)
    c.close()


def test_oversized_nonsync_literal_is_discarded_not_parsed(srv: ImapServer, logs: pytest.LogCaptureFixture) -> None:
    """A non-synchronising literal over the limit: its octets are read and thrown away, never
    run as commands (RFC 7888 §4)."""
    c = srv.raw()
    c.login()
    size = 70_000  # over Limits.max_literal (64 KiB) for a LOGIN / SEARCH string
    payload = (b"x DELETE Trash\r\n" * (size // 16 + 1))[:size]
    c.send(b"a SEARCH TEXT {%d+}\r\n" % size + payload + b"\r\n")
    out = c.until(b"a")
    assert out[-1].startswith(b"a BAD") or out[-1].startswith(b"a NO")
    assert not any(line.startswith(b"x ") for line in out)
    assert _logged(logs, "a ")
    _still_serving(srv, c)
    assert "Trash" in {name for name in _mailboxes(srv)}
    c.close()


def _mailboxes(srv: ImapServer) -> list[str]:
    m = srv.imap()
    names = [line.rsplit(b" ", 1)[1].strip(b'"').decode() for line in m.list()[1]]  # type: ignore[union-attr]
    m.logout()
    return names


def test_huge_nonsync_literal_closes_the_connection(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    with ImapServer(tmp_path, limits=Limits(max_discard=100_000)) as srv:
        c = srv.raw()
        c.login()
        c.send(b"a SEARCH TEXT {200000+}\r\n" + b"y" * 1000)
        assert c.closed(timeout=5)
        # RFC 7888 §4: past what it will skip the server refuses and closes, saying why
        assert c.buf == b"a BAD [TOOBIG] literal too big\r\n* BYE literal too big to skip\r\n"
        assert _logged(logs, "a BAD [TOOBIG]", "* BYE literal too big to skip")
        _still_serving(srv)


@pytest.mark.parametrize("command", [b"a LOGIN {%d}", b"a LOGIN alice {%d}", b"a APPEND INBOX {%d}",
                                     b"a ID ({%d}", b"a FROB {%d}"])
def test_big_synchronising_literal_before_login_is_refused_without_continuation(
    srv: ImapServer, logs: pytest.LogCaptureFixture, command: bytes
) -> None:
    """Before login a literal is held to Limits.max_preauth_literal (4096): over it, BAD
    [TOOBIG] and no `+` (RFC 9051 §7.5), so none of it is sent or buffered."""
    c = srv.raw()
    c.send(command % 4097 + b"\r\n")
    assert c.response() in (b"a BAD [TOOBIG] literal too big before login", b"a BAD unknown command FROB")
    assert _logged(logs, "a BAD ")
    # one at the limit is invited, and the session is as it was: not logged in
    c.send(b"b ID ({4096}\r\n")
    assert c.response().startswith(b"+ ")
    c.send(b"k" * 4096 + b" NIL)\r\n")
    assert c.until(b"b")[-1] == b"b OK ID completed"
    assert c.cmd(b"f SELECT INBOX")[-1].startswith(b"f BAD")
    c.login()
    _still_serving(srv, c)
    c.close()


@pytest.mark.parametrize("command", [b"a LOGIN {%d+}", b"a APPEND INBOX {%d+}", b"a FROB {%d+}"])
def test_big_non_synchronising_literal_before_login_closes(
    srv: ImapServer, logs: pytest.LogCaptureFixture, command: bytes
) -> None:
    """`a APPEND INBOX {50000000+}` before login: BYE at once, nothing of it is read into memory."""
    c = srv.raw()
    c.send(command % 50_000_000 + b"\r\n" + b"x" * 65536)
    assert c.closed(timeout=5)
    assert c.buf.endswith(b"* BYE literal too big before login\r\n") or \
        c.buf.endswith(b"* BYE literal too big to skip\r\n"), c.buf
    assert _logged(logs, "* BYE literal too big")
    _still_serving(srv)


def test_big_literals_are_fine_after_login(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    body = simple_message("after login", "x" * 10_000)
    c.send(b"a APPEND INBOX {%d}\r\n" % len(body))
    assert c.response().startswith(b"+ ")
    c.send(body + b"\r\n")
    assert c.response().startswith(b"a OK [APPENDUID")
    assert c.cmd(b"b APPEND INBOX {%d+}\r\n" % len(body) + body)[-1].startswith(b"b OK [APPENDUID")
    c.close()


def test_literals_in_login_search_and_append(srv: ImapServer) -> None:
    c = srv.raw()
    c.send(b"a LOGIN {5}\r\n")
    assert c.response().startswith(b"+")
    c.send(b"alice {6+}\r\nsecret\r\n")
    assert c.response().startswith(b"a OK")
    c.cmd(b"s SELECT INBOX")
    c.send(b"b SEARCH SUBJECT {5+}\r\nhello\r\n")
    assert c.until(b"b")[0] == b"* SEARCH 1"
    # a synchronising APPEND literal over APPENDLIMIT is refused before its data (RFC 7889)
    c.send(b"c APPEND INBOX {999999999}\r\n")
    assert c.response().startswith(b"c NO [TOOBIG]")
    _still_serving(srv, c)
    c.close()


def test_overlong_line(srv: ImapServer, logs: pytest.LogCaptureFixture) -> None:
    c = srv.raw()
    c.login()
    c.send(b"a NOOP " + b"x" * 70_000 + b"\r\n")
    assert c.response().startswith(b"a BAD [TOOBIG]")
    assert _logged(logs, "a BAD [TOOBIG]")
    _still_serving(srv, c)
    c.close()


def test_commands_pipelined_behind_starttls_are_discarded(srv: ImapServer, logs: pytest.LogCaptureFixture) -> None:
    """CVE-2011-0411 style injection: plaintext sent with STARTTLS must not run after the handshake."""
    sock = socket.create_connection((HOST, srv.starttls_port), timeout=10)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"* OK")
    sock.sendall(b"a STARTTLS\r\nb CREATE Injected\r\nc LOGIN alice secret\r\n")
    assert f.readline().startswith(b"a OK")
    tls = srv.client_context().wrap_socket(sock, server_hostname="localhost")
    tls.sendall(b"d SELECT INBOX\r\n")
    reply = tls.recv(4096)
    assert reply.startswith(b"d BAD"), reply  # not logged in: the pipelined LOGIN never ran
    tls.sendall(b"e LOGIN alice secret\r\n")
    assert b"e OK" in tls.recv(4096)
    tls.close()
    assert "Injected" not in _mailboxes(srv)


def test_login_brute_force_is_delayed_then_refused(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    clock = [1000.0]
    limiter = LoginLimiter(
        lambda: clock[0],
        address_policy=LimitPolicy(delay_after=2, refuse_after=4, window=900.0, cooldown=900.0,
                                   base_delay=0.3, max_delay=0.3),
    )
    with ImapServer(tmp_path, limiter=limiter) as srv:
        times = []
        replies = []
        for _ in range(5):
            c = srv.raw()
            t = time.monotonic()
            replies.append(c.cmd(b"a LOGIN alice wrong")[-1])
            times.append(time.monotonic() - t)
            c.close()
        assert all(r.startswith(b"a NO") for r in replies)
        assert b"[AUTHENTICATIONFAILED]" in replies[0]
        assert times[2] >= 0.3  # after two failures each guess waits
        assert b"[UNAVAILABLE]" in replies[4]  # after four the address is refused
        assert _logged(logs, "authentication failed", "login refused")
        # even the right password is refused now, from that address, until the cool-down ends
        c = srv.raw()
        assert b"[UNAVAILABLE]" in c.cmd(b"a LOGIN alice secret")[-1]
        clock[0] += 901
        assert c.cmd(b"b LOGIN alice secret")[-1].startswith(b"b OK")
        c.close()


def test_too_many_failures_on_one_connection_close_it(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    lenient = LimitPolicy(delay_after=100, refuse_after=200, window=900.0, cooldown=900.0)
    with ImapServer(tmp_path, limiter=LoginLimiter(time.monotonic, address_policy=lenient,
                                                   account_policy=lenient)) as srv:
        _too_many_failures(srv, logs)


def _too_many_failures(srv: ImapServer, logs: pytest.LogCaptureFixture) -> None:
    c = srv.raw()
    for i in range(5):
        c.send(b"a%d AUTHENTICATE PLAIN\r\n" % i)
        assert c.response() == b"+ "
        c.send(b"*\r\n")
        assert c.response().startswith(b"a%d BAD" % i)
    assert c.closed(timeout=30)
    assert b"* BYE" in c.buf
    assert _logged(logs, "too many failed authentication attempts")
    c = srv.raw()
    for i in range(4):
        assert c.cmd(b"l%d LOGIN alice wrong%d" % (i, i))[-1].startswith(b"l%d NO" % i)
    c.send(b"l4 LOGIN alice wrong4\r\n")
    assert c.response().startswith(b"l4 NO [AUTHENTICATIONFAILED]")
    assert c.response() == b"* BYE too many failed authentication attempts"
    assert c.closed(timeout=30)


def test_garbage_and_tls_garbage(srv: ImapServer, logs: pytest.LogCaptureFixture) -> None:
    c = srv.raw()
    # a TLS ClientHello's first bytes (no CR or LF in them) sent to the plaintext port
    c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(14, 256)) + b"\r\n")
    assert c.response().startswith(b"* BAD")
    assert _logged(logs, "* BAD")
    _still_serving(srv, c)
    c.close()
    # plaintext to the implicit-TLS port: the handshake fails, the server goes on
    s = socket.create_connection((HOST, srv.tls_port), timeout=5)
    s.sendall(b"a LOGIN alice secret\r\n")
    try:
        s.recv(100)
    except (ConnectionError, ssl.SSLError, TimeoutError):
        pass
    s.close()
    _still_serving(srv)


# -- NUL bytes (issue 10, item 8) ------------------------------------------------------------------

NUL_MESSAGE = (b"Subject: nul\r\nContent-Type: application/octet-stream\r\n"
               b"Content-Transfer-Encoding: binary\r\n\r\n\x00-\xe4\r\n")


def test_nul_is_refused_in_a_plain_append_literal_and_accepted_in_literal8(
    srv: ImapServer, logs: pytest.LogCaptureFixture
) -> None:
    """RFC 9051 §9: a literal is CHAR8 (no NUL); RFC 3516 §4.4: APPEND takes NUL in literal8."""
    c = srv.raw()
    c.login()
    c.send(b"a APPEND INBOX {%d}\r\n" % len(NUL_MESSAGE))
    assert c.response().startswith(b"+ ")
    c.send(NUL_MESSAGE + b"\r\n")
    assert c.response() == b"a BAD NUL in literal (use literal8)"
    assert _logged(logs, "a BAD NUL in literal")
    c.send(b"b APPEND INBOX ~{%d}\r\n" % len(NUL_MESSAGE))
    assert c.response().startswith(b"+ ")
    c.send(NUL_MESSAGE + b"\r\n")
    assert c.response().startswith(b"b OK [APPENDUID ")
    _still_serving(srv, c)
    c.close()


@pytest.mark.parametrize("how", ["literal8", "store"])
def test_nul_goes_out_only_in_literal8_and_as_0x80_otherwise(srv: ImapServer, how: str) -> None:
    """BINARY[] of a message with NUL is a literal8 (RFC 3516 §4.3); BODY[], BODY[1] and RFC822
    are plain literals, which may not hold NUL (RFC 9051 §4.3): each NUL is sent as 0x80, as
    Dovecot does. A message already in a store with NUL is served the same way."""
    c = srv.raw()
    c.login()
    if how == "literal8":
        assert c.cmd(b"a APPEND INBOX ~{%d+}\r\n" % len(NUL_MESSAGE) + NUL_MESSAGE)[-1].startswith(b"a OK")
    else:
        srv.deliver(NUL_MESSAGE)
    c.cmd(b"s SELECT INBOX")
    cleaned = NUL_MESSAGE.replace(b"\x00", b"\x80")
    n = len(NUL_MESSAGE)
    assert c.cmd(b"f FETCH 2 BODY.PEEK[]")[0] == b"* 2 FETCH (BODY[] {%d}\r\n%s)" % (n, cleaned)
    assert c.cmd(b"f FETCH 2 BODY.PEEK[1]")[0] == b"* 2 FETCH (BODY[1] {5}\r\n\x80-\xe4\r\n)"
    assert c.cmd(b"f FETCH 2 BINARY.PEEK[]")[0] == b"* 2 FETCH (BINARY[] ~{%d}\r\n%s)" % (n, NUL_MESSAGE)
    assert c.cmd(b"f FETCH 2 BINARY.PEEK[1]")[0] == b"* 2 FETCH (BINARY[1] ~{5}\r\n\x00-\xe4\r\n)"
    out = c.cmd(b"f FETCH 2 RFC822")
    assert out[0].startswith(b"* 2 FETCH (RFC822 {%d}\r\n%s" % (n, cleaned)), out
    assert not any(b"\x00" in line for line in out)
    c.close()


# -- COMPRESS=DEFLATE bombs (issue 10, item 6) --------------------------------------------------------


class _Deflated:
    """A logged-in raw client after `COMPRESS DEFLATE` (RFC 4978): deflates what it sends,
    inflates what it reads."""

    def __init__(self, c: RawClient) -> None:
        assert c.cmd(b"z COMPRESS DEFLATE") == [b"z OK DEFLATE active"]
        self.c = c
        self.out = zlib.compressobj(1, zlib.DEFLATED, -15)
        self.inp = zlib.decompressobj(-15)
        self.buf = b""

    def send(self, *pieces: bytes) -> None:
        for p in pieces:
            self.c.sock.sendall(self.out.compress(p))
        self.c.sock.sendall(self.out.flush(zlib.Z_SYNC_FLUSH))

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.c.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += self.inp.decompress(chunk)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line


def test_compression_bomb_closes_the_connection(srv: ImapServer, logs: pytest.LogCaptureFixture) -> None:
    """256 MiB of one line in ~250 KB deflated: the server inflates only past the line limit,
    answers BYE with a log line and closes (RFC 4978 §6); other clients are served."""
    c = srv.raw()
    c.login()
    d = _Deflated(c)
    piece = b"x" * (1 << 20)
    try:
        d.send(*([piece] * 256))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close before it has read the whole bomb
    assert d.line() == b"* BYE command line too long in compressed input"
    assert c.closed(timeout=5)
    assert _logged(logs, "* BYE command line too long in compressed input")
    _still_serving(srv)


def test_big_compressed_append_is_inflated_in_slices(srv: ImapServer) -> None:
    """A 3 MiB APPEND over COMPRESS is inflated a bounded slice per receive(), yet arrives whole."""
    c = srv.raw()
    c.login()
    d = _Deflated(c)
    body = simple_message("deflated", "line of text\r\n" * (3 * 1024 * 1024 // 14))
    d.send(b"a APPEND INBOX {%d+}\r\n" % len(body), body, b"\r\nb NOOP\r\n")
    assert d.line().startswith(b"a OK [APPENDUID ")
    assert d.line() == b"b OK NOOP completed"
    assert srv.call(_message_size(srv)) == len(body)
    c.close()


async def _message_size(srv: ImapServer) -> int:
    async with srv.store.use_account("alice") as acct:
        inbox = next(mb for mb in acct.view.mailboxes() if mb.name == "INBOX")
        return max(acct.view.messages(inbox.id), key=lambda m: m.uid).size


# -- MIME nesting (issue 10, item 10) -------------------------------------------------------------


def test_append_nested_past_the_mime_limit_gets_no_limit(srv: ImapServer, logs: pytest.LogCaptureFixture) -> None:
    """1,000 levels answered NO [SERVERBUG] (RecursionError in the junk tokenizer): now NO [LIMIT]
    (RFC 5530 §3) with a log line; at the limit the message is stored and every form of it served."""
    c = srv.raw()
    c.login()
    for depth in (1000, MAX_MIME_DEPTH + 1):
        m = nested(["multipart", "message"] * (depth // 2) + ["multipart"] * (depth % 2))
        out = c.cmd(b"a APPEND INBOX {%d+}\r\n" % len(m) + m)
        assert out[-1] == b"a NO [LIMIT] message refused: MIME parts nested deeper than %d" % MAX_MIME_DEPTH
    assert _logged(logs, "a NO [LIMIT] message refused: MIME parts nested deeper than")
    ok = nested(["multipart", "message"] * (MAX_MIME_DEPTH // 2))
    assert c.cmd(b"b APPEND INBOX {%d+}\r\n" % len(ok) + ok)[-1].startswith(b"b OK [APPENDUID")
    c.cmd(b"s SELECT INBOX")
    assert c.cmd(b"f FETCH 2 (BODYSTRUCTURE ENVELOPE BODY)")[-1] == b"f OK FETCH completed"
    assert c.cmd(b"g SEARCH TEXT innermost")[0] == b"* SEARCH 2"
    _still_serving(srv, c)
    c.close()


# -- keyword caps (issue 10, item 10) ----------------------------------------------------------------


def _kw(prefix: str, n: int) -> bytes:
    return b" ".join(b"%s%d" % (prefix.encode(), i) for i in range(n))


def test_keywords_per_message_are_capped(srv: ImapServer, logs: pytest.LogCaptureFixture) -> None:
    """5,000 keywords on one message were accepted: STORE and APPEND past 64 get NO [LIMIT]."""
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    over = _kw("k", MAX_KEYWORDS_PER_MESSAGE + 1)
    assert c.cmd(b"a STORE 1 +FLAGS (" + over + b")")[-1] == \
        b"a NO [LIMIT] at most %d keywords per message" % MAX_KEYWORDS_PER_MESSAGE
    assert _logged(logs, "a NO [LIMIT] at most")
    assert c.cmd(b"b STORE 1 FLAGS (" + _kw("k", 5000) + b")")[-1].startswith(b"b NO [LIMIT]")
    m = simple_message("many keywords")
    assert c.cmd(b"c APPEND INBOX (" + over + b") {%d+}\r\n" % len(m) + m)[-1].startswith(b"c NO [LIMIT]")
    # at the cap all is well, and \Seen and friends never count
    at = _kw("k", MAX_KEYWORDS_PER_MESSAGE)
    assert c.cmd(b"d STORE 1 +FLAGS.SILENT (\\Seen \\Flagged " + at + b")")[-1] == b"d OK STORE completed"
    assert c.cmd(b"e APPEND INBOX (\\Seen " + at + b") {%d+}\r\n" % len(m) + m)[-1].startswith(b"e OK")
    _still_serving(srv, c)
    c.close()


def test_keywords_per_mailbox_are_capped_for_store_append_copy_and_move(
    srv: ImapServer, logs: pytest.LogCaptureFixture
) -> None:
    per = MAX_KEYWORDS_PER_MESSAGE
    full = MAX_KEYWORDS_PER_MAILBOX // per
    for i in range(full):  # the mailbox reaches its cap: 256 keywords over 4 messages
        srv.deliver(simple_message(f"kw {i}"), flags=tuple(f"m{i}x{j}" for j in range(per)))
    c = srv.raw()
    c.login()
    assert c.cmd(b"x CREATE Other")[-1].startswith(b"x OK")
    m = simple_message("with a new keyword")
    assert c.cmd(b"y APPEND Other (brandnew) {%d+}\r\n" % len(m) + m)[-1].startswith(b"y OK")
    out = c.cmd(b"s SELECT INBOX")
    permanent = next(line for line in out if b"PERMANENTFLAGS" in line)
    assert b"\\*" not in permanent and b"m0x0" in permanent  # RFC 9051 §7.1: no new keywords
    assert c.cmd(b"a STORE 1 +FLAGS (brandnew)")[-1] == \
        b"a NO [LIMIT] at most %d keywords per mailbox" % MAX_KEYWORDS_PER_MAILBOX
    assert c.cmd(b"b APPEND INBOX (brandnew) {%d+}\r\n" % len(m) + m)[-1].startswith(b"b NO [LIMIT]")
    assert c.cmd(b"o SELECT Other")[-1].startswith(b"o OK")
    assert c.cmd(b"c COPY 1 INBOX")[-1].startswith(b"c NO [LIMIT]")
    assert c.cmd(b"d MOVE 1 INBOX")[-1].startswith(b"d NO [LIMIT]")
    assert _logged(logs, "a NO [LIMIT] at most 256 keywords per mailbox", "c NO [LIMIT]", "d NO [LIMIT]")
    # keywords the mailbox already has are still fine, and so is a keyword-less copy
    c.cmd(b"i SELECT INBOX")
    assert c.cmd(b"e STORE 1 +FLAGS.SILENT (m3x1 \\Seen)")[-1] == b"e OK STORE completed"
    assert c.cmd(b"f APPEND INBOX (m2x2) {%d+}\r\n" % len(m) + m)[-1].startswith(b"f OK")
    assert c.cmd(b"g COPY 1 Other")[-1].startswith(b"g OK")
    _still_serving(srv, c)
    c.close()
