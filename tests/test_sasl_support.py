"""Helpers for the SASL tests: cheap credentials, counting lookups and verifiers, an RFC 5802 client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eventmail.proto import events_pb2
from eventmail.sasl import credentials
from eventmail.sasl.credentials import HashCost
from eventmail.sasl.mechanisms import SaslBackend

T = TypeVar("T")

# The cheapest costs libsodium and RFC 7677 §4 allow: the tests check logic, not cost.
CHEAP = HashCost(argon2_opslimit=1, argon2_memlimit=8192, scram_iterations=4096)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


@dataclass
class Directory:
    """A credential store: counts lookups, can answer sync or async."""

    records: dict[str, events_pb2.PasswordSet] = field(default_factory=dict)
    asynchronous: bool = False
    lookups: list[str] = field(default_factory=list)

    def add(self, name: str, password: str, *, cost: HashCost = CHEAP) -> events_pb2.PasswordSet:
        record = credentials.make_password_set(name, password, cost=cost)
        self.records[name] = record
        return record

    def _get(self, name: str) -> events_pb2.PasswordSet | None:
        self.lookups.append(name)
        return self.records.get(name)

    def lookup(self, name: str) -> Any:
        if not self.asynchronous:
            return self._get(name)

        async def later() -> events_pb2.PasswordSet | None:
            await asyncio.sleep(0)
            return self._get(name)

        return later()


@dataclass
class CountingVerifier:
    """Wraps the real async verifier and records which credential each call checked."""

    calls: list[tuple[events_pb2.PasswordSet, str]] = field(default_factory=list)

    async def __call__(self, ps: events_pb2.PasswordSet, password: str) -> bool:
        self.calls.append((ps, password))
        return await credentials.verify_password_async(ps, password)


def cheap_dummy() -> events_pb2.PasswordSet:
    return credentials.dummy_password_set(CHEAP)


def make_backend(
    directory: Directory, verifier: CountingVerifier | None = None
) -> tuple[SaslBackend, CountingVerifier]:
    verifier = verifier or CountingVerifier()
    backend = SaslBackend(
        lookup=directory.lookup,
        verify=verifier,
        dummy=cheap_dummy(),
        fake_iterations=CHEAP.scram_iterations,
    )
    return backend, verifier


def _escape(name: str) -> str:
    # RFC 5802 §5.1: "," and "=" in a saslname are sent as "=2C" and "=3D".
    return name.replace("=", "=3D").replace(",", "=2C")


class RfcScramClient:
    """SCRAM-SHA-256 client written from RFC 5802 §3/§7 and RFC 7677, independent of the server code."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        nonce: str = "fyko+d2lbbFgONRv9qkxdawL",
        flag: str = "n",
        authzid: str | None = None,
        cb_data: bytes = b"",
    ) -> None:
        self.password = password
        self.nonce = nonce
        self.gs2 = f"{flag},{'a=' + _escape(authzid) if authzid is not None else ''},"
        self.bare = f"n={_escape(username)},r={nonce}"
        self.cb_data = cb_data
        self.server_signature = b""

    def first(self) -> bytes:
        return (self.gs2 + self.bare).encode()

    def final(self, server_first: bytes, *, nonce: str | None = None, proof_mask: int = 0) -> bytes:
        attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
        salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
        assert attrs["r"].startswith(self.nonce)
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored_key = hashlib.sha256(client_key).digest()
        cbind = base64.b64encode(self.gs2.encode() + self.cb_data).decode()
        without_proof = f"c={cbind},r={nonce if nonce is not None else attrs['r']}"
        auth_message = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        proof = bytes([proof[0] ^ proof_mask]) + proof[1:]
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        self.server_signature = hmac.new(server_key, auth_message, "sha256").digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def check_server_final(self, data: bytes) -> bool:
        return data == b"v=" + base64.b64encode(self.server_signature)
