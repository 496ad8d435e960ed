"""The control socket: a Unix socket in the data directory through which the local CLI has a running server act.

One server, one socket, one protocol for every local command: the admin operations of the mail
layer (eventmail.mail.admin) and replication's status, promote and metrics. A request is one JSON
line `{"command": NAME, "args": {...}}`; the reply is one JSON line, an object, with "error" (one
line) and "code" (the CLI's exit status) when the request was refused. A long operation (import)
sends progress lines `{"progress": [DONE, TOTAL]}` before its reply, at most a few a second.

The socket lives in DATA/control/ (mode 0700) with mode 0600, and the server also checks the
peer's uid (SO_PEERCRED): only the data directory's owner (or root) is served. Neither side
follows a symlink there. docs/operations.md tells how administration works while running.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .mail.admin import PROGRESS, AdminError, Progress
from .store import StoreError

log = logging.getLogger(__name__)

CONTROL_DIR = "control"
SOCKET_NAME = "socket"
# Requests carry names, addresses and at most a password (MAX_PASSWORD_LENGTH 4096): 64 KiB is
# ample, and bounds what one local connection can make the server buffer.
MAX_REQUEST_BYTES = 64 * 1024
# A request line must arrive within this; an operation itself may take longer (password hashing,
# an RSA key, a synchronous secondary's ack), so replies are not timed by the server.
REQUEST_SECONDS = 10.0
# The CLI's wait for a reply: generous, as above.
REPLY_SECONDS = 120.0
# A reply holds at most an import's list of malformed messages: bounded by what the client reads.
MAX_REPLY_BYTES = 16 * 1024 * 1024
PROGRESS_INTERVAL = 0.2  # seconds between two progress lines of one request
SUN_PATH_MAX = 108  # sockaddr_un.sun_path on Linux, its NUL included
EXIT_REFUSED = 2  # a request refused by validation: the CLI's usage exit status
EXIT_FAILED = 1

Handler = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The control socket cannot be used safely (a symlink, a foreign owner, loose permissions)."""


def socket_path(data_dir: Path) -> Path:
    return Path(data_dir) / CONTROL_DIR / SOCKET_NAME


