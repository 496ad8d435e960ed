"""Same verdict on the secondary: the backup MX decides from its replicated junk statistics and reputation index."""

import asyncio
import re
import shutil
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.junk.play import read_message
from eventmail.opening import open_store
from eventmail.proto import events_pb2 as pb
from eventmail.store import MasterKeySource, Store, load_master_key

from .dns_fixture import DnsServer, zone_text
from .replica_pair import Node, caught_up, close_pair, make_pair, wait_until

pytestmark = [pytest.mark.peers, pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")]

CORPUS = Path(__file__).parent / "data" / "corpus"


def corpus(kind: str) -> list[bytes]:
    return [read_message(p) for p in sorted((CORPUS / kind).iterdir()) if p.suffix == ".eml"]


def zones() -> dict[str, str]:
    spf_dmarc = ['@ TXT "v=spf1 ip4:127.0.0.0/8 -all"', '_dmarc TXT "v=DMARC1; p=none"']
    return {d: zone_text(d, spf_dmarc) for d in ("mail.test", "spammer.test", "fresh.test")}


def with_from(raw: bytes, address: str) -> bytes:
    head, body = raw.split(b"\r\n\r\n", 1)
    keep = [line for line in re.split(rb"\r\n(?![ \t])", head) if not line.lower().startswith(b"from:")]
    return b"From: " + address.encode() + b"\r\n" + b"\r\n".join(keep) + b"\r\n\r\n" + body


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    base = tmp_path_factory.mktemp("junkpair")
    with DnsServer.start(base / "dns", zones()) as dns:
        a, b = make_pair(base)
        a.dns_port = b.dns_port = dns.port  # our zones (the pair's own DNS server has only example.test)

        async def train(store: Store) -> None:
            hams, spams = corpus("ham"), corpus("spam")
            async with store.use_account("alice") as acct:
                for raw in hams[:100]:
                    await acct.add_message("Archive", raw, flags=["$NotJunk"])
                for raw in spams[:50]:
                    await acct.add_message("Junk", raw, flags=["$Junk"])
                # A sender alice marked as junk (arrived in INBOX, moved to Junk).
                f = pb.JunkFeatures(from_address="deals@spammer.test", from_domain="spammer.test",
                                    from_org_domain="spammer.test", from_validated=True, words=["deal"])
                added = await acct.add_message("INBOX", b"From: deals@spammer.test\r\n\r\ndeal\r\n", junk=f)
                assert added is not None
                inbox, junk = acct.mailbox_required("INBOX"), acct.mailbox_required("Junk")
                await acct.copy(inbox.id, [added.event.message_added.uid], junk.id, move=True)

        async def go() -> None:
            store = await open_store(a.directory, load_master_key(a.directory, MasterKeySource(key_file=a.key_file)))
            try:
                await train(store)
            finally:
                await store.close()

        asyncio.run(go())
        a.start()
        b.start()
        try:
            wait_until(lambda: caught_up(b, a), 60, "the secondary to catch up")
            yield a, b
        finally:
            close_pair(a, b)


def send(node: Node, sender: str, raw: bytes) -> int:
    with smtplib.SMTP("127.0.0.1", node.ports["smtp"], timeout=30) as s:
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("sender.example")
        s.mail(sender)
        s.rcpt("alice@mail.test")
        code, _ = s.data(raw)
        return code


def rejections(b: Node) -> list[str]:
    return [line for line in list(b.log_lines) if "rejected as backup MX" in line]


def method_on_secondary(b: Node, seen_before: int) -> str:
    # The log is read by a thread: the line may arrive after the 451 does.
    wait_until(lambda: len(rejections(b)) > seen_before, 10, "the backup MX's log line")
    m = re.search(r"rejected as backup MX \(([^)]+)\)", rejections(b)[-1])
    assert m
    return m.group(1)


def junk_method(msg: bytes) -> str:
    m = re.search(rb"X-Eventmail-Junk: \w+; method=([\w:-]+)", msg)
    assert m
    return m.group(1).decode()


@pytest.mark.parametrize("sender, kind", [("deals@spammer.test", "reputation"), ("first@fresh.test", "content")])
def test_primary_and_backup_mx_give_the_same_verdict(pair: tuple[Node, Node], sender: str, kind: str) -> None:
    a, b = pair
    spam = with_from(corpus("spam")[97 if kind == "content" else 96], sender)
    assert send(a, sender, spam) == 451
    primary_method = junk_method(a.messages("alice", "Rejects")[-1])
    assert primary_method == ("reputation:from-address" if kind == "reputation" else "bayes")
    seen_before = len(rejections(b))
    assert send(b, sender, spam.replace(b"\r\n\r\n", b"\r\nX-Try: backup\r\n\r\n", 1)) == 451
    assert method_on_secondary(b, seen_before) == primary_method


def test_wanted_mail_is_accepted_by_both(pair: tuple[Node, Node]) -> None:
    a, b = pair
    ham = with_from(corpus("ham")[260], "someone@fresh.test")
    assert send(a, "someone@fresh.test", ham) == 250
    ham2 = ham.replace(b"\r\n\r\n", b"\r\nX-Try: backup\r\n\r\n", 1)
    assert send(b, "someone@fresh.test", ham2) == 250  # handed off to the primary
    wait_until(lambda: sum(b"X-Try: backup" in m for m in a.messages("alice")) == 1, 30, "the hand-off")


def test_the_backup_mx_refuses_and_the_primary_keeps_the_rejects_copy(pair: tuple[Node, Node]) -> None:
    """The backup MX writes no account stream: the copy of what it refused travels in its hand-off
    stream with the verdict, and the primary keeps it in Rejects as decided there (the header
    and the event's verdict are the backup's). The sender's retry at the primary is refused
    again and adds no second copy (the Rejects key is the Message-ID)."""
    a, b = pair
    spam = with_from(corpus("spam")[97], "other@fresh.test")
    spam = re.sub(rb"(?im)^message-id:[^\r]*\r\n", b"", spam)
    spam = spam.replace(b"\r\n\r\n", b"\r\nMessage-ID: <backup-reject@fresh.test>\r\nX-Try: refused-by-backup\r\n\r\n", 1)
    seen_before = len(rejections(b))
    assert send(b, "other@fresh.test", spam) == 451
    assert method_on_secondary(b, seen_before) == "bayes"
    wait_until(lambda: any(b"X-Try: refused-by-backup" in m for m in a.messages("alice", "Rejects")), 30,
               "the Rejects copy on the primary")
    (copy,) = [m for m in a.messages("alice", "Rejects") if b"X-Try: refused-by-backup" in m]
    assert junk_method(copy) == "bayes" and b"X-Eventmail-Junk: reject;" in copy
    assert not any(b"X-Try: refused-by-backup" in m for m in a.messages("alice"))
    assert send(a, "other@fresh.test", spam) == 451
    assert sum(b"<backup-reject@fresh.test>" in m for m in a.messages("alice", "Rejects")) == 1
