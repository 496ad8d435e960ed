"""Encrypted checkpoints of a projection: the serialized database sealed with the stream's key."""

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import zstandard

from . import crypto
from .fsutil import fsync_dir, make_dirs, write_atomic
from .keyring import StreamKeys

# EMCKPT02: the database image compressed with Zstandard (level 3). EMCKPT01, zlib level 1, is
# still read. On a 100,000-message account's 53.7 MB image (bench/store.py): zlib 18.8 MB,
# 0.67 CPU s to compress and 0.23 to decompress; Zstandard 3.0 MB, 0.10 and 0.07 — open from
# checkpoint is mostly this decompression, and the smaller file is less to read and decrypt.
CHECKPOINT_MAGIC = b"EMCKPT02"
ZLIB_MAGIC = b"EMCKPT01"
ZSTD_LEVEL = 3
CHECKPOINT_HEAD = struct.Struct(f">8sQ{crypto.HASH_BYTES}sI")  # magic, seq, chain at seq, key id


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    chain: bytes
    state: bytes


def _aad(magic: bytes, stream: str, seq: int, chain: bytes) -> bytes:
    return magic + stream.encode() + b"\x00" + struct.pack(">Q", seq) + chain


def write(path: Path, stream: str, keys: StreamKeys, cp: Checkpoint) -> None:
    """Seal and atomically replace the checkpoint file."""
    key_id, key = keys.current_key()
    # Compressed before sealing: the file is at rest, no attacker chooses part of the plaintext
    # and watches its size, so compression leaks nothing here.
    packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(cp.state)
    nonce, ct = crypto.seal(key, packed, _aad(CHECKPOINT_MAGIC, stream, cp.seq, cp.chain))
    make_dirs(path.parent)
    write_atomic(path, CHECKPOINT_HEAD.pack(CHECKPOINT_MAGIC, cp.seq, cp.chain, key_id) + nonce + ct)


def read(path: Path, stream: str, keys: StreamKeys) -> Checkpoint | None:
    """The checkpoint, or None when absent or unusable (the projection is then rebuilt from the log)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(raw) < CHECKPOINT_HEAD.size + crypto.NONCE_BYTES:
        return None
    magic, seq, chain, key_id = CHECKPOINT_HEAD.unpack_from(raw)
    key = keys.keys.get(key_id)
    if magic not in (CHECKPOINT_MAGIC, ZLIB_MAGIC) or key is None:
        return None
    body = raw[CHECKPOINT_HEAD.size :]
    try:
        packed = crypto.unseal(key, body[: crypto.NONCE_BYTES], body[crypto.NONCE_BYTES :],
                               _aad(magic, stream, seq, chain))
        # The compressor wrote the image's size into the frame: one allocation, no guessing.
        state = zlib.decompress(packed) if magic == ZLIB_MAGIC else zstandard.ZstdDecompressor().decompress(packed)
        return Checkpoint(seq, chain, state)
    except (crypto.DecryptError, zlib.error, zstandard.ZstdError):
        return None


# Past checkpoints kept beside the current one (hard links to files once current), so a view of the
# account at an earlier moment (restore, export --at, the retention collector) replays the log from
# the newest checkpoint before that moment instead of from the first event. With a checkpoint every
# 20,000 events and at each close, eight reach back 160,000 events or more.
KEEP_PAST = 8


def past_dir(path: Path) -> Path:
    """checkpoints/<stream> keeps its past in past-checkpoints/<stream>/ (the same file system,
    for the hard links)."""
    return path.parent.parent / "past-checkpoints" / path.name


def keep_past(path: Path, seq: int, time_us: int) -> None:
    """Remember the checkpoint just written at `path` (state at `seq`, last event at `time_us`)."""
    d = past_dir(path)
    make_dirs(d)
    name = d / f"{seq:020d}-{time_us:020d}"
    if not name.exists():
        os.link(path, name)
    for old, _, _ in past(path)[KEEP_PAST:]:
        old.unlink(missing_ok=True)
    fsync_dir(d)


def past(path: Path) -> list[tuple[Path, int, int]]:
    """The kept checkpoints, newest first: (file, seq, time of its last event in µs)."""
    d = past_dir(path)
    out = []
    if d.is_dir():
        for f in d.iterdir():
            seq, _, time_us = f.name.partition("-")
            if seq.isdigit() and time_us.isdigit():
                out.append((f, int(seq), int(time_us)))
    return sorted(out, key=lambda x: x[1], reverse=True)
