"""Blob packs: a batch of replicated blob files in one file, made durable with one fsync and one directory fsync.

A follower catching up receives hundreds of blobs a second. As a file each, a blob costs a
create and a rename in a shared directory tree, and a sync of both; on the 2-core test machine
that was 0.3 ms of (mostly kernel) time per blob, more than the rest of the follower's work.
A pack holds a batch of them instead, each exactly as the blob file would be (encrypted under
the stream's key, BlobStore's format), then an index of (blob id, offset, length) and a trailer:

    file file ... file | index: n x (id 32, offset 8, length 4) | PACK_MAGIC, n 4, index offset 8, crc32 4

A pack is written under a temporary name, fsynced, renamed into `<blobs>/packs/`, and the
directory fsynced: it is there whole or not at all, and never changes after (a compaction writes
a new pack and deletes the old one). So backups copy it once like a blob file, and restores put
it back; reads find a blob in its file first, then in the packs (BlobStore).
"""

import os
import struct
import threading
import zlib
from pathlib import Path

from .fsutil import fsync_dir, make_dirs, write_atomic

PACK_MAGIC = b"EMPACK01"
PACK_DIR = "packs"
ENTRY = struct.Struct(">32sQI")  # blob id, offset, length
TRAILER = struct.Struct(">8sIQI")  # magic, entries, index offset, crc32 of the index


def write_pack(directory: Path, files: list[tuple[bytes, bytes]]) -> Path:
    """Write blob files (id, file bytes) as one new pack in `directory`, durably; its path."""
    body = bytearray()
    index = bytearray()
    for blob_id, data in files:
        index += ENTRY.pack(blob_id, len(body), len(data))
        body += data
    trailer = TRAILER.pack(PACK_MAGIC, len(files), len(body), zlib.crc32(index))
    make_dirs(directory)
    path = directory / f"{os.urandom(8).hex()}.pack"
    write_atomic(path, bytes(body + index + trailer))  # one fsync, one directory fsync
    return path


def read_index(path: Path) -> dict[bytes, tuple[int, int]] | None:
    """A pack's index: blob id -> (offset, length); None when the pack is not whole."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < TRAILER.size:
                return None
            f.seek(size - TRAILER.size)
            magic, n, at, crc = TRAILER.unpack(f.read(TRAILER.size))
            if magic != PACK_MAGIC or at + n * ENTRY.size + TRAILER.size != size:
                return None
            f.seek(at)
            raw = f.read(n * ENTRY.size)
    except FileNotFoundError:
        return None
    if zlib.crc32(raw) != crc:
        return None
    out = {}
    for i in range(n):
        blob_id, offset, length = ENTRY.unpack_from(raw, i * ENTRY.size)
        if offset + length > at:
            return None
        out[blob_id] = (offset, length)
    return out


class Packs:
    """Where each packed blob of one stream's blob directory is, as the pack files say.

    Loaded on first use and refreshed when a lookup misses (a pack written by another process,
    or one compacted away meanwhile); one per directory in a process (`packs_of`), shared by
    every BlobStore of it. Thread-safe: blobs are read and written in worker threads."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._loaded: dict[str, dict[bytes, tuple[int, int]]] = {}  # pack name -> its index
        self._where: dict[bytes, tuple[str, int, int]] = {}  # blob id -> (pack name, offset, length)
        self._lock = threading.Lock()
        self._fresh = False

    def refresh(self) -> None:
        """Read the index of packs not seen yet, forget packs that are gone."""
        with self._lock:
            try:
                names = {n for n in os.listdir(self.directory) if n.endswith(".pack")}
            except FileNotFoundError:
                names = set()
            for name in set(self._loaded) - names:
                del self._loaded[name]
            for name in sorted(names - set(self._loaded)):
                index = read_index(self.directory / name)
                if index is not None:  # only a whole pack is ever renamed into place
                    self._loaded[name] = index
            self._where = {b: (name, o, n) for name, index in self._loaded.items() for b, (o, n) in index.items()}
            self._fresh = True

    def find(self, blob_id: bytes, refresh: bool = True) -> tuple[Path, int, int] | None:
        """(pack path, offset, length) of a packed blob, or None."""
        if not self._fresh:
            self.refresh()
        hit = self._where.get(blob_id)
        if hit is None and refresh:
            self.refresh()
            hit = self._where.get(blob_id)
        return None if hit is None else (self.directory / hit[0], hit[1], hit[2])

    def read(self, blob_id: bytes) -> bytes | None:
        """A packed blob's file bytes, or None."""
        for attempt in (0, 1):
            hit = self.find(blob_id)
            if hit is None:
                return None
            path, offset, length = hit
            try:
                with open(path, "rb", buffering=0) as f:
                    return os.pread(f.fileno(), length, offset)
            except FileNotFoundError:
                if attempt:
                    raise
                self.refresh()  # compacted away meanwhile: look again
        return None

    def add(self, files: list[tuple[bytes, bytes]]) -> None:
        """Write a new pack of these blob files (durably) and know it."""
        path = write_pack(self.directory, files)
        index = read_index(path)
        assert index is not None
        with self._lock:
            self._loaded[path.name] = index
            for b, (o, n) in index.items():
                self._where[b] = (path.name, o, n)

    def remove(self, blob_ids: set[bytes]) -> None:
        """Take blobs out of the packs that hold them: a pack left with nothing is deleted, any
        other rewritten without them (a new pack, durable, before the old one goes)."""
        self.refresh()
        with self._lock:
            hit = {self._where[b][0] for b in blob_ids if b in self._where}
        for name in sorted(hit):
            path = self.directory / name
            index = self._loaded.get(name, {})
            keep = [(b, o, n) for b, (o, n) in index.items() if b not in blob_ids]
            if keep:
                with open(path, "rb") as f:
                    data = f.read()
                write_pack(self.directory, [(b, data[o : o + n]) for b, o, n in keep])
            path.unlink(missing_ok=True)
        if hit:
            fsync_dir(self.directory)
        self.refresh()


_PACKS: dict[str, Packs] = {}
_PACKS_LOCK = threading.Lock()


def packs_of(blob_dir: Path) -> Packs:
    """The one Packs of a stream's blob directory in this process."""
    key = os.fspath(blob_dir)
    with _PACKS_LOCK:
        p = _PACKS.get(key)
        if p is None:
            p = _PACKS[key] = Packs(blob_dir / PACK_DIR)
        return p


def forget(blob_dir: Path) -> None:
    """Drop what is known of a directory's packs (its files were deleted: a shredded stream)."""
    with _PACKS_LOCK:
        _PACKS.pop(os.fspath(blob_dir), None)
