"""Dropping root for real (issue 10, item 9c): `eventmail serve` started as root binds a privileged port, then
runs as the configured user; a data directory not the user's, and root without `user`, are refused."""

from __future__ import annotations

import os
import secrets
import shutil
import site
import smtplib
import socket
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from .conftest import ROOT
from .mailserver import MailServer

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="needs root and useradd: the test creates a system user and drops to it",
)


@pytest.fixture
def user() -> Iterator[str]:
    """A throwaway system user (and its group), deleted afterwards."""
    name = "emtest" + secrets.token_hex(4)
    subprocess.run(["useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def base() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are root's alone, and the dropped server must reach
    # its data directory by path.
    path = Path(tempfile.mkdtemp(prefix="eventmail-privileges-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def readable_by_others(path: Path) -> bool:
    """Can a user other than root read `path` (every directory above it searchable by others)?"""
    path = path.resolve()
    return bool(path.stat().st_mode & 0o004) and all(p.stat().st_mode & 0o001 for p in path.parents)


def interpreter() -> tuple[str, dict[str, str] | None]:
    """A Python the dropped server can still import from, and its environment. Ours may live
    where only root can read (pyenv under /root): then the system's Python of the same version,
    with our packages on its path; else the test is skipped."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if readable_by_others(stdlib):
        return sys.executable, None
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists() or not all(readable_by_others(Path(p)) for p in (*site.getsitepackages(), ROOT)):
        pytest.skip(f"{stdlib} cannot be read by other users, and there is no {system} to run the server on")
    path = os.pathsep.join([str(ROOT), *site.getsitepackages()])
    return str(system), {**os.environ, "PYTHONPATH": path, "PYTHONNOUSERSITE": "1"}


def privileged_port() -> int:
    """A free port below 1024 on 127.0.0.1 (only root may bind it)."""
    for _ in range(200):
        port = 600 + secrets.randbelow(400)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free privileged port")


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(Path(root) / name, uid, gid)


def serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventmail", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def status(pid: int) -> dict[str, list[int]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            fields[key] = [int(v) for v in value.split()]
    return fields


def test_serve_drops_root_after_binding_a_privileged_port(user: str, base: Path) -> None:
    import pwd

    entry = pwd.getpwnam(user)
    python, env = interpreter()
    srv = MailServer(base, settings=f'user = "{user}"\nanalysis_workers = 1\n', python=python, env=env)
    srv.init()
    srv.add_account("alice", "alice@mail.test", "alice long password")
    port = privileged_port()
    srv.ports["smtp"] = port

    # The data directory is still root's: refused, naming it and what to do.
    p = serve(srv.write_config())
    assert p.returncode == 2, p.stderr
    assert f"not to user {user}" in p.stderr and f"chown -R {user}: {srv.directory}" in p.stderr
    assert "Traceback" not in p.stderr

    chown_tree(srv.directory, entry.pw_uid, entry.pw_gid)
    assert srv.key_file.stat().st_uid == 0 and srv.key_file.stat().st_mode & 0o777 == 0o400  # root's alone
    srv.start()
    try:
        assert srv.ports["smtp"] == port
        st = status(srv.proc.pid)  # type: ignore[union-attr]
        assert st["Uid"] == [entry.pw_uid] * 4, st
        assert st["Gid"] == [entry.pw_gid] * 4, st
        assert st["Groups"] == sorted(set(os.getgrouplist(user, entry.pw_gid))), st
        srv.wait_log(f"running as user {user} (uid {entry.pw_uid}")
        # The analysis worker, forked before the ports were bound, dropped to the user too.
        workers = psutil.Process(srv.proc.pid).children()  # type: ignore[union-attr]
        assert workers
        for w in workers:
            assert status(w.pid)["Uid"] == [entry.pw_uid] * 4 and status(w.pid)["Gid"] == [entry.pw_gid] * 4, w
        # It serves on the privileged port, and writes its store as the user.
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo("client.test")
            assert s.sendmail("x@example.test", ["alice@mail.test"], b"Subject: hi\r\n\r\nafter the drop\r\n") == {}
        assert any(b"after the drop" in m for m in srv.wait_for("alice", 1))
        # Root's CLI administers the dropped server through its control socket (the user's now).
        added = subprocess.run(
            [sys.executable, "-m", "eventmail", "account", "add", "bob", "bob@mail.test", "--password-stdin",
             "--dir", str(srv.directory), "--key-file", str(srv.key_file)],
            input="bob's long password\n", capture_output=True, text=True, timeout=60, cwd=ROOT,
        )
        assert added.returncode == 0, added.stderr
        srv.wait_log("control: account.add done")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.ehlo("client.test")
            assert s.sendmail("x@example.test", ["bob@mail.test"], b"Subject: hi\r\n\r\nto bob\r\n") == {}
        for root, dirs, files in os.walk(srv.directory):
            for name in dirs + files:
                assert (Path(root) / name).lstat().st_uid == entry.pw_uid, Path(root) / name
    finally:
        srv.stop()


def test_serve_as_root_without_user_is_refused(base: Path) -> None:
    srv = MailServer(base)
    srv.init()
    config = srv.write_config()
    config.write_text(config.read_text().replace('user = "root"\n', ""))
    p = serve(config)
    assert p.returncode == 2
    assert "running as root: set `user`" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_a_user_that_does_not_exist_is_refused(base: Path) -> None:
    srv = MailServer(base, settings='user = "no-such-user-here"\n')
    srv.init()
    p = serve(srv.write_config())
    assert p.returncode == 2
    assert "user 'no-such-user-here' (the `user` setting) does not exist" in p.stderr, p.stderr
