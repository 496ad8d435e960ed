"""Words of a message for the Bayesian filter: text parts (HTML reduced to text) and selected headers.

Each distinct token counts once per message (the filter asks "does the message contain it", as
Graham's "A Plan for Spam" does). Tokens are lower-cased words, adjacent-word pairs of the
body (Mox's "twograms": phrases such as "click here" say more than their words), header words
prefixed with the header's name, and the host names of links.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
import email.parser
import email.policy
import html
import html.parser
import itertools
import re
from collections.abc import Iterable

from eventmail.mime import MAX_MIME_DEPTH, decode_part, parse_structure

# Bounds: a hostile or huge message must not cost more than a normal one. 200 KB of text
# covers any human-written mail; 2,000 distinct tokens per message keep the projection small
# (a typical message has 150-600).
MAX_TEXT_CHARS = 200_000
MAX_TOKENS = 2000
MAX_PARTS = 50
# Words shorter than 2 characters say nothing; longer than 24 are ids, hashes, base64 debris.
MIN_WORD, MAX_WORD = 2, 24

# The headers whose content carries signal. Not To/Cc/Date/Message-ID/Received: those are
# about this one delivery, or would make the recipient's own address a "ham word".
HEADER_WORDS = ("subject", "from", "reply-to")
HEADER_VALUES = ("x-mailer", "user-agent", "list-id", "precedence")
# Fields that receiving servers (ours included) add: they tell nothing about the sender, and a
# message must give the same tokens before and after our own trace fields are prepended.
TRACE_HEADERS = frozenset({"received", "authentication-results", "x-eventmail-junk", "return-path", "delivered-to"})

_WORD = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*", re.UNICODE)
_URL_HOST = re.compile(r"https?://([a-z0-9.-]+)", re.IGNORECASE)
_DIGITS = re.compile(r"^\d+$")
_UPPER = re.compile(r"\b[A-Z]{3,24}\b")
_MESSAGE_ID_HOST = re.compile(r"@([A-Za-z0-9.-]+)>")


class _HtmlText(html.parser.HTMLParser):
    """Text of an HTML part: data outside <script>/<style>, plus link targets' hosts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.size = 0
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("br", "p", "div", "tr", "li", "td"):
            self.out.append(" ")
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.out.append(" " + value + " ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and self.size < MAX_TEXT_CHARS:
            self.out.append(data)
            self.size += len(data)


def html_to_text(markup: str) -> str:
    """The visible text of HTML (and its links' URLs), never raising on broken markup."""
    p = _HtmlText()
    try:
        p.feed(markup[:MAX_TEXT_CHARS])
        p.close()
    except (AssertionError, ValueError):  # html.parser's reaction to some hostile declarations
        pass
    return html.unescape(" ".join(p.out))


def _decode_header(value: str) -> str:
    """RFC 2047 encoded words decoded; undecodable ones kept as they are."""
    try:
        parts = email.header.decode_header(value)
    except (ValueError, LookupError, email.errors.HeaderParseError):
        return value
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            try:
                out.append(chunk.decode(charset or "latin-1", "replace"))
            except LookupError:
                out.append(chunk.decode("latin-1"))
        else:
            out.append(chunk)
    return " ".join(out)


def _part_text(part: email.message.Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, TypeError, AssertionError):
        return ""
    if not isinstance(payload, bytes):
        return ""
    payload = payload[: MAX_TEXT_CHARS * 2]
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, "replace")
    except LookupError:
        text = payload.decode("latin-1")
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    return text[:MAX_TEXT_CHARS]


def body_texts(msg: email.message.Message) -> list[str]:
    """The text/plain and text/html parts, decoded (at most MAX_PARTS of them)."""
    out: list[str] = []
    for n, part in enumerate(msg.walk()):
        if n >= MAX_PARTS:
            break
        if part.get_content_maintype() != "text" or part.get_content_subtype() not in ("plain", "html"):
            continue
        if part.get_content_disposition() == "attachment":
            continue
        out.append(_part_text(part))
    return out


def words(text: str) -> list[str]:
    """Lower-cased words of `text`, within the length bounds; long numbers are left out."""
    out = []
    for w in _WORD.findall(text.lower()):
        w = w.strip("'’.-")
        if MIN_WORD <= len(w) <= MAX_WORD and not (len(w) > 4 and _DIGITS.match(w)):
            out.append(w)
    return out


