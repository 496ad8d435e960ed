"""Words of a message for the Bayesian filter: text parts (HTML reduced to text) and selected headers.

Each distinct token counts once per message (the filter asks "does the message contain it", as
Graham's "A Plan for Spam" does). Tokens are lower-cased words, adjacent-word pairs of the
body (Mox's "twograms": phrases such as "click here" say more than their words), header words
prefixed with the header's name, the host names of links, the tag names and presentational
attributes of HTML, and words too long to be words as their first letter and length.
"""

from __future__ import annotations

import html
import html.parser
import itertools
import re
from collections.abc import Iterable

from eventmail.mime import decode_part, parse_structure
from eventmail.mime.headers import MAX_HEADER_BYTES, read_fields, unfold
from eventmail.mime.words import charset_decode, decode_words
from eventmail.proto.events_pb2 import MessageStructure, MimePart

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

# Possessive (Python 3.11): nothing follows, so backtracking could never find another match;
# the same matches, about a tenth sooner.
_WORD = re.compile(r"[^\W_]++(?:['’.-][^\W_]++)*+", re.UNICODE)
# The same for lower-cased Latin-1 text (ASCII included), where a letter or digit is one of the
# Latin-1 characters _WORD's `[^\W_]` takes (computed below, so the two agree on every one of
# them) and ’ cannot occur: a bitmap lookup per character instead of Unicode's category test,
# about a third faster. Most 8-bit mail is Latin-1 and mostly ASCII (the bench's 8-bit texts have 3
# non-ASCII characters in 17 KB); reading it with this pattern took finding its words from 0.73
# to 0.52 ms a 17 KB text (it was read by the ASCII form of the pattern between the runs that
# hold a non-ASCII character, those runs by _WORD: 0.73, _WORD alone 0.74).
_LATIN1_ALNUM = "".join(c for c in map(chr, range(256)) if re.fullmatch(r"[^\W_]", c))
_LATIN1_CLASS = "[" + "".join(re.escape(c) for c in _LATIN1_ALNUM) + "]"
_WORD_LATIN1 = re.compile(f"{_LATIN1_CLASS}++(?:['.-]{_LATIN1_CLASS}++)*+")
_URL_HOST = re.compile(r"https?://([a-z0-9.-]+)", re.IGNORECASE)
_DIGITS = re.compile(r"^\d+$")
# `\b[A-Z]{3,24}\b`, written to start with a character set: the regex engine then skips to the
# next capital in C instead of trying the pattern at every position (three times as fast). The
# lookbehind is the leading \b: no word character before the first capital.
_UPPER = re.compile(r"[A-Z](?<!\w[A-Z])[A-Z]{2,23}\b")
_MESSAGE_ID_HOST = re.compile(r"@([A-Za-z0-9.-]+)>")
# Runs of non-space longer than a word (encoded debris, tracking ids, words run together) are
# kept as their first character and length in tens, as SpamBayes' "skip" tokens, since what such
# strings look like says something even when no two are alike.
# HTML attributes that dress text up rather than structure it. Bulk mail of every era is built
# of fonts, colours and layout tables; what people's mail programs write uses few of them.
PRESENTATION_ATTRIBUTES = frozenset({"color", "bgcolor", "face", "size", "width", "align", "border"})


