"""Cross-check ENVELOPE, BODY, BODYSTRUCTURE and BODY[section] against Dovecot's imap, when it is installed."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventmail.mime import parse_structure
from eventmail.mime.imapform import extract_section, render_bodystructure, render_envelope

from .test_mime_corpus import numbered
from .test_mime_structure import FIXTURES, SYNTHETIC, load_fixture

pytestmark = pytest.mark.peers

IMAP_BINARIES = ["/usr/lib/dovecot/imap", "/usr/libexec/dovecot/imap"]

# Where we differ from Dovecot 2.3 on purpose; the comparison normalises these away:
# - Dovecot sends type, subtype and encoding as written; we lower-case type and subtype.
# - Dovecot adds ("charset" "us-ascii") to every text/* part; RFC 2046 §4.1.2 makes it the
#   default of text/plain only, so that is where we add it.
# - Dovecot folds runs of white space in Subject and display names; RFC 3501 asks for the raw
#   header, so we keep them.
# - Dovecot answers "N.1" of a leaf inside a multipart with the leaf; RFC 9051 §6.4.5 gives a
#   leaf no sub-parts, and we answer None.
# - Dovecot ends HEADER.FIELDS with a blank line even for a message that has none; RFC 9051
#   §6.4.5 says not to.
# - (not compared) Dovecot's BINARY of a multipart or message part decodes the leaves inside;
#   decode_part returns such a part as it is (its own encoding is an identity one), and Dovecot
#   refuses invalid quoted-printable outright where we decode leniently.


def imap_binary() -> str | None:
    if shutil.which("dovecot") is None:
        return None
    return next((p for p in IMAP_BINARIES if os.access(p, os.X_OK)), None)


# ---------------------------------------------------------------- a small IMAP response reader

_ATOM_RE = re.compile(rb'[^ ()\r\n"\[\]{]+')


def parse_items(data: bytes, i: int) -> tuple[list[Any], int]:
    """The parenthesised list at data[i] as Python lists; strings are bytes, NIL None, atoms str.

    A section key like BODY[HEADER.FIELDS (A B)] is read as one atom.
    """
    assert data[i : i + 1] == b"("
    stack: list[list[Any]] = [[]]
    i += 1
    while True:
        c = data[i : i + 1]
        if c == b" ":
            i += 1
        elif c == b"(":
            stack.append([])
            i += 1
        elif c == b")":
            done = stack.pop()
            i += 1
            if not stack:
                return done, i
            stack[-1].append(done)
        elif c == b'"':
            j = i + 1
            buf = bytearray()
            while data[j : j + 1] != b'"':
                if data[j : j + 1] == b"\\":
                    j += 1
                buf += data[j : j + 1]
                j += 1
            stack[-1].append(bytes(buf))
            i = j + 1
        elif c in (b"{", b"~"):
            j = data.index(b"}", i)
            size = int(data[i + (2 if c == b"~" else 1) : j])
            stack[-1].append(data[j + 3 : j + 3 + size])
            i = j + 3 + size
        else:
            m = _ATOM_RE.match(data, i)
            assert m is not None, data[i : i + 40]
            end = m.end()
            if data[end : end + 1] == b"[":  # BODY[...]: up to the closing bracket
                end = data.index(b"]", end) + 1
            token = data[i:end].decode()
            stack[-1].append(None if token == "NIL" else token)
            i = end


def run_dovecot(
    binary: str, tmp: Path, messages: list[bytes], commands: list[bytes]
) -> dict[int, dict[str, Any]]:
    """Put `messages` in a Maildir, run Dovecot's imap in PREAUTH mode, return the FETCH items by sequence number."""
    home = tmp / "home"
    for sub in ("cur", "new", "tmp"):
        (home / "Maildir" / sub).mkdir(parents=True)
    for n, raw in enumerate(messages, 1):
        (home / "Maildir" / "cur" / f"{n:05d}.eml:2,").write_bytes(raw)
    for sub in ("run", "state"):
        (tmp / sub).mkdir()
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:  # Dovecot refuses to give mail access to root
        uid = gid = 65534
        for path in [tmp, *tmp.rglob("*")]:
            os.chown(path, uid, gid)
    conf = tmp / "dovecot.conf"
    conf.write_text(
        f"mail_location = maildir:{home}/Maildir\nlog_path = {tmp}/log\nssl = no\n"
        f"base_dir = {tmp}/run\nstate_dir = {tmp}/state\nmail_uid = {uid}\nmail_gid = {gid}\n"
        "first_valid_uid = 0\nfirst_valid_gid = 0\n"
    )
    script = (
        b"a SELECT INBOX\r\n"
        + b"".join(b"f%d %s\r\n" % (n, c) for n, c in enumerate(commands))
        + b"z NOOP\r\n"
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={"HOME": str(home), "USER": "nobody", "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdin is not None and proc.stdout is not None
    out = b""
    try:
        proc.stdin.write(script)
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        # Dovecot stops at end of input, so keep it open until the last command is answered.
        while b"\r\nz " not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 1 << 20)
                if not chunk:
                    break
                out += chunk
        proc.stdin.write(b"y LOGOUT\r\n")
        proc.stdin.close()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    responses: dict[int, dict[str, Any]] = {}
    for m in re.finditer(rb"\* (\d+) FETCH ", out):
        items, _ = parse_items(out, m.end())
        found = responses.setdefault(int(m.group(1)), {})
        for k in range(0, len(items) - 1, 2):
            found[" ".join(items[k].upper().split())] = items[k + 1]
    return responses


# ---------------------------------------------------------------- normalisation


def norm_structure(x: Any) -> Any:
    """Lower-case every string, drop ("charset" "us-ascii"), sort parameter pairs."""
    if isinstance(x, list):
        items = [norm_structure(i) for i in x]
        if items and len(items) % 2 == 0 and all(i is None or isinstance(i, bytes) for i in items):
            pairs = [(items[k], items[k + 1]) for k in range(0, len(items), 2)]
            pairs = sorted((p for p in pairs if p != (b"charset", b"us-ascii")), key=repr)
            return pairs or None
        return items
    return x.lower() if isinstance(x, bytes) else x


def norm_space(x: Any) -> Any:
    if isinstance(x, list):
        return [norm_space(i) for i in x]
    return re.sub(rb"\s+", b" ", x).strip() if isinstance(x, bytes) else x


def norm(value: bytes | list[Any]) -> Any:
    """One of our renderings (bytes) or Dovecot's parsed answer, normalised for comparison."""
    if isinstance(value, bytes):
        value = parse_items(b"(" + value + b")", 0)[0][0]
    return norm_structure(norm_space(value))


def sections_of(raw: bytes) -> Iterator[str]:
    st = parse_structure(raw)
    yield from (
        "HEADER",
        "TEXT",
        "HEADER.FIELDS (FROM SUBJECT CONTENT-TYPE)",
        "HEADER.FIELDS.NOT (RECEIVED FROM)",
    )
    for path, part in numbered(st):
        yield path
        yield path + ".MIME"
        if part.type == b"message" and part.HasField("message"):
            # Without an enclosed structure (base64 message/rfc822) Dovecot reads the encoded
            # bytes as the enclosed header; we answer None.
            yield path + ".HEADER"
            yield path + ".TEXT"
    yield "9"  # no such part


def test_against_dovecot() -> None:
    binary = imap_binary()
    if binary is None:
        pytest.skip("Dovecot is not installed")
    messages = [load_fixture(p.name) for p in sorted(FIXTURES.glob("*.eml"))] + SYNTHETIC
    commands = [b"FETCH 1:* (ENVELOPE BODY BODYSTRUCTURE)"]
    wanted = [list(sections_of(raw)) for raw in messages]
    for n, sections in enumerate(wanted, 1):
        commands.append(b"FETCH %d (%s)" % (n, " ".join(f"BODY.PEEK[{s}]" for s in sections).encode()))
    # Not pytest's tmp_path: its parents are private to us, and Dovecot may run as "nobody".
    with tempfile.TemporaryDirectory(prefix="eventmail-dovecot-") as tmp:
        theirs = run_dovecot(binary, Path(tmp), messages, commands)
    assert len(theirs) == len(messages), "Dovecot did not answer for every message"

    for n, (raw, sections) in enumerate(zip(messages, wanted, strict=True), 1):
        st = parse_structure(raw)
        got = theirs[n]
        assert norm(render_bodystructure(st.body, True)) == norm(got["BODYSTRUCTURE"]), n
        assert norm(render_bodystructure(st.body, False)) == norm(got["BODY"]), n
        assert norm(render_envelope(st.envelope)) == norm(got["ENVELOPE"]), n
        header = raw[: st.body.body_start]
        no_blank_line = not (header in (b"\r\n", b"\n") or header.endswith((b"\n\r\n", b"\n\n")))
        for section in sections:
            ours = extract_section(raw, st, section)
            dovecot: bytes | None = got.get(f"BODY[{section}]")
            if ours is None or dovecot is None:
                assert ours is None and dovecot in (None, b""), (n, section)
            elif section.startswith("HEADER.FIELDS") and no_blank_line:
                # The blank-line rule, see above; Dovecot also leaves the last field unterminated
                # in HEADER.FIELDS.NOT, where we end every field with CRLF.
                assert dovecot.rstrip(b"\r\n") == ours.rstrip(b"\r\n"), (n, section)
            elif b"\r\n" in raw:
                assert ours == dovecot, (n, section)
            else:  # bare LF: Dovecot sends CRLF, we send the stored bytes (stored mail has CRLF)
                assert ours.replace(b"\r\n", b"\n") == dovecot.replace(b"\r\n", b"\n"), (n, section)
