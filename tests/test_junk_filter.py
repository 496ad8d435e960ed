"""The junk filter's parts: tokenizer, word probabilities, reputation steps, the decision, training rules, Rejects."""

import asyncio
import math
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.junk.analyze import DEFAULT_CONFIG, JUNK_MAILBOX, Context, JunkConfig, analyze, header
from eventmail.junk.bayes import BayesParams, chi2_combine, chi2q, classify, word_probability
from eventmail.junk.delivery import REJECTS_MAX, JunkFilter, Plan, dnsbl_name, strip_header
from eventmail.junk.features import ip_nets, message_features, names_recipient
from eventmail.junk.projection import JUNK_PROJECTION, JunkView, junk_view
from eventmail.junk.reputation import reputation
from eventmail.junk.tokenize import html_to_text, tokenize
from eventmail.junk.training import junk_training_flags
from eventmail.mail import rejects as mail_rejects
from eventmail.opening import open_store
from eventmail.proto import events_pb2 as pb
from eventmail.store import MasterKeySource, init_directory, load_master_key
from eventmail.store import projection as proj
from eventmail.store.projection import Mailbox

# The junk projection, registered as eventmail.opening registers it.
REGISTERED = (JUNK_PROJECTION,)


def apply_all(db: sqlite3.Connection, items: Iterable[tuple[int, int, pb.Event]]) -> None:
    proj.apply_all(db, items, REGISTERED)


DAY = 86400
NOW = 1_800_000_000


# ---------------------------------------------------------------- tokenizer


def test_tokens_come_from_text_html_and_selected_headers_once_each() -> None:
    raw = (
        b"From: Deal Maker <deals@spam.test>\r\nTo: you@example.test\r\nSubject: Cheap Pills cheap\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: text/plain\r\n\r\nbuy cheap pills buy\r\n--b\r\nContent-Type: text/html\r\n\r\n"
        b"<html><style>.hidden{color:red}</style><p>VISIT <a href='http://pills.example/x'>our shop</a></p>"
        b"<script>var secretword=1</script></html>\r\n--b--\r\n"
    )
    t = tokenize(raw)
    assert len(t) == len(set(t))  # each token once per message
    assert {"buy", "cheap", "pills", "buy cheap", "visit", "our shop", "url:pills.example", "uc:VISIT"} <= set(t)
    assert {"s:cheap", "s:pills", "f:deal", "f:spam.test", "ct:text/html"} <= set(t)
    assert not any("secretword" in x or "hidden" in x for x in t)  # script and style are not text
    assert not any("you@example.test" in x or x.startswith("t:") for x in t)  # To is not tokenized


def test_markup_long_strings_and_encoded_header_words_are_tokens() -> None:
    """HTML's tags and presentational attributes, over-long strings as first letter and length,
    and RFC 2047 header words decoded by the one decoder (mime.words), charset and all."""
    raw = (
        b"From: =?utf-8?q?Ren=C3=A9e?= <r@x.test>\r\nSubject: =?iso-8859-1?b?Q2Fm6SBvZmZlcg==?=\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b"<table width=600><tr><td><font color=red face=arial>Caf\xc3\xa9 deals</font> "
        b"ref xq7v0a9sk2l4m8n1b3c5d6f7g8h9j0k1m2</td></tr></table>\r\n"
    )
    t = set(tokenize(raw))
    assert {"tag:table", "tag:font", "attr:width", "attr:color", "attr:face"} <= t
    assert "skip:x 30" in t and not any("xq7v0a9sk2" in x for x in t - {"skip:x 30"})
    assert {"f:renée", "s:café", "s:offer", "café", "café deals"} <= t
    assert not any(x.startswith(("tag:", "attr:")) for x in tokenize(b"Subject: hi\r\n\r\n<font color=red>x</font>\r\n"))


def test_labels_of_codecs_that_are_no_text_encodings_do_not_break_tokens() -> None:
    """A sender may label a part or an encoded word with any codec name Python knows: base64,
    rot13 and zlib are no text encodings (LookupError on bytes.decode) and idna refuses to
    replace (UnicodeError); each is read as UTF-8, then Latin-1, as an unknown label is."""
    for label in (b"base64", b"rot13", b"zlib", b"idna", b"hex"):
        raw = (b"Subject: =?" + label + b"?q?hello_there?=\r\nContent-Type: text/plain; charset=" + label
               + b"\r\n\r\nplain caf\xe9 words\r\n")
        t = tokenize(raw)
        assert {"s:hello", "s:there", "plain", "café", "words"} <= set(t), (label, t)


