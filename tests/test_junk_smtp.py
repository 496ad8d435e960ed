"""Junk filtering over real SMTP: a real `eventmail serve`, swaks and smtplib, a DNS server process.

The user's judgements are made through the store's API (the same calls IMAP MOVE and STORE
make) while the server is stopped, then the server is started again on the same data.
"""

import asyncio
import shutil
import smtplib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from eventmail.junk.play import read_message
from eventmail.opening import open_store
from eventmail.proto import events_pb2 as pb
from eventmail.store import MasterKeySource, Store, load_master_key

from .dns_fixture import DnsServer, zone_text
from .mailserver import MailServer, swaks

pytestmark = [pytest.mark.peers, pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")]

PASSWORD = "correct horse battery"
CORPUS = Path(__file__).parent / "data" / "corpus"


def zones() -> dict[str, str]:
    spf_dmarc = ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"', '_dmarc TXT "v=DMARC1; p=none"']
    return {
        "mail.test": zone_text("mail.test", ["@ A 127.0.0.1", *spf_dmarc]),
        "spammer.test": zone_text("spammer.test", spf_dmarc),
        "friend.test": zone_text("friend.test", spf_dmarc),
        "newcomer.test": zone_text("newcomer.test", spf_dmarc),
        "shop.test": zone_text("shop.test", spf_dmarc),
        "fresh.test": zone_text("fresh.test", spf_dmarc),
        "listed.test": zone_text("listed.test", spf_dmarc),
        # Two DNSBLs (RFC 5782): one lists the loopback address the tests send from, one lists
        # nothing (every query NXDOMAIN).
        "bl.test": zone_text("bl.test", ["1.0.0.127 A 127.0.0.2", '1.0.0.127 TXT "listed for testing"']),
        "clean.test": zone_text("clean.test", ["2.0.0.127 A 127.0.0.2"]),
    }


async def arrived_then_moved(store: Store, account: str, raw: bytes, f: pb.JunkFeatures, dest: str, flag: str) -> None:
    """A message that arrived in INBOX, then moved by the user (as IMAP MOVE does, with its flag)."""
    async with store.use_account(account) as acct:
        inbox, to = acct.mailbox_required("INBOX"), acct.mailbox_required(dest)
        added = await acct.add_message("INBOX", raw, junk=f)
        assert added is not None
        await acct.copy(inbox.id, [added.event.message_added.uid], to.id, move=True, add_flags=[flag])


def with_from(raw: bytes, address: str) -> bytes:
    """A corpus message as if `address` wrote it: its From fields replaced."""
    head, body = raw.split(b"\r\n\r\n", 1)
    lines: list[bytes] = []
    skipping = False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                lines.append(line)
            continue
        skipping = line.lower().startswith(b"from:")
        if not skipping:
            lines.append(line)
    return b"From: " + address.encode() + b"\r\n" + b"\r\n".join(lines) + b"\r\n\r\n" + body


def corpus(kind: str) -> list[bytes]:
    return [read_message(p) for p in sorted((CORPUS / kind).iterdir()) if p.suffix == ".eml"]


def store_session(srv: MailServer, fn: object) -> object:
    """Run `fn(store)` on the server's data directory (the server must be stopped)."""

    async def go() -> object:
        key = load_master_key(srv.directory, MasterKeySource(key_file=srv.key_file))
        store = await open_store(srv.directory, key)
        try:
            return await fn(store)  # type: ignore[operator]
        finally:
            await store.close()

    return asyncio.run(go())


async def train(store: Store, account: str, hams: list[bytes], spams: list[bytes]) -> None:
    """What a user who sorted their mail leaves behind: ham archived, spam in Junk."""
    async with store.use_account(account) as acct:
        for raw in hams:
            await acct.add_message("Archive", raw, flags=["$NotJunk"])
        for raw in spams:
            await acct.add_message("Junk", raw, flags=["$Junk"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    base = tmp_path_factory.mktemp("junk")
    srv = MailServer(base)
    srv.init()
    for name in ("carol", "dave", "erin", "frank", "gina"):
        srv.add_account(name, f"{name}@mail.test", PASSWORD)
    hams, spams = corpus("ham"), corpus("spam")

    async def setup(store: Store) -> None:
        # dave and erin have sorted a good part of their mail; carol has not (no content filter).
        await train(store, "dave", hams[:120], spams[:60])
        await train(store, "erin", hams[:120], spams[:60])
        # frank asks two DNSBLs about senders without history (gina has the default: none).
        async with store.use_account("frank") as acct:
            await acct.append([pb.Event(account_setting=pb.AccountSetting(key="junk.dnsbl", value="clean.test,bl.test"))])

    store_session(srv, setup)
    with DnsServer.start(base / "dns", zones()) as dns:
        srv.dns_port = dns.port
        srv.start()
        yield srv
        srv.stop()


def send(srv: MailServer, sender: str, rcpt: str, raw: bytes) -> tuple[int, str]:
    """One MX transaction with smtplib over STARTTLS; (code, text) of the reply to the message."""
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("sender.example")
        s.mail(sender)
        s.rcpt(rcpt)
        code, text = s.data(raw)
        return code, text.decode()


def message(sender: str, rcpt: str, subject: str, body: str, message_id: str) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"], m["Message-ID"] = sender, rcpt, subject, message_id
    m.set_content(body)
    return m.as_bytes().replace(b"\n", b"\r\n")


def junk_header(msg: bytes) -> str:
    head = msg.split(b"\r\n\r\n", 1)[0].decode()
    start = head.index("X-Eventmail-Junk:")
    lines = head[start:].split("\r\n")
    out = [lines[0]]
    for line in lines[1:]:
        if line[:1] not in (" ", "\t"):
            break
        out.append(line.strip())
    return " ".join(out)


def test_a_sender_the_user_marked_junk_is_rejected_with_451_and_kept_in_rejects(
    server: MailServer, tmp_path: Path,
) -> None:
    first = message("deals@spammer.test", "carol@mail.test", "hello", "first message", "<m1@spammer.test>")
    assert send(server, "deals@spammer.test", "carol@mail.test", first)[0] == 250  # no history yet
    inbox = server.messages("carol")
    assert b"method=bayes:untrained" in inbox[-1]
    server.stop()

    async def mark_junk(store: Store) -> None:
        # The user moves it to Junk (IMAP MOVE sets $Junk on the copy).
        async with store.use_account("carol") as acct:
            src, junk = acct.mailbox_required("INBOX"), acct.mailbox_required("Junk")
            uid = acct.view.messages(src.id)[-1].uid
            await acct.copy(src.id, [uid], junk.id, move=True, add_flags=["$Junk"])

    store_session(server, mark_junk)
    server.start()
    second = message("deals@spammer.test", "carol@mail.test", "hello again", "second message", "<m2@spammer.test>")
    (tmp_path / "second.eml").write_bytes(second)
    p = swaks("-s", "127.0.0.1", "-p", str(server.ports["smtp"]), "-f", "deals@spammer.test", "-t", "carol@mail.test",
              "--data", f"@{tmp_path / 'second.eml'}", "-tls")
    # Generic: the text says nothing of why, so a spammer learns nothing.
    assert "<~* 451 4.3.0 temporary failure, try again later" in p.stdout, p.stdout
    rejects = server.messages("carol", "Rejects")
    assert len(rejects) == 1 and b"second message" in rejects[0]
    assert "reject; method=reputation:from-address" in junk_header(rejects[0])
    assert not any(b"second message" in m for m in server.messages("carol"))
    # The sending server retries: still 451, still one copy (deduplicated by Message-ID).
    assert send(server, "deals@spammer.test", "carol@mail.test", second)[0] == 451
    assert len(server.messages("carol", "Rejects")) == 1


def test_moving_out_of_rejects_trains_not_junk_and_the_retry_is_accepted(server: MailServer) -> None:
    third = message("news@shop.test", "carol@mail.test", "order", "your order shipped", "<m3@shop.test>")
    server.stop()

    async def history(store: Store) -> None:
        # carol once marked shop.test mail as junk...
        f = pb.JunkFeatures(from_address="news@shop.test", from_domain="shop.test", from_org_domain="shop.test",
                            from_validated=True)
        await arrived_then_moved(store, "carol", b"From: news@shop.test\r\nSubject: x\r\n\r\nold\r\n", f, "Junk", "$Junk")

    store_session(server, history)
    server.start()
    assert send(server, "news@shop.test", "carol@mail.test", third)[0] == 451
    assert any(b"your order shipped" in m for m in server.messages("carol", "Rejects"))
    server.stop()

    async def rescue(store: Store) -> None:
        # ...and now moves the rejected order confirmation to INBOX: not junk, for INBOX.
        async with store.use_account("carol") as acct:
            rej, inbox = acct.mailbox_required("Rejects"), acct.mailbox_required("INBOX")
            uid = next(m.uid for m in acct.view.messages(rej.id) if b"your order" in acct.read_message_sync(m.blob_id))
            await acct.copy(rej.id, [uid], inbox.id, move=True)  # the move itself sets $NotJunk

    store_session(server, rescue)
    server.start()
    # The next message from the same address: the history now holds the rescued message as not
    # junk (for INBOX, where it was meant to go), so it is no longer clear junk: accepted.
    again = message("news@shop.test", "carol@mail.test", "order 2", "second order shipped", "<m4@shop.test>")
    code, _ = send(server, "news@shop.test", "carol@mail.test", again)
    assert code == 250
    h = junk_header(server.messages("carol")[-1])
    assert h.startswith("X-Eventmail-Junk: accept;") and "from-address news@shop.test: 1 junk, 1 not junk" in h, h


def test_a_rejected_copy_leaves_rejects_when_a_retry_is_accepted(server: MailServer) -> None:
    spam = with_from(corpus("spam")[81], "promo@newcomer.test")
    code, _ = send(server, "promo@newcomer.test", "erin@mail.test", spam)
    assert code == 451
    server.stop()

    async def mark_ham(store: Store) -> None:
        # erin tells the filter that newcomer.test is fine (a message from it archived).
        f = pb.JunkFeatures(from_address="promo@newcomer.test", from_domain="newcomer.test",
                            from_org_domain="newcomer.test", from_validated=True)
        await arrived_then_moved(store, "erin", b"From: promo@newcomer.test\r\n\r\nok\r\n", f, "Archive", "$NotJunk")

    store_session(server, mark_ham)
    server.start()
    before = len(server.messages("erin", "Rejects"))
    assert before >= 1
    code, _ = send(server, "promo@newcomer.test", "erin@mail.test", spam)  # the retry
    assert code == 250
    assert len(server.messages("erin", "Rejects")) == before - 1


def test_a_correspondent_the_user_wrote_to_is_accepted(server: MailServer) -> None:
    # A spammy-looking reply: the content filter alone rejects it. (Its score is far above the
    # highest threshold, and the same message meets the same threshold in every run: the jitter
    # is a keyed hash of the message, tests/test_junk_filter.py.)
    spam_body = corpus("spam")[73]
    code, _ = send(server, "stranger@newcomer.test", "dave@mail.test", spam_body)
    assert code == 451
    # dave writes to friend@friend.test through submission; the Sent copy records the recipient.
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=30) as s:
        s.starttls(context=ssl._create_unverified_context())
        s.login("dave@mail.test", PASSWORD)
        s.sendmail("dave@mail.test", ["friend@friend.test"],
                   message("dave@mail.test", "friend@friend.test", "lunch?", "shall we?", "<d1@mail.test>"))
    reply = with_from(spam_body, "friend@friend.test")
    code, _ = send(server, "friend@friend.test", "dave@mail.test", reply)
    assert code == 250
    # (The queue's failure notice for friend.test, which has no MX, may land in the INBOX too.)
    got = [m for m in server.messages("dave") if b"X-Eventmail-Junk:" in m and b"From: friend@friend.test" in m]
    assert "accept; method=reputation:wrote-to" in junk_header(got[-1])


def test_a_first_time_spammy_message_is_rejected_by_content(server: MailServer) -> None:
    spam, ham = corpus("spam")[90], corpus("ham")[250]
    code, text = send(server, "first@fresh.test", "erin@mail.test", spam)
    assert code == 451 and text.startswith("4.3.0 temporary failure, try again later (smtp ")
    copy = server.messages("erin", "Rejects")[-1]
    h = junk_header(copy)
    assert "reject; method=bayes; score=" in h
    # The verdict and its reasons are in the delivery event, never recomputed on replay.
    server.stop()

    async def read(store: Store) -> pb.JunkVerdict:
        async with store.use_account("erin") as acct:
            for c in reversed(list(acct.events())):
                if c.event.WhichOneof("kind") == "message_added" and c.event.message_added.origin.kind == "smtp":
                    return c.event.message_added.origin.junk
        raise AssertionError("no delivery event")

    v = store_session(server, read)
    assert isinstance(v, pb.JunkVerdict)
    assert not v.accept and v.method == "bayes" and v.score > v.threshold and v.spam_words
    assert v.mailbox == "INBOX" and abs(v.jitter) <= 0.02
    server.start()
    # A first-time sender with ordinary mail gets through.
    assert send(server, "second@fresh.test", "erin@mail.test", ham)[0] == 250


def test_a_dnsbl_listing_refuses_a_sender_without_history_only_where_configured(server: MailServer) -> None:
    """The DNSBL is asked through the server's resolver, of a real DNS server process: frank's
    list of two is asked in order (the first does not list 127.0.0.1, the second does) and the
    message is refused with a Rejects copy that says why; gina has no DNSBL (the default), and
    the same message from the same address gets through."""
    raw = message("bulk@listed.test", "frank@mail.test", "offer", "a first message", "<dnsbl1@listed.test>")
    assert send(server, "bulk@listed.test", "frank@mail.test", raw)[0] == 451
    (copy,) = server.messages("frank", "Rejects")
    assert "reject; method=dnsbl" in junk_header(copy) and "listed by bl.test" in junk_header(copy)
    assert server.messages("frank") == []
    raw = message("bulk@listed.test", "gina@mail.test", "offer", "a first message", "<dnsbl2@listed.test>")
    assert send(server, "bulk@listed.test", "gina@mail.test", raw)[0] == 250
    (delivered,) = server.messages("gina")
    assert "accept; method=bayes:untrained" in junk_header(delivered)
