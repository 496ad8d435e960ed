"""The junk decision for one incoming message and one account: mailing list, reputation, DNSBL, then Bayes.

One straight function returning at the first decision with a value that says why (STYLE 2).
It is pure: the clock (`now`) and the threshold's random draw (`draw`) come in as arguments
and the result records them, so the delivery event holds the decision and a replay never
decides again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..proto import events_pb2 as pb
from .bayes import DEFAULT_PARAMS, BayesParams, classify
from .projection import JunkView
from .reputation import Reputation, reputation


@dataclass(frozen=True)
class JunkConfig:
    """The content filter's settings (Mox's defaults where it has them)."""

    # Content alone rejects only above `threshold`; between `unsure` and it the message is
    # accepted as unsure ("bayes:unsure", shown in the header) and filed in the Junk mailbox
    # (`unsure_to_junk`), below it accepted as ham.
    # Chosen on the tuning part of the shared corpus (bench/junk.py; docs/junk.md has the split).
    threshold: float = 0.99  # spam probability above which content rejects
    unsure: float = 0.30  # above this and up to `threshold`: unsure (SpamBayes' ham_cutoff)
    # Unsure mail, and mail that only its sending network's junk history speaks against, is
    # delivered to the Junk mailbox instead of where it was meant to go: the user sees it and
    # moving it out trains the filter, but it does not sit in the inbox. False: delivered where
    # it was meant to go (and a network's history alone rejects, as before issue 16).
    unsure_to_junk: bool = True
    jitter: float = 0.02  # +- this much random on the threshold, so probing finds no sharp edge
    plaintext_penalty: float = 0.05  # stricter for mail that came without TLS
    unnamed_penalty: float = 0.05  # stricter for mail whose To/Cc does not name the recipient
    # How far an unclear reputation moves the threshold. Small: a relay that carries both kinds
    # leans one way without saying much (0.05 let a 0.996 spam through a ham-leaning relay).
    hint: float = 0.02
    # Content rejects only with this many messages of each class trained: a new account's
    # first statistics are noise (one mailing list's words look like "ham").
    min_ham: int = 50
    min_spam: int = 50
    # A trained content filter that finds a message clearly not junk overrules a junk history
    # of the sending network alone (see analyze()).
    network_overrule: bool = True
    params: BayesParams = DEFAULT_PARAMS


DEFAULT_CONFIG = JunkConfig()
# Reputation steps that identify a sender only by its network.
NETWORK_METHODS = ("reputation:ip-narrow", "reputation:ip-medium", "reputation:ip-wide")
# The methods whose verdict has a score and a threshold.
CONTENT_METHODS = ("bayes", "bayes:unsure")
# The verdict's mailbox for mail accepted into the account's Junk mailbox (found by its role,
# RFC 6154 \Junk, whatever its name).
JUNK_MAILBOX = "Junk"


@dataclass(frozen=True)
class Context:
    """What the SMTP transaction knows about the message beside its features."""

    tls: bool = True
    names_recipient: bool = True
    mailing_list: str = ""  # the configured list domain it came through, when it did
    forwarder: str = ""  # the configured forwarder it came through, when it did
    dnsbl: str = ""  # the DNSBL zone that lists the sender (looked up only without reputation)


def _verdict(accept: bool, method: str, mailbox: str, *reasons: str) -> pb.JunkVerdict:
    return pb.JunkVerdict(accept=accept, method=method, mailbox=mailbox, reasons=[r for r in reasons if r])


def analyze(
    view: JunkView, f: pb.JunkFeatures, destined: int, mailbox: str, now: int, draw: float,
    ctx: Context = Context(), config: JunkConfig = DEFAULT_CONFIG,
) -> pb.JunkVerdict:
    """Accept or reject `f` for `mailbox` (id `destined`) of the account whose projection is `view`.

    `draw` in [0, 1) is the random draw for the threshold's jitter.
    """
    if ctx.mailing_list:
        # Mox's ListAllowDomain: list mail was verified to come through a list the user reads;
        # its authors' reputations and DMARC policies do not apply to the list's rewriting.
        return _verdict(True, "mailing-list", mailbox, f"verified mailing list {ctx.mailing_list}")
    rep = reputation(view, f, destined, now)
    if rep.conclusive and rep.spam and rep.method in NETWORK_METHODS and config.network_overrule:
        # An address range is a weak identity: a relay or a provider's pool carries everyone's
        # mail, and two junk messages from it say little about the third (on the shared
        # corpus these were nearly all the ham rejected). A trained content filter that finds
        # the message clearly not junk overrules it; content that finds it junk rejects it; in
        # between (unsure, or too little training) the range's history files it in Junk.
        v = _content(view, f, mailbox, draw, ctx, config, rep)
        step = rep.method.split(":")[1]
        if v.method == "bayes" and v.accept and v.score <= config.unsure:
            v.reasons.append(f"{step} history is junk, the content clearly is not: accepted")
            return v
        if not v.accept:
            v.reasons.append(f"{step} history is junk too")
            return v
        if config.unsure_to_junk:
            return _verdict(True, rep.method, JUNK_MAILBOX, rep.reason,
                            "the content is not clear, and a network's history alone does not refuse mail: filed in Junk")
        return _verdict(False, rep.method, mailbox, rep.reason)
    if rep.conclusive:
        return _verdict(not rep.spam, rep.method, mailbox, rep.reason)
    if rep.spam is None and ctx.dnsbl:
        return _verdict(False, "dnsbl", mailbox, f"sender without history, listed by {ctx.dnsbl}")
    return _content(view, f, mailbox, draw, ctx, config, rep)


def _content(
    view: JunkView, f: pb.JunkFeatures, mailbox: str, draw: float, ctx: Context, config: JunkConfig, rep: Reputation,
) -> pb.JunkVerdict:
    hams, spams = view.totals()
    reasons = [rep.reason]
    if ctx.forwarder:
        reasons.append(f"forwarded by {ctx.forwarder}: its address and SPF domain not used")
    if hams < config.min_ham or spams < config.min_spam:
        reasons.append(f"too little training for the content filter ({hams} not junk, {spams} junk)")
        return _verdict(True, "bayes:untrained", mailbox, *reasons)
    words = list(f.words)
    result = classify(words, view.word_counts(words), hams, spams, config.params)
    jitter = round((2 * draw - 1) * config.jitter, 6)
    threshold = config.threshold + jitter
    if not ctx.tls:
        threshold -= config.plaintext_penalty
        reasons.append("came without TLS: stricter")
    if not ctx.names_recipient:
        threshold -= config.unnamed_penalty
        reasons.append("To/Cc do not name the recipient: stricter")
    if rep.spam is not None:
        # History that is not clear still leans one way.
        threshold += -config.hint if rep.spam else config.hint
    threshold = min(max(threshold, 0.5), 0.999)
    accept = result.probability <= threshold
    unsure = accept and result.probability > config.unsure
    to_junk = unsure and config.unsure_to_junk
    reasons.append(f"spam probability {result.probability:.4f} against threshold {threshold:.4f}"
                   + (f", above {config.unsure:.2f}: unsure, accepted" if unsure else "")
                   + (" into Junk" if to_junk else ""))
    return pb.JunkVerdict(
        accept=accept, method="bayes:unsure" if unsure else "bayes", score=result.probability, threshold=threshold, jitter=jitter,
        ham_words=[w for w, _p in result.ham_words], spam_words=[w for w, _p in result.spam_words],
        reasons=[r for r in reasons if r], mailbox=JUNK_MAILBOX if to_junk else mailbox,
    )


def header(v: pb.JunkVerdict) -> str:
    """The header field that shows the user the decision (without CRLF)."""
    parts = [("accept" if v.accept else "reject"), f"method={v.method}"]
    if v.accept and v.mailbox == JUNK_MAILBOX:
        parts.append(f"mailbox={JUNK_MAILBOX}")
    if v.method in CONTENT_METHODS:
        parts.append(f"score={v.score:.4f}")
        parts.append(f"threshold={v.threshold:.4f}")
    value = "; ".join(parts)
    if v.ham_words:
        value += "\r\n\tham=" + _words(v.ham_words[:5])
    if v.spam_words:
        value += "\r\n\tspam=" + _words(v.spam_words[:5])
    if v.reasons and v.method not in CONTENT_METHODS:
        value += "\r\n\t(" + _clean(v.reasons[0]) + ")"
    return "X-Eventmail-Junk: " + value


# "(", ")" and ";" as spaces: in C, for the printable text that the reasons and words almost
# always are (a character at a time in Python was 1.5 % of the event loop's samples under load).
_DELIMITERS_TO_SPACE = str.maketrans("();", "   ")


def _clean(text: str) -> str:
    """Non-printable characters and the field's delimiters as spaces, at most 200 characters."""
    if text.isprintable():
        return text.translate(_DELIMITERS_TO_SPACE)[:200]
    return "".join(c if c.isprintable() and c not in "();" else " " for c in text)[:200]


def _words(words: Iterable[str]) -> str:
    return '"' + ", ".join(_clean(w).replace('"', " ") for w in words) + '"'
