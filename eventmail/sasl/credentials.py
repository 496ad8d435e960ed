"""Make and check stored password credentials (the `PasswordSet` event): Argon2id plus SCRAM-SHA-256 keys."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id

from eventmail.proto import events_pb2
from eventmail.sasl import scram
from eventmail.sasl.saslprep import SaslPrepError, saslprep

__all__ = [
    "ARGON2_CONCURRENCY",
    "ARGON2_MEMLIMIT",
    "ARGON2_OPSLIMIT",
    "DEFAULT_COST",
    "SCRAM_ITERATIONS",
    "SCRAM_MIN_ITERATIONS",
    "SCRAM_SALT_BYTES",
    "HashCost",
    "dummy_password_set",
    "dummy_scram_credentials",
    "get_dummy_password_set",
    "make_password_set",
    "make_scram_credentials",
    "prepare_password",
    "verify_password",
    "verify_password_async",
]

# Argon2id cost. RFC 9106 §4 "second recommended option" is t=3 passes over m=64 MiB (with p=4
# lanes; libsodium fixes p=1). On the project's 2-core reference machine str()/verify() take
# ~50 ms and allocate 64 MiB each (shared/LIBRARIES.md §7 measured 65-100 ms). That is well above
# OWASP's floor (m=19 MiB, t=2) and keeps a login affordable at a couple per core per 0.1 s.
ARGON2_OPSLIMIT = 3
ARGON2_MEMLIMIT = 64 * 1024 * 1024

# Argon2id calls that may run at once. 2 cores: more would not finish sooner, only hold 64 MiB
# more each and starve the event loop's other thread work (LIBRARIES.md §7).
ARGON2_CONCURRENCY = 2

# SCRAM-SHA-256 PBKDF2 iterations. RFC 7677 §4 sets 4096 as the floor and says the count should
# make one computation take about 0.1 s; OWASP's Password Storage Cheat Sheet (2023) asks 600,000
# for PBKDF2-HMAC-SHA256. 600,000 took ~120 ms here. The server never runs PBKDF2 during a SCRAM
# login (it keeps StoredKey/ServerKey), so this costs the client once per login and the server
# only when a password is set, while an attacker holding a copy of the event stream pays it per
# guess: the SCRAM keys must not be the cheap way around Argon2id.
# Dovecot uses 4096, RFC 7677 §4 asks at least that, and Cyrus SASL (mbsync) refuses more than
# 65,536: 600,000 broke mbsync at its defaults. The SCRAM keys are stored sealed in the encrypted
# log (an offline guess needs the master key first) and PLAIN logins check Argon2id.
SCRAM_ITERATIONS = 4096
SCRAM_MIN_ITERATIONS = 4096  # RFC 7677 §4 / RFC 5802 §5.1 floor
# RFC 5802 §5.1 leaves salt length open; 16 random bytes matches Argon2id's salt and NIST SP
# 800-132 §5.1 (at least 128 bits).
SCRAM_SALT_BYTES = 16


@dataclass(frozen=True, slots=True)
class HashCost:
    """Work factors for new credentials. Tests pass cheap ones; production uses DEFAULT_COST."""

    argon2_opslimit: int = ARGON2_OPSLIMIT
    argon2_memlimit: int = ARGON2_MEMLIMIT
    scram_iterations: int = SCRAM_ITERATIONS

    def __post_init__(self) -> None:
        if self.scram_iterations < SCRAM_MIN_ITERATIONS:
            raise ValueError(f"SCRAM iteration count below RFC 7677 §4 floor of {SCRAM_MIN_ITERATIONS}")
        if self.argon2_opslimit < argon2id.OPSLIMIT_MIN or self.argon2_memlimit < argon2id.MEMLIMIT_MIN:
            raise ValueError("Argon2id cost below libsodium's minimum")


DEFAULT_COST = HashCost()


def prepare_password(password: str, *, stored: bool) -> str:
    """SASLprep a password (RFC 4013); `stored=True` forbids unassigned code points (§2.5).

    SASLprep rather than the newer PRECIS OpaqueString (RFC 8265): SCRAM clients hash
    Normalize(password) with SASLprep (RFC 5802 §2.2, RFC 7677 §3), and PLAIN says the same
    (RFC 4616 §2), so the server must normalise exactly as they do or non-ASCII passwords break.
    """
    return saslprep(password, allow_unassigned=not stored)


def make_scram_credentials(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> events_pb2.ScramCredentials:
    """SCRAM-SHA-256 StoredKey/ServerKey for `password` (RFC 5802 §3, RFC 7677 §3).

    `password` is SASLprep'd here (stored-string rules). A random salt is drawn unless given.
    """
    if iterations < SCRAM_MIN_ITERATIONS:
        raise ValueError(f"iteration count below {SCRAM_MIN_ITERATIONS} (RFC 7677 §4)")
    prepared = prepare_password(password, stored=True)
    if salt is None:
        salt = secrets.token_bytes(SCRAM_SALT_BYTES)
    stored_key, server_key = scram.derive_keys(scram.salted_password(prepared, salt, iterations))
    return events_pb2.ScramCredentials(
        salt=salt, iterations=iterations, stored_key=stored_key, server_key=server_key
    )


def make_password_set(
    account: str, password: str, *, cost: HashCost = DEFAULT_COST
) -> events_pb2.PasswordSet:
    """Build the PasswordSet event for `account`: Argon2id string and SCRAM-SHA-256 keys.

    Raises ValueError (SaslPrepError) if the password is empty or SASLprep prohibits it.
    CPU-heavy (~50 ms Argon2id + ~120 ms PBKDF2 at DEFAULT_COST): call it from a thread.
    """
    if not account:
        raise ValueError("empty account name")
    prepared = prepare_password(password, stored=True)
    if not prepared:
        raise ValueError("empty password")  # RFC 4616 §2: passwd = 1*SAFE
    encoded = argon2id.str(
        prepared.encode("utf-8"), opslimit=cost.argon2_opslimit, memlimit=cost.argon2_memlimit
    )
    return events_pb2.PasswordSet(
        account=account,
        argon2id=encoded.decode("ascii"),
        scram_sha256=make_scram_credentials(password, iterations=cost.scram_iterations),
    )


def verify_password(ps: events_pb2.PasswordSet, password: str) -> bool:
    """True iff `password` matches the credential. Blocking and CPU-heavy; see verify_password_async.

    Checks the Argon2id string (libsodium compares in constant time). A record that has only
    SCRAM keys is checked by recomputing StoredKey, compared with hmac.compare_digest.
    """
    try:
        prepared = prepare_password(password, stored=False)
    except SaslPrepError:
        return False
    if not prepared:
        return False
    if ps.argon2id:
        try:
            return bool(argon2id.verify(ps.argon2id.encode("ascii"), prepared.encode("utf-8")))
        except (nacl.exceptions.CryptoError, UnicodeEncodeError):
            # InvalidkeyError: wrong password or a malformed string; nacl's ValueError: too long.
            return False
    creds = ps.scram_sha256
    if ps.HasField("scram_sha256") and creds.iterations >= SCRAM_MIN_ITERATIONS:
        salted = scram.salted_password(prepared, creds.salt, creds.iterations)
        stored_key, _ = scram.derive_keys(salted)
        return hmac.compare_digest(stored_key, creds.stored_key)
    return False


# One semaphore per event loop: asyncio primitives bind to the loop that first waits on them, so
# a single module-level object would break when tests (or a restart) run a second loop. With
# one loop in production this is exactly one module-level semaphore.
_SEMAPHORES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _argon2_semaphore() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    sem = _SEMAPHORES.get(loop)
    if sem is None:
        sem = _SEMAPHORES[loop] = asyncio.Semaphore(ARGON2_CONCURRENCY)
    return sem


_ARGON2_POOL = ThreadPoolExecutor(ARGON2_CONCURRENCY, thread_name_prefix="argon2")


class VerifiedCache:
    """Passwords verified lately, so that a client logging in again (phones reconnect all day,
    five connections per client) does not pay Argon2id each time; the stored verifier stays
    Argon2id. An entry is a keyed hash (a secret made at start, never stored) of the credential
    record and the password: no password is kept, a password change (a new record, a new salt)
    misses at once, and a restart forgets everything. Only successes are kept: a wrong password
    costs the full hash every time. Bounded by `size` entries and `ttl` seconds (Dovecot's
    auth_cache_ttl is one hour)."""

    def __init__(self, size: int = 10_000, ttl: float = 3600.0) -> None:
        self.size, self.ttl = size, ttl
        self._secret = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, float] = OrderedDict()

    def key(self, ps: events_pb2.PasswordSet, password: str) -> bytes:
        record = ps.SerializeToString(deterministic=True)
        return hmac.new(self._secret, len(record).to_bytes(4, "big") + record + password.encode("utf-8", "surrogatepass"),
                        hashlib.sha256).digest()

    def hit(self, key: bytes) -> bool:
        expires = self._entries.get(key)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._entries[key]
            return False
        return True

    def add(self, key: bytes) -> None:
        self._entries[key] = time.monotonic() + self.ttl
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


VERIFIED = VerifiedCache()


# Verifications running now, by VERIFIED key: a client opening five connections at once (or
# imaptest's ten) sends the same password five times before the first answer; the others wait
# for that one hash instead of each paying it (an Argon2id takes ~200 ms of CPU and 64 MiB).
_IN_FLIGHT: dict[bytes, asyncio.Future[bool]] = {}


async def verify_password_async(ps: events_pb2.PasswordSet, password: str) -> bool:
    """verify_password in a worker thread, at most ARGON2_CONCURRENCY at a time per loop; a
    password this process verified for the same record within the hour is answered from
    VERIFIED without hashing, and one being verified now is waited for. Only a success is
    shared: a waiter whose hash failed hashes again itself, so every wrong attempt still costs
    the full hash."""
    key = VERIFIED.key(ps, password)
    if VERIFIED.hit(key):
        return True
    running = _IN_FLIGHT.get(key)
    if running is not None and await asyncio.shield(running):
        return True
    mine = running is None
    done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    if mine:
        _IN_FLIGHT[key] = done
    ok = False
    try:
        async with _argon2_semaphore():
            # its own threads: ~200 ms each, in the default executor they held back the short
            # jobs (message reads, blob writes) of every other connection
            ok = await asyncio.get_running_loop().run_in_executor(_ARGON2_POOL, verify_password, ps, password)
        if ok:
            VERIFIED.add(key)
    finally:
        if mine:
            del _IN_FLIGHT[key]
            done.set_result(ok)
    return ok


# One dummy per cost, kept for the life of the process. (Not functools.cache: it would key
# `f()` and `f(DEFAULT_COST)` apart and build two.)
_DUMMIES: dict[HashCost, events_pb2.PasswordSet] = {}
_DUMMY_LOCK = threading.Lock()


def dummy_password_set(cost: HashCost = DEFAULT_COST) -> events_pb2.PasswordSet:
    """A fixed credential nobody knows the password of, at `cost`, for unknown user names.

    Checking a password against it costs the same Argon2id work as against a real record of
    the same cost, so the reply time does not tell whether an account exists. Built once per
    process (blocking, ~50 ms); get_dummy_password_set is the async way to get it.
    """
    with _DUMMY_LOCK:
        dummy = _DUMMIES.get(cost)
        if dummy is None:
            unknowable = secrets.token_urlsafe(32)
            encoded = argon2id.str(
                unknowable.encode("ascii"),
                opslimit=cost.argon2_opslimit,
                memlimit=cost.argon2_memlimit,
            )
            dummy = _DUMMIES[cost] = events_pb2.PasswordSet(account="", argon2id=encoded.decode("ascii"))
        return dummy


async def get_dummy_password_set(cost: HashCost = DEFAULT_COST) -> events_pb2.PasswordSet:
    """dummy_password_set without blocking the loop the first time (runs under the semaphore)."""
    async with _argon2_semaphore():
        return await asyncio.get_running_loop().run_in_executor(_ARGON2_POOL, dummy_password_set, cost)


# Key for fake SCRAM salts, drawn once per process. An unknown user gets a server-first-message
# like a real one (RFC 5802 §7 lets a server hide "unknown-user"): its salt must look real and
# stay the same across attempts, or an attacker tells unknown users apart by salts that change.
_FAKE_SALT_KEY = secrets.token_bytes(32)
_DUMMY_STORED_KEY = secrets.token_bytes(scram.KEY_LENGTH)
_DUMMY_SERVER_KEY = secrets.token_bytes(scram.KEY_LENGTH)


def dummy_scram_credentials(
    username: str, *, iterations: int = SCRAM_ITERATIONS, key: bytes | None = None
) -> events_pb2.ScramCredentials:
    """Fake SCRAM credentials for an unknown `username`: a stable per-name salt, random keys.

    The salt is HMAC-SHA-256(key, username) truncated to SCRAM_SALT_BYTES; `key` defaults to a
    per-process secret (pass a persistent one to keep fake salts stable across restarts).
    """
    digest = hmac.new(key or _FAKE_SALT_KEY, username.encode("utf-8"), hashlib.sha256).digest()
    return events_pb2.ScramCredentials(
        salt=digest[:SCRAM_SALT_BYTES],
        iterations=iterations,
        stored_key=_DUMMY_STORED_KEY,
        server_key=_DUMMY_SERVER_KEY,
    )
