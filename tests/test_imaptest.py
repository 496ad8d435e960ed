"""Dovecot's imaptest compliance suite (its `src/tests` groups) against a test server: no group may fail."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.imap_harness import HOST, PASSWORD, USER, ImapServer

# The source tarball and patch (../shared/tools/imaptest beside the repository) and where the
# tool is built once, outside the repository (tools/imaptest-build).
SOURCE = ROOT.parent / "shared" / "tools" / "imaptest"
BUILD = Path(os.environ.get("IMAPTEST_BUILD", str(ROOT.parent / "imaptest-build")))

# Open failures, each with its issue text, until fixed (the test fails if one passes again,
# so the list cannot go stale).
KNOWN_OPEN: dict[str, str] = {}

# Groups whose expectations an RFC forbids, with the rule, the failure that rule makes (the only one
# allowed in the group: imaptest stops a group at its first failure) and the group of
# tests/data/imaptest that runs the same commands as the RFC has them, which must pass.
RFC_OVER_SUITE: dict[str, tuple[str, str, str]] = {
    "notify": (
        "RFC 5465 §5: if one of MessageNew or MessageExpunge is specified, both MUST be, else the server MUST "
        "answer with a tagged BAD (the group expects OK for `(MessageExpunge)` alone, as Dovecot answers)",
        "Expected tagged reply 'ok', got 'BAD MessageNew and MessageExpunge must be asked for together'",
        "notify-rfc5465",
    ),
}
OWN_GROUPS = ROOT / "tests" / "data" / "imaptest"

# Groups imaptest runs only when the server offers their capabilities (a group whose capability
# is missing counts as passed, with no command run): the ones eventmail does not offer yet.
# The test fails when this list and the CAPABILITY answer disagree, either way.
UNOFFERED = {"urlauth", "urlauth-binary", "urlauth2"}

FAILURE = re.compile(r"^\*\*\* Test (\S+) command (\d+)/(\d+) \(line (\d+)\)$")
SUMMARY = re.compile(r"^(\d+) test groups: (\d+) failed")


def imaptest_binary() -> Path:
    binary = BUILD / "src" / "imaptest"
    if binary.exists():
        return binary
    if not (SOURCE / "imaptest-src.tar.gz").exists():
        pytest.skip(f"imaptest is not built and its source is absent ({SOURCE} has no imaptest-src.tar.gz)")
    if os.geteuid() != 0:
        pytest.skip("imaptest is not built and building it installs Debian packages: run as root")
    subprocess.run([str(ROOT / "tools" / "imaptest-build"), str(SOURCE), str(BUILD)], check=True, timeout=900)
    return binary


def failures_by_group(output: str) -> dict[str, list[str]]:
    """Each failing group's failure blocks (imaptest prints one `*** Test GROUP command i/n` block each)."""
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        m = FAILURE.match(line)
        if m:
            current = [line]
            groups.setdefault(m.group(1), []).append("")
        elif current is not None and line.strip():
            current.append(line)
        else:
            current = None
        if current is not None:
            groups[current[0].split()[2]][-1] = "\n".join(current)
    return groups


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path / "server") as s:
        yield s


def groups_not_run(tests: Path, offered: set[str]) -> set[str]:
    """The groups whose `capabilities:` header names one the server does not offer."""
    out = set()
    for f in tests.iterdir():
        if f.is_file() and not f.name.endswith(".mbox"):
            head = f.read_bytes().split(b"\n\n", 1)[0].decode("utf-8", "replace")
            for line in head.splitlines():
                if line.lower().startswith("capabilities:") and any(
                        cap.upper() not in offered for cap in line.split(":", 1)[1].split()):
                    out.add(f.name)
    return out


