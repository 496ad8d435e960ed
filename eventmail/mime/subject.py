"""The base subject of RFC 5256 §2.1: what SORT SUBJECT, THREAD and delivery's threading compare."""

from __future__ import annotations

import re

from eventmail.mime.words import decode_words

_WSP = re.compile(r"[ \t\r\n]+")
_TRAILER = re.compile(r"(?:\s|\(fwd\))+$", re.I)  # subj-trailer (RFC 5256 §5)
_BLOB = r"\[[^\[\]]*\]\s*"  # subj-blob
_LEADER = re.compile(rf"^(?:(?:{_BLOB})*(?:re|fwd?)\s*(?:{_BLOB})?:|\s+)", re.I)  # subj-leader
_BLOB_RE = re.compile(rf"^{_BLOB}")
# What a subject may start with when step (3), (4) or (6) strips something: a blob, re, fw, fwd
# (or white space, which \s matches: str.isspace); a trailer of step (2) ends with white space or ")".
_MAY_STRIP_FIRST = frozenset("[rRfF")


def base_subject(raw: bytes) -> str:
    """RFC 5256 §2.1: the subject with reply/forward markers, blobs and trailers removed."""
    return base_subject_reply(raw)[0]


def base_subject_reply(raw: bytes) -> tuple[str, bool]:
    """The base subject, and whether a reply/forward marker was removed (RFC 5256 §2.1,
    which THREAD=REFERENCES step 5 asks)."""
    text = _WSP.sub(" ", decode_words(raw))  # (1) decoded, whitespace runs as one space
    if not text or not (text[0] in _MAY_STRIP_FIRST or text[0].isspace() or text[-1] == ")" or text[-1].isspace()):
        # Nothing of steps (2)-(6) can apply (the common subject; a replay threads every delivery's).
        return text, False
    reply = False
    while True:
        while True:
            stripped = _TRAILER.sub("", text)  # (2)
            if stripped == text:
                break
            text = stripped
        while True:  # (5): repeat (3) and (4)
            m = _LEADER.match(text)
            if m and m.end() > 0:
                reply = reply or m.group(0).strip() != ""
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


__all__ = ["base_subject", "base_subject_reply"]
