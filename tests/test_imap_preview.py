"""PREVIEW (RFC 8970) over a real socket: the start of a message's text, markup removed, white
space collapsed, at most 256 characters; PREVIEW (LAZY); it never sets \\Seen."""

from __future__ import annotations

import re
from pathlib import Path

from tests.imap_harness import ImapServer

PLAIN = b"From: a@example.test\r\nSubject: p\r\n\r\nHello   there,\r\n\r\n  the\tagenda  is attached.\r\n"
ALTERNATIVE = (
    b"From: a@example.test\r\nSubject: alt\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Caf=C3=A9 at noon?\r\n"
    b"--b\r\nContent-Type: text/html\r\n\r\n<p>HTML <b>version</b></p>\r\n--b--\r\n"
)
HTML_ONLY = (b"From: a@example.test\r\nSubject: h\r\nContent-Type: text/html\r\n\r\n"
             b"<html><head><style>p {color: red}</style></head><body><p>Only&nbsp;<i>HTML</i> here</p></body></html>\r\n")
IMAGE_ONLY = (b"From: a@example.test\r\nSubject: i\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
              b"iVBORw0KGgo=\r\n")
LONG = b"From: a@example.test\r\nSubject: l\r\n\r\n" + b"word " * 200 + b"\r\n"


def _previews(out: list[bytes]) -> dict[int, bytes | None]:
    got: dict[int, bytes | None] = {}
    for line in out:
        m = re.match(rb'\* (\d+) FETCH \(PREVIEW (?:"(.*)"|\{\d+\}\r\n(.*)|(NIL))\)$', line, re.S)
        if m:
            got[int(m.group(1))] = None if m.group(4) else (m.group(2) if m.group(2) is not None else m.group(3))
    return got


def test_previews_of_plain_alternative_html_and_no_text(tmp_path: Path) -> None:
    with ImapServer(tmp_path) as srv:
        for raw in (PLAIN, ALTERNATIVE, HTML_ONLY, IMAGE_ONLY, LONG):
            srv.deliver(raw)
        c = srv.raw()
        c.login()
        assert b"PREVIEW" in c.cmd(b"c CAPABILITY")[0].split()
        c.cmd(b"s SELECT INBOX")
        got = _previews(c.cmd(b"a FETCH 1:5 (PREVIEW)"))
        assert got[1] == b"Hello there, the agenda is attached."
        assert got[2] is not None and got[2].decode("utf-8") == "Café at noon?"  # the plain part, decoded
        assert got[3] is not None and got[3].replace(b"\xc2\xa0", b" ") == b"Only HTML here"
        assert got[4] == b""  # no text to show
        assert got[5] is not None and len(got[5]) == 256 and got[5].startswith(b"word word")
        assert _previews(c.cmd(b"b FETCH 1 (PREVIEW (LAZY))")) == {1: got[1]}
        assert c.cmd(b"d FETCH 1 (PREVIEW (EAGER))")[-1].startswith(b"d BAD")
        assert srv.view_flags("INBOX")[1] == ()  # a preview is not a read
        c.close()
