"""Sync mode's bounded wait (tempfail or degrade), the backup MX hand-off, and promotion, on real processes."""

import imaplib
import smtplib
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .replica_pair import caught_up, close_pair, make_pair, wait_until
from .test_replica import send


def replica_metrics(node: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """`eventmail replica status --metrics`, parsed by prometheus-client's parser."""
    text = node.replica("status", "--metrics").stdout  # type: ignore[attr-defined]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def count(node: object, subject: str) -> int:
    msgs = node.messages("alice")  # type: ignore[attr-defined]
    return sum(f"Subject: {subject}\r\n".encode() in m for m in msgs)


@pytest.mark.peers
def test_sync_tempfail_answers_4xx_without_the_secondary_and_the_retry_lands_once(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path, mode="sync", on_timeout="tempfail", sync_timeout=1.5)
    a.start()
    b.start()
    try:
        send(a.ports["smtp"], "before")
        wait_until(lambda: caught_up(b, a), what="catch-up")
        assert count(b, "before") == 1  # the 250 came after b had it
        b.stop()
        with pytest.raises(smtplib.SMTPDataError) as err:
            send(a.ports["smtp"], "while-down")
        assert err.value.smtp_code == 451
        assert a.status()["mode"] == "sync(tempfail)"
        b.ports.clear()
        b.start()
        wait_until(lambda: caught_up(b, a), what="catch-up after restart")
        send(a.ports["smtp"], "while-down")  # the sender's retry: 250 now, and no second copy
        assert count(a, "while-down") == 1
        wait_until(lambda: count(b, "while-down") == 1, what="b to hold the retried message")
    finally:
        close_pair(a, b)


@pytest.mark.peers
def test_sync_degrade_acknowledges_says_so_and_returns_to_sync(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path, mode="sync", on_timeout="degrade", sync_timeout=1.0)
    a.start()
    b.start()
    try:
        wait_until(lambda: caught_up(b, a), what="catch-up")
        b.stop()
        send(a.ports["smtp"], "degraded")
        assert a.status()["mode"] == "sync(degraded)"
        a.wait_log("DEGRADED to async")
        metrics = a.replica("status", "--metrics").stdout
        assert "eventmail_replica_degraded 1.0" in metrics
        on_a = replica_metrics(a)
        assert on_a[("eventmail_replica_role", (("role", "primary"),))] == 1
        assert on_a[("eventmail_replica_role", (("role", "secondary"),))] == 0
        assert on_a[("eventmail_replica_peer_connected", (("link", "peer_follows_us"),))] == 0
        assert on_a[("eventmail_replica_sync_timeouts_total", ())] >= 1
        b.ports.clear()
        b.start()
        wait_until(lambda: a.status()["mode"] == "sync(degrade)", what="back to sync")
        assert count(b, "degraded") == 1
        assert replica_metrics(a)[("eventmail_replica_degraded", ())] == 0
        wait_until(lambda: all(replica_metrics(n)[("eventmail_replica_peer_connected", (("link", link),))] == 1
                               for n in (a, b) for link in ("peer_follows_us", "we_follow_peer")),
                   what="both links up in the metrics")
        on_b = replica_metrics(b)
        assert on_b[("eventmail_replica_role", (("role", "secondary"),))] == 1
        assert on_b[("eventmail_replica_records_applied_total", ())] >= 1
        wait_until(lambda: replica_metrics(b)[("eventmail_replica_lag_records", ())] == 0, what="no lag in b's metrics")
    finally:
        close_pair(a, b)


@pytest.mark.peers
def test_backup_mx_hands_over_to_the_primary_exactly_once_across_restarts(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    a.start()
    b.start()
    try:
        wait_until(lambda: caught_up(b, a), what="catch-up")
        alice_on_b = b.positions()["account/alice"]
        a.stop()
        send(b.ports["smtp"], "via-backup")  # the primary is down: the backup MX accepts
        assert b.positions()["account/alice"] == alice_on_b  # b never writes the primary's streams
        assert b.positions()["handoff/b"] == 1
        a.ports.clear()
        a.start()
        wait_until(lambda: count(a, "via-backup") == 1, what="delivery of the hand-off")
        for n in (a, b):
            n.stop()
            n.ports.clear()
        a.start()
        b.start()
        wait_until(lambda: caught_up(b, a), what="catch-up after both restarted")
        assert count(a, "via-backup") == 1
        assert count(b, "via-backup") == 1
        assert sum("hand-off" in line and "delivered to alice" in line for line in a.log_lines) == 1
    finally:
        close_pair(a, b)


@pytest.mark.peers
def test_promotion_fences_the_old_primary_and_switching_back_is_the_same_command(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    a.start()
    b.start()
    try:
        send(a.ports["smtp"], "first")
        wait_until(lambda: caught_up(b, a), what="catch-up")
        out = b.replica("promote").stdout
        assert "epoch 1/a -> 2/b" in out
        wait_until(lambda: a.status()["role"] == "secondary", what="a to see the higher epoch")
        assert a.status()["epoch"] == "2/b"
        # a refuses to write the accounts now: what its MX accepts goes to its hand-off stream,
        # and b (the primary) delivers it.
        send(a.ports["smtp"], "to-old-primary")
        assert a.positions()["handoff/a"] == 1
        wait_until(lambda: count(b, "to-old-primary") == 1, what="b to deliver a's hand-off")
        send(b.ports["smtp"], "to-new-primary")
        wait_until(lambda: caught_up(a, b), what="a to follow b")
        assert count(a, "to-new-primary") == 1 and count(a, "to-old-primary") == 1
        # Switching back: the same command on the other node.
        assert "2/b -> 3/a" in a.replica("promote").stdout
        wait_until(lambda: b.status()["role"] == "secondary", what="b to follow a again")
        send(a.ports["smtp"], "after-switch-back")
        wait_until(lambda: caught_up(b, a), what="b to catch up")
        assert a.heads() == b.heads()
        assert count(b, "after-switch-back") == 1
    finally:
        close_pair(a, b)


def imap_flag(node: object) -> tuple[str, bytes]:
    """Set \\Flagged on alice's first INBOX message over IMAP: the tagged status and its text."""
    port = node.ports["imap"]  # type: ignore[attr-defined]
    with imaplib.IMAP4("127.0.0.1", port, timeout=20) as m:
        m.login("alice", "pw-alice-123")
        m.select("INBOX")
        try:
            typ, data = m.store("1", "+FLAGS", "(\\Flagged)")
        except imaplib.IMAP4.error as e:
            return "NO", str(e).encode()
        return typ, b" ".join(d for d in data if isinstance(d, bytes))


@pytest.mark.peers
def test_a_takeover_keeps_mail_flowing_without_the_old_primary_then_returns_to_sync(tmp_path: Path) -> None:
    """The shipped pair's story (sync, tempfail): the primary dies, the secondary is promoted and
    accepts mail and IMAP writes at once ("no peer"); when the old primary comes back and has
    caught up, the configured mode applies again."""
    a, b = make_pair(tmp_path, mode="sync", on_timeout="tempfail", sync_timeout=1.5)
    for n in (a, b):
        n.kinds = (*n.kinds, "imap")
        n.allow_plaintext_auth = True
    a.start()
    b.start()
    try:
        send(a.ports["smtp"], "before")
        wait_until(lambda: caught_up(b, a), what="catch-up")
        # A write on the secondary is an expected refusal, not a server bug.
        typ, text = imap_flag(b)
        assert typ == "NO" and b"UNAVAILABLE" in text and b"SERVERBUG" not in text, text
        assert not any("Traceback" in line for line in b.log_lines)

        a.stop()
        assert "-> 2/b" in b.replica("promote").stdout
        assert b.status()["mode"] == "sync(no peer)"
        send(b.ports["smtp"], "after-takeover")  # a 250, not the 451 of a sync wait for a dead peer
        assert imap_flag(b)[0] == "OK"
        assert count(b, "after-takeover") == 1

        a.ports.clear()
        a.start()  # the old primary returns, sees epoch 2 and follows b
        wait_until(lambda: a.status()["role"] == "secondary", what="a to follow b")
        wait_until(lambda: caught_up(a, b), what="a to catch up")
        wait_until(lambda: b.status()["mode"] == "sync(tempfail)", what="b back to its configured mode")
        assert count(a, "after-takeover") == 1

        a.stop()
        with pytest.raises(smtplib.SMTPDataError) as err:
            send(b.ports["smtp"], "peer-down-again")
        assert err.value.smtp_code == 451
    finally:
        close_pair(a, b)
