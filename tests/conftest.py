"""Shared fixtures: data directories with keys, the CLI run in-process or as a real process, the corpus."""

import asyncio
import os
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop

from eventmail import evloop, opening
from eventmail.cli import main as cli_main
from eventmail.store import MasterKeySource, Store, init_directory, load_master_key

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"

# The tests' own loops are the server's kind (eventmail.evloop): an in-process server, client or
# store under test runs on uvloop as `eventmail serve` does, wherever a test calls asyncio.run.
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(coro: Coroutine[Any, Any, T]) -> T:
    return evloop.run(coro)


def corpus_messages(kind: str = "ham", limit: int | None = None) -> list[Path]:
    files = sorted((CORPUS / kind).glob("*.eml"))
    return files[:limit] if limit else files


def message_bytes(path: Path) -> bytes:
    """A corpus file as a stored message: the mbox From_ line dropped, CRLF line endings."""
    data = path.read_bytes()
    if data.startswith(b"From "):
        data = data.split(b"\n", 1)[1]
    if data.endswith(b"\n\n"):
        data = data[:-1]
    return data.replace(b"\n", b"\r\n")


@pytest.fixture
def keyed_dir(tmp_path: Path) -> tuple[Path, bytes]:
    """A new data directory and its master key (the key file lives outside the directory)."""
    d = tmp_path / "data"
    src = MasterKeySource(key_file=tmp_path / "master.key")
    init_directory(d, src)
    return d, load_master_key(d, src)


async def open_store(keyed: tuple[Path, bytes], **kw: Any) -> Store:
    return await opening.open_store(keyed[0], keyed[1], **kw)


class Cli:
    """Runs `eventmail` with a data directory and key file preset."""

    def __init__(self, directory: Path, key_file: Path) -> None:
        self.directory = directory
        self.key_file = key_file

    def args(self, *argv: str) -> list[str]:
        return [*argv, "--dir", str(self.directory), "--key-file", str(self.key_file)]

    def __call__(self, *argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        rc = cli_main(self.args(*argv))
        out, err = capsys.readouterr()
        return rc, out, err

    def proc(self, *argv: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "eventmail", *self.args(*argv)],
            input=stdin, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120,
        )


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "data", tmp_path / "keys" / "master.key")


def count_name_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text dnspython turns into a name from now on (dns.name.from_text), in order."""
    import dns.name

    calls: list[str] = []
    real = dns.name.from_text

    def counted(text: str, *args: object, **kwargs: object) -> dns.name.Name:
        calls.append(text)
        return real(text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dns.name, "from_text", counted)
    return calls

