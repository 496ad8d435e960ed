"""CATENATE (RFC 4469) over a real socket: messages put together from TEXT and IMAP URLs of the
account's own messages (RFC 5092), and every way a URL is refused (NO [BADURL], nothing stored)."""

from __future__ import annotations

import re
from pathlib import Path

from eventmail.imap import Limits
from tests.imap_harness import ImapServer, RawClient

ORIGINAL = b"From: foo@example.com\r\nSubject: one\r\n\r\nHello world body\r\n"


def _append(c: RawClient, tag: bytes, args: bytes, texts: list[bytes]) -> list[bytes]:
    """APPEND with LITERAL+ literals: `args` has one `%s` per text, where `{n+}` CRLF text goes."""
    lits = tuple(b"{%d+}\r\n" % len(t) + t for t in texts)
    return c.cmd(tag + b" APPEND " + (args % lits if lits else args))


def _bodies(c: RawClient, mailbox: bytes) -> list[bytes]:
    c.cmd(b"s SELECT " + mailbox)
    out = c.cmd(b"f FETCH 1:* BODY.PEEK[]")
    found = [re.search(rb'BODY\[\] (?:\{\d+\}\r\n(.*)|"(.*)")\)$', x, re.S) for x in out if x.startswith(b"* ")]
    return [m.group(1) if m.group(1) is not None else m.group(2) for m in found if m is not None]


def test_catenate_from_text_and_urls(tmp_path: Path) -> None:
    with ImapServer(tmp_path) as srv:
        uid = srv.deliver(ORIGINAL)
        c = srv.raw()
        c.login()
        caps = c.cmd(b"c CAPABILITY")[0].split()
        assert b"CATENATE" in caps
        uv = c.cmd(b"s SELECT INBOX")
        uidvalidity = next(x for x in uv if b"UIDVALIDITY" in x).split(b"UIDVALIDITY ")[1].split(b"]")[0]
        c.cmd(b"u UNSELECT")
        assert c.cmd(b"k CREATE Out")[-1].startswith(b"k OK")
        url = b"/INBOX;UIDVALIDITY=" + uidvalidity + b"/;UID=%d" % uid
        out = _append(c, b"a", b'Out (\\Seen) CATENATE (URL "' + url + b'/;SECTION=HEADER" TEXT %s)', [b"new body\r\n"])
        assert out[-1].startswith(b"a OK [APPENDUID")
        # an absolute URL of the logged-in user (RFC 5092 §3), a section and a partial
        out = _append(c, b"b", b'Out CATENATE (TEXT %s URL "imap://alice@localhost/INBOX/;UID=%d/;SECTION=TEXT/;PARTIAL=6.5")'
                      % (b"%s", uid), [b"Subject: cut\r\n\r\n"])
        assert out[-1].startswith(b"b OK")
        # the whole message, then text (the multiappend form with an ordinary literal after it)
        out = _append(c, b"d", b'Out CATENATE (URL "/INBOX/;UID=%d") %s' % (uid, b"%s"), [b"X: y\r\n\r\nz\r\n"])
        assert out[-1].startswith(b"d OK [APPENDUID")
        assert _bodies(c, b"Out") == [
            b"From: foo@example.com\r\nSubject: one\r\n\r\nnew body\r\n",
            b"Subject: cut\r\n\r\nworld",
            ORIGINAL,
            b"X: y\r\n\r\nz\r\n",
        ]
        c.close()


def test_bad_urls_fail_the_whole_append(tmp_path: Path) -> None:
    with ImapServer(tmp_path) as srv:
        uid = srv.deliver(ORIGINAL)
        c = srv.raw()
        c.login()
        c.cmd(b"k CREATE Out")
        for url in (b"/INBOX;UIDVALIDITY=1/;UID=%d" % uid,  # UIDVALIDITY does not match
                    b"/INBOX/;UID=%d" % (uid + 7),  # no such message
                    b"/Nowhere/;UID=1",  # no such mailbox
                    b"/INBOX/;UID=%d/;SECTION=9" % uid,  # no such part
                    b"imap://bob@localhost/INBOX/;UID=%d" % uid,  # another user's
                    b"/INBOX/;UID=%d;URLAUTH=anonymous" % uid,  # URLAUTH is not offered
                    b"http://example.test/x"):
            # a good message first: MULTIAPPEND stores nothing when any part fails
            out = _append(c, b"a", b'Out CATENATE (TEXT %s) CATENATE (TEXT %s URL "' + url + b'")',
                          [b"A: b\r\n\r\nc\r\n", b"D: e\r\n\r\n"])
            assert out[-1].startswith(b"a NO [BADURL "), (url, out)
        assert _bodies(c, b"Out") == []
        out = _append(c, b"t", b'Missing CATENATE (URL "/INBOX;UIDVALIDITY=1/;UID=%d")' % uid, [])
        assert out[-1].startswith(b"t NO [TRYCREATE]")  # the mailbox is checked first
        assert c.cmd(b"x APPEND Out CATENATE (NOTHING 1)")[-1].startswith(b"x BAD")
        c.close()


def test_catenated_message_is_held_to_the_append_limit(tmp_path: Path) -> None:
    with ImapServer(tmp_path, limits=Limits(max_append=100)) as srv:
        uid = srv.deliver(ORIGINAL)
        c = srv.raw()
        c.login()
        # each piece is under the limit, the message they make is not
        out = _append(c, b"a", b'INBOX CATENATE (URL "/INBOX/;UID=%d" TEXT %s)' % (uid, b"%s"), [b"x" * 60])
        assert out[-1].startswith(b"a NO [TOOBIG]")
        c.close()