def test_html_reduces_to_text() -> None:
    assert " ".join(html_to_text("<p>Hello&nbsp;<b>world</b></p><script>x()</script>").split()) == "Hello world"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_tokenizer_never_raises_on_hostile_bytes(data: bytes) -> None:
    t = tokenize(data)
    assert len(t) == len(set(t))


# ---------------------------------------------------------------- Bayes


def test_word_probability_clamps_and_pulls_rare_words_toward_half() -> None:
    p = BayesParams()
    assert word_probability(0, 500, 1000, 1000, p) == 1 - p.max_power  # clamped
    assert word_probability(500, 0, 1000, 1000, p) == p.max_power
    once, often = word_probability(0, 1, 100, 100, p), word_probability(0, 40, 100, 100, p)
    assert 0.5 < once < often  # a word seen once is weaker evidence than one seen 40 times


def test_classify_combines_hammiest_and_spammiest_and_ignores_neutral_words() -> None:
    counts = {f"spam{i}": (0, 50) for i in range(15)} | {"ham1": (50, 0), "neutral": (50, 50)}
    r = classify(["ham1", "neutral", *counts.keys()], counts, 100, 100, BayesParams(top_words=10))
    assert r.probability > 0.99
    assert len(r.spam_words) == 10 and [w for w, _ in r.ham_words] == ["ham1"]
    assert "neutral" not in {w for w, _ in r.spam_words + r.ham_words}
    assert classify(["unknown"], counts, 100, 100).probability == 0.5


# ---------------------------------------------------------------- reputation and the decision


def scratch() -> tuple[JunkView, list[pb.Event]]:
    db = proj.connect(REGISTERED)
    evs = [
        pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=1, name="INBOX", uidvalidity=1)),
        pb.Event(mailbox_created=pb.MailboxCreated(mailbox_id=2, name="Archive", uidvalidity=2)),
    ]
    apply_all(db, [(i, i, e) for i, e in enumerate(evs, 1)])
    return JunkView(db), evs


def add(view: JunkView, uid: int, f: pb.JunkFeatures, spam: bool, when: int, mailbox: int = 1) -> None:
    seq = proj.MailboxView(view.db).seq + 1
    e = pb.Event(message_added=pb.MessageAdded(mailbox_id=mailbox, uid=uid, blob_id=b"%d" % uid, internal_date=when,
                                               flags=["$Junk" if spam else "$NotJunk"], junk=f))
    apply_all(view.db, [(seq, seq, e)])


def sender(addr: str = "a@x.test", ip: str = "192.0.2.10", validated: bool = True) -> pb.JunkFeatures:
    d = addr.rpartition("@")[2]
    return pb.JunkFeatures(from_address=addr, from_domain=d, from_org_domain=d, from_validated=validated,
                           ip_nets=ip_nets(ip), words=["hello"])


def test_from_address_decides_first_and_only_when_dmarc_aligned() -> None:
    view, _ = scratch()
    add(view, 1, sender(), True, NOW - DAY)
    r = reputation(view, sender(), 1, NOW)
    assert (r.method, r.spam, r.conclusive) == ("reputation:from-address", True, True)
    # Not aligned: the From address is not evidence; the IP (one message, min 2) is only a hint.
    r = reputation(view, sender(validated=False), 1, NOW)
    assert (r.method, r.spam, r.conclusive) == ("reputation:ip-narrow", True, False)
    # Other destination mailbox: nothing known.
    assert reputation(view, sender(), 2, NOW).spam is None
    # Outside the window: forgotten.
    assert reputation(view, sender(), 1, NOW + 400 * DAY).spam is None


def test_mixed_history_is_not_conclusive_and_newest_three_decide() -> None:
    view, _ = scratch()
    add(view, 1, sender(), True, NOW - 10 * DAY)
    add(view, 2, sender(), False, NOW - 5 * DAY)
    r = reputation(view, sender(), 1, NOW)
    assert r.method == "reputation:from-address" and not r.conclusive
    for uid in (3, 4, 5):
        add(view, uid, sender(), False, NOW - 4 * DAY + uid)
    r = reputation(view, sender(), 1, NOW)
    assert (r.spam, r.conclusive) == (False, True)  # the newest three are all wanted


