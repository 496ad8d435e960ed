"""Master key files as a hostile or careless operator leaves them: exposed modes and files that are not keys
(issue 10, item 9). Each gets one clear line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Cli
from .mailserver import MailServer


@pytest.fixture
def initialised(cli: Cli) -> Cli:
    p = cli.proc("key", "init")
    assert p.returncode == 0, p.stderr
    assert cli.key_file.stat().st_mode & 0o777 == 0o400
    return cli


@pytest.mark.parametrize("mode", [0o440, 0o404, 0o644, 0o460], ids=oct)
def test_a_key_file_group_or_others_may_read_is_refused(initialised: Cli, mode: int) -> None:
    os.chmod(initialised.key_file, mode)
    p = initialised.proc("account", "list")
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert str(initialised.key_file) in lines[0] and f"mode {mode:04o}" in lines[0]
    assert "--allow-key-file-mode" in lines[0]
    assert p.stdout == ""
    # the explicit flag accepts it
    p = initialised.proc("account", "list", "--allow-key-file-mode")
    assert p.returncode == 0, p.stderr


def test_the_owner_alone_may_read_it(initialised: Cli) -> None:
    os.chmod(initialised.key_file, 0o600)
    assert initialised.proc("account", "list").returncode == 0


@pytest.mark.parametrize("content", [
    os.urandom(32),  # random bytes, the length of a raw key
    b"\xff\xfe" + os.urandom(500),  # not text at all
    b"eventmail-master-key-v1 " + b"A" * 10 + b"\n",  # the magic, a key of the wrong length
    b"eventmail-master-key-v1 \xe9\xe9\xe9\n",  # the magic, then not ASCII
    b"",
    b"x" * 100_000,
], ids=["random", "binary", "short-key", "non-ascii", "empty", "huge"])
def test_a_file_that_is_not_a_key_is_a_wrong_key(initialised: Cli, tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(content)
    os.chmod(bad, 0o600)
    p = subprocess.run(
        [sys.executable, "-m", "eventmail", "account", "list", "--dir", str(initialised.directory), "--key-file", str(bad)],
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [f"eventmail: {bad} is not an eventmail key file"], p.stderr


def test_serve_refuses_an_exposed_key_unless_the_configuration_accepts_it(tmp_path: Path) -> None:
    srv = MailServer(tmp_path)
    srv.init()
    os.chmod(srv.key_file, 0o644)
    srv.write_config()
    config = tmp_path / "eventmail.toml"
    p = subprocess.run([sys.executable, "-m", "eventmail", "serve", "--config", str(config)],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert f"key file {srv.key_file} has mode 0644" in p.stderr
    assert "Traceback" not in p.stderr
    srv.settings = "allow_key_file_mode = true\n"
    srv.start()
    try:
        assert srv.ports["smtp"]
    finally:
        srv.stop()
