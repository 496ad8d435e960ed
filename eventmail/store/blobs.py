"""Encrypted message blobs: stored once per account, named by a keyed hash, fsynced before use."""

import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from ..cputime import stage
from . import crypto
from .errors import DamagedBlob, StreamShredded
from .fsutil import fsync_dir, make_dirs, write_atomic
from .keyring import StreamKeys
from .packs import forget, packs_of

BLOB_MAGIC = b"EMBLOB01"
BLOB_HEAD = struct.Struct(">8sI")  # magic, key id; then the nonce and the ciphertext
# A batch of at most this many replicated blob files is stored file by file (an fsync each, then
# its directory), as the primary stores them: the few blobs of a steady-state batch. Larger
# batches (a catch-up, an initial sync) go into one pack (store.packs): a file each cost more
# than the rest of the follower's work.
SMALL_BATCH_FILES = 8
# Decrypted blobs kept in memory, in all (one cache per store): a client that reads a message
# reads it again soon (the header, then the body; a phone and a desktop both fetch new mail;
# a resync), and every read otherwise costs a file open and a decryption. 32 MiB holds the
# recent mail of a busy day; memory only, never written anywhere (docs/security.md).
CACHE_BYTES = 32 * 1024 * 1024
# Larger blobs are not cached: one big attachment would push out hundreds of ordinary messages.
CACHE_MAX_BLOB = 1024 * 1024


class BlobCache:
    """Recently read plaintexts by (stream, blob id), least recently used out first, bounded in
    octets. Blob ids name content, so an entry never goes stale; a shredded stream's entries are
    dropped. Thread-safe: blobs are read in worker threads."""

    def __init__(self, capacity: int = CACHE_BYTES) -> None:
        self.capacity = capacity
        self.size = 0
        self._entries: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, stream: str, blob_id: bytes) -> bytes | None:
        key = (stream, blob_id)
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def put(self, stream: str, blob_id: bytes, data: bytes) -> None:
        if len(data) > CACHE_MAX_BLOB or len(data) > self.capacity:
            return
        key = (stream, blob_id)
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = data
            self.size += len(data)
            while self.size > self.capacity:
                _, old = self._entries.popitem(last=False)
                self.size -= len(old)

    def drop(self, stream: str, blob_ids: Sequence[bytes]) -> None:
        with self._lock:
            for blob_id in blob_ids:
                data = self._entries.pop((stream, blob_id), None)
                if data is not None:
                    self.size -= len(data)

    def drop_stream(self, stream: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == stream]:
                self.size -= len(self._entries.pop(key))


