"""Durable file operations: fsync'd writes, atomic replacement, directory syncs."""

import contextlib
import ctypes
import errno
import os
import threading
from pathlib import Path

from .errors import StoreError, StoreFull


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_libc = ctypes.CDLL(None, use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)


def sync_filesystem(path: Path) -> None:
    """Make everything written to the file system holding `path` durable, in one call.

    syncfs(2) (Linux): one flush and one journal commit for many files written without fsync,
    where fsyncing each file would cost a journal commit per file. Used for batches of
    replicated blobs. Without syncfs, sync(2) does the same for every file system.
    """
    if _syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    finally:
        os.close(fd)


def raise_store_error(e: OSError, what: str) -> None:
    """Turn an OSError into the store's typed error; disk full is a temporary failure."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        raise StoreFull(f"{what}: disk full") from e
    raise StoreError(f"{what}: {e.strerror}") from e


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` so that a crash leaves either the old or the new file, never a mix.

    Writers of the same path at once (two sessions storing the same message: blob names are a
    hash of the content) each have their own temporary file, so neither renames the other's away;
    the last rename wins, and either file is whole."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        with contextlib.suppress(OSError):  # e.g. ENOTDIR: there was never a temporary file
            tmp.unlink()
        raise_store_error(e, f"writing {path.name}")


def make_dirs(path: Path, sync: bool = True) -> None:
    """Create a directory chain, fsyncing each new entry's parent so it survives a crash.

    With `sync=False` the caller makes the new entries durable itself (sync_filesystem).
    """
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        if sync:
            fsync_dir(d.parent)
