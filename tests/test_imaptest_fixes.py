"""The behaviours imaptest's compliance groups found missing, each shown over a real socket without imaptest."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imap_harness import ImapServer, simple_message


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        s.deliver(simple_message("one"))
        s.deliver(simple_message("two"))
        yield s


def test_recent_goes_to_exactly_one_session(srv: ImapServer) -> None:
    """RFC 3501 §2.3.2: messages that arrived while no session had the mailbox selected are
    \\Recent for the first session to select it, and for no other; EXAMINE and STATUS see them
    without claiming; an arrival told to a selected session is followed by `* n RECENT`."""
    watcher = srv.raw()
    watcher.login()
    assert b"* 2 RECENT" in watcher.cmd(b"e EXAMINE INBOX")  # sees them, claims nothing
    assert any(b"RECENT 2" in line for line in watcher.cmd(b"u UNSELECT") + watcher.cmd(b"s STATUS INBOX (RECENT)"))
    first, second = srv.raw(), srv.raw()
    first.login()
    second.login()
    assert b"* 2 RECENT" in first.cmd(b"s SELECT INBOX")
    assert b"* 0 RECENT" in second.cmd(b"s SELECT INBOX")
    assert first.cmd(b"f FETCH 1 FLAGS")[0] == b"* 1 FETCH (FLAGS (\\Recent))"
    assert second.cmd(b"f FETCH 1 FLAGS")[0] == b"* 1 FETCH (FLAGS ())"
    assert re.search(rb"RECENT 0", watcher.cmd(b"t STATUS INBOX (RECENT)")[0])
    srv.deliver(simple_message("three"))
    out_first = first.cmd(b"n NOOP")
    out_second = second.cmd(b"n NOOP")
    # whoever was told first has it; the other sees the EXISTS with an unchanged RECENT
    recents = [out_first[out_first.index(b"* 3 EXISTS") + 1], out_second[out_second.index(b"* 3 EXISTS") + 1]]
    assert sorted(recents) == [b"* 0 RECENT", b"* 3 RECENT"], (out_first, out_second)


def test_undecodable_mailbox_atom_is_no_not_bad(srv: ImapServer) -> None:
    """A well-formed atom that is not valid modified UTF-7 (RFC 3501 §5.1.3) names no mailbox: NO."""
    c = srv.raw()
    c.login()
    assert c.cmd(b"s SELECT &Jjo")[-1].startswith(b"s NO ")
    out = c.cmd(b"l LIST \"\" !#$&'+,-.0123456789:;<=>?@^_`|[}%*")
    assert out == [b"l OK LIST completed"]
    assert c.cmd(b"c CREATE a&Jjo")[-1].startswith(b"c NO [CANNOT]")


def test_esearch_min_max_modseq_is_the_message_own(srv: ImapServer) -> None:
    """RFC 4731 §3.2 / RFC 7162 §3.1.5: MIN alone carries the MIN message's mod-sequence."""
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    first = c.cmd(b"a STORE 1 +FLAGS (\\Seen)")
    second = c.cmd(b"b STORE 2 +FLAGS (\\Seen)")
    assert b"[HIGHESTMODSEQ" not in b"".join(first)  # not CONDSTORE-enabling
    m1 = int(re.findall(rb"MODSEQ \((\d+)\)", c.cmd(b"f FETCH 1 MODSEQ")[0])[0])
    m2 = int(re.findall(rb"MODSEQ \((\d+)\)", c.cmd(b"g FETCH 2 MODSEQ")[0])[0])
    assert m1 < m2 and second[-1].startswith(b"b OK")
    assert c.cmd(b"h SEARCH RETURN (MIN) MODSEQ 1")[0] == b'* ESEARCH (TAG "h") MIN 1 MODSEQ %d' % m1
    assert c.cmd(b"i SEARCH RETURN (MAX) MODSEQ 1")[0] == b'* ESEARCH (TAG "i") MAX 2 MODSEQ %d' % m2
    assert c.cmd(b"j SEARCH RETURN (COUNT) MODSEQ 1")[0] == b'* ESEARCH (TAG "j") COUNT 2 MODSEQ %d' % m2


def test_first_condstore_command_brings_highestmodseq(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    out = c.cmd(b"f FETCH 1 MODSEQ")
    assert any(line.startswith(b"* OK [HIGHESTMODSEQ ") for line in out), out  # RFC 7162 §3.1
    assert not any(b"HIGHESTMODSEQ" in line for line in c.cmd(b"g FETCH 1 MODSEQ"))


def test_search_from_reads_the_address_as_envelope_does(srv: ImapServer) -> None:
    srv.deliver(b"From: <user-from (comment)@ (comment) domain.org>\r\nSubject: c\r\n\r\nx\r\n")
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    assert c.cmd(b"a SEARCH FROM user-from@domain.org")[0] == b"* SEARCH 3"
    assert c.cmd(b"b SEARCH FROM bob")[0] == b"* SEARCH 1 2"


def test_store_of_a_new_keyword_updates_flags_first(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    out = c.cmd(b"a STORE 1 +FLAGS ($Hello)")
    assert out[0] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Hello)"  # RFC 9051 §7.3.5
    assert out[1].startswith(b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Hello \\*)]")
    assert out[2] == b"* 1 FETCH (FLAGS ($Hello \\Recent))"


def test_nothing_after_bye(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    other = srv.imap()
    other.select("INBOX")
    other.store("1", "+FLAGS", r"(\Flagged)")
    assert c.cmd(b"l LOGOUT") == [b"* BYE logging out", b"l OK LOGOUT completed"]


def test_move_within_a_mailbox_expunges_first(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    c.cmd(b"s SELECT INBOX")
    out = [line for line in c.cmd(b"m MOVE 1 INBOX") if not line.startswith(b"* OK [COPYUID")]
    assert out[:2] == [b"* 1 EXPUNGE", b"* 2 EXISTS"], out


def test_recursivematch_childinfo_only_for_unmatched_children(srv: ImapServer) -> None:
    c = srv.raw()
    c.login()
    for line in (b"a CREATE p/c", b"b SUBSCRIBE p/c"):
        assert c.cmd(line)[-1].startswith(line[:1] + b" OK")
    # RFC 5258 §3.5: p/c matches itself, so p gets no CHILDINFO; with `p` alone it does
    assert c.cmd(b'l LIST (SUBSCRIBED RECURSIVEMATCH) "" (p p/c)')[:-1] == [b'* LIST (\\HasNoChildren \\Subscribed) "/" "p/c"']
    assert c.cmd(b'k LIST (SUBSCRIBED RECURSIVEMATCH) "" (p)')[:-1] == [
        b'* LIST (\\HasChildren) "/" "p" ("CHILDINFO" ("SUBSCRIBED"))']
