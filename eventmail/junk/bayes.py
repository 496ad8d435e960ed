"""The Bayesian content filter: word probabilities from the account's statistics, combined into a spam probability.

Graham's "A Plan for Spam" as Mox tunes it: a word's spam probability is the share of spam
among the messages containing it, each class normalised by its size; clamped to
[MAX_POWER, 1 - MAX_POWER] so that no single word decides; rare words pulled toward 0.5
(Robinson's smoothing);
words within IGNORE_WORDS of 0.5 left out as neutral. Two ways to combine the rest:

- "chi2" (the default): Robinson–Fisher chi-square combining as SpamBayes does it: up to
  MAX_DISCRIMINATORS of the strongest words, Fisher's test that their probabilities are
  uniformly spammy and that they are uniformly hammy, the indicator I = (1 + S - H) / 2. It
  lands near 0.5 when the words disagree, so uncertainty shows as an unsure middle instead of
  a confident error (SpamBayes' "unsure" band).
- "graham": the TOP_WORDS hammiest and TOP_WORDS spammiest words in the naive-Bayes product
  (computed in log space), as Mox does; it is near 0 or 1 for almost every message.

Neither has a class prior: each word's probability is from the share of each class's
messages that contain it, so the spam share of the training set does not move a verdict
(bench/junk.py measures this at 15% and 50% spam).
Pure: the statistics come in as counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BayesParams:
    max_power: float = 0.01  # clamp: no word is more certain than 1%/99%
    top_words: int = 10  # hammiest and spammiest words combined, each
    # |p - 0.5| below this is a neutral word. 0.2 rather than Mox's 0.1: everyday words that lean
    # a little toward ham (most ham is discussion) outnumber a short spam's telling words and
    # pulled unsure spam toward the inbox; left out, they no longer put ham in Junk either
    # (chosen on the tuning part, bench/junk.py --grid; docs/junk.md).
    ignore_words: float = 0.2
    strength: float = 1.0  # how strongly rare words are pulled toward 0.5 (Robinson's s)
    combining: str = "chi2"  # "chi2" (Robinson–Fisher) or "graham" (naive-Bayes product)
    max_discriminators: int = 150  # chi2: the strongest words combined (SpamBayes' default)


DEFAULT_PARAMS = BayesParams()


@dataclass(frozen=True)
class BayesResult:
    probability: float  # the message's spam probability
    ham_words: tuple[tuple[str, float], ...]  # (word, p) of the hammiest words used, strongest first
    spam_words: tuple[tuple[str, float], ...]
    hams: int  # the sizes of the training set
    spams: int


def word_probability(ham: int, spam: int, hams: int, spams: int, params: BayesParams = DEFAULT_PARAMS) -> float:
    """The spam probability of one word seen in `ham` of `hams` ham and `spam` of `spams` spam messages."""
    ws = spam / spams if spams else 0.0
    wh = ham / hams if hams else 0.0
    if ws + wh == 0:
        return 0.5
    r = ws / (ws + wh)
    # Rare words are weak evidence: Robinson's f(w) = (s*0.5 + n*p) / (s + n) pulls a word seen
    # n times toward 0.5 by the weight s of a neutral prior ("A Statistical Approach to the
    # Spam Problem", 2003). Mox's rule (a tenth of the way per missing sighting up to two) is
    # the same idea with a cliff; the smooth form also keeps a word seen in 40 spams stronger
    # than one seen in 4, which the clamp alone would make equal.
    n = ham + spam
    r = (params.strength * 0.5 + n * r) / (params.strength + n)
    return min(max(r, params.max_power), 1 - params.max_power)


def classify(
    words: Sequence[str], counts: Mapping[str, tuple[int, int]], hams: int, spams: int,
    params: BayesParams = DEFAULT_PARAMS,
) -> BayesResult:
    """Combine the most telling words of a message into its spam probability.

    `counts` maps words to (ham, spam) counts; words absent from it are unknown and say nothing.
    """
    hammy: list[tuple[str, float]] = []
    spammy: list[tuple[str, float]] = []
    for w in sorted(set(words)):
        c = counts.get(w)
        if c is None:
            continue
        r = word_probability(c[0], c[1], hams, spams, params)
        if abs(0.5 - r) < params.ignore_words:
            continue
        (hammy if r < 0.5 else spammy).append((w, r))
    # Strongest first; ties broken by longer word (more specific), then the word itself, so
    # that the result does not depend on the order of the input.
    hammy.sort(key=lambda x: (x[1], -len(x[0]), x[0]))
    spammy.sort(key=lambda x: (-x[1], -len(x[0]), x[0]))
    if params.combining == "chi2":
        clues = sorted(hammy + spammy, key=lambda x: (-abs(x[1] - 0.5), -len(x[0]), x[0]))
        probability = chi2_combine([p for _w, p in clues[: params.max_discriminators]])
    else:
        top = hammy[: params.top_words] + spammy[: params.top_words]
        # P = prod(p) / (prod(p) + prod(1-p)) = 1 / (1 + e^eta), eta = sum(ln(1-p) - ln(p)).
        eta = sum(math.log(1 - p) - math.log(p) for _w, p in top)
        probability = 1 / (1 + math.exp(eta)) if eta < 700 else 0.0
    return BayesResult(probability, tuple(hammy[: params.top_words]), tuple(spammy[: params.top_words]), hams, spams)


def chi2q(x2: float, v: int) -> float:
    """P(chi-square with `v` (even) degrees of freedom >= x2): the series SpamBayes uses."""
    m = x2 / 2.0
    term = total = math.exp(-m)
    for i in range(1, v // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def chi2_combine(probs: Sequence[float]) -> float:
    """Robinson–Fisher combining: 0.5 without evidence, near 1 when the words agree on spam.

    H tests "these probabilities are uniformly distributed" against their hamminess, S against
    their spamminess (Fisher: -2 sum ln p is chi-square with 2n degrees when the p are uniform);
    sums of logarithms, so that 150 small factors do not underflow.
    """
    if not probs:
        return 0.5
    n = len(probs)
    h = 1.0 - chi2q(-2.0 * sum(math.log(p) for p in probs), 2 * n)
    s = 1.0 - chi2q(-2.0 * sum(math.log(1.0 - p) for p in probs), 2 * n)
    return (1.0 + s - h) / 2.0
