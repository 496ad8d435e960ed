"""The control socket: owner-only modes, no symlinks followed, bounded and malformed requests, and replication's
commands served by the same server as the admin operations."""

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from eventmail import control
from eventmail.config import ReplicationSettings
from eventmail.mail.admin import Admin
from replica.node import ReplicaNode
from replica.service import RunningReplica, control_request

from .conftest import ROOT, open_store, run


def raw(path: Path, data: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(data)
        got = b""
        while not got.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    return dict(json.loads(got))


def test_modes_bounds_and_errors(keyed_dir: tuple[Path, bytes]) -> None:
    directory = keyed_dir[0]

    async def go() -> None:
        store = await open_store(keyed_dir)
        server = control.ControlServer()
        server.register(Admin(store).commands())
        try:
            path = await server.listen_in(directory)
            assert stat.S_IMODE(os.lstat(path.parent).st_mode) == 0o700
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
            ask = asyncio.to_thread
            reply = await ask(control.request_in, directory, "account.add",
                              {"name": "gina", "address": "gina-at-example.test", "password": "long enough"})
            assert reply == {"error": "address 'gina-at-example.test': expected local@domain", "code": 2}
            reply = await ask(control.request_in, directory, "account.add",
                              {"name": "gina", "address": "gina@example.test", "password": "long enough"})
            assert reply is not None and "error" not in reply and "gina" in store.system.accounts
            assert (await ask(control.request_in, directory, "no.such"))["code"] == 2  # type: ignore[index]
            assert (await ask(raw, path, b"not json\n"))["code"] == 2
            assert (await ask(raw, path, b'{"command": "account.delete", "args": []}\n'))["error"] == "args: expected an object"
            assert "missing or non-text argument" in (await ask(raw, path, b'{"command": "account.delete", "args": {"name": 1}}\n'))["error"]
            too_long = b'{"command": "key.rotate", "pad": "' + b"x" * control.MAX_REQUEST_BYTES + b'"}\n'
            assert "longer than" in (await ask(raw, path, too_long))["error"]
            with pytest.raises(control.ControlError, match="request longer"):
                await ask(control.request_in, directory, "account.add", {"password": "x" * control.MAX_REQUEST_BYTES})
            assert "gina" in store.system.accounts  # still serving after all that
        finally:
            await server.close()
            await store.close()
        assert not path.exists()

    run(go())


def test_a_long_operation_reports_progress_before_its_reply(tmp_path: Path) -> None:
    """Progress lines reach the client's callback, the last (done == total) always, and the
    reply after them; the lines between are thinned to PROGRESS_INTERVAL."""

    async def slow(args: dict[str, Any]) -> dict[str, Any]:
        report = control.PROGRESS.get()
        assert report is not None
        for i in range(1, 1001):
            report(i, 1000)
        return {"message": "done"}

    async def go() -> None:
        server = control.ControlServer()
        server.register({"slow": slow})
        try:
            await server.listen_in(tmp_path)
            seen: list[tuple[int, int]] = []
            reply = await asyncio.to_thread(control.request_in, tmp_path, "slow", {},
                                            progress=lambda d, t: seen.append((d, t)))
            assert reply == {"message": "done"}
            assert seen[0] == (1, 1000) and seen[-1] == (1000, 1000) and len(seen) < 10
        finally:
            await server.close()

    run(go())


def test_symlinks_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (data / control.CONTROL_DIR).symlink_to(elsewhere)
    with pytest.raises(control.ControlError, match="symlink"):
        control.request_in(data, "key.rotate")
    with pytest.raises(control.ControlError, match="symlink"):
        run(control.ControlServer().listen_in(data))
    (data / control.CONTROL_DIR).unlink()
    (data / control.CONTROL_DIR).mkdir(mode=0o700)
    control.socket_path(data).symlink_to(elsewhere / "socket")
    with pytest.raises(control.ControlError, match="symlink"):
        control.request_in(data, "key.rotate")
    os.chmod(data / control.CONTROL_DIR, 0o755)
    with pytest.raises(control.ControlError, match="open to others"):
        control.request_in(data, "key.rotate")


def test_no_server_means_none_and_a_stale_socket_too(tmp_path: Path) -> None:
    assert control.request_in(tmp_path, "key.rotate") is None
    path = control.socket_path(tmp_path)
    path.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # bound, never listening: what a killed server leaves
    assert control.request_in(tmp_path, "key.rotate") is None


def test_replication_commands_share_the_socket(keyed_dir: tuple[Path, bytes], tmp_path: Path) -> None:
    directory = keyed_dir[0]
    legacy = tmp_path / "replica.sock"
    settings = ReplicationSettings(node="a", peer_node="b", listen="127.0.0.1:1", peer="127.0.0.1:2",
                                   cert=tmp_path / "c", key=tmp_path / "k", peer_cert=tmp_path / "p",
                                   control=legacy, initial_role="primary")
    config = tmp_path / "eventmail.toml"
    config.write_text(
        f'hostname = "mail.test"\ndata_dir = "{directory}"\nkey_file = "k"\n[tls]\ncert = "c"\nkey = "k"\n'
        '[[listener]]\nkind = "smtp"\naddress = "127.0.0.1"\nport = 25\n'
        '[replication]\nnode = "a"\npeer_node = "b"\nlisten = "127.0.0.1:1"\npeer = "127.0.0.1:2"\n'
        'cert = "c"\nkey = "k"\npeer_cert = "p"\nrole = "primary"\n'
    )

    async def go() -> None:
        store = await open_store(keyed_dir)
        server = control.ControlServer()
        try:
            node = ReplicaNode(store, settings)
            server.register(Admin(store).commands())
            server.register(RunningReplica(node, server=None).control_commands())  # type: ignore[arg-type]
            await server.listen(legacy)
            await server.listen_in(directory)
            # The old path and the data directory's socket are the same server.
            assert (await asyncio.to_thread(control_request, legacy, "status"))["node"] == "a"
            p = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "eventmail", "replica", "status", "--config", str(config), "--json"],
                capture_output=True, text=True, timeout=60, cwd=ROOT,
            )
            assert p.returncode == 0, p.stderr
            assert json.loads(p.stdout)["role"] == "primary"
            p = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "eventmail", "replica", "promote", "--config", str(config)],
                capture_output=True, text=True, timeout=60, cwd=ROOT,
            )
            assert p.returncode == 0 and "already the primary" in p.stdout, p.stderr
        finally:
            await server.close()
            await store.close()

    run(go())
