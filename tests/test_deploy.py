"""The files in deploy/ work for the story they are shipped for: every example configuration parses,
and the systemd unit is the one quickstart writes and passes systemd-analyze."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from eventmail.config import parse
from eventmail.quickstart import systemd_unit

from .conftest import ROOT

CONFIGS = sorted((ROOT / "deploy").rglob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_every_example_configuration_parses(path: Path) -> None:
    cfg = parse(path.read_text(), path.parent)
    assert cfg.listeners and cfg.hostname


def test_the_shipped_unit_is_quickstarts_and_verifies() -> None:
    unit = ROOT / "deploy" / "systemd" / "eventmail.service"
    assert unit.read_text() == systemd_unit(Path("/etc/eventmail/eventmail.toml"), Path("/var/lib/eventmail"))
    text = unit.read_text()
    for hardening in ("ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"):
        assert hardening in text
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    v = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr


@pytest.mark.parametrize("role", ["primary", "secondary"])
def test_the_pair_units_run_their_config(role: str) -> None:
    unit = ROOT / "deploy" / "examples" / "pair" / f"eventmail-{role}.service"
    assert unit.read_text() == systemd_unit(Path(f"/etc/eventmail/{role}.toml"), Path("/var/lib/eventmail"))
    # The replication control socket lies where the unit lets the server write.
    cfg = parse((ROOT / "deploy" / "examples" / "pair" / f"{role}.toml").read_text(), ROOT)
    assert cfg.replication is not None and cfg.replication.control.is_relative_to(cfg.data_dir)
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    v = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
