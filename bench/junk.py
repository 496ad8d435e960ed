"""Junk filter benchmark: `junk play` on a corpus (older half trains, newer half measures) beside scikit-learn.

Both filters see the same messages in the same date order. The oldest half only trains; each
message of the newer half is classified first and then trained on its true label, as a user
who sorts their mail would train it. eventmail runs its whole decision (reputation from the
Received IP, then Bayes) on the projection code the server uses; the baseline is scikit-learn's
multinomial naive Bayes, trained online with partial_fit on the same tokens (our tokenizer, so
the comparison is of the classifiers), and once more on scikit-learn's own word counts.

    python bench/junk.py [--corpus DIR]     (default: the test corpus in tests/data/corpus)

Prints ham wrongly rejected and spam caught for each, and the time per message.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eventmail.junk.play import Player, Sample, load, play  # noqa: E402
from eventmail.junk.tokenize import tokenize  # noqa: E402

# The targets.
MAX_HAM_REJECTED = 0.005
MIN_SPAM_CAUGHT = 0.95


def rates(caught: int, spams: int, rejected: int, hams: int) -> str:
    return (f"ham wrongly rejected {rejected}/{hams} ({100 * rejected / max(hams, 1):.2f}%), "
            f"spam caught {caught}/{spams} ({100 * caught / max(spams, 1):.2f}%)")


def baseline(samples: list[Sample], half: int, own_tokens: bool) -> tuple[str, float, float]:
    """scikit-learn MultinomialNB, online over the same order; (rates, classify ms, train ms)."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.naive_bayes import MultinomialNB

    if own_tokens:
        # Tokens computed beforehand (sklearn would decode bytes before a custom analyzer sees them);
        # the tokenizing time is therefore not in the baseline's figures.
        vec = HashingVectorizer(analyzer=lambda toks: toks, n_features=2**20, alternate_sign=False,
                                norm=None, binary=True)
        docs: list[list[str] | str] = [tokenize(s.raw) for s in samples]
    else:
        vec = HashingVectorizer(n_features=2**20, alternate_sign=False, norm=None, decode_error="replace")
        docs = [s.raw.decode("latin-1") for s in samples]
    nb = MultinomialNB(alpha=1.0)
    labels = [int(s.spam) for s in samples]
    x_old = vec.transform(docs[:half])
    nb.partial_fit(x_old, labels[:half], classes=[0, 1])
    caught = rejected = 0
    t_classify = t_train = 0.0
    for i in range(half, len(samples)):
        t0 = time.perf_counter()
        x = vec.transform(docs[i : i + 1])
        spam = bool(nb.predict(x)[0])
        t1 = time.perf_counter()
        nb.partial_fit(x, labels[i : i + 1])
        t2 = time.perf_counter()
        t_classify += t1 - t0
        t_train += t2 - t1
        caught += spam and samples[i].spam
        rejected += spam and not samples[i].spam
    n = len(samples) - half
    spams = sum(s.spam for s in samples[half:])
    return rates(caught, spams, rejected, n - spams), 1000 * t_classify / n, 1000 * t_train / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(ROOT / "tests" / "data" / "corpus"), help="a directory with ham/ and spam/")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    base = Path(args.corpus)
    samples = load(base / "ham", base / "spam")
    half = len(samples) // 2
    old, new = samples[:half], samples[half:]
    print(f"corpus: {len(samples)} messages ({sum(not s.spam for s in samples)} ham, {sum(s.spam for s in samples)} spam)")
    print(f"older half trains: {len(old)} ({sum(s.spam for s in old)} spam); newer half measured: {len(new)} "
          f"({sum(s.spam for s in new)} spam), each trained after its verdict")

    t0 = time.perf_counter()
    score = play(samples, Player(seed=args.seed), measure_from=half)
    wall = time.perf_counter() - t0
    n = max(score.measured, 1)
    ours_c, ours_t = 1000 * score.classify_seconds / n, 1000 * score.train_seconds / n
    hams = score.ham_rejected + score.ham_accepted
    spams = score.spam_caught + score.spam_missed
    print()
    print("eventmail (reputation + Bayes):     " + rates(score.spam_caught, spams, score.ham_rejected, hams))
    print(f"  decided by: {', '.join(f'{k} {v}' for k, v in sorted(score.methods.items()))}")
    print(f"  per message: classify {ours_c:.2f} ms (tokenizing included), train {ours_t:.2f} ms; whole run {wall:.1f} s")

    # Classification time alone, on the final statistics (no training between).
    player = Player(seed=args.seed)
    play(old, player)
    times = []
    for s in new[:200]:
        t = time.perf_counter()
        player.verdict(s.raw, s.date)
        times.append(time.perf_counter() - t)
    print(f"  classify only (median of {len(times)}): {1000 * statistics.median(times):.2f} ms")

    ok_ham = score.ham_rejected <= MAX_HAM_REJECTED * hams
    ok_spam = score.spam_caught >= MIN_SPAM_CAUGHT * spams
    print(f"  targets: ham rejected <= {100 * MAX_HAM_REJECTED}%: {'met' if ok_ham else 'NOT met'}; "
          f"spam caught >= {100 * MIN_SPAM_CAUGHT:.0f}%: {'met' if ok_spam else 'NOT met'}")

    try:
        import sklearn
    except ImportError:
        print("\nscikit-learn is not installed (pip install scikit-learn): no baseline")
        return 0
    print()
    for own, label in ((True, "our tokens"), (False, "its own word counts")):
        text, c_ms, t_ms = baseline(samples, half, own)
        print(f"scikit-learn {sklearn.__version__} MultinomialNB ({label}): {text}")
        print(f"  per message: classify {c_ms:.2f} ms, train {t_ms:.2f} ms; "
              f"eventmail/baseline time ratio: classify {ours_c / c_ms:.2f}x, train {ours_t / t_ms:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