def test_wrote_to_then_domain_then_ip_ranges() -> None:
    view, _ = scratch()
    sent = pb.JunkFeatures(sent_to=["friend@y.test"])
    seq = proj.MailboxView(view.db).seq + 1
    apply_all(view.db, [(seq, seq, pb.Event(message_added=pb.MessageAdded(
        mailbox_id=2, uid=1, blob_id=b"s", internal_date=NOW - DAY, junk=sent)))])
    r = reputation(view, sender("friend@y.test", "198.51.100.1"), 1, NOW)
    assert (r.method, r.spam, r.conclusive) == ("reputation:wrote-to", False, True)
    for uid in (2, 3):
        add(view, uid, sender(f"u{uid}@z.test", "203.0.113.5"), True, NOW - uid)
    r = reputation(view, sender("new@z.test", "198.51.100.1"), 1, NOW)
    assert (r.method, r.spam, r.conclusive) == ("reputation:from-domain", True, True)
    # Unvalidated, same /26 as the junk: 2 messages, /26 needs 5: a hint only.
    r = reputation(view, sender("x@q.test", "203.0.113.9", validated=False), 1, NOW)
    assert (r.method, r.spam, r.conclusive) == ("reputation:ip-medium", True, False)


def trained(n: int = 20) -> JunkView:
    view, _ = scratch()
    for i in range(n):
        add(view, 100 + 2 * i, pb.JunkFeatures(words=["viagra", "cheap", f"s{i}"], ip_nets=ip_nets(f"10.0.{i}.1")),
            True, NOW - 1000 + i)
        add(view, 101 + 2 * i, pb.JunkFeatures(words=["meeting", "agenda", f"h{i}"], ip_nets=ip_nets(f"10.1.{i}.1")),
            False, NOW - 1000 + i)
    return view


def test_bayes_decides_for_first_time_senders_with_recorded_jitter_and_strictness() -> None:
    view = trained(60)
    spam = pb.JunkFeatures(words=["viagra", "cheap"])
    v = analyze(view, spam, 1, "INBOX", NOW, 0.5)
    assert (v.accept, v.method) == (False, "bayes") and v.score > v.threshold
    assert v.spam_words[:2] == ["viagra", "cheap"]  # ties: the longer word first
    ham = pb.JunkFeatures(words=["meeting", "agenda"])
    v = analyze(view, ham, 1, "INBOX", NOW, 0.0)
    t = DEFAULT_CONFIG.threshold
    assert (v.accept, v.method) == (True, "bayes") and v.jitter == -0.02 and abs(v.threshold - (t - 0.02)) < 1e-9
    v = analyze(view, ham, 1, "INBOX", NOW, 0.999999, Context(tls=False, names_recipient=False))
    assert abs(v.threshold - min(t + v.jitter - 0.10, 0.999)) < 1e-9 and len(v.reasons) >= 3
    # Too little training: the content filter does not reject; Mox's minimum of 50 ham, and as
    # many spam, so that a new account's first statistics do not reject anything.
    v = analyze(trained(3), spam, 1, "INBOX", NOW, 0.5)
    assert (v.accept, v.method) == (True, "bayes:untrained")
    v = analyze(trained(DEFAULT_CONFIG.min_spam - 1), spam, 1, "INBOX", NOW, 0.5)
    assert (v.accept, v.method) == (True, "bayes:untrained")


