"""The keyring: one data key (plus rotations) per stream, wrapped by the master key, kept beside the log."""

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import crypto
from .errors import KeyFileExposed, MissingKey, StoreError, StreamShredded, WrongKey
from .fsutil import write_atomic

KEYRING_MAGIC = b"EMKEYRING1\n"
KEY_FILE_MAGIC = "eventmail-master-key-v1"


@dataclass
class StreamKeys:
    """A stream's data keys by id; `current` encrypts new records, older ids stay readable."""

    dir_name: str
    keys: dict[int, bytes]
    current: int
    blob_name_key: bytes  # keys the hash that names this stream's blobs (no plaintext hash leaks)

    def current_key(self) -> tuple[int, bytes]:
        return self.current, self.keys[self.current]


@dataclass
class KdfParams:
    """How the master key came to be: a key file (`none`) or a passphrase through Argon2id."""

    kind: str = "none"
    salt: bytes = b""
    ops: int = 0
    mem: int = 0


@dataclass
class Keyring:
    path: Path
    master: bytes
    kdf: KdfParams
    naming_key: bytes
    streams: dict[str, StreamKeys] = field(default_factory=dict)
    shredded: set[str] = field(default_factory=set)
    version: int = 0  # bumped on every save, so replication knows when to ship the keyring again

    # ---------------------------------------------------------------- persistence

    @staticmethod
    def exists(path: Path) -> bool:
        return path.exists()

    @classmethod
    def create(cls, path: Path, master: bytes, kdf: KdfParams) -> "Keyring":
        if path.exists():
            raise StoreError(f"a keyring already exists in {path.parent}")
        ring = cls(path=path, master=master, kdf=kdf, naming_key=crypto.new_key())
        ring.save()
        return ring

    @classmethod
    def load(cls, path: Path, master: bytes) -> "Keyring":
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise MissingKey(f"no keyring in {path.parent} (run `eventmail key init`)") from None
        return cls.from_bytes(path, raw, master)

    @classmethod
    def from_bytes(cls, path: Path, raw: bytes, master: bytes) -> "Keyring":
        """A keyring from its sealed file contents (a replica receives them over the wire)."""
        kdf, nonce, ct = _split(raw)
        try:
            body = crypto.unseal(crypto.subkey(master, b"keyring"), nonce, ct, KEYRING_MAGIC)
        except crypto.DecryptError:
            raise WrongKey("the master key does not open this data directory's keyring") from None
        doc = json.loads(body)
        ring = cls(path=path, master=master, kdf=kdf, naming_key=_b(doc["naming_key"]))
        for sid, s in doc["streams"].items():
            ring.streams[sid] = StreamKeys(
                dir_name=s["dir"],
                keys={int(k): _b(v) for k, v in s["keys"].items()},
                current=s["current"],
                blob_name_key=_b(s["blob_name_key"]),
            )
        ring.shredded = set(doc.get("shredded", []))
        return ring

    def save(self) -> None:
        doc = {
            "naming_key": _h(self.naming_key),
            "streams": {
                sid: {
                    "dir": s.dir_name,
                    "keys": {str(k): _h(v) for k, v in s.keys.items()},
                    "current": s.current,
                    "blob_name_key": _h(s.blob_name_key),
                }
                for sid, s in sorted(self.streams.items())
            },
            "shredded": sorted(self.shredded),
        }
        nonce, ct = crypto.seal(crypto.subkey(self.master, b"keyring"), json.dumps(doc).encode(), KEYRING_MAGIC)
        header = json.dumps(
            {"kdf": self.kdf.kind, "salt": _h(self.kdf.salt), "ops": self.kdf.ops, "mem": self.kdf.mem}
        ).encode()
        write_atomic(self.path, KEYRING_MAGIC + header + b"\n" + nonce + ct)
        self.version += 1

    def rewrap(self, master: bytes, kdf: KdfParams) -> None:
        """Seal the keyring under another master key (a new key file, a changed passphrase): the
        data keys stay, so no record or blob is rewritten. The file is replaced atomically: a crash
        leaves the keyring under the old master key or under the new one."""
        self.master, self.kdf = master, kdf
        self.save()

    # ---------------------------------------------------------------- streams

    def dir_name(self, stream: str) -> str:
        """Directory name of a stream: a keyed hash, so account names do not show on disk."""
        return crypto.keyed_hash(self.naming_key, stream.encode(), b"em-streamdir").hex()[:32]

    def stream(self, stream: str, create: bool = False) -> StreamKeys:
        keys = self.streams.get(stream)
        if keys is not None:
            return keys
        if stream in self.shredded:
            raise StreamShredded(f"stream {stream}: its keys were deleted")
        if not create:
            raise StoreError(f"stream {stream} has no keys")
        keys = StreamKeys(self.dir_name(stream), {1: crypto.new_key()}, 1, crypto.new_key())
        self.streams[stream] = keys
        self.save()
        return keys

    def adopt(self, other: "Keyring") -> None:
        """Take another node's keyring as ours (replication), keeping the StreamKeys objects that
        open logs hold, so they see new key ids at once."""
        if other.naming_key != self.naming_key:
            raise StoreError("this data directory was not made from the primary's keyring (naming keys differ)")
        for sid, keys in other.streams.items():
            mine = self.streams.get(sid)
            if mine is None:
                self.streams[sid] = keys
            else:
                mine.keys.update(keys.keys)
                mine.current = keys.current
                mine.dir_name = keys.dir_name
                mine.blob_name_key = keys.blob_name_key
        for sid in other.shredded:
            gone = self.streams.pop(sid, None)
            if gone is not None:
                gone.keys.clear()
            self.shredded.add(sid)
        self.save()

    def rotate(self) -> int:
        """Give every stream a new current data key; returns how many streams were rotated."""
        for s in self.streams.values():
            # The key first, then the switch: a running server's writer (another thread) may read
            # `current` at any moment and must find its key.
            new_id = max(s.keys) + 1
            s.keys[new_id] = crypto.new_key()
            s.current = new_id
        self.save()
        return len(self.streams)

    def shred(self, stream: str) -> None:
        """Delete every key of a stream: its records and blobs become unreadable everywhere."""
        if self.streams.pop(stream, None) is not None:
            self.shredded.add(stream)
            self.save()


