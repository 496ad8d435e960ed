"""Authenticated encryption, keyed hashing and key derivation used by the store (PyNaCl, hashlib)."""

import hashlib
import os
from typing import Any

from nacl import bindings, pwhash
from nacl._sodium import ffi, lib  # PyNaCl's own cffi binding of libsodium

KEY_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES  # 32
NONCE_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_BYTES = 16
HASH_BYTES = 32
ARGON2_SALT_BYTES = pwhash.argon2id.SALTBYTES
# MODERATE limits (3 passes, 256 MiB, ~0.6 s here): the master key is derived once per process
# start, so a slow derivation costs nothing in service and a lot to an attacker guessing offline.
ARGON2_OPS = pwhash.argon2id.OPSLIMIT_MODERATE
ARGON2_MEM = pwhash.argon2id.MEMLIMIT_MODERATE


class DecryptError(Exception):
    """Ciphertext, associated data or key do not match."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """Encrypt with XChaCha20-Poly1305 under a random 24-byte nonce (safe to pick at random)."""
    nonce = os.urandom(NONCE_BYTES)
    ct = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)
    return nonce, ct


def unseal(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Decrypt and authenticate. Calls libsodium through PyNaCl's cffi module directly: the
    checked wrapper (`nacl.bindings`) costs about four times the decryption of a small record
    itself, and every record of a replay, a verify and a follower passes through here."""
    return _open(ffi.new("unsigned char[]", max(len(ciphertext) - TAG_BYTES, 0) + 1),
                 ffi.new("unsigned long long *"), key, nonce, ciphertext, aad)


def _open(out: Any, out_len: Any, key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """`unseal` into a given output buffer (at least the plaintext's size) and length cell."""
    if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES or len(ciphertext) < TAG_BYTES:
        raise DecryptError("bad key, nonce or ciphertext length")
    if lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
        out, out_len, ffi.NULL, ciphertext, len(ciphertext), aad, len(aad), nonce, key
    ) != 0:
        raise DecryptError("ciphertext does not authenticate")
    return bytes(ffi.buffer(out, out_len[0]))


class Opener:
    """`unseal` for many records in a row (a replay, a verify, a follower's reads): one output
    buffer and length cell for all of them, grown when a record is longer, instead of cffi's two
    allocations a record. One per reading loop: not to be shared between threads."""

    def __init__(self) -> None:
        self._size = 4096
        self._out = ffi.new("unsigned char[]", self._size)
        self._len = ffi.new("unsigned long long *")

    def __call__(self, key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        if len(ciphertext) > self._size:
            self._size = len(ciphertext)
            self._out = ffi.new("unsigned char[]", self._size)
        return _open(self._out, self._len, key, nonce, ciphertext, aad)


def keyed_hash(key: bytes, data: bytes, person: bytes) -> bytes:
    """BLAKE2b-256 keyed hash; `person` separates uses of one key."""
    return hashlib.blake2b(data, key=key, digest_size=HASH_BYTES, person=person[:16]).digest()


def subkey(master: bytes, label: bytes) -> bytes:
    """Derive an independent 32-byte key for one purpose from the master key."""
    return keyed_hash(master, b"", b"em-sub:" + label)


def passphrase_key(passphrase: bytes, salt: bytes, ops: int = ARGON2_OPS, mem: int = ARGON2_MEM) -> bytes:
    return bytes(pwhash.argon2id.kdf(KEY_BYTES, passphrase, salt, opslimit=ops, memlimit=mem))