def test_clear_content_overrules_a_junk_history_of_the_sending_network_only() -> None:
    relay = ip_nets("203.0.113.5")
    # Two junk messages through one relay (unvalidated senders): the /32 is junk.
    view, untrained = trained(60), trained(3)
    for v_ in (view, untrained):
        add(v_, 900, pb.JunkFeatures(words=["viagra"], ip_nets=relay), True, NOW - 100)
        add(v_, 901, pb.JunkFeatures(words=["cheap"], ip_nets=relay), True, NOW - 50)
    ham = pb.JunkFeatures(words=["meeting", "agenda"], ip_nets=relay)
    v = analyze(view, ham, 1, "INBOX", NOW, 0.5)
    assert (v.accept, v.method) == (True, "bayes") and "content clearly is not" in v.reasons[-1]
    assert any("ip-narrow" in r for r in v.reasons)
    spam = pb.JunkFeatures(words=["viagra", "cheap"], ip_nets=relay)
    v = analyze(view, spam, 1, "INBOX", NOW, 0.5)
    assert (v.accept, v.method) == (False, "bayes") and "ip-narrow history is junk too" in v.reasons
    # Without enough training the content cannot vouch, and a network's history alone does not
    # refuse mail: it is accepted into Junk, and the header says so.
    v = analyze(untrained, ham, 1, "INBOX", NOW, 0.5)
    assert (v.accept, v.method, v.mailbox) == (True, "reputation:ip-narrow", JUNK_MAILBOX)
    assert "; mailbox=Junk" in header(v)
    # As before issue 16 when unsure mail is not filed in Junk: the network's history rejects.
    inbox_only = JunkConfig(unsure_to_junk=False)
    v = analyze(untrained, ham, 1, "INBOX", NOW, 0.5, Context(), inbox_only)
    assert (v.accept, v.method, v.mailbox) == (False, "reputation:ip-narrow", "INBOX")
    # A sender identified by a verified address is not overruled.
    add(view, 902, sender("x@y.test"), True, NOW - 10)
    v = analyze(view, pb.JunkFeatures(words=["meeting", "agenda"], from_address="x@y.test", from_domain="y.test",
                                      from_org_domain="y.test", from_validated=True), 1, "INBOX", NOW, 0.5)
    assert (v.accept, v.method) == (False, "reputation:from-address")


def test_words_that_disagree_make_an_unsure_verdict_that_is_accepted() -> None:
    view = trained(60)
    # As spammy a pair as the rejected one above, and as hammy a pair beside: chi-square
    # combining lands in the middle, the message is delivered and the header says unsure.
    v = analyze(view, pb.JunkFeatures(words=["viagra", "cheap", "meeting", "agenda"]), 1, "INBOX", NOW, 0.5)
    assert (v.accept, v.method, v.mailbox) == (True, "bayes:unsure", JUNK_MAILBOX)
    assert DEFAULT_CONFIG.unsure < v.score <= v.threshold and "unsure" in v.reasons[-1]
    assert header(v).startswith("X-Eventmail-Junk: accept; method=bayes:unsure; mailbox=Junk; score=")
    # Delivered where it was meant to go when the account does not file unsure mail in Junk.
    inbox_only = JunkConfig(unsure_to_junk=False)
    v = analyze(view, pb.JunkFeatures(words=["viagra", "cheap", "meeting", "agenda"]), 1, "INBOX", NOW, 0.5, Context(),
                inbox_only)
    assert (v.accept, v.method, v.mailbox) == (True, "bayes:unsure", "INBOX")
    # The naive-Bayes product (Graham, as before) has no middle: it is certain either way.
    graham = JunkConfig(params=BayesParams(combining="graham"))
    g = analyze(view, pb.JunkFeatures(words=["viagra", "cheap", "agenda"]), 1, "INBOX", NOW, 0.5, Context(), graham)
    assert g.score > 0.9 or g.score < 0.1


def test_chi2_combining() -> None:
    assert chi2_combine([]) == 0.5
    assert abs(chi2_combine([0.2, 0.8]) - 0.5) < 1e-9  # symmetric evidence: no opinion
    assert chi2_combine([0.99] * 5) > 0.999 and chi2_combine([0.01] * 5) < 0.001
    # One strong word among many neutral-ish ones does not decide alone.
    assert 0.3 < chi2_combine([0.99, 0.4, 0.4, 0.4, 0.4, 0.4]) < 0.9
    assert abs(chi2q(0.0, 4) - 1.0) < 1e-12 and abs(chi2q(2.0, 2) - math.exp(-1)) < 1e-12


def test_word_probabilities_have_no_class_prior() -> None:
    # A word in 10% of ham and 40% of spam: the same probability whether spam is a sixth or
    # half of the training set (only the smoothing toward 0.5 grows with the sightings).
    small = word_probability(50, 40, 500, 100, BayesParams(strength=0.0))
    large = word_probability(50, 200, 500, 500, BayesParams(strength=0.0))
    assert abs(small - 0.8) < 1e-9 and abs(large - 0.8) < 1e-9


