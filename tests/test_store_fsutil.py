"""The store's atomic file writes when several threads write one path at once (real files, real threads)."""

from __future__ import annotations

import threading
from pathlib import Path

from eventmail.store.fsutil import write_atomic


def test_concurrent_writers_of_one_path_all_succeed(tmp_path: Path) -> None:
    """Two sessions storing the same message write the same blob name at once (imaptest's stress
    run did): each must succeed and leave a whole file, never rename the other's temporary away."""
    failures: list[Exception] = []
    writers = 8
    for round_ in range(10):
        path = tmp_path / f"blob{round_}"
        start = threading.Barrier(writers)

        def write(i: int, path: Path = path, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                write_atomic(path, bytes([i]) * 4096)
            except Exception as e:  # collected for the assertion below
                failures.append(e)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        data = path.read_bytes()
        assert len(data) == 4096 and len(set(data)) == 1
    assert failures == []
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
