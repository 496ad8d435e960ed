"""ESEARCH (MULTISEARCH, RFC 7377) over a real socket: one search over the mailboxes a filter names,
each answer tagged with the mailbox and its UIDVALIDITY, numbers always UIDs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imap_harness import ImapServer, RawClient, simple_message


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        c = s.raw()
        c.login()
        for line in (b"a CREATE Lists", b"b CREATE Lists/ietf", b"d CREATE Lists/ietf/old", b"e SUBSCRIBE Lists"):
            assert c.cmd(line)[-1].split()[1] == b"OK"
        c.close()
        for box, subjects in {"INBOX": ["apple", "pear", "apple pie"], "Lists": ["pear", "apple"],
                              "Lists/ietf": ["apple"], "Lists/ietf/old": ["apple"], "Junk": ["apple"]}.items():
            for subject in subjects:
                s.deliver(simple_message(subject), mailbox=box)
        yield s


def _client(srv: ImapServer) -> RawClient:
    c = srv.raw()
    c.login()
    return c


def _answers(out: list[bytes]) -> dict[str, bytes]:
    """Mailbox name → the rest of its ESEARCH answer (after `UID `)."""
    found = {}
    for line in out:
        m = re.match(rb'\* ESEARCH \(TAG "(\w+)" MAILBOX "([^"]+)" UIDVALIDITY (\d+)\) UID (.*)', line)
        if m:
            found[m.group(2).decode()] = m.group(4)
    return found


def test_esearch_over_filters(srv: ImapServer) -> None:
    c = _client(srv)
    assert b"MULTISEARCH" in c.cmd(b"c CAPABILITY")[0].split()
    out = c.cmd(b"a ESEARCH IN (personal) SUBJECT apple")
    assert out[-1].startswith(b"a OK")
    assert _answers(out) == {"INBOX": b"ALL 1,3", "Junk": b"ALL 1", "Lists": b"ALL 2", "Lists/ietf": b"ALL 1",
                             "Lists/ietf/old": b"ALL 1"}
    uidvalidity = re.search(rb'MAILBOX "INBOX" UIDVALIDITY (\d+)', b"\n".join(out))
    status = c.cmd(b"s STATUS INBOX (UIDVALIDITY)")[0]
    assert uidvalidity is not None and uidvalidity.group(1) in status
    # subtree-one: the mailbox and its children, not grandchildren; a mailbox named twice is searched once
    out = c.cmd(b"b ESEARCH IN (subtree-one Lists mailboxes Lists) RETURN (COUNT MIN) SUBJECT apple")
    assert _answers(out) == {"Lists": b"MIN 2 COUNT 1", "Lists/ietf": b"MIN 1 COUNT 1"}
    assert _answers(c.cmd(b"d ESEARCH IN (subtree Lists/ietf) ALL")) == {"Lists/ietf": b"ALL 1", "Lists/ietf/old": b"ALL 1"}
    assert set(_answers(c.cmd(b"e ESEARCH IN (inboxes) ALL"))) == {"INBOX", "Junk"}
    assert set(_answers(c.cmd(b"f ESEARCH IN (subscribed) ALL"))) == {"INBOX", "Junk", "Lists"}  # not Lists/ietf
    # no match: no answer for the mailbox (RFC 7377 §2)
    assert _answers(c.cmd(b"g ESEARCH IN (personal) SUBJECT banana")) == {}
    # MODSEQ (RFC 7162 §3.1.5): the answer carries the mod-sequence, of the message MAX names
    got = _answers(c.cmd(b"m ESEARCH IN (mailboxes (INBOX Lists)) RETURN (MAX) MODSEQ 1"))
    fetched = c.cmd(b"n EXAMINE INBOX") and c.cmd(b"o FETCH 3 (MODSEQ)")[0]
    assert got["INBOX"].startswith(b"MAX 3 MODSEQ ") and got["INBOX"].split()[-1] in fetched
    c.cmd(b"p UNSELECT")
    # sequence numbers count in each mailbox
    assert _answers(c.cmd(b"h ESEARCH IN (mailboxes (INBOX Lists)) 2")) == {"INBOX": b"ALL 2", "Lists": b"ALL 2"}
    c.close()


def test_esearch_and_the_selected_mailbox(srv: ImapServer) -> None:
    c = _client(srv)
    assert c.cmd(b"a ESEARCH ALL")[-1].startswith(b"a BAD")  # nothing selected, no IN
    assert c.cmd(b"b ESEARCH IN (selected) ALL")[-1].startswith(b"b BAD")
    c.cmd(b"s SELECT Lists")
    assert _answers(c.cmd(b"d ESEARCH SUBJECT pear")) == {"Lists": b"ALL 1"}
    # SAVE only when the selected mailbox is the one source (RFC 7377 §2); $ likewise
    assert c.cmd(b"e ESEARCH IN (personal) RETURN (SAVE) ALL")[-1].startswith(b"e BAD")
    assert c.cmd(b"f ESEARCH IN (selected) RETURN (SAVE) SUBJECT apple")[-1].startswith(b"f OK")
    assert c.cmd(b"g SEARCH $")[0] == b"* SEARCH 2"
    assert c.cmd(b"h ESEARCH IN (personal) $")[-1].startswith(b"h BAD")
    for line in (b"i ESEARCH IN (selected-delayed) ALL", b"j ESEARCH RETURN (PARTIAL 1:2) ALL",
                 b"k ESEARCH IN (personal (DEPTH 1)) ALL"):
        assert c.cmd(line)[-1].startswith(line.split()[0] + b" BAD"), line
    c.close()