def test_lists_and_dnsbl() -> None:
    view = trained()
    spam = pb.JunkFeatures(words=["viagra", "cheap"])
    assert analyze(view, spam, 1, "INBOX", NOW, 0.5, Context(mailing_list="lists.test")).method == "mailing-list"
    v = analyze(view, spam, 1, "INBOX", NOW, 0.5, Context(dnsbl="bl.test"))
    assert (v.accept, v.method) == (False, "dnsbl")
    assert dnsbl_name("192.0.2.99", "bl.test") == "99.2.0.192.bl.test"
    assert dnsbl_name("2001:db8::1", "bl.test").startswith("1.0.0.0.") and dnsbl_name("2001:db8::1", "bl.test").endswith(
        ".8.b.d.0.1.0.0.2.bl.test")


def test_header_shows_the_verdict_and_forged_ones_are_removed() -> None:
    v = pb.JunkVerdict(accept=False, method="bayes", score=0.99, threshold=0.95, spam_words=["viagra"],
                       ham_words=["agenda"])
    h = header(v)
    assert h.startswith("X-Eventmail-Junk: reject; method=bayes; score=0.9900; threshold=0.9500")
    assert 'spam="viagra"' in h and 'ham="agenda"' in h
    msg = b"X-Eventmail-Junk: accept;\r\n\tforged\r\nSubject: s\r\n\r\nbody X-Eventmail-Junk: stays\r\n"
    assert strip_header(msg, "X-Eventmail-Junk") == b"Subject: s\r\n\r\nbody X-Eventmail-Junk: stays\r\n"


def test_features_and_recipient_naming() -> None:
    raw = b"From: A <A@Example.TEST>\r\nTo: you@x.test\r\nList-Id: Talk <talk.lists.test>\r\n\r\nhi\r\n"
    f = message_features(raw, remote_ip="2001:db8:1:2::5", sent_to=["B@Y.test"])
    assert (f.from_address, f.from_domain, f.list_id) == ("a@example.test", "example.test", "talk.lists.test")
    assert list(f.ip_nets) == ["2001:db8:1:2::/64", "2001:db8:1::/48", "2001:db8::/32"]
    assert list(f.sent_to) == ["b@y.test"] and not f.from_validated
    assert names_recipient(raw, ["YOU@x.test"]) and not names_recipient(raw, ["other@x.test"])
    assert message_features(raw, remote_ip="192.0.2.1", forwarder=True).ip_nets == []


# ---------------------------------------------------------------- training rules


def mb(name: str, use: int = pb.SPECIAL_USE_NONE) -> Mailbox:
    return Mailbox(1, name, 1, 1, use, 0)


def test_moves_say_junk_or_not_junk_and_rejects_is_neutral() -> None:
    inbox, junk, rejects = mb("INBOX"), mb("Junk", pb.SPECIAL_USE_JUNK), mb("Rejects")
    archive, trash, work = mb("Archive", pb.SPECIAL_USE_ARCHIVE), mb("Trash", pb.SPECIAL_USE_TRASH), mb("Work")
    assert junk_training_flags(inbox, junk, True) == (["$Junk"], ["$NotJunk"])
    assert junk_training_flags(inbox, work, True) == (["$NotJunk"], ["$Junk"])  # a mailbox of the user's own
    assert junk_training_flags(rejects, inbox, True) == (["$NotJunk"], ["$Junk"])  # out of Rejects: wanted
    assert junk_training_flags(rejects, archive, True) == (["$NotJunk"], ["$Junk"])
    assert junk_training_flags(rejects, trash, True) == ([], [])  # throwing a reject away says nothing
    assert junk_training_flags(work, inbox, True) == ([], [])  # INBOX is neutral
    assert junk_training_flags(inbox, rejects, True) == ([], [])  # so is Rejects


def test_copies_keep_their_flags_unless_junk_is_involved() -> None:
    """RFC 9051 §6.4.7: a COPY preserves flags; only copies into or out of Junk (and Rejects) train."""
    inbox, junk, rejects = mb("INBOX"), mb("Junk", pb.SPECIAL_USE_JUNK), mb("Rejects")
    archive, trash, work = mb("Archive", pb.SPECIAL_USE_ARCHIVE), mb("Trash", pb.SPECIAL_USE_TRASH), mb("Work")
    assert junk_training_flags(inbox, work, False) == ([], [])
    assert junk_training_flags(work, archive, False) == ([], [])
    assert junk_training_flags(inbox, trash, False) == ([], [])
    assert junk_training_flags(inbox, junk, False) == (["$Junk"], ["$NotJunk"])
    assert junk_training_flags(junk, inbox, False) == (["$NotJunk"], ["$Junk"])
    assert junk_training_flags(rejects, work, False) == (["$NotJunk"], ["$Junk"])
    assert junk_training_flags(junk, trash, False) == ([], [])