def test_imaptest_compliance_groups(srv: ImapServer, tmp_path: Path) -> None:
    binary = imaptest_binary()
    tests = tmp_path / "tests"
    shutil.copytree(BUILD / "src" / "tests", tests)
    for own in OWN_GROUPS.iterdir():
        shutil.copy(own, tests / own.name)
    m = srv.imap()
    offered = set(m.capability()[1][0].decode().upper().split())
    m.logout()
    assert groups_not_run(tests, offered) == UNOFFERED
    env = {**os.environ, "LD_LIBRARY_PATH": "/usr/lib/dovecot"}
    p = subprocess.run(
        [str(binary), f"host={HOST}", f"port={srv.plain_port}", f"user={USER}", f"pass={PASSWORD}", f"test={tests}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    output = p.stdout + p.stderr
    summary = [line for line in output.splitlines() if SUMMARY.match(line)]
    assert summary, "imaptest printed no summary:\n" + output[-3000:]
    failed = failures_by_group(output)
    for group, (_rule, failure, replacement) in RFC_OVER_SUITE.items():
        assert group in failed and failure in failed[group][0], f"group {group} no longer fails as {failure!r}"
        assert replacement not in failed
    unexplained = {g: b for g, b in failed.items() if g not in KNOWN_OPEN and g not in RFC_OVER_SUITE}
    counts = SUMMARY.match(summary[0])
    assert counts is not None and int(counts.group(2)) == len(failed), f"{summary[0]}, but parsed failures of {sorted(failed)}"
    fixed = sorted(set(KNOWN_OPEN) - set(failed))
    report = "\n\n".join(f"== group {g}: {len(b)} failing command(s)\n" + "\n\n".join(b)
                         for g, b in sorted(unexplained.items()))
    assert not unexplained, f"{summary[0]}\nfailing groups: {sorted(unexplained)}\n\n{report}"
    assert not fixed, f"groups listed as open now pass, take them off KNOWN_OPEN: {fixed}"


def _stress(srv: ImapServer, tmp_path: Path, *extra: str) -> str:
    """imaptest's stress mode, 5 clients for 3 s, with `extra` arguments; its output, checked
    to have no error."""
    binary = imaptest_binary()
    mbox = tmp_path / "stress.mbox"
    # the same message many times: clients APPEND identical content at once (one blob name)
    one = b"From a@example.test Mon Dec  7 00:00:00 2026\nFrom: a@example.test\nSubject: s\n\nbody\n\n"
    mbox.write_bytes(one * 20)
    env = {**os.environ, "LD_LIBRARY_PATH": "/usr/lib/dovecot"}
    p = subprocess.run(
        [str(binary), f"host={HOST}", f"port={srv.plain_port}", f"user={USER}", f"pass={PASSWORD}", f"mbox={mbox}",
         "clients=5", "secs=3", *extra],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )
    output = p.stdout + p.stderr
    assert "Totals:" in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith(("Error:", "Panic:", "Fatal:"))]
    assert errors == [], "\n".join(errors[:20])
    return output


def test_imaptest_stress_smoke(srv: ImapServer, tmp_path: Path) -> None:
    """A short run of imaptest's stress mode (random commands from several clients, each
    checking the server's answers against what it has seen): no errors. The long run beside
    Dovecot is bench/imapstress.py, in `make bench`."""
    _stress(srv, tmp_path)


def test_imaptest_checkpoint(srv: ImapServer, tmp_path: Path) -> None:
    """imaptest's `checkpoint=`: at 2 s every session stops, sends CHECK, and all must agree on
    the mailbox (messages, UIDs, flags, keywords, MODSEQs, \\Recent in one session only); no
    error, and the checkpoint compared some sessions (its ChkP count). 2 does not divide the 3 s
    of the run: a checkpoint under way as the run stops aborts imaptest on its own assertion
    (bench/imapstress.py checkpoint_clash, docs/operations.md)."""
    lines = _stress(srv, tmp_path, "checkpoint=2").splitlines()
    names = lines[lines.index("Totals:") + 1].split()
    counts = next(line for line in reversed(lines) if re.fullmatch(r"\s*\d+(\s+\d+)*\s*", line)).split()
    assert int(dict(zip(names, counts, strict=True))["ChkP"]) > 0, "\n".join(lines[-12:])