class BlobStore:
    """The blobs of one stream (account). Names reveal nothing without the stream's keys."""

    def __init__(self, stream: str, path: Path, keys: StreamKeys | None, cache: BlobCache | None = None) -> None:
        self.stream = stream
        self.path = path
        self.keys = keys
        self.cache = cache
        self._dir = os.fspath(path)  # reads build plain string paths: pathlib costs as much as the read
        self.packs = packs_of(path)  # replicated batches of blobs (store.packs)

    def _keys(self) -> StreamKeys:
        if self.keys is None:
            raise StreamShredded(f"stream {self.stream}: its keys were deleted")
        return self.keys

    def blob_id(self, data: bytes) -> bytes:
        return crypto.keyed_hash(self._keys().blob_name_key, data, b"em-blob")

    def _file(self, blob_id: bytes) -> Path:
        h = blob_id.hex()
        return self.path / h[:2] / h[2:]

    def _aad(self, blob_id: bytes) -> bytes:
        return self.stream.encode() + b"\x00" + blob_id

    def put(self, data: bytes) -> bytes:
        with stage("blob"):
            return self._put(data)

    def _put(self, data: bytes) -> bytes:
        """Store `data` durably (fsynced file and directory) and return its id; a no-op if present."""
        blob_id = self.blob_id(data)
        f = self._file(blob_id)
        if f.exists():
            return blob_id
        key_id, key = self._keys().current_key()
        nonce, ct = crypto.seal(key, data, self._aad(blob_id))
        make_dirs(f.parent)
        write_atomic(f, BLOB_HEAD.pack(BLOB_MAGIC, key_id) + nonce + ct)
        return blob_id

    def raw_file(self, blob_id: bytes) -> bytes:
        """The encrypted file as it is on disk (replication ships it verbatim). A plain string
        path, as in `get`: pathlib's read_bytes was a fifth of a leader's CPU in a catch-up."""
        h = blob_id.hex()
        try:
            with open(f"{self._dir}/{h[:2]}/{h[2:]}", "rb", buffering=0) as f:
                return f.read()
        except FileNotFoundError:
            pass
        data = self.packs.read(blob_id)
        if data is None:
            raise DamagedBlob(f"stream {self.stream}: blob {blob_id.hex()} is missing")
        return data

    def put_raw_files(self, files: list[tuple[bytes, bytes]]) -> int:
        """Store a batch of replicated blob files durably: a large batch as one pack (one fsync
        and one directory fsync for all of it), a small one (SMALL_BATCH_FILES) file by file.

        Each file is checked (it opens and matches its name) before anything is written; a
        crash leaves each blob whole or absent. Returns the number of blobs written (those
        already present are skipped)."""
        todo = self.check_raw_files(files)
        self.write_raw_files(todo)
        return len(todo)

    def check_raw_files(self, files: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The replicated blob files of a batch not here yet, each checked (it opens and matches
        its name: DamagedBlob otherwise), once each; nothing is written."""
        todo = []
        seen = set()
        for blob_id, data in files:
            if blob_id in seen or self._present(blob_id):
                continue
            seen.add(blob_id)
            self._open(blob_id, data)  # raises DamagedBlob before anything is written
            todo.append((blob_id, data))
        return todo

    def write_raw_files(self, todo: list[tuple[bytes, bytes]]) -> None:
        """Write checked blob files (check_raw_files) durably: more than SMALL_BATCH_FILES as one
        pack, fewer file by file (each fsynced, renamed, its directory fsynced)."""
        if len(todo) > SMALL_BATCH_FILES:
            self.packs.add(todo)
            return
        for blob_id, data in todo:
            f = self._file(blob_id)
            make_dirs(f.parent)
            write_atomic(f, data)  # fsynced, renamed, its directory fsynced

    def _present(self, blob_id: bytes) -> bool:
        h = blob_id.hex()
        return os.path.exists(f"{self._dir}/{h[:2]}/{h[2:]}") or self.packs.find(blob_id, refresh=False) is not None

    def exists(self, blob_id: bytes) -> bool:
        """Whether the blob is here, as a file or in a pack."""
        return self._present(blob_id)

    def get(self, blob_id: bytes) -> bytes:
        """The blob's plaintext, checked against its name (or from the cache, which holds only
        plaintexts so checked). Raises DamagedBlob."""
        if self.cache is not None:
            data = self.cache.get(self.stream, blob_id)
            if data is not None:
                return data
        h = blob_id.hex()
        try:
            with open(f"{self._dir}/{h[:2]}/{h[2:]}", "rb", buffering=0) as f:
                raw = f.read()
        except FileNotFoundError:
            packed = self.packs.read(blob_id)
            if packed is None:
                raise DamagedBlob(f"stream {self.stream}: blob {h} is missing") from None
            raw = packed
        data = self._open(blob_id, raw)
        if self.cache is not None:
            self.cache.put(self.stream, blob_id, data)
        return data

    def cached(self, blob_id: bytes) -> bytes | None:
        """The plaintext if the cache holds it (no file read, no decryption: fine on the event loop)."""
        return self.cache.get(self.stream, blob_id) if self.cache is not None else None

    def get_many(self, blob_ids: Sequence[bytes]) -> list[bytes]:
        """`get` of each (one thread hop for a FETCH of many messages)."""
        return [self.get(b) for b in blob_ids]

    def _open(self, blob_id: bytes, raw: bytes) -> bytes:
        head = BLOB_HEAD.size
        if len(raw) < head + crypto.NONCE_BYTES + crypto.TAG_BYTES:
            raise DamagedBlob(f"stream {self.stream}: blob {blob_id.hex()} is truncated")
        magic, key_id = BLOB_HEAD.unpack_from(raw)
        key = self._keys().keys.get(key_id)
        if magic != BLOB_MAGIC or key is None:
            raise DamagedBlob(f"stream {self.stream}: blob {blob_id.hex()} has a damaged header")
        nonce = raw[head : head + crypto.NONCE_BYTES]
        try:
            data = crypto.unseal(key, nonce, raw[head + crypto.NONCE_BYTES :], self._aad(blob_id))
        except crypto.DecryptError:
            raise DamagedBlob(f"stream {self.stream}: blob {blob_id.hex()} does not decrypt (altered)") from None
        if self.blob_id(data) != blob_id:
            raise DamagedBlob(f"stream {self.stream}: blob {blob_id.hex()} does not match its name")
        return data

    def remove(self, blob_ids: list[bytes]) -> None:
        """Delete blobs nothing refers to any more (the retention collector's decision, recorded
        before), then sync their directories."""
        if self.cache is not None:
            self.cache.drop(self.stream, blob_ids)
        parents = set()
        for blob_id in blob_ids:
            f = self._file(blob_id)
            f.unlink(missing_ok=True)
            parents.add(f.parent)
        for parent in parents:
            if parent.exists():
                fsync_dir(parent)
        packed = {b for b in blob_ids if self.packs.find(b, refresh=False) is not None}
        if packed:
            self.packs.remove(packed)

    def remove_all(self) -> None:
        """Delete every blob file and pack of the stream (after its keys were shredded)."""
        forget(self.path)
        if not self.path.exists():
            return
        for root, dirs, files in os.walk(self.path, topdown=False):
            for name in files:
                os.unlink(os.path.join(root, name))
            for name in dirs:
                os.rmdir(os.path.join(root, name))
        self.path.rmdir()
