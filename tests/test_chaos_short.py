"""A short subset of `make chaos` for `make test`: one trial each of the promotion scenarios (d, f) and of a killed primary."""

from pathlib import Path

import pytest

from chaos.run import run_scenario


@pytest.mark.peers
@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "mode"), [("d", "sync"), ("a", "async"), ("f", "sync")])
def test_chaos_trial(tmp_path: Path, scenario: str, mode: str) -> None:
    r = run_scenario(scenario, mode, trials=1, workdir=tmp_path, seed=7)
    assert r.failures == []
    assert r.trials == 1 and r.accepted > 0
    assert (r.lost, r.duplicated, r.refused) == (0, 0, 0)
