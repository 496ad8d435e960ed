"""Where the master key comes from: a key file, or a passphrase through Argon2id; and `key init`."""

import os
from dataclasses import dataclass
from pathlib import Path

from . import crypto
from .errors import MissingKey, StoreError
from .keyring import KdfParams, Keyring, load_key_file, new_passphrase_kdf, read_kdf, write_key_file


@dataclass(frozen=True)
class MasterKeySource:
    """How to obtain the master key: a key file path, or the name of an environment variable."""

    key_file: Path | None = None
    passphrase_env: str | None = None
    # Use a key file group or others may read (refused by default, see keyring.load_key_file).
    allow_loose_mode: bool = False

    @classmethod
    def default(
        cls, directory: Path, key_file: str | None, passphrase_env: str | None, *, allow_loose_mode: bool = False
    ) -> "MasterKeySource":
        """`--key-file`, else $EVENTMAIL_KEY_FILE, else DIR/keys/master.key; or `--passphrase-env`."""
        if passphrase_env:
            return cls(passphrase_env=passphrase_env)
        path = key_file or os.environ.get("EVENTMAIL_KEY_FILE") or str(directory / "keys" / "master.key")
        return cls(key_file=Path(path), allow_loose_mode=allow_loose_mode)

    def inside(self, directory: Path) -> bool:
        """True when the key file lies in the data directory: then it protects nothing at rest."""
        if self.key_file is None:
            return False
        try:
            self.key_file.resolve().relative_to(directory.resolve())
            return True
        except ValueError:
            return False


def _passphrase(env: str) -> bytes:
    value = os.environ.get(env)
    if not value:
        raise MissingKey(f"environment variable {env} is empty or not set")
    return value.encode()


def load_master_key(directory: Path, source: MasterKeySource) -> bytes:
    """The master key for an existing data directory."""
    if source.passphrase_env:
        kdf = read_kdf(directory / "keyring")
        if kdf.kind != "argon2id":
            raise MissingKey("this data directory uses a key file, not a passphrase")
        return crypto.passphrase_key(_passphrase(source.passphrase_env), kdf.salt, kdf.ops, kdf.mem)
    assert source.key_file is not None
    return load_key_file(source.key_file, allow_loose_mode=source.allow_loose_mode)


def init_directory(directory: Path, source: MasterKeySource) -> Keyring:
    """Create the master key (key file) or derive it (passphrase), and a new keyring."""
    from .store import Store

    if (directory / "keyring").exists():
        raise StoreError(f"{directory} already has a keyring")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if source.passphrase_env:
        kdf = new_passphrase_kdf()
        master = crypto.passphrase_key(_passphrase(source.passphrase_env), kdf.salt, kdf.ops, kdf.mem)
    else:
        assert source.key_file is not None
        kdf = KdfParams()
        master = (
            load_key_file(source.key_file, allow_loose_mode=source.allow_loose_mode)
            if source.key_file.exists() else write_key_file(source.key_file)
        )
    ring = Keyring.create(directory / "keyring", master, kdf)
    Store.initialize(directory, ring)
    return ring


def new_master_key(source: MasterKeySource) -> tuple[bytes, KdfParams]:
    """The master key a keyring is to be sealed under from now on: a key file (made here when it
    does not exist — never overwritten; an existing one is used, as the second node of a pair
    takes the key file made on the first), or a passphrase through Argon2id with a new salt."""
    if source.passphrase_env:
        kdf = new_passphrase_kdf()
        return crypto.passphrase_key(_passphrase(source.passphrase_env), kdf.salt, kdf.ops, kdf.mem), kdf
    assert source.key_file is not None
    if source.key_file.exists():
        return load_key_file(source.key_file, allow_loose_mode=source.allow_loose_mode), KdfParams()
    return write_key_file(source.key_file), KdfParams()
