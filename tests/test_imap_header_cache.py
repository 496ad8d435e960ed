"""FETCH of a message's header fields from the kept field offsets (imap/fetch.py HEADERS): the same bytes as a fresh read, and no second read."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from eventmail.imap import fetch
from eventmail.imap.commands import Section
from eventmail.mime import parse_structure
from eventmail.mime.headers import header_fields
from eventmail.mime.imapform import extract_section, header_subset
from eventmail.store import MailboxView
from tests.imap_harness import ImapServer, corpus

NAMES = ("FROM", "TO", "CC", "SUBJECT", "REFERENCES", "IN-REPLY-TO", "MESSAGE-ID", "RECEIVED", "X-NONE")


def test_kept_offsets_give_what_extract_section_gives() -> None:
    """For real messages (folded fields, LF-only ones, no body), every top-level header section
    built from HeaderFields is byte for byte what extract_section reads from scratch."""
    rng = random.Random(15)
    messages = [*corpus(60), *corpus(30, "spam"), b"Subject: no body, no blank line",
                b"\r\nno header at all\r\n", b"From: a@example.test\nSubject: LF\n only\n\nbody\n"]
    for raw in messages:
        st = parse_structure(raw)
        hs, bs = st.body.header_start, st.body.body_start
        kept = fetch.HeaderFields(hs, bs, header_fields(raw, hs, bs))
        for _ in range(6):
            names = tuple(rng.sample(NAMES, rng.randint(1, 4)))
            for text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                section = Section(text=text, fields=names)
                wanted = {n.lower().encode() for n in names}
                assert header_subset(raw, kept.start, kept.end, kept.fields(), wanted, text.endswith(".NOT")) \
                    == extract_section(raw, st, str(section))
        assert raw[kept.start : kept.end] == extract_section(raw, st, "HEADER")


def test_header_fields_are_read_once_per_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second FETCH of header fields (other fields, HEADER, RFC822.HEADER) of the same
    messages neither reads their headers again nor asks the store where they end, and answers
    the same bytes as the first."""
    structure_reads: list[int] = []
    real_structure = MailboxView.structure

    def structure(self: MailboxView, mailbox_id: int, uid: int) -> object:
        structure_reads.append(uid)
        return real_structure(self, mailbox_id, uid)

    monkeypatch.setattr(MailboxView, "structure", structure)
    fetch.HEADERS.clear()
    with ImapServer(tmp_path) as srv:
        msgs = corpus(12)
        for raw in msgs:
            srv.deliver(raw)
        m = srv.imap()
        m.select("INBOX", readonly=True)
        typ, first = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
        assert typ == "OK"
        assert sorted(structure_reads) == list(range(1, 13))
        structure_reads.clear()
        typ, again = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])")
        assert typ == "OK" and [d[1] for d in again if isinstance(d, tuple)] == [d[1] for d in first if isinstance(d, tuple)]
        typ, whole = m.fetch("1:*", "(BODY.PEEK[HEADER] RFC822.HEADER BODY.PEEK[HEADER.FIELDS.NOT (RECEIVED)])")
        assert typ == "OK"
        assert structure_reads == []
        headers = [d[1] for d in whole if isinstance(d, tuple)]
        assert headers[0::3] == [raw[: parse_structure(raw).body.body_start] for raw in msgs]
        assert headers[1::3] == headers[0::3]
        assert all(b"\nReceived:" not in h and not h.startswith(b"Received:") for h in headers[2::3])
        m.logout()


def test_changes_are_read_from_the_view_once_per_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session told of several other sessions' changes at once reads the view once for all of
    them (one statement per event per session added up under imaptest's stress), and a FETCH
    of a few messages of a larger mailbox reads only those."""
    calls: list[str] = []
    real_of, real_all = MailboxView.messages_of, MailboxView.messages

    def messages_of(self: MailboxView, mailbox_id: int, uids: object) -> object:
        calls.append("messages_of")
        return real_of(self, mailbox_id, uids)  # type: ignore[arg-type]

    def messages(self: MailboxView, mailbox_id: int) -> object:
        calls.append("messages")
        return real_all(self, mailbox_id)

    monkeypatch.setattr(MailboxView, "messages_of", messages_of)
    monkeypatch.setattr(MailboxView, "messages", messages)
    with ImapServer(tmp_path) as srv:
        for i in range(200):
            srv.deliver(f"From: a@example.test\r\nSubject: m{i}\r\n\r\nbody {i}\r\n".encode())
        watcher, writer = srv.raw(), srv.raw()
        watcher.login()
        writer.login()
        watcher.cmd(b"s SELECT INBOX")
        writer.cmd(b"s SELECT INBOX")
        for n in (1, 2, 3):
            assert writer.cmd(b"f%d STORE %d +FLAGS (\\Flagged)" % (n, n))[-1].startswith(b"f%d OK" % n)
        calls.clear()
        told = watcher.cmd(b"n NOOP")
        assert [line for line in told if b"FETCH" in line and b"\\Flagged" in line] and len(told) == 4
        assert calls == ["messages_of"]
        calls.clear()
        out = watcher.cmd(b"a FETCH 1:80 (FLAGS)")
        assert len(out) == 81 and calls == ["messages_of"]
        calls.clear()
        out = watcher.cmd(b"b FETCH 1:150 (FLAGS)")
        assert len(out) == 151 and calls == ["messages"]  # most of the mailbox: one read of it all
