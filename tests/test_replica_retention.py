"""Retention on a pair: the blobs the primary's collector deleted are deleted on the secondary too."""

from __future__ import annotations

import time
from pathlib import Path

from .replica_pair import caught_up, close_pair, make_pair, wait_until
from .test_restore import PASSWORD, blob_files, deliver, login, ok


def test_a_secondary_deletes_the_blobs_the_primary_collected(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    for node in (a, b):
        node.kinds = (*node.kinds, "imap")
        node.allow_plaintext_auth = True
    a.cli("account", "set-password", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    try:
        a.start()
        b.start()
        deliver(a, 3, "collected on both")
        assert len(a.wait_for("alice", 3)) == 3
        wait_until(lambda: caught_up(b, a), 60, "the secondary to catch up")
        on_primary, on_secondary = blob_files(a), blob_files(b)
        assert on_secondary >= 3
        with login(a) as m:
            m.select("INBOX")
            m.store("1:2", "+FLAGS", "(\\Deleted)")
            m.expunge()
        ok(a, "account", "set", "alice", "retention.days", "0.00001")  # 0.9 seconds
        time.sleep(1.5)
        assert "alice: 2 expunged messages removed" in ok(a, "retention", "collect", "alice")
        assert blob_files(a) == on_primary - 2
        wait_until(lambda: caught_up(b, a), 60, "the secondary to catch up")
        wait_until(lambda: blob_files(b) == on_secondary - 2, 30, "the secondary to delete the collected blobs")
    finally:
        close_pair(a, b)
