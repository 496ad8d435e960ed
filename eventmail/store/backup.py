"""Backup repositories: an incremental, crash-safe copy of a data directory's ciphertext — log
segments, blobs, checkpoints — and its keyring (sealed under the master key), made while a server
writes to it; and the copy back into a new data directory.

A repository has the layout of a data directory, so verifying it is opening it read-only and
checking every chain and blob (Store.verify), and restoring it is copying it back. Nothing is
decrypted to make a backup: it needs no key, and a backup holds no more plaintext than the data
directory does (none).

Consistency while the server runs comes from the order of the copy and from what the store never
does: checkpoints first, past ones and the current (a checkpoint newer than the copied log would be refused at open and the
projection rebuilt — so copy them before the log they describe), then the log segments (append-only:
a copy of a prefix of each is a log that ends earlier), then the blobs (written and fsynced before
the record that names them, so every copied record's blob is there by now; blobs never change),
and the keyring last (keys are only ever added or, when an account is shredded, removed: every
copied record's key is in a later keyring, and a stream shredded meanwhile is unreadable in the
repository as it is on the server). Files the data directory no longer has — a shredded account's
log and blobs, a replaced checkpoint — are removed from the repository at the end of the run; its
keyring already lacks their keys, so a shredding reaches the repository at its next run.

A run killed at any point leaves a repository the next run completes: every whole file is written
to a temporary name, fsynced and renamed; a segment grows by appending the bytes it lacks, so a
cut-short append is a prefix the next run continues.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreError
from .fsutil import fsync_dir, make_dirs, raise_store_error, sync_filesystem, write_atomic
from .log import TAIL_HINT

# Copied in this order (the module's docstring says why).
PARTS = ("past-checkpoints", "checkpoints", "streams", "blobs")
KEYRING = "keyring"
MARKER = "eventmail-backup.json"
FORMAT = 1
# The tail of a segment compared before appending to its copy: a segment replaced or cut back
# (a secondary's log truncated at a takeover) is copied whole again instead.
OVERLAP = 4096
CHUNK = 1 << 20

Progress = Callable[[int, int], None]


@dataclass
class BackupReport:
    files: int = 0  # files in the repository after the run
    copied: int = 0  # files written or grown this run
    bytes_copied: int = 0
    removed: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        mb = self.bytes_copied / 1e6
        rate = mb / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.files} files; {self.copied} copied ({mb:.1f} MB, {rate:.1f} MB/s), "
                f"{self.removed} removed, in {self.seconds:.1f} s")


def _files(root: Path) -> Iterator[str]:
    """Relative paths of the files under root's PARTS, without temporary files and tail hints
    (a hint is rewritten whole at each close and only shortens an open: a restored log is
    scanned whole once)."""
    for part in PARTS:
        base = root / part
        if not base.is_dir():
            continue
        for dirpath, _, names in os.walk(base):
            for name in sorted(names):
                if name.endswith(".tmp") or name == TAIL_HINT:
                    continue
                yield os.path.relpath(os.path.join(dirpath, name), root)


def _check_repository(dest: Path, create: bool) -> None:
    marker = dest / MARKER
    if marker.exists():
        try:
            fmt = json.loads(marker.read_text()).get("format")
        except (OSError, ValueError) as e:
            raise StoreError(f"{dest}: unreadable backup marker {MARKER}: {e}") from None
        if fmt != FORMAT:
            raise StoreError(f"{dest}: a backup repository of format {fmt}, this eventmail reads {FORMAT}")
        return
    if not create:
        raise StoreError(f"{dest} is not a backup repository (no {MARKER})")
    if dest.exists() and any(dest.iterdir()):
        raise StoreError(f"{dest} exists and is not a backup repository: give an empty or new directory")
    make_dirs(dest)
    write_atomic(dest / MARKER, json.dumps({"format": FORMAT, "created": int(time.time())}).encode())


def _copy_whole(src: Path, dst: Path) -> int:
    data = src.read_bytes()
    make_dirs(dst.parent)
    write_atomic(dst, data)
    return len(data)


class _Batch:
    """Whole files (blobs, checkpoints) written under temporary names, made durable together
    (one syncfs), then renamed into place: a file is never under its name before its bytes are
    on disk, so a run killed at any point leaves only whole files or stray temporaries."""

    FILES = 2000
    BYTES = 128 << 20

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.pending: list[tuple[Path, Path, int | None]] = []  # (tmp, final, mtime_ns to keep)
        self.size = 0

    def add(self, src: Path, dst: Path, keep_mtime: bool) -> int:
        data = src.read_bytes()
        mtime = src.stat().st_mtime_ns if keep_mtime else None
        make_dirs(dst.parent)
        tmp = dst.with_name(dst.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        self.pending.append((tmp, dst, mtime))
        self.size += len(data)
        if len(self.pending) >= self.FILES or self.size >= self.BYTES:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self.pending:
            return
        sync_filesystem(self.dest)
        parents = set()
        for tmp, dst, mtime in self.pending:
            os.replace(tmp, dst)
            if mtime is not None:
                os.utime(dst, ns=(mtime, mtime))
            parents.add(dst.parent)
        for parent in parents:
            fsync_dir(parent)
        self.pending.clear()
        self.size = 0


def _grow_segment(src: Path, dst: Path) -> int:
    """Append to the copy what the segment has beyond it; the whole segment again if the copy is
    not a prefix of it. Returns the bytes written."""
    size = src.stat().st_size  # what is there now: bytes appended later wait for the next run
    have = dst.stat().st_size if dst.exists() else 0
    if have == size:
        return 0
    if have > size or (have and not _same_tail(src, dst, have)):
        return _copy_whole(src, dst)
    make_dirs(dst.parent)
    written = 0
    with open(src, "rb") as fin, open(dst, "ab") as fout:
        fin.seek(have)
        while written < size - have:
            chunk = fin.read(min(CHUNK, size - have - written))
            if not chunk:
                break
            fout.write(chunk)
            written += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    if have == 0:
        fsync_dir(dst.parent)
    return written


def _same_tail(src: Path, dst: Path, have: int) -> bool:
    start = max(0, have - OVERLAP)
    with open(src, "rb") as a, open(dst, "rb") as b:
        a.seek(start)
        b.seek(start)
        return a.read(have - start) == b.read(have - start)


def _copy_file(rel: str, source: Path, dest: Path, batch: _Batch) -> int:
    src, dst = source / rel, dest / rel
    if rel.startswith("streams" + os.sep):
        return _grow_segment(src, dst)
    if rel.startswith("blobs" + os.sep):
        return 0 if dst.exists() else batch.add(src, dst, keep_mtime=False)  # a blob never changes
    st = src.stat()
    if dst.exists() and dst.stat().st_size == st.st_size and dst.stat().st_mtime_ns >= st.st_mtime_ns:
        return 0
    return batch.add(src, dst, keep_mtime=True)  # a checkpoint is replaced whole


def mirror(source: Path, dest: Path, progress: Progress | None = None) -> BackupReport:
    """Make `dest` hold what `source` holds, in the order that keeps it consistent."""
    started = time.monotonic()
    report = BackupReport()
    if not (source / KEYRING).exists():
        raise StoreError(f"{source} is not a data directory (no keyring)")
    wanted: list[str] = []
    # The total shown is what there was at the start; each part is listed again just before it is
    # copied, after the part before it (the module's docstring says why).
    total = sum(1 for _ in _files(source)) + 1
    batch = _Batch(dest)
    for part in PARTS:
        listed = [f for f in _files(source) if f.startswith(part + os.sep)]
        for rel in listed:
            try:
                n = _copy_file(rel, source, dest, batch)
            except FileNotFoundError:
                continue  # removed meanwhile (a shredded account, a replaced checkpoint)
            except OSError as e:
                raise_store_error(e, f"copying {rel}")
            if n:
                report.copied += 1
                report.bytes_copied += n
            wanted.append(rel)
            if progress is not None:
                total = max(total, len(wanted) + 1)
                progress(len(wanted), total)
        batch.flush()  # this part is durable before the next is copied
    write_atomic(dest / KEYRING, (source / KEYRING).read_bytes())
    keep = set(wanted)
    for rel in list(_files(dest)):
        if rel not in keep and not (source / rel).exists():
            (dest / rel).unlink(missing_ok=True)
            report.removed += 1
    for part in PARTS:  # temporaries of a run killed before its batch was renamed
        for stray in (dest / part).rglob("*.tmp") if (dest / part).is_dir() else ():
            stray.unlink(missing_ok=True)
    _remove_empty_dirs(dest)
    report.files = len(keep)
    report.seconds = time.monotonic() - started
    if progress is not None:
        progress(total, total)
    return report


def _remove_empty_dirs(root: Path) -> None:
    for part in PARTS:
        for dirpath, dirnames, filenames in os.walk(root / part, topdown=False):
            if not dirnames and not filenames and Path(dirpath) != root / part:
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


def create_backup(source: Path, dest: Path, progress: Progress | None = None) -> BackupReport:
    """Bring the repository `dest` (made if new) up to the data directory `source`."""
    _check_repository(dest, create=True)
    return mirror(source, dest, progress)


def restore_backup(repository: Path, new_dir: Path, progress: Progress | None = None) -> BackupReport:
    """A new data directory from a repository (then open it and verify)."""
    _check_repository(repository, create=False)
    if new_dir.exists() and any(new_dir.iterdir()):
        raise StoreError(f"{new_dir} exists and is not empty: restore into a new directory")
    make_dirs(new_dir)
    return mirror(repository, new_dir, progress)


def check_repository(repository: Path) -> None:
    _check_repository(repository, create=False)