# ---------------------------------------------------------------- Rejects upkeep, through the mail layer


def test_rejects_dedup_prune_and_removal_on_acceptance() -> None:
    async def go() -> None:
        with tempfile.TemporaryDirectory() as t:
            d = Path(t) / "data"
            src = MasterKeySource(key_file=Path(t) / "k")
            init_directory(d, src)
            store = await open_store(d, load_master_key(d, src))
            await store.create_account("a", ["a@example.test"], None)
            clock = [float(NOW)]
            jf = JunkFilter(clock=lambda: clock[0], draw=lambda: 0.5)
            async with store.use_account("a") as acct:
                raw = b"From: s@x.test\r\nMessage-ID: <1@x.test>\r\nSubject: s\r\n\r\nbody\r\n"
                plan = await jf.plan(acct, raw, message_features(raw), None, remote_ip="192.0.2.1", tls=True,
                                     recipients=["a@example.test"])
                origin = pb.Origin(kind="smtp", junk=plan.verdict)
                assert await mail_rejects.store_reject(jf, acct, b"X: 1\r\n" + raw, raw, plan, origin)
                # A retry with other trace headers but the same Message-ID: not stored again.
                assert not await mail_rejects.store_reject(jf, acct, b"X: 2\r\n" + raw, raw, plan, origin)
                rejects = acct.mailbox_required("Rejects")
                assert acct.view.count(rejects.id) == 1
                (m,) = acct.view.messages(rejects.id)
                assert m.flags == ("\\Seen",)  # neutral: neither $Junk nor $NotJunk
                assert junk_view(acct).history([("ip", "192.0.2.1/32")], plan.mailbox.id, 0, 10) == []
                # Accepted later: the copy leaves Rejects.
                assert await mail_rejects.accepted(acct, raw) == 1
                assert acct.view.count(rejects.id) == 0
                # Without a Message-ID the content is the key; 15 days later a copy is pruned.
                for i in range(3):
                    other = b"From: s@x.test\r\nSubject: n\r\n\r\nbody %d\r\n" % i
                    assert await mail_rejects.store_reject(jf, acct, other, other, plan, origin)
                    clock[0] += 8 * DAY
                assert acct.view.count(rejects.id) == 2
                assert await mail_rejects.prune(acct, int(clock[0])) == [3]
                assert REJECTS_MAX == 1000
            await store.close()

    asyncio.run(go())


def test_our_trace_fields_change_no_token_and_stored_verdicts_give_back_identities() -> None:
    from eventmail.junk.features import origin_features
    from eventmail.mailauth.dmarc import DmarcResult
    from eventmail.mailauth.spf import SpfResult
    from eventmail.mailauth.verdict import AuthVerdict

    raw = b"From: A <a@x.test>\r\nSubject: hi there\r\n\r\nplain words\r\n"
    traced = (b"Received: from h ([192.0.2.1])\r\n\tby mx.test\r\nAuthentication-Results: mx.test; spf=pass\r\n"
              b"X-Eventmail-Junk: accept; method=bayes\r\n" + raw)
    assert tokenize(traced) == tokenize(raw)
    auth = AuthVerdict(SpfResult("pass", "x.test", "mailfrom", "a@x.test", "h", "192.0.2.1"), (),
                       DmarcResult("pass", "none", from_domain="x.test"), "dmarc-pass", ())
    origin = pb.Origin(kind="smtp", remote_ip="192.0.2.1", verdict=auth.to_json())
    f = origin_features(traced, origin)
    assert f.from_validated and f.spf_domain == "x.test" and f.ip_nets[0] == "192.0.2.1/32"
    assert not origin_features(traced, pb.Origin(kind="imap-append")).from_validated


