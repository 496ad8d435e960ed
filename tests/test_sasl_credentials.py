"""PasswordSet creation and checking, SASLprep (RFC 4013), and the bounded Argon2id thread pool."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import pytest

from eventmail.proto import events_pb2
from eventmail.sasl import credentials, scram
from eventmail.sasl.credentials import HashCost
from eventmail.sasl.saslprep import SaslPrepError, saslprep
from tests.test_sasl_support import CHEAP, run

# --- SASLprep ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # RFC 4013 §3 examples
        ("I\u00adX", "IX"),  # SOFT HYPHEN mapped to nothing
        ("user", "user"),
        ("USER", "USER"),  # case preserved
        ("\u00aa", "a"),  # NFKC
        ("\u2168", "IX"),  # ROMAN NUMERAL NINE, NFKC
        # more
        ("a\u00a0b", "a b"),  # non-ASCII space to SPACE (§2.1)
        ("a\u200bb", "ab"),  # ZERO WIDTH SPACE is in B.1: nothing
        ("\u0627\u0628", "\u0627\u0628"),  # RandALCat only: allowed
        ("", ""),
    ],
)
def test_saslprep_maps(given: str, expected: str) -> None:
    assert saslprep(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "\u0007",  # RFC 4013 §3: prohibited (C.2.1)
        "\u0627\u0031",  # RFC 4013 §3: bidi check, must end with RandALCat
        "\u0627a\u0628",  # RandALCat with LCat
        "a\ue000",  # private use (C.3)
        "a\ufffe",  # non-character (C.4)
        "a\u200e",  # LEFT-TO-RIGHT MARK (C.8)
        "a\U000e0001",  # LANGUAGE TAG (C.9)
        "a\ufff9",  # INTERLINEAR ANNOTATION ANCHOR (C.6)
    ],
)
def test_saslprep_prohibits(given: str) -> None:
    with pytest.raises(SaslPrepError):
        saslprep(given)


def test_saslprep_unassigned_only_in_queries() -> None:
    # U+0221 was unassigned in Unicode 3.2, the version stringprep fixes (RFC 3454 §7, RFC 4013 §2.5).
    assert saslprep("a\u0221", allow_unassigned=True) == "a\u0221"
    with pytest.raises(SaslPrepError):
        saslprep("a\u0221")


# --- make_password_set ------------------------------------------------------------------------


def test_make_password_set_at_default_cost() -> None:
    ps = credentials.make_password_set("alice", "correct horse")
    assert ps.account == "alice"
    # RFC 9106 §4 second recommended option (t=3, 64 MiB) with libsodium's p=1
    assert ps.argon2id.startswith("$argon2id$v=19$m=65536,t=3,p=1$")
    creds = ps.scram_sha256
    # Within what Cyrus SASL (mbsync) accepts (at most 65,536) and RFC 7677 §4 asks (at least 4096)
    assert creds.iterations == credentials.SCRAM_ITERATIONS and 4096 <= creds.iterations <= 65_536
    assert len(creds.salt) == 16 and len(creds.stored_key) == 32 and len(creds.server_key) == 32
    assert credentials.verify_password(ps, "correct horse")
    assert not credentials.verify_password(ps, "correct horse ")


def test_salts_are_random() -> None:
    a = credentials.make_password_set("alice", "pw", cost=CHEAP)
    b = credentials.make_password_set("alice", "pw", cost=CHEAP)
    assert a.scram_sha256.salt != b.scram_sha256.salt
    assert a.scram_sha256.stored_key != b.scram_sha256.stored_key
    assert a.argon2id != b.argon2id


def test_scram_credentials_match_rfc7677_keys() -> None:
    # RFC 7677 §3 gives salt and iterations; StoredKey follows from RFC 5802 §3 by hand here.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    creds = credentials.make_scram_credentials("pencil", salt=salt, iterations=4096)
    salted = scram.salted_password("pencil", salt, 4096)
    assert creds.stored_key == scram.derive_keys(salted)[0]
    assert creds.salt == salt and creds.iterations == 4096


@pytest.mark.parametrize("iterations", [0, 1, 4095])
def test_iteration_floor(iterations: int) -> None:
    with pytest.raises(ValueError):
        credentials.make_scram_credentials("pw", iterations=iterations)
    with pytest.raises(ValueError):
        HashCost(scram_iterations=iterations)


def test_argon2_floor() -> None:
    with pytest.raises(ValueError):
        HashCost(argon2_memlimit=1024)
    with pytest.raises(ValueError):
        HashCost(argon2_opslimit=0)


@pytest.mark.parametrize(
    ("account", "password"), [("", "pw"), ("alice", ""), ("alice", "\u00ad"), ("alice", "a\x07")]
)
def test_make_password_set_rejects(account: str, password: str) -> None:
    with pytest.raises(ValueError):
        credentials.make_password_set(account, password, cost=CHEAP)


def test_stored_password_may_not_contain_unassigned() -> None:
    with pytest.raises(SaslPrepError):
        credentials.make_password_set("alice", "a\u0221", cost=CHEAP)


# --- verify_password --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def record() -> events_pb2.PasswordSet:
    return credentials.make_password_set("alice", "I\u00adX p\u00e4ss", cost=CHEAP)


def test_verify_normalises_like_make(record: events_pb2.PasswordSet) -> None:
    assert credentials.verify_password(record, "IX p\u00e4ss")
    assert credentials.verify_password(record, "I\u00adX\u00a0pa\u0308ss")  # NBSP and decomposed ä
    assert not credentials.verify_password(record, "ix p\u00e4ss")


@pytest.mark.parametrize("password", ["", "\u00ad", "\x07", "a\ud800"])
def test_verify_rejects_unpreparable(record: events_pb2.PasswordSet, password: str) -> None:
    assert not credentials.verify_password(record, password)


def test_verify_scram_only_record(record: events_pb2.PasswordSet) -> None:
    scram_only = events_pb2.PasswordSet(account="alice", scram_sha256=record.scram_sha256)
    assert credentials.verify_password(scram_only, "IX p\u00e4ss")
    assert not credentials.verify_password(scram_only, "wrong")


def test_verify_broken_records(record: events_pb2.PasswordSet) -> None:
    assert not credentials.verify_password(events_pb2.PasswordSet(account="alice"), "pw")
    for broken in ("$argon2id$garbage", "$argon2id$" + "a" * 200, "h\u00e9", "$argon2i$v=19$m=8,t=1,p=1$x$y"):
        assert not credentials.verify_password(events_pb2.PasswordSet(argon2id=broken), "pw")
    weak = events_pb2.ScramCredentials()
    weak.CopyFrom(record.scram_sha256)
    weak.iterations = 1
    assert not credentials.verify_password(events_pb2.PasswordSet(scram_sha256=weak), "IX p\u00e4ss")


def test_verify_async(record: events_pb2.PasswordSet) -> None:
    assert run(credentials.verify_password_async(record, "IX p\u00e4ss"))
    assert not run(credentials.verify_password_async(record, "nope"))
    # a second event loop gets its own semaphore
    assert run(credentials.verify_password_async(record, "IX p\u00e4ss"))


def test_verify_async_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def slow(ps: events_pb2.PasswordSet, password: str) -> bool:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return True

    monkeypatch.setattr(credentials, "verify_password", slow)

    async def many() -> list[bool]:
        ps = events_pb2.PasswordSet()
        # distinct passwords: the same one at once is hashed only once (the next test)
        return await asyncio.gather(*(credentials.verify_password_async(ps, f"pw{i}") for i in range(8)))

    assert run(many()) == [True] * 8
    assert peak == credentials.ARGON2_CONCURRENCY == 2


def test_the_same_password_at_once_is_hashed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client opening several connections at once: one Argon2id for all of them; a wrong
    password sent at once by several still costs each its own hash."""
    calls: list[str] = []
    real = credentials.verify_password

    def counting(ps: events_pb2.PasswordSet, password: str) -> bool:
        calls.append(password)
        return real(ps, password)

    monkeypatch.setattr(credentials, "verify_password", counting)
    monkeypatch.setattr(credentials, "VERIFIED", credentials.VerifiedCache())
    ps = credentials.make_password_set("alice", "correct horse", cost=CHEAP)

    async def go() -> tuple[list[bool], list[bool]]:
        good = await asyncio.gather(*(credentials.verify_password_async(ps, "correct horse") for _ in range(6)))
        bad = await asyncio.gather(*(credentials.verify_password_async(ps, "wrong horse") for _ in range(3)))
        return good, bad

    good, bad = run(go())
    assert good == [True] * 6 and bad == [False] * 3
    assert calls.count("correct horse") == 1
    assert calls.count("wrong horse") == 3
    assert credentials._IN_FLIGHT == {}