class _HtmlText(html.parser.HTMLParser):
    """Text of an HTML part: data outside <script>/<style>, plus link targets' hosts; and the
    shape of its markup: the tag names and presentational attributes used."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.size = 0
        self._skip = 0
        self.markup: dict[str, None] = {}  # first-seen order, each once

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if len(self.markup) < MAX_TOKENS:
            self.markup.setdefault(f"tag:{tag[:20]}")
            self.markup.update((f"attr:{name}", None) for name, _v in attrs if name in PRESENTATION_ATTRIBUTES)
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


def html_text(markup: str) -> tuple[str, list[str]]:
    """The visible text of HTML (and its links' URLs), and its markup tokens (`tag:NAME`,
    `attr:NAME`); never raising on broken markup."""
    p = _HtmlText()
    try:
        p.feed(markup[:MAX_TEXT_CHARS])
        p.close()
    except (AssertionError, ValueError):  # html.parser's reaction to some hostile declarations
        pass
    return html.unescape(" ".join(p.out)), list(p.markup)


def html_to_text(markup: str) -> str:
    """The visible text of HTML (and its links' URLs), never raising on broken markup."""
    return html_text(markup)[0]


def words(text: str) -> list[str]:
    """Lower-cased words of `text`, within the length bounds; long numbers are left out."""
    return _lower_words(text.lower())


def _lower_words(low: str) -> list[str]:
    """`words` of text already lower-cased. (_WORD starts and ends every match with a letter or
    digit: nothing to strip.)"""
    found = _WORD_LATIN1.findall(low) if _latin1(low) else _WORD.findall(low)
    return [w for w in found if MIN_WORD <= (n := len(w)) <= MAX_WORD and not (n > 4 and w.isdigit())]


def _latin1(text: str) -> bool:
    """Whether every character of `text` is Latin-1 (ASCII: known without reading it)."""
    if text.isascii():
        return True
    try:
        text.encode("latin-1")  # a copy of a str of one-byte characters; fails at once otherwise
    except UnicodeEncodeError:
        return False
    return True


def _add(tokens: dict[str, None], items: Iterable[str]) -> None:
    """Add the new ones of `items` in order, up to MAX_TOKENS distinct tokens in all.

    `items` is read lazily, in slices of at least the room left, each de-duplicated in C (most
    of a long text's words repeat): once the cap is reached nothing more of it is read, so a
    generator's remaining tokens (a long text's word pairs) are never even made."""
    it = iter(items)
    while (room := MAX_TOKENS - len(tokens)) > 0:
        chunk = dict.fromkeys(itertools.islice(it, max(room, 256)))
        if not chunk:
            return
        if len(chunk) <= room:
            tokens.update(chunk)  # a token already there keeps its place, as with setdefault
            continue
        for t in chunk:
            if t not in tokens:
                tokens[t] = None
                if len(tokens) >= MAX_TOKENS:
                    return


def _parts(message: bytes, structure: MessageStructure) -> tuple[list[str], list[str], list[MimePart]]:
    """Content types and charsets of the parts, and the text parts (text/plain and text/html that
    are not attachments), in depth-first order, walked without recursion (the structure is
    bounded by MAX_MIME_DEPTH). The text is decoded by `_part_text`, only while it can add tokens."""
    types: list[str] = []
    charsets: list[str] = []
    texts: list[MimePart] = []
    stack = [structure.body]
    while stack and len(types) < MAX_PARTS:
        part = stack.pop()
        ctype = (part.type + b"/" + part.subtype).decode("ascii", "replace").lower()
        types.append(ctype)
        charset = next((p.value for p in part.params if p.name.lower() == b"charset"), None)
        if charset is not None:
            charsets.append(charset.decode("ascii", "replace").lower()[:30])
        stack.extend(reversed(part.parts))
        if part.HasField("message"):
            stack.append(part.message)
        if ctype in ("text/plain", "text/html") and part.disposition != b"attachment":
            texts.append(part)
    return types, charsets, texts


def _part_text(message: bytes, part: MimePart) -> tuple[str, list[str]]:
    """A text part decoded (transfer encoding, then charset), HTML reduced to its text, and the
    HTML's markup tokens (none for plain text)."""
    payload = (decode_part(message, part) or b"")[: MAX_TEXT_CHARS * 2]
    charset = next((p.value for p in part.params if p.name.lower() == b"charset"), b"utf-8")
    text = charset_decode(payload, charset.decode("ascii", "replace"))
    if part.subtype.lower() == b"html":
        text, markup = html_text(text)
        return text[:MAX_TEXT_CHARS], markup
    return text[:MAX_TEXT_CHARS], []


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def tokenize(message: bytes, structure: MessageStructure | None = None) -> list[str]:
    """The distinct tokens of a message, in first-seen order (bounded by MAX_TOKENS).

    `structure` is the message's parse (eventmail.mime), made once at ingress; without it the
    message is parsed here, with the same parser: the header fields come from mime.headers, the
    parts from the MIME structure, so the filter reads the message as every other reader does."""
    st = structure if structure is not None else parse_structure(message)
    top = st.body
    fields = read_fields(message, top.header_start, min(top.body_start, top.header_start + MAX_HEADER_BYTES))
    tokens: dict[str, None] = {}
    for name in HEADER_WORDS:
        key = name.encode()
        for f in fields:
            if f.name == key:
                _add(tokens, (f"{name[0]}:{w}" for w in words(decode_words(unfold(f.value)))))
    for name in HEADER_VALUES:
        key = name.encode()
        value = next((f.value for f in fields if f.name == key), None)
        if value is not None and value.strip():
            _add(tokens, [f"{name}:{' '.join(_text(value).lower().split())[:60]}"])
    # The shape of the message: which headers it has, its parts' types and charsets, where its
    # Message-ID was made. Bulk mailers leave fingerprints here that people's mail programs don't.
    _add(tokens, (f"h:{_text(f.name)}" for f in fields if len(f.name) <= 40 and _text(f.name) not in TRACE_HEADERS))
    message_id = next((f.value for f in fields if f.name == b"message-id"), b"")
    mid = _MESSAGE_ID_HOST.search(_text(message_id))
    if mid:
        _add(tokens, [f"mid:{mid.group(1).lower()}"])
    types, charsets, text_parts = _parts(message, st)
    _add(tokens, (f"ct:{t}" for t in types))
    _add(tokens, (f"cs:{cs}" for cs in charsets))
    for part in text_parts:
        if len(tokens) >= MAX_TOKENS:
            break  # full: the rest (an HTML alternative, say) could add nothing
        text, markup = _part_text(message, part)
        _add(tokens, markup)
        low = text.lower()
        ws = _lower_words(low)
        # Shouting is a signal of its own: words in capitals are kept as such, too.
        _add(tokens, (f"uc:{w}" for w in _UPPER.findall(text)))
        _add(tokens, ws)
        # Lazily made, as every kind below: a long text fills the cap with its pairs, and then
        # neither the rest of them nor the links and long runs are computed.
        _add(tokens, map(" ".join, itertools.pairwise(ws)))
        if len(tokens) >= MAX_TOKENS:
            break
        _add(tokens, (f"url:{h.lower().rstrip('.')}" for h in _URL_HOST.findall(text)))
        # Runs of non-space longer than a word: whitespace-separated pieces are exactly the runs
        # that `\S+` matches (str.split and the regex module both use Unicode's whitespace), and
        # split() finds them in one pass in C.
        _add(tokens, (f"skip:{w[0]} {len(w) // 10 * 10}" for w in low.split() if len(w) > MAX_WORD))
    return list(tokens)
