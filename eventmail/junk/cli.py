"""The `eventmail junk` commands: analyze a message against an account, retrain from the log, play a corpus."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..store import Store
from .analyze import CONTENT_METHODS, Context, analyze
from .bayes import word_probability
from .delivery import message_draw
from .features import message_features, names_recipient
from .play import Player, load, play, read_message
from .projection import junk_view

# How the commands open the store: given by eventmail.cli (the layer above), which registers the
# junk projections where it opens it.
Opener = Callable[[argparse.Namespace, bool], Awaitable[Store]]
Adder = Callable[..., argparse.ArgumentParser]


def _opener(args: argparse.Namespace) -> Opener:
    opener: Opener = args.junk_opener
    return opener


async def cmd_analyze(args: argparse.Namespace) -> None:
    raw = read_message(Path(args.file))
    store = await _opener(args)(args, False)
    try:
        acct = await store.account(args.name)
        inbox = acct.mailbox_required(args.mailbox)
        f = message_features(raw, remote_ip=args.ip or "")
        recipients = [args.rcpt] if args.rcpt else list(store.system.accounts[args.name].addresses)
        ctx = Context(tls=not args.no_tls, names_recipient=names_recipient(raw, recipients))
        # The jitter's draw the MX would make for these bytes (a keyed hash of the message): the
        # threshold shown is the one the message meets.
        junk = junk_view(acct)
        v = analyze(junk, f, inbox.id, inbox.name, int(args.now or _now()), message_draw(acct, raw), ctx)
        hams, spams = junk.totals()
        counts = junk.word_counts(list(v.ham_words) + list(v.spam_words))
    finally:
        await store.close()
    print(f"verdict:   {'accept' if v.accept else 'reject (451 4.3.0, copy kept in Rejects)'}")
    print(f"method:    {v.method}")
    if v.method in CONTENT_METHODS:
        print(f"score:     {v.score:.4f} (threshold {v.threshold:.4f})")
    for r in v.reasons:
        print(f"because:   {r}")
    print(f"trained:   {hams} not junk, {spams} junk; {len(f.words)} tokens in this message")
    for label, words in (("spammy", v.spam_words), ("hammy", v.ham_words)):
        for w in words:
            h, s = counts.get(w, (0, 0))
            print(f"{label}:    {word_probability(h, s, hams, spams):.3f}  {w}  ({h} not junk, {s} junk)")


def _now() -> float:
    import time

    return time.time()


async def cmd_play(args: argparse.Namespace) -> None:
    samples = await asyncio.to_thread(load, Path(args.ham), Path(args.spam))
    store = await _opener(args)(args, False)
    try:
        acct = await store.account(args.name)
        projector = acct.projector.copy()  # a scratch copy: the account is not touched
    finally:
        await store.close()
    player = Player(projector, seed=args.seed)
    measure_from = int(len(samples) * args.train_fraction)
    score = await asyncio.to_thread(play, samples, player, measure_from)
    print(f"{len(samples)} messages in date order; the first {measure_from} only train")
    for line in score.lines():
        print(line)
    n = max(score.measured, 1)
    print(f"per message: classify {1000 * score.classify_seconds / n:.2f} ms, train {1000 * score.train_seconds / n:.2f} ms")


def add_commands(sub: Any, add: Adder, opener: Opener) -> Any:
    """Register `eventmail junk ...` (called from eventmail.cli.build_parser, with its opener); the
    subparsers, for the writing command `retrain`, which eventmail.cli sends through the server."""
    junk = sub.add_parser("junk", help="the junk filter of an account", description="the junk filter of an account")
    junk.set_defaults(junk_opener=opener)
    jsub = junk.add_subparsers(dest="junk_command", required=True, metavar="JUNK_COMMAND")
    p = add(jsub, "analyze", cmd_analyze, "the verdict a message would get if it arrived by SMTP now, and why")
    p.add_argument("name")
    p.add_argument("file", help="the message (RFC 5322, or a file with an mbox From line)")
    p.add_argument("--mailbox", default="INBOX", help="the mailbox it would go to (default INBOX)")
    p.add_argument("--ip", help="the sending server's address (default: none)")
    p.add_argument("--rcpt", help="the recipient address (default: the account's addresses)")
    p.add_argument("--no-tls", action="store_true", help="as if it came without TLS (stricter)")
    p.add_argument("--now", type=float, help=argparse.SUPPRESS)
    p = add(jsub, "play", cmd_play,
            "replay messages in date order as if they arrived by SMTP, each classified after its verdict; "
            "print spam caught, ham rejected and the confusion counts")
    p.add_argument("name", help="the account whose statistics the replay starts from (a scratch copy)")
    p.add_argument("--ham", required=True, metavar="DIR")
    p.add_argument("--spam", required=True, metavar="DIR")
    p.add_argument("--train-fraction", type=float, default=0.0, metavar="F",
                   help="the oldest F of the messages only train, the rest are measured (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the threshold jitter's draws")
    return jsub
