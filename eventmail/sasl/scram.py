"""SCRAM-SHA-256 message grammar and key arithmetic (RFC 5802, RFC 7677); pure functions, no I/O."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "HASH_NAME",
    "KEY_LENGTH",
    "PRINTABLE",
    "ClientFinal",
    "ClientFirst",
    "ScramError",
    "b64decode_strict",
    "client_key",
    "derive_keys",
    "new_server_nonce",
    "parse_client_final",
    "parse_client_first",
    "salted_password",
    "server_first_message",
    "server_signature",
    "verify_client_proof",
]

# RFC 7677 §3: SCRAM-SHA-256 uses SHA-256 as H() and HMAC-SHA-256 as HMAC().
HASH_NAME = "sha256"
KEY_LENGTH = 32

# 18 random bytes are 24 base64 characters (no padding), 144 bits: RFC 5802 §5.1 asks for a
# nonce that is "different for each authentication" and hard to predict.
SERVER_NONCE_BYTES = 18

# RFC 5802 §7: cb-name = 1*(ALPHA / DIGIT / "." / "-")
_CB_NAME = re.compile(r"[A-Za-z0-9.-]+")
# RFC 5802 §7: printable = %x21-2B / %x2D-7E (no comma); c-nonce = printable
PRINTABLE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
# RFC 5802 §7: saslname = 1*(value-safe-char / "=2C" / "=3D"); value-safe-char excludes NUL, "=", ","
_SASLNAME = re.compile(r"(?:[^\x00=,]|=2C|=3D)+")
# RFC 5802 §7: attr-val = ALPHA "=" value; value = 1*value-char; value-char excludes NUL and ","
_ATTR_VAL = re.compile(r"[A-Za-z]=[^\x00,]+")
# RFC 4648 §4 alphabet with canonical padding; RFC 5802 §7: base64 = *(4base64-char) [base64-...]
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class ScramError(ValueError):
    """A SCRAM message does not follow the RFC 5802 §7 grammar or a §5 rule."""


@dataclass(frozen=True, slots=True)
class ClientFirst:
    """A parsed client-first-message (RFC 5802 §7)."""

    gs2_header: str  # exactly as sent, e.g. "n,," or "p=tls-exporter,a=bob,"; it goes into c=
    cbind_flag: Literal["n", "y", "p"]
    cb_name: str | None  # set iff cbind_flag == "p"
    authzid: str | None  # decoded saslname of "a=", None if absent
    username: str  # decoded saslname of "n=" (not yet SASLprep'd)
    client_nonce: str
    bare: str  # client-first-message-bare, part of AuthMessage


@dataclass(frozen=True, slots=True)
class ClientFinal:
    """A parsed client-final-message (RFC 5802 §7)."""

    channel_binding: bytes  # decoded value of "c="
    nonce: str  # "r=": c-nonce followed by s-nonce
    proof: bytes  # decoded value of "p="
    without_proof: str  # client-final-message-without-proof, part of AuthMessage


def b64decode_strict(text: str) -> bytes:
    """Decode canonical base64 (RFC 4648 §4) or raise ScramError."""
    if not _BASE64.fullmatch(text):
        raise ScramError("malformed base64")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:  # pragma: no cover - the regex already rejects these
        raise ScramError("malformed base64") from exc


def _decode_saslname(text: str) -> str:
    # RFC 5802 §5.1: "=" not followed by "2C" or "3D" MUST fail the authentication.
    if not _SASLNAME.fullmatch(text):
        raise ScramError("malformed saslname")
    return text.replace("=2C", ",").replace("=3D", "=")


def _utf8(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # RFC 5802 §7: messages are UTF-8.
        raise ScramError("message is not UTF-8") from exc
    if "\x00" in text:
        raise ScramError("NUL in message")
    return text


def _check_extensions(attrs: list[str]) -> None:
    # RFC 5802 §7: extensions = attr-val *("," attr-val). Unknown optional ones are ignored.
    for attr in attrs:
        if not _ATTR_VAL.fullmatch(attr):
            raise ScramError("malformed extension attribute")


def parse_client_first(data: bytes) -> ClientFirst:
    """Parse client-first-message = gs2-header client-first-message-bare (RFC 5802 §7)."""
    text = _utf8(data)
    parts = text.split(",", 2)
    if len(parts) != 3:
        raise ScramError("missing gs2-header")
    flag, authz, bare = parts
    # RFC 5802 §7: gs2-cbind-flag = ("p=" cb-name) / "n" / "y"
    cbind_flag: Literal["n", "y", "p"]
    cb_name: str | None = None
    if flag == "n":
        cbind_flag = "n"
    elif flag == "y":
        cbind_flag = "y"
    elif flag.startswith("p=") and _CB_NAME.fullmatch(flag[2:]):
        cbind_flag, cb_name = "p", flag[2:]
    else:
        raise ScramError("malformed gs2-cbind-flag")
    # RFC 5802 §7: gs2-header = gs2-cbind-flag "," [ authzid ] ","; authzid = "a=" saslname
    authzid: str | None = None
    if authz:
        if not authz.startswith("a="):
            raise ScramError("malformed authzid")
        authzid = _decode_saslname(authz[2:])
    attrs = bare.split(",")
    # RFC 5802 §5.1: "m" is reserved for a mandatory extension; the server MUST fail.
    if attrs[0].startswith("m="):
        raise ScramError("unsupported mandatory extension")
    if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
        raise ScramError("client-first-message-bare needs n= then r=")
    username = _decode_saslname(attrs[0][2:])
    nonce = attrs[1][2:]
    if not PRINTABLE.fullmatch(nonce):
        raise ScramError("malformed client nonce")
    _check_extensions(attrs[2:])
    return ClientFirst(
        gs2_header=f"{flag},{authz},",
        cbind_flag=cbind_flag,
        cb_name=cb_name,
        authzid=authzid,
        username=username,
        client_nonce=nonce,
        bare=bare,
    )


def parse_client_final(data: bytes) -> ClientFinal:
    """Parse client-final-message (RFC 5802 §7): c=, r=, extensions, then p= last."""
    text = _utf8(data)
    attrs = text.split(",")
    if len(attrs) < 3 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
        raise ScramError("client-final-message needs c= then r=")
    if not attrs[-1].startswith("p="):
        raise ScramError("client-final-message must end with p=")
    nonce = attrs[1][2:]
    if not PRINTABLE.fullmatch(nonce):
        raise ScramError("malformed nonce")
    _check_extensions(attrs[2:-1])
    return ClientFinal(
        channel_binding=b64decode_strict(attrs[0][2:]),
        nonce=nonce,
        proof=b64decode_strict(attrs[-1][2:]),
        without_proof=",".join(attrs[:-1]),
    )


def new_server_nonce() -> str:
    """A fresh s-nonce made of printable characters without "," (RFC 5802 §7)."""
    return base64.b64encode(secrets.token_bytes(SERVER_NONCE_BYTES)).decode("ascii")


def server_first_message(nonce: str, salt: bytes, iterations: int) -> str:
    """server-first-message = nonce "," salt "," iteration-count (RFC 5802 §7)."""
    return f"r={nonce},s={base64.b64encode(salt).decode('ascii')},i={iterations}"


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """SaltedPassword := Hi(Normalize(password), salt, i) (RFC 5802 §3); Hi is PBKDF2 (RFC 2898).

    `password` must already be SASLprep'd.
    """
    return hashlib.pbkdf2_hmac(HASH_NAME, password.encode("utf-8"), salt, iterations)


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, HASH_NAME).digest()


def client_key(salted: bytes) -> bytes:
    """ClientKey := HMAC(SaltedPassword, "Client Key") (RFC 5802 §3)."""
    return _hmac(salted, b"Client Key")


def derive_keys(salted: bytes) -> tuple[bytes, bytes]:
    """Return (StoredKey, ServerKey) from SaltedPassword (RFC 5802 §3)."""
    stored_key = hashlib.sha256(client_key(salted)).digest()  # StoredKey := H(ClientKey)
    server_key = _hmac(salted, b"Server Key")  # ServerKey := HMAC(SaltedPassword, "Server Key")
    return stored_key, server_key


def verify_client_proof(stored_key: bytes, auth_message: bytes, proof: bytes) -> bool:
    """Check ClientProof against StoredKey (RFC 5802 §3, §5.1), comparing in constant time.

    ClientSignature := HMAC(StoredKey, AuthMessage); ClientKey := ClientProof XOR ClientSignature;
    the proof is good iff H(ClientKey) == StoredKey. The same work is done whatever the input.
    """
    signature = _hmac(stored_key, auth_message)
    if len(proof) != len(signature):
        # Compute the hash anyway so a short proof costs what a full one does.
        hmac.compare_digest(hashlib.sha256(signature).digest(), stored_key)
        return False
    key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
    return hmac.compare_digest(hashlib.sha256(key).digest(), stored_key)


def server_signature(server_key: bytes, auth_message: bytes) -> bytes:
    """ServerSignature := HMAC(ServerKey, AuthMessage) (RFC 5802 §3)."""
    return _hmac(server_key, auth_message)
