"""A short subset of `make chaos` for `make test`: one trial each of the promotion scenarios (d, f) and of a killed primary."""

from pathlib import Path

import pytest

from chaos import run as chaos_run
from chaos.run import run_scenario


@pytest.mark.peers
@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "mode"), [("d", "sync"), ("a", "async"), ("f", "sync")])
def test_chaos_trial(tmp_path: Path, scenario: str, mode: str) -> None:
    r = run_scenario(scenario, mode, trials=1, workdir=tmp_path, seed=7)
    assert r.failures == []
    assert r.trials == 1 and r.accepted > 0
    assert (r.lost, r.duplicated, r.refused) == (0, 0, 0)


class _SlowPrimary:
    """A pair whose primary gets one message a moment late and never the other."""

    def __init__(self) -> None:
        self.calls = 0

    def count(self, subjects: set[str]) -> dict[str, int]:
        self.calls += 1
        return {s: int(s == "late" and self.calls > 2) for s in subjects}

    def heads_agree(self) -> bool:
        return self.calls > 2  # once the late message is there


def test_a_message_that_arrives_after_its_trial_settled_is_late_and_one_that_never_does_is_lost(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chaos_run, "LATE_TIMEOUT", 5.0)
    r = chaos_run.Result("a", "sync", unsettled={"late", "never"}, heads_pending=["as3"])
    chaos_run._settle_late(_SlowPrimary(), r)  # type: ignore[arg-type]
    assert (r.late, r.lost, r.unsettled) == (1, 1, set())
    assert r.failures == [] and r.heads_pending == []  # the heads agreed once it had settled


def test_heads_that_still_differ_after_the_late_messages_are_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chaos_run, "LATE_TIMEOUT", 2.0)
    differing = _SlowPrimary()
    differing.heads_agree = lambda: False  # type: ignore[method-assign]
    r = chaos_run.Result("d", "sync", unsettled={"late"}, heads_pending=["ds5"])
    chaos_run._settle_late(differing, r)  # type: ignore[arg-type]
    assert r.failures == ["ds5: stream heads differ after healing"]
