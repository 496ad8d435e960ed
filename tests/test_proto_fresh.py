"""The committed generated protobuf code matches what `make proto` produces from proto/."""

import filecmp
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "eventmail" / "proto"
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_proto.py"), str(out)], check=True)
    committed = ROOT / "eventmail" / "proto"
    generated = sorted(p.name for p in out.iterdir() if p.is_file())
    assert generated == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    stale = [name for name in generated if not filecmp.cmp(out / name, committed / name, shallow=False)]
    assert not stale, f"run `make proto`: {stale} differ from proto/"