# --- dummies for unknown users ----------------------------------------------------------------


def test_dummy_password_set_is_fixed_per_cost() -> None:
    dummy = credentials.dummy_password_set(CHEAP)
    assert credentials.dummy_password_set(CHEAP) is dummy
    assert dummy.argon2id.split("$")[3] == "m=8,t=1,p=1"
    assert not credentials.verify_password(dummy, "")
    assert not credentials.verify_password(dummy, "password")


def test_dummy_scram_credentials() -> None:
    a1 = credentials.dummy_scram_credentials("mallory")
    a2 = credentials.dummy_scram_credentials("mallory")
    b = credentials.dummy_scram_credentials("trudy")
    assert a1.salt == a2.salt != b.salt
    assert len(a1.salt) == credentials.SCRAM_SALT_BYTES
    assert a1.iterations == credentials.SCRAM_ITERATIONS
    keyed = credentials.dummy_scram_credentials("mallory", key=b"k" * 32, iterations=5000)
    assert keyed.salt != a1.salt and keyed.iterations == 5000
    assert keyed.salt == credentials.dummy_scram_credentials("mallory", key=b"k" * 32).salt


def test_a_verified_password_is_not_hashed_again_until_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verified-credential cache: the second login with the same password costs no Argon2id;
    a wrong password always does; a new password record (a password change) misses."""
    calls: list[str] = []
    real = credentials.verify_password

    def counting(ps: events_pb2.PasswordSet, password: str) -> bool:
        calls.append(password)
        return real(ps, password)

    monkeypatch.setattr(credentials, "verify_password", counting)
    monkeypatch.setattr(credentials, "VERIFIED", credentials.VerifiedCache(size=2, ttl=3600))
    ps = credentials.make_password_set("alice", "correct horse", cost=CHEAP)

    async def go() -> None:
        assert await credentials.verify_password_async(ps, "correct horse")
        assert await credentials.verify_password_async(ps, "correct horse")
        assert calls == ["correct horse"]  # the second one came from the cache
        for _ in range(2):
            assert not await credentials.verify_password_async(ps, "wrong horse")
        assert calls.count("wrong horse") == 2  # failures are never cached
        changed = credentials.make_password_set("alice", "correct horse", cost=CHEAP)  # new salt: a new record
        assert await credentials.verify_password_async(changed, "correct horse")
        assert calls.count("correct horse") == 2
        credentials.VERIFIED.clear()
        assert await credentials.verify_password_async(ps, "correct horse")
        assert calls.count("correct horse") == 3

    run(go())
    cache = credentials.VerifiedCache(size=2, ttl=0.0)
    key = cache.key(ps, "correct horse")
    cache.add(key)
    assert not cache.hit(key)  # expired at once
    assert len(cache._entries) == 0
    for i in range(3):
        cache.ttl = 3600
        cache.add(cache.key(ps, str(i)))
    assert len(cache._entries) == 2  # bounded
