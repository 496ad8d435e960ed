"""A started server has what its startup left alive frozen out of the cyclic garbage collector's sight."""

from pathlib import Path

from eventmail import control
from eventmail.serve import GC_YOUNG_THRESHOLD

from .mailserver import MailServer


def test_a_started_server_freezes_its_startup_objects_and_collects_young_ones_less_often(tmp_path: Path) -> None:
    # serve.tune_gc: a full collection walks every tracked object (46-48 ms in a started server
    # on the test machine, a stall of everything in flight); frozen objects are not walked.
    srv = MailServer(tmp_path, kinds=("smtp",))
    srv.init()
    srv.start()
    try:
        state = control.request_in(srv.directory, "gc")
    finally:
        srv.stop()
    assert state is not None
    # Every module, the configuration, the store's open state: tens of thousands of objects.
    assert state["frozen"] > 10_000
    assert state["threshold"][0] == GC_YOUNG_THRESHOLD
    assert len(state["generations"]) == 3