# ---------------------------------------------------------------- master key sources


def read_kdf(path: Path) -> KdfParams:
    """The keyring's plaintext header: which kind of master key it expects."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MissingKey(f"no keyring in {path.parent} (run `eventmail key init`)") from None
    return _split(raw)[0]


def load_key_file(path: Path, *, allow_loose_mode: bool = False) -> bytes:
    """The master key in `path`. A file group or others may read is refused unless
    `allow_loose_mode` (ssh refuses a private key so exposed, for the same reason: whoever reads it
    reads every mailbox). Anything but our one-line format is a WrongKey, never a traceback."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise MissingKey(f"key file {path} does not exist") from None
    except OSError as e:
        raise MissingKey(f"key file {path}: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode  # of the file we read, not of whatever the path names later
        if mode & 0o077 and not allow_loose_mode:
            raise KeyFileExposed(
                f"key file {path} has mode {mode & 0o7777:04o}: group or others may read it; "
                f"chmod 600 it, or accept it with --allow-key-file-mode (allow_key_file_mode = true in the configuration)"
            )
        # A key file is one short line; more than this is not one, and not worth reading.
        raw = os.read(fd, 4097)
    except OSError as e:
        raise MissingKey(f"key file {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    try:
        if len(raw) > 4096:
            raise UnicodeError("too long")
        text = raw.decode("ascii").split()
    except UnicodeError:
        raise WrongKey(f"{path} is not an eventmail key file") from None
    if len(text) != 2 or text[0] != KEY_FILE_MAGIC:
        raise WrongKey(f"{path} is not an eventmail key file")
    try:
        key = base64.b64decode(text[1], validate=True)
    except ValueError:
        raise WrongKey(f"{path} is not an eventmail key file") from None
    if len(key) != crypto.KEY_BYTES:
        raise WrongKey(f"{path} is not an eventmail key file")
    return key


def write_key_file(path: Path) -> bytes:
    key = crypto.new_key()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        raise StoreError(f"key file {path} already exists")
    write_atomic(path, f"{KEY_FILE_MAGIC} {base64.b64encode(key).decode()}\n".encode(), mode=0o400)
    return key


def new_passphrase_kdf() -> KdfParams:
    return KdfParams("argon2id", os.urandom(crypto.ARGON2_SALT_BYTES), crypto.ARGON2_OPS, crypto.ARGON2_MEM)


def _split(raw: bytes) -> tuple[KdfParams, bytes, bytes]:
    if not raw.startswith(KEYRING_MAGIC):
        raise StoreError("keyring file is damaged (bad magic)")
    rest = raw[len(KEYRING_MAGIC) :]
    header, sep, sealed = rest.partition(b"\n")
    if not sep or len(sealed) < crypto.NONCE_BYTES + crypto.TAG_BYTES:
        raise StoreError("keyring file is damaged (truncated)")
    try:
        h = json.loads(header)
        kdf = KdfParams(str(h["kdf"]), _b(h["salt"]), int(h["ops"]), int(h["mem"]))
    except (ValueError, KeyError, TypeError):
        raise StoreError("keyring file is damaged (bad header)") from None
    return kdf, sealed[: crypto.NONCE_BYTES], sealed[crypto.NONCE_BYTES :]


def _h(b: bytes) -> str:
    return b.hex()


def _b(s: str) -> bytes:
    return bytes.fromhex(s)
