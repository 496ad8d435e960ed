"""`make run` for now: a walk through the eventmail CLI on a local data directory."""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def step(title: str, *argv: str, directory: Path, key: Path, stdin: str | None = None) -> None:
    cmd = [sys.executable, "-m", "eventmail", *argv, "--dir", str(directory), "--key-file", str(key)]
    print(f"\n$ eventmail {' '.join(argv)}    # {title}", flush=True)
    subprocess.run(cmd, input=stdin, text=True, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default="run-data")
    directory = Path(ap.parse_args().dir).resolve()
    key = directory.parent / (directory.name + ".key")
    shutil.rmtree(directory, ignore_errors=True)
    key.unlink(missing_ok=True)
    mbox = directory.parent / (directory.name + "-sample.mbox")
    mbox.write_bytes(b"".join(p.read_bytes() for p in sorted((ROOT / "tests/data/corpus/ham").glob("*.eml"))[:25]))
    step("a master key (kept outside the data directory) and a keyring", "key", "init", directory=directory, key=key)
    step("an account with its default mailboxes", "account", "add", "you", "you@localhost", "--password-stdin",
         directory=directory, key=key, stdin="demo-password\n")
    step("", "account", "list", directory=directory, key=key)
    step("25 real messages from an mbox file", "import", "you", str(mbox), directory=directory, key=key)
    step("the same file again: deduplicated", "import", "you", str(mbox), directory=directory, key=key)
    step("every chain and blob checked", "verify", directory=directory, key=key)
    step("the decrypted events", "log", "you", "--since", "20", directory=directory, key=key)
    out = directory.parent / (directory.name + "-export")
    shutil.rmtree(out, ignore_errors=True)
    step("back out as Maildir", "export", "you", str(out), directory=directory, key=key)
    print(f"\nData directory: {directory} (nothing in it is readable without {key}).")


if __name__ == "__main__":
    main()
