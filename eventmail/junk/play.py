"""Replaying mail through the filter in date order, the user classifying each message after its verdict.

Runs on a scratch copy of an account's projection (or an empty one): each message is analysed
as if it arrived by SMTP, then added to the scratch projection flagged `$Junk` or `$NotJunk`
as the user would, through the same pure fold the store uses. The account's log is not touched.
"""

from __future__ import annotations

import email.utils
import ipaddress
import random
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..proto import events_pb2 as pb
from ..store import Projector, Registration
from .analyze import DEFAULT_CONFIG, Context, JunkConfig, analyze
from .features import message_features
from .projection import JUNK_PROJECTION, JunkView

_RECEIVED_IP = re.compile(rb"\[(\d{1,3}(?:\.\d{1,3}){3})\]")
# Messages without a usable Date sort first, in file-name order.
NO_DATE = 0


@dataclass(frozen=True)
class Sample:
    path: Path
    spam: bool
    date: int
    raw: bytes = field(repr=False)


def read_message(path: Path) -> bytes:
    """A corpus file as a CRLF message: a leading mbox "From " line dropped, LF made CRLF."""
    data = path.read_bytes()
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    return re.sub(rb"\r?\n", b"\r\n", data)


def message_date(raw: bytes) -> int:
    head = raw.split(b"\r\n\r\n", 1)[0]
    m = re.search(rb"(?im)^date:[ \t]*(.*(?:\r\n[ \t].*)*)", head)
    if not m:
        return NO_DATE
    try:
        dt = email.utils.parsedate_to_datetime(m.group(1).decode("latin-1").replace("\r\n", " ").strip())
        return int(dt.timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return NO_DATE


def received_ip(raw: bytes) -> str:
    """The first public address in the Received fields: the server that handed the message over."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    for m in re.finditer(rb"(?im)^received:(.*(?:\r\n[ \t].*)*)", head):
        for ip in _RECEIVED_IP.findall(m.group(1)):
            try:
                a = ipaddress.ip_address(ip.decode())
            except ValueError:
                continue
            if a.is_global:
                return str(a)
    return ""


def load(ham: Path, spam: Path) -> list[Sample]:
    """The messages of both directories in date order (ties by name)."""
    out = []
    for directory, is_spam in ((ham, False), (spam, True)):
        for p in sorted(directory.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                raw = read_message(p)
                out.append(Sample(p, is_spam, message_date(raw), raw))
    out.sort(key=lambda s: (s.date, s.path.name))
    return out


def features(raw: bytes) -> pb.JunkFeatures:
    """A corpus message's features as SMTP would record them, the sender from its Received fields."""
    return message_features(raw, remote_ip=received_ip(raw))


@dataclass
class Score:
    spam_caught: int = 0
    spam_missed: int = 0
    ham_rejected: int = 0
    ham_accepted: int = 0
    methods: dict[str, int] = field(default_factory=dict)
    classify_seconds: float = 0.0
    train_seconds: float = 0.0
    measured: int = 0

    def lines(self) -> Iterator[str]:
        spams = self.spam_caught + self.spam_missed
        hams = self.ham_rejected + self.ham_accepted
        yield f"measured {self.measured} messages: {hams} ham, {spams} spam"
        yield f"spam caught:  {self.spam_caught}/{spams} ({100 * self.spam_caught / max(spams, 1):.2f}%)"
        yield f"ham rejected: {self.ham_rejected}/{hams} ({100 * self.ham_rejected / max(hams, 1):.2f}%)"
        yield "confusion:    rejected  accepted"
        yield f"  spam        {self.spam_caught:8d}  {self.spam_missed:8d}"
        yield f"  ham         {self.ham_rejected:8d}  {self.ham_accepted:8d}"
        yield "decided by: " + ", ".join(f"{k} {v}" for k, v in sorted(self.methods.items()))


class Player:
    """A scratch projection that messages are delivered into and classified in: a copy of an
    account's (`Account.projector.copy()`), or a new one with the junk projection registered."""

    def __init__(self, projector: Projector | None = None, config: JunkConfig = DEFAULT_CONFIG, seed: int = 0) -> None:
        self.projector = projector if projector is not None else Projector(Registration(projections=(JUNK_PROJECTION,)))
        self.view = self.projector.view
        self.junk = JunkView(self.projector.db)
        self.config = config
        self.rng = random.Random(seed)
        self.seq = self.view.seq
        inbox = self.view.mailbox("INBOX")
        if inbox is None:
            self._apply(pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=self.view.next_mailbox_id, name="INBOX",
                                                                   uidvalidity=1)))
            inbox = self.view.mailbox("INBOX")
        assert inbox is not None
        self.inbox = inbox.id

    def _apply(self, event: pb.Event) -> None:
        self.seq += 1
        self.projector.apply([(self.seq, self.seq, event)])

    def verdict(self, raw: bytes, now: int) -> tuple[pb.JunkVerdict, pb.JunkFeatures]:
        f = features(raw)
        return self.decide(f, now), f

    def decide(self, f: pb.JunkFeatures, now: int) -> pb.JunkVerdict:
        """The verdict on features already extracted (the benchmark extracts each message's once)."""
        return analyze(self.junk, f, self.inbox, "INBOX", now, self.rng.random(), Context(), self.config)

    def classify(self, f: pb.JunkFeatures, spam: bool, date: int, blob_id: bytes) -> None:
        """The user's judgement, as the flag a move to Junk or Archive would set."""
        mb = self.view.mailbox_by_id(self.inbox)
        assert mb is not None
        self._apply(pb.Event(message_added=pb.MessageAdded(
            mailbox_id=self.inbox, uid=mb.uidnext, blob_id=blob_id, internal_date=date,
            flags=["$Junk" if spam else "$NotJunk"], junk=f,
        )))


def play(samples: Iterable[Sample], player: Player, measure_from: int = 0) -> Score:
    """Deliver each sample, score the verdicts of those from index `measure_from` on, classify each."""
    score = Score()
    for i, s in enumerate(samples):
        t0 = time.perf_counter()
        v, f = player.verdict(s.raw, s.date)
        t1 = time.perf_counter()
        player.classify(f, s.spam, s.date, str(s.path).encode())
        t2 = time.perf_counter()
        if i < measure_from:
            continue
        score.measured += 1
        score.classify_seconds += t1 - t0
        score.train_seconds += t2 - t1
        score.methods[v.method] = score.methods.get(v.method, 0) + 1
        if s.spam:
            if v.accept:
                score.spam_missed += 1
            else:
                score.spam_caught += 1
        elif v.accept:
            score.ham_accepted += 1
        else:
            score.ham_rejected += 1
    return score
