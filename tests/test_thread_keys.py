"""The thread index's keys (base subject, own Message-ID) by their fast paths equal what the general rules give."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.mail.threads import _own_id
from eventmail.mime.headers import message_ids
from eventmail.mime.subject import base_subject_reply
from eventmail.mime.words import decode_words
from eventmail.proto import events_pb2 as pb

_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(rf"(?:{_BLOB})*(?:re|fwd?)\s*(?:{_BLOB})?:", re.I)


def reference(raw: bytes) -> tuple[str, bool]:
    """RFC 5256 §2.1 with regular expressions at every step, no shortcut."""
    text = re.sub(r"[ \t\r\n]+", " ", decode_words(raw))
    reply = False
    while True:
        while True:
            old = text
            text = re.sub(r"(?:\s|\(fwd\))+$", "", text, flags=re.I) if re.search(r"\(fwd\)\s*$", text, re.I) else text
            text = text.rstrip()
            if text == old:
                break
        while True:
            text = text.lstrip()
            m = _LEADER.match(text)
            if m:
                reply, text = True, text[m.end():]
                continue
            b = re.match(_BLOB, text)
            if b and text[b.end():].strip():
                text = text[b.end():]
                continue
            break
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text, reply = text[5:-1], True
            continue
        return text, reply


PARTS = ["re:", "Re:", "RE :", "fwd:", "Fwd:", "FW:", "fw:", "Fw :", "[x]", "[a] re:", "(fwd)", "(FWD)", " ", "  ",
         "\t", "\r\n ", "Re[2]:", "re [b]:", "ſ", "K", "Rе:", "lunch", "re", "fwd", ":", "[", "]", "[fwd:", "é",
         "=?utf-8?q?Re=3A_x?="]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PARTS), max_size=8))
def test_the_base_subject_equals_the_rules_applied_by_regular_expressions(parts: list[str]) -> None:
    raw = "".join(parts).encode()
    assert base_subject_reply(raw) == reference(raw)


IDS = ["<", ">", "a", "@", "b", " ", "\t", "\r\n", "\x0b", "\x0c", "é"]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(IDS), max_size=10))
def test_the_own_message_id_is_the_first_msg_id_of_the_field(parts: list[str]) -> None:
    value = "".join(parts).encode()
    ids = message_ids(value)
    assert _own_id(pb.MessageStructure(envelope=pb.Envelope(message_id=value))) == (ids[0] if ids else None)
