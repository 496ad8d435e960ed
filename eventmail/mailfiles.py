"""Reading and writing mbox files and Maildir trees: message bytes, positions, flags and folder names."""

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# The mbox "From_" separator line: "From <sender> <asctime date>" (RFC 4155 §2). Requiring a
# plausible date keeps a body line that merely starts with "From " from splitting a message.
FROM_LINE = re.compile(rb"^From \S+ +.*\d\d:\d\d(:\d\d)? .*\d{4}\s*$|^From \S+ +.*\d{4} +\d\d:\d\d")
QUOTED_FROM = re.compile(rb"^>+From ")
NEEDS_QUOTE = re.compile(rb"^>*From ")
HEADER_FIELD = re.compile(rb"^[!-9;-~]+[ \t]*:")

# Maildir info flags (https://cr.yp.to/proto/maildir.html) and their IMAP system flags.
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
IMAP_TO_MAILDIR = {v: k for k, v in MAILDIR_FLAGS.items()}
# Messages larger than this are refused by import: the SMTP size limit's order of magnitude.
MAX_MESSAGE_BYTES = 64 << 20


@dataclass
class SourceMessage:
    """A message read from a file, before it enters the store."""

    raw: bytes  # as stored: CRLF line endings
    mailbox: str
    position: str  # "file:line" or the Maildir file name, for reports
    flags: list[str] = field(default_factory=list)
    internal_date: float | None = None
    source_lf: bool = False
    problem: str | None = None


def to_crlf(data: bytes) -> tuple[bytes, bool]:
    """Bare-LF text becomes CRLF (RFC 5322 §2.1); returns the bytes and whether it was converted."""
    if b"\r" in data:
        return data, False
    return data.replace(b"\n", b"\r\n"), True


def to_lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def problem_of(raw: bytes) -> str | None:
    """Why a message cannot be stored as one, or None. Lenient about what real mail does."""
    if not raw.strip():
        return "empty message"
    if len(raw) > MAX_MESSAGE_BYTES:
        return f"larger than {MAX_MESSAGE_BYTES} bytes"
    if b"\x00" in raw:
        return "contains a NUL byte"
    first = raw.split(b"\n", 1)[0]
    if not HEADER_FIELD.match(first):
        return "does not start with a header field"
    return None


# ---------------------------------------------------------------- mbox


def read_mbox(path: Path, mailbox: str) -> Iterator[SourceMessage]:
    """Messages of an mbox file (mboxrd: one '>' is removed from quoted From_ lines)."""
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    start: int | None = None
    body: list[bytes] = []
    for i, line in enumerate(lines):
        prev_blank = i == 0 or lines[i - 1] in (b"\n", b"\r\n")
        if line.startswith(b"From ") and prev_blank and FROM_LINE.match(line.rstrip(b"\r\n")):
            if start is not None:
                yield _mbox_message(body, path, start, mailbox)
            start, body = i + 1, []
            continue
        if start is None:
            if line.strip():
                yield SourceMessage(b"", mailbox, f"{path}:{i + 1}", problem="text before the first From_ line")
                return
            continue
        body.append(line[1:] if QUOTED_FROM.match(line) else line)
    if start is not None:
        yield _mbox_message(body, path, start, mailbox)


def _mbox_message(body: list[bytes], path: Path, from_line: int, mailbox: str) -> SourceMessage:
    # The blank line before the next From_ line separates messages; it is not part of either.
    if body and body[-1] in (b"\n", b"\r\n"):
        body = body[:-1]
    raw, lf = to_crlf(b"".join(body))
    return SourceMessage(raw, mailbox, f"{path}:{from_line}", source_lf=lf, problem=problem_of(raw))


def mbox_entry(raw: bytes, internal_date: float, sender: str = "MAILER-DAEMON") -> bytes:
    """One message as an mboxrd entry: From_ line, LF text with From_ lines quoted, blank line."""
    stamp = time.asctime(time.gmtime(internal_date)).encode()
    out = [b"From " + sender.encode() + b" " + stamp + b"\n"]
    for line in to_lf(raw).splitlines(keepends=True):
        out.append(b">" + line if NEEDS_QUOTE.match(line) else line)
    if out[-1] and not out[-1].endswith(b"\n"):
        out.append(b"\n")
    out.append(b"\n")
    return b"".join(out)


# ---------------------------------------------------------------- Maildir


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def maildir_folders(root: Path) -> Iterator[tuple[Path, str]]:
    """(directory, mailbox name) for a Maildir tree: Maildir++ (.A.B) and nested (A/B) layouts."""
    if is_maildir(root):
        yield root, "INBOX"
    for dirpath, dirnames, _ in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        for d in list(dirnames):
            if d in ("cur", "new", "tmp"):
                dirnames.remove(d)
                continue
            sub = here / d
            if not is_maildir(sub):
                continue
            rel = sub.relative_to(root)
            if d.startswith(".") and here == root:
                name = "/".join(p for p in d[1:].split(".") if p)  # Maildir++: ".Lists.python"
            else:
                name = str(rel).replace(os.sep, "/")
            if name.upper() == "INBOX":
                name = "INBOX"
            yield sub, name


def read_maildir_keywords(folder: Path) -> dict[str, str]:
    """Dovecot's dovecot-keywords file: the letters a-z in file names stand for keywords."""
    mapping = {}
    kw = folder / "dovecot-keywords"
    if kw.exists():
        for line in kw.read_text(errors="replace").splitlines():
            num, _, word = line.partition(" ")
            if num.isdigit() and word and int(num) < 26:
                mapping[chr(ord("a") + int(num))] = word
    return mapping


def read_maildir(folder: Path, mailbox: str) -> Iterator[SourceMessage]:
    keywords = read_maildir_keywords(folder)
    for sub in ("new", "cur"):
        d = folder / sub
        for name in sorted(os.listdir(d)):
            f = d / name
            if name.startswith(".") or not f.is_file():
                continue
            flags = []
            if sub == "cur" and ":2," in name:
                for ch in name.rsplit(":2,", 1)[1]:
                    if ch in MAILDIR_FLAGS:
                        flags.append(MAILDIR_FLAGS[ch])
                    elif ch in keywords:
                        flags.append(keywords[ch])
            raw, lf = to_crlf(f.read_bytes())
            yield SourceMessage(
                raw, mailbox, f"{f}", flags=flags, internal_date=f.stat().st_mtime, source_lf=lf, problem=problem_of(raw)
            )


def maildir_filename(internal_date: int, uid: int, flags: tuple[str, ...]) -> str:
    info = "".join(sorted(IMAP_TO_MAILDIR[f] for f in flags if f in IMAP_TO_MAILDIR))
    return f"{internal_date}.U{uid}.eventmail:2,{info}"


def read_source(path: Path, mbox_mailbox: str) -> Iterator[SourceMessage]:
    """Every message under `path`: an mbox file, a Maildir tree, or a directory of mbox files."""
    if path.is_file():
        yield from read_mbox(path, mbox_mailbox)
        return
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    folders = list(maildir_folders(path))
    if folders:
        for folder, name in folders:
            yield from read_maildir(folder, name)
        return
    for f in sorted(path.rglob("*")):
        if f.is_file():
            name = str(f.relative_to(path).with_suffix("")).replace(os.sep, "/")
            yield from read_mbox(f, "INBOX" if name.upper() == "INBOX" else name)
