"""The tokenizer's faster forms give the tokens of the plain definitions, and a full token set reads no further."""

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.junk import tokenize as tk

# The definitions as first written (RFC-free, the tokenizer's own): words of letters and digits
# joined by single apostrophes, dots or hyphens; capitals as whole words of 3-24; runs of
# non-space longer than a word.
PLAIN_WORD = re.compile(r"[^\W_]+(?:['’.-][^\W_]+)*")
PLAIN_UPPER = re.compile(r"\b[A-Z]{3,24}\b")
PLAIN_LONG = re.compile(rf"\S{{{tk.MAX_WORD + 1},}}")

# Letters (ASCII and not), digits, the joiners, underscores, ASCII and Unicode whitespace
# (no-break space, em space, the information separators), punctuation.
ALPHABET = st.sampled_from([*"aZQxé9_'’.-  \t\n\u00a0\u2003\x1c\x1f,;!<>@/ΣßİÅ", "ABC", "xyz" * 9])


@settings(max_examples=500, deadline=None)
@given(st.lists(ALPHABET, max_size=80).map("".join))
def test_words_capitals_and_long_runs_match_the_plain_patterns(text: str) -> None:
    low = text.lower()
    assert tk._WORD.findall(low) == PLAIN_WORD.findall(low)
    if tk._latin1(low):
        assert tk._WORD_LATIN1.findall(low) == PLAIN_WORD.findall(low)
    assert tk._UPPER.findall(text) == PLAIN_UPPER.findall(text)
    assert [w for w in low.split() if len(w) > tk.MAX_WORD] == PLAIN_LONG.findall(low)


def test_a_full_token_set_reads_no_further() -> None:
    """Once MAX_TOKENS are there, the rest of a token source is not even made (a long text's word
    pairs, its links and long runs): the source below raises if read past its first slice."""
    tokens = dict.fromkeys(f"t{i}" for i in range(tk.MAX_TOKENS - 3))

    def source() -> object:
        yield "t5"  # already there: keeps its place, takes no room
        yield from (f"w{i}" for i in range(255))
        raise AssertionError("read past the cap")

    tk._add(tokens, source())  # type: ignore[arg-type]
    assert len(tokens) == tk.MAX_TOKENS
    assert list(tokens)[-3:] == ["w0", "w1", "w2"]


def test_the_capped_tokens_are_the_first_seen_ones() -> None:
    """A text with more distinct words than the cap keeps the first MAX_TOKENS of all its tokens
    in first-seen order: what the filter learnt before the faster tokenizer, it learns now."""
    text = " ".join(f"word{i:05d}x" for i in range(3000))
    raw = b"Subject: hi\r\n\r\n" + text.encode() + b"\r\n"
    got = tk.tokenize(raw)
    assert len(got) == tk.MAX_TOKENS
    words = text.split()
    unbounded = ["s:hi", "h:subject", "ct:text/plain", "cs:us-ascii", *words, *map(" ".join, itertools.pairwise(words))]
    assert got == unbounded[: tk.MAX_TOKENS]


# Every Latin-1 character, each alone and among letters: what _WORD_LATIN1 takes in.
LATIN1 = st.one_of(st.sampled_from([*"aZx9_'.-  \t\n,;!<>@/", "ABC", "xyz" * 9]),
                   st.integers(0, 255).map(chr))


@settings(max_examples=1000, deadline=None)
@given(st.lists(LATIN1, max_size=300).map("".join))
def test_latin1_text_read_by_its_own_pattern_gives_the_unicode_words(text: str) -> None:
    """Latin-1 text (ASCII included) is read by _WORD_LATIN1: the words of the Unicode pattern,
    for every one of its characters."""
    low = text.lower()
    assert tk._latin1(low)
    assert tk._WORD_LATIN1.findall(low) == tk._WORD.findall(low) == PLAIN_WORD.findall(low)


def test_every_latin1_character_is_a_word_character_of_both_patterns_or_of_neither() -> None:
    for c in map(chr, range(256)):
        assert bool(tk._WORD_LATIN1.fullmatch(c)) == bool(tk._WORD.fullmatch(c)), repr(c)
    assert not tk._latin1("curly ’ quotes") and tk._latin1("café") and tk._latin1("ascii")
    assert tk._lower_words("l’été, café au lait") == ["l’été", "café", "au", "lait"]