def _add(tokens: dict[str, None], items: Iterable[str]) -> None:
    for t in items:
        if len(tokens) >= MAX_TOKENS:
            return
        tokens.setdefault(t, None)


def _may_nest_deep(message: bytes) -> bool:
    """True when the stdlib parser could nest past MAX_MIME_DEPTH (it recurses once a level, and
    hits RecursionError some hundreds deep). Each level needs a Content-Type naming multipart/
    or message/, so a message with few of those cannot; the rare others take the bounded path."""
    lower = message.lower()
    return lower.count(b"multipart/") + lower.count(b"message/") > MAX_MIME_DEPTH


def _structure_parts(message: bytes) -> tuple[list[str], list[str], list[str]]:
    """Content types, charsets and text of the parts, from our own parser (bounded by
    MAX_MIME_DEPTH), walked without recursion: for messages the stdlib could nest too deep."""
    types: list[str] = []
    charsets: list[str] = []
    texts: list[str] = []
    stack = [parse_structure(message).body]
    while stack and len(types) < MAX_PARTS:
        part = stack.pop()
        ctype = (part.type + b"/" + part.subtype).decode("ascii", "replace").lower()
        types.append(ctype)
        params = {p.name.decode("ascii", "replace").lower(): p.value.decode("ascii", "replace") for p in part.params}
        if "charset" in params:
            charsets.append(params["charset"].lower()[:30])
        stack.extend(reversed(part.parts))
        if part.HasField("message"):
            stack.append(part.message)
        if ctype in ("text/plain", "text/html") and part.disposition != b"attachment":
            payload = (decode_part(message, part) or b"")[: MAX_TEXT_CHARS * 2]
            try:
                text = payload.decode(params.get("charset", "utf-8"), "replace")
            except LookupError:
                text = payload.decode("latin-1")
            texts.append((html_to_text(text) if ctype == "text/html" else text)[:MAX_TEXT_CHARS])
    return types, charsets, texts


def tokenize(message: bytes) -> list[str]:
    """The distinct tokens of a message, in first-seen order (bounded by MAX_TOKENS)."""
    deep = _may_nest_deep(message)
    if deep:
        # headers only from the stdlib; the parts from our parser (see _structure_parts)
        msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(message)
    else:
        msg = email.message_from_bytes(message, policy=email.policy.compat32)
    tokens: dict[str, None] = {}
    for name in HEADER_WORDS:
        for value in msg.get_all(name) or []:
            _add(tokens, (f"{name[0]}:{w}" for w in words(_decode_header(str(value)))))
    for name in HEADER_VALUES:
        header = msg.get(name)
        if header:
            _add(tokens, [f"{name}:{' '.join(str(header).lower().split())[:60]}"])
    # The shape of the message: which headers it has, its parts' types and charsets, where its
    # Message-ID was made. Bulk mailers leave fingerprints here that people's mail programs don't.
    _add(tokens, (f"h:{k.lower()}" for k in msg.keys() if len(k) <= 40 and k.lower() not in TRACE_HEADERS))
    mid = _MESSAGE_ID_HOST.search(str(msg.get("message-id", "")))
    if mid:
        _add(tokens, [f"mid:{mid.group(1).lower()}"])
    if deep:
        types, charsets, texts = _structure_parts(message)
        _add(tokens, (f"ct:{t}" for t in types))
        _add(tokens, (f"cs:{cs}" for cs in charsets))
    else:
        for n, part in enumerate(msg.walk()):
            if n >= MAX_PARTS:
                break
            _add(tokens, [f"ct:{part.get_content_type()}"])
            charset = part.get_param("charset")
            if isinstance(charset, str):
                _add(tokens, [f"cs:{charset.lower()[:30]}"])
        texts = body_texts(msg)
    for text in texts:
        ws = words(text)
        # Shouting is a signal of its own: words in capitals are kept as such, too.
        _add(tokens, (f"uc:{w}" for w in _UPPER.findall(text)))
        _add(tokens, ws)
        _add(tokens, (f"{a} {b}" for a, b in itertools.pairwise(ws)))
        _add(tokens, (f"url:{h.lower().rstrip('.')}" for h in _URL_HOST.findall(text)))
    return list(tokens)