def test_the_first_time_sender_delay_holds_only_mail_without_history() -> None:
    inbox = Mailbox(1, "INBOX", 1, 1, 0, 0)

    def plan(method: str, accept: bool = True, trusted: str = "") -> Plan:
        return Plan(pb.JunkVerdict(accept=accept, method=method), pb.JunkFeatures(), inbox, trusted)

    assert JunkFilter().delay_for([plan("bayes")]) == 0.0  # off unless configured
    f = JunkFilter(first_time_delay=15.0)
    for method in ("bayes", "bayes:unsure", "bayes:untrained"):
        assert f.delay_for([plan(method)]) == 15.0
    assert f.delay_for([plan("bayes"), plan("reputation:from-address")]) == 0.0  # known to one account
    assert f.delay_for([plan("bayes", trusted="lists.test")]) == 0.0
    assert f.delay_for([plan("bayes", accept=False)]) == 0.0  # rejected: answered at once


# ---------------------------------------------------------------- the same message, the same verdict

# Run in a fresh interpreter: plan one message for account "a" of the store in argv[1] with the
# filter the MX uses (its default draw), and print the verdict.
_PLAN_IN_A_PROCESS = """
import asyncio, sys
from pathlib import Path
from eventmail.junk.delivery import JunkFilter
from eventmail.junk.features import message_features
from eventmail.opening import open_store
from eventmail.store import MasterKeySource, load_master_key

async def go():
    d, raw = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes()
    store = await open_store(d, load_master_key(d, MasterKeySource(key_file=Path(sys.argv[3]))))
    async with store.use_account("a") as acct:
        plan = await JunkFilter(clock=lambda: 1_800_000_000).plan(
            acct, raw, message_features(raw), None, remote_ip="192.0.2.1", tls=True, recipients=["a@example.test"])
    await store.close()
    v = plan.verdict
    print(repr((v.accept, v.method, v.mailbox, v.score, v.threshold, v.jitter)))

asyncio.run(go())
"""


def test_the_same_message_gets_the_same_score_and_threshold_in_every_run(tmp_path: Path) -> None:
    """Two processes (different PYTHONHASHSEED, so set and dict order differ) give one message
    the same verdict from the same account state: the score is a function of the statistics,
    and the threshold's jitter a keyed hash of the message (delivery.message_draw), not a new
    random draw per delivery -- with one, a message near the threshold was refused in one run and
    filed in Junk in the next, and a sender's retry could draw its way through."""
    import os
    import subprocess
    import sys

    from eventmail.junk.play import read_message

    corpus = Path(__file__).parent / "data" / "corpus"
    hams = [read_message(p) for p in sorted((corpus / "ham").iterdir()) if p.suffix == ".eml"][:60]
    spams = [read_message(p) for p in sorted((corpus / "spam").iterdir()) if p.suffix == ".eml"][:60]
    d, key = tmp_path / "data", tmp_path / "k"

    async def setup() -> None:
        src = MasterKeySource(key_file=key)
        init_directory(d, src)
        store = await open_store(d, load_master_key(d, src))
        await store.create_account("a", ["a@example.test"], None)
        async with store.use_account("a") as acct:
            for raw in hams:
                await acct.add_message("Archive", raw, flags=["$NotJunk"])
            for raw in spams:
                await acct.add_message("Junk", raw, flags=["$Junk"])
        await store.close()

    asyncio.run(setup())
    outcomes = []
    for i, seed in enumerate(("1", "2", "3")):
        message = tmp_path / f"m{i}.eml"
        # Another name for each run, the same bytes: the draw depends on the message, not the file.
        message.write_bytes(read_message(sorted((corpus / "spam").iterdir())[73]))
        p = subprocess.run([sys.executable, "-c", _PLAN_IN_A_PROCESS, str(d), str(message), str(key)],
                           capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent,
                           env={**os.environ, "PYTHONHASHSEED": seed})
        outcomes.append(p.stdout)
    assert outcomes[0].startswith("(") and "bayes" in outcomes[0], outcomes
    assert outcomes[1:] == outcomes[:1] * 2, outcomes


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from([*"ab (;)\"x", "\r", "\n", "\x00", "\u2028", "é", "\u0378", "\x85"]), max_size=300))
def test_the_verdict_fields_text_is_cleaned_as_one_character_at_a_time(text: str) -> None:
    """The X-Eventmail-Junk field's free text (reasons, words): non-printable characters and the
    field's delimiters become spaces, at most 200 characters, as the plain definition has it,
    whichever of its two forms runs."""
    from eventmail.junk.analyze import _clean

    assert _clean(text) == "".join(c if c.isprintable() and c not in "();" else " " for c in text)[:200]