def _private_dir(path: Path, create: bool) -> bool:
    """Check (and with `create`, make) DATA/control: a real directory of ours, mode 0700. False
    when it does not exist and `create` is false."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ControlError(f"{path} is not a directory (a symlink?): refusing to use it") from None
        raise
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() and not (not create and os.geteuid() == 0 and _owned_like_parent(path, st)):
            raise ControlError(f"{path} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()}): refusing to use it")
        if create:
            os.fchmod(fd, 0o700)
        elif stat.S_IMODE(st.st_mode) & 0o077:
            raise ControlError(f"{path} is open to others (mode {stat.S_IMODE(st.st_mode):o}): refusing to use it")
    finally:
        os.close(fd)
    return True


def _owned_like_parent(path: Path, st: os.stat_result) -> bool:
    """Root's CLI talks to a server that dropped root (eventmail.privileges): the control
    directory then belongs to the data directory's owner, the server's user, which root trusts."""
    return os.stat(path.parent, follow_symlinks=False).st_uid == st.st_uid


@contextlib.contextmanager
def _short_path(path: Path) -> Iterator[str]:
    """A name for `path` that fits sun_path (108 bytes on Linux): the path itself, or when too
    long (deep test directories), the same file through an open descriptor of its directory."""
    if len(os.fsencode(path)) < SUN_PATH_MAX or not os.path.isdir("/proc/self/fd"):
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def _peer_uid(sock: socket.socket) -> int | None:
    if not hasattr(socket, "SO_PEERCRED"):
        return None  # not Linux: the directory and socket modes alone keep others out
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class ControlServer:
    """Serves the registered commands on one or more Unix socket paths."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self._servers: list[tuple[asyncio.Server, Path]] = []

    def register(self, commands: Mapping[str, Handler]) -> None:
        self.handlers.update(commands)

    async def listen_in(self, data_dir: Path) -> Path:
        """Listen on DATA/control/socket, making the private directory first."""
        path = socket_path(data_dir)
        _private_dir(path.parent, create=True)
        await self.listen(path)
        return path

    async def listen(self, path: Path) -> None:
        """Listen on `path` with mode 0600 (a stale socket or symlink there is replaced, not followed)."""
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(path)
            if not (stat.S_ISSOCK(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                raise ControlError(f"{path} exists and is not a socket: refusing to replace it")
            os.unlink(path)  # unlink removes a symlink itself, never its target
        old = os.umask(0o177)
        try:
            with _short_path(path) as name:
                server = await asyncio.start_unix_server(self._serve, path=name, limit=MAX_REQUEST_BYTES)
        finally:
            os.umask(old)
        self._servers.append((server, path))
        log.info("control socket %s", path)

    async def close(self) -> None:
        for server, path in self._servers:
            server.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
        for server, _ in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        self._servers = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            uid = _peer_uid(sock) if sock is not None else None
            if uid is not None and uid not in (0, os.geteuid()):
                log.warning("control: refused a connection from uid %d", uid)
                reply: dict[str, Any] = {"error": "not the data directory's owner", "code": EXIT_FAILED}
            else:
                try:
                    line = await asyncio.wait_for(reader.readuntil(b"\n"), REQUEST_SECONDS)
                except (asyncio.LimitOverrunError, ValueError):
                    reply = {"error": f"request longer than {MAX_REQUEST_BYTES} bytes", "code": EXIT_REFUSED}
                else:
                    PROGRESS.set(_progress_lines(writer))
                    reply = await self.answer(line)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            log.info("control: %s", e or type(e).__name__)
        finally:
            writer.close()

    async def answer(self, line: bytes) -> dict[str, Any]:
        """The reply to one request line."""
        try:
            request = json.loads(line)
        except ValueError:
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"error": 'expected one JSON object line {"command": ..., "args": {...}}', "code": EXIT_REFUSED}
        command, args = request["command"], request.get("args", {})
        handler = self.handlers.get(command)
        if handler is None:
            return {"error": f"unknown command {command!r}", "code": EXIT_REFUSED}
        if not isinstance(args, dict):
            return {"error": "args: expected an object", "code": EXIT_REFUSED}
        try:
            reply = await handler(args)
        except AdminError as e:
            log.info("control: %s refused: %s", command, e)
            return {"error": str(e), "code": EXIT_REFUSED}
        except StoreError as e:
            log.warning("control: %s failed: %s", command, e)
            return {"error": str(e), "code": EXIT_FAILED}
        except Exception:
            log.exception("control: %s failed", command)
            return {"error": f"{command} failed in the server (see its log)", "code": EXIT_FAILED}
        log.info("control: %s done", command)
        return reply


def _progress_lines(writer: asyncio.StreamWriter) -> Progress:
    """A progress report that writes a line to the client, the last one always, the others at
    most every PROGRESS_INTERVAL (a client that does not read only fills its socket buffer: the
    lines are tiny and few)."""
    last = 0.0

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done == total or now - last >= PROGRESS_INTERVAL:
            last = now
            writer.write(json.dumps({"progress": [done, total]}).encode() + b"\n")

    return report


def request(path: Path, command: str, args: Mapping[str, Any] | None = None,
            timeout: float = REPLY_SECONDS, progress: Progress | None = None) -> dict[str, Any] | None:
    """Send one request to the server listening on `path`; its reply, or None when no server
    listens there (no socket, or a stale one left by a killed server). Progress lines before the
    reply go to `progress`; `timeout` is the longest silence, so a long operation that reports
    progress is waited for."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise ControlError(f"{path} is a symlink: refusing to follow it")
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"{path} is not a socket")
    data = json.dumps({"command": command, "args": dict(args or {})}).encode() + b"\n"
    if len(data) > MAX_REQUEST_BYTES:
        raise ControlError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            with _short_path(path) as name:
                s.connect(name)
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        s.sendall(data)
        with s.makefile("rb") as lines:
            while True:
                answer = _reply_line(path, lines.readline(MAX_REPLY_BYTES))
                report = answer.get("progress")
                if not (isinstance(report, list) and len(report) == 2 and all(isinstance(n, int) for n in report)):
                    return answer
                if progress is not None:
                    progress(report[0], report[1])


def _reply_line(path: Path, line: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(line)
    except ValueError:
        raise ControlError(f"the server on {path} closed the connection without a reply") from None
    if not isinstance(answer, dict):
        raise ControlError(f"the server on {path} sent a reply that is not an object")
    return answer


def request_in(data_dir: Path, command: str, args: Mapping[str, Any] | None = None,
               timeout: float = REPLY_SECONDS, progress: Progress | None = None) -> dict[str, Any] | None:
    """`request` to the server of a data directory, checking its private directory first."""
    path = socket_path(data_dir)
    if not _private_dir(path.parent, create=False):
        return None
    return request(path, command, args, timeout, progress)
