"""The base subject of RFC 5256 §2.1: what SORT SUBJECT, THREAD and delivery's threading compare."""

from __future__ import annotations

import re

from eventmail.mime.words import decode_words

_WSP = re.compile(r"[ \t\r\n]+")
_BLOB = r"\[[^\[\]]*\]\s*"  # subj-blob
# subj-leader without its white-space alternative (str.lstrip does that part)
_LEADER = re.compile(rf"(?:{_BLOB})*(?:re|fwd?)\s*(?:{_BLOB})?:", re.I)
_BLOB_RE = re.compile(_BLOB)
# What a subj-leader or subj-blob can start with (after white space): a blob, re, fw, fwd.
_MAY_LEAD = frozenset("[rRfF")


def base_subject(raw: bytes) -> str:
    """RFC 5256 §2.1: the subject with reply/forward markers, blobs and trailers removed."""
    return base_subject_reply(raw)[0]


def base_subject_reply(raw: bytes) -> tuple[str, bool]:
    """The base subject, and whether a reply/forward marker was removed (RFC 5256 §2.1,
    which THREAD=REFERENCES step 5 asks).

    Written with string methods where a regex would scan (a replay threads every delivery's
    subject, and "Re: [list] ..." is the common case): regex white space and str.isspace are one set."""
    text = decode_words(raw)
    # (1) whitespace runs as one space; most subjects have none to fold
    if "\t" in text or "\r" in text or "\n" in text:
        text = _WSP.sub(" ", text)
    else:
        while "  " in text:  # runs of spaces alone: a fifth of the substitution's cost
            text = text.replace("  ", " ")
    reply = False
    while True:
        text = _strip_trailers(text)  # (2)
        while True:  # (5): repeat (3) and (4)
            text = text.lstrip()  # (3) the subj-leader that is white space
            if text[:1] not in _MAY_LEAD:
                break
            # The common leaders, "Re:", "Fwd:", "Fw:" alone, are what _LEADER would match there.
            low = text[:4].lower()
            if low[:3] == "re:" or low[:3] == "fw:" or low == "fwd:":
                reply = True
                text = text[4 if low == "fwd:" else 3:]
                continue
            if text[0] == "[" and (close := text.find("]")) > 0 and text.find("[", 1, close) < 0:
                # A lone subj-blob before a word that cannot lead ("[list] hello"): _LEADER cannot
                # match there, and step (4) removes the blob, as its expression would.
                rest = text[close + 1 :].lstrip()
                if rest and rest[0] not in _MAY_LEAD:
                    text = rest
                    continue
            m = _LEADER.match(text)
            if m:
                reply = True
                text = text[m.end():]  # (3)
                continue
            b = _BLOB_RE.match(text)
            if b and text[b.end():].strip():
                text = text[b.end():]  # (4): only when a base remains
                continue
            break
        # (6) [fwd: ...] wrapping
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            reply = True
            continue
        return text, reply


def _strip_trailers(text: str) -> str:
    """RFC 5256 §2.1 step (2): trailing white space and "(fwd)" subj-trailers, repeatedly."""
    while True:
        text = text.rstrip()
        if text[-5:].lower() != "(fwd)":
            return text
        text = text[:-5]


__all__ = ["base_subject", "base_subject_reply"]
