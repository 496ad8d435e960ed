"""The changes held for an IMAP session that does not read them are bounded (Limits.max_queued_changes):
past the limit they are dropped and the session ends with BYE, while a session that reads (IDLE)
is never cut off, and the server goes on."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from eventmail.imap import Limits
from eventmail.store import SubscriptionOverflow
from tests.imap_harness import USER, ImapServer, simple_message

LIMIT = 5


def _subscribers(srv: ImapServer) -> int:
    async def go() -> int:
        async with srv.store.use_account(USER) as acct:
            return len(acct._writer.subscribers)
    return srv.call(go())


def test_a_session_that_reads_nothing_is_closed_past_the_limit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="eventmail.imap")
    with ImapServer(tmp_path, limits=Limits(max_queued_changes=LIMIT)) as srv:
        quiet = srv.raw()
        quiet.login()
        assert quiet.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
        before = _subscribers(srv)
        for i in range(LIMIT + 1):
            srv.deliver(simple_message(f"m{i}"))
        # the queue was dropped when it overflowed, not kept until the client comes back
        assert _subscribers(srv) == before - 1
        quiet.send(b"n NOOP\r\n")
        assert quiet.response() == b"* BYE too many changes waited for this session; log in again to resync"
        assert quiet.closed() and quiet.buf == b""  # and nothing of NOOP: it did not run
        assert "more than 5 changes waited for the session; closing it" in caplog.text
        # logging in again shows everything: nothing was lost but the queue
        again = srv.imap()
        typ, data = again.select("INBOX")
        assert typ == "OK" and data == [str(LIMIT + 1).encode()]
        again.logout()


def test_up_to_the_limit_the_changes_are_told(tmp_path: Path) -> None:
    with ImapServer(tmp_path, limits=Limits(max_queued_changes=LIMIT)) as srv:
        c = srv.raw()
        c.login()
        assert c.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
        for i in range(LIMIT):
            srv.deliver(simple_message(f"m{i}"))
        out = c.cmd(b"n NOOP")
        assert out[-1] == b"n OK NOOP completed"
        assert f"* {LIMIT} EXISTS".encode() in out
        c.close()


def test_an_idling_session_is_told_every_change_past_the_limit(tmp_path: Path) -> None:
    with ImapServer(tmp_path, limits=Limits(max_queued_changes=LIMIT)) as srv:
        c = srv.raw()
        c.login()
        assert c.cmd(b"s SELECT INBOX")[-1].startswith(b"s OK")
        c.send(b"i IDLE\r\n")
        assert c.response().startswith(b"+ ")
        n = 4 * LIMIT
        for i in range(n):
            srv.deliver(simple_message(f"m{i}"))
            told = c.response()
            if told.endswith(b"RECENT"):  # IMAP4rev1 says RECENT with EXISTS (RFC 3501 §7.3.2)
                told = c.response()
            assert told == f"* {i + 1} EXISTS".encode()
        c.send(b"DONE\r\n")
        assert c.until(b"i")[-1] == b"i OK IDLE terminated"
        assert c.cmd(b"n NOOP")[-1] == b"n OK NOOP completed"
        c.close()


def test_the_subscription_drops_its_queue_and_says_so(tmp_path: Path) -> None:
    with ImapServer(tmp_path) as srv:
        async def go() -> None:
            async with srv.store.use_account(USER) as acct:
                sub = acct.subscribe(2)
                await acct.create_mailbox("A")
                await acct.create_mailbox("B")
                assert sub in acct._writer.subscribers and not sub.overflowed
                await acct.create_mailbox("C")
                assert sub.overflowed and sub not in acct._writer.subscribers
                with pytest.raises(SubscriptionOverflow):
                    sub.pending()
                with pytest.raises(SubscriptionOverflow):
                    await asyncio.wait_for(sub.get(), 5)
                with pytest.raises(SubscriptionOverflow):  # and every time after
                    await asyncio.wait_for(sub.get(), 5)
                free = acct.subscribe()  # no limit: the server's own readers
                for name in "DEFG":
                    await acct.create_mailbox(name)
                assert len(free.pending()) == 4
                free.close()
        srv.call(go())
