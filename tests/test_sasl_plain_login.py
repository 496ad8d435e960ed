"""PLAIN (RFC 4616) and LOGIN transcripts, the unknown-user work shape, mechanism choice and reply mapping."""

from __future__ import annotations

import pytest

from eventmail.sasl import credentials
from eventmail.sasl.mechanisms import (
    Challenge,
    Failure,
    FailureReason,
    LoginExchange,
    PlainExchange,
    SaslBackend,
    ScramSha256Exchange,
    Success,
    advertised_mechanisms,
    create_exchange,
)
from tests.test_sasl_support import CountingVerifier, Directory, b64, cheap_dummy, make_backend, run


@pytest.fixture
def directory() -> Directory:
    d = Directory()
    d.add("alice", "correct horse")
    d.add("zoë", "pässwörd")
    return d


def plain(directory: Directory) -> tuple[PlainExchange, CountingVerifier]:
    backend, verifier = make_backend(directory)
    return PlainExchange(backend), verifier


# --- PLAIN ------------------------------------------------------------------------------------


def test_plain_initial_response(directory: Directory) -> None:
    # C: AUTH PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2U=   S: 235
    ex, verifier = plain(directory)
    assert b64(b"\x00alice\x00correct horse") == b"AGFsaWNlAGNvcnJlY3QgaG9yc2U="
    assert run(ex.start(b"AGFsaWNlAGNvcnJlY3QgaG9yc2U=")) == Success("alice", "alice")
    assert ex.done and len(verifier.calls) == 1


def test_plain_without_initial_response(directory: Directory) -> None:
    # C: AUTH PLAIN   S: 334 (empty)   C: <base64>   S: 235   (RFC 4616 §2, RFC 4954 §4)
    ex, _ = plain(directory)
    challenge = run(ex.start(None))
    assert challenge == Challenge(b"") and challenge.encoded() == b""
    assert run(ex.step(b64(b"\x00alice\x00correct horse"))) == Success("alice", "alice")


def test_plain_authzid_equal_to_authcid(directory: Directory) -> None:
    ex, _ = plain(directory)
    assert run(ex.start(b64(b"alice\x00alice\x00correct horse"))) == Success("alice", "alice")


def test_plain_authzid_other_identity_refused_without_kdf(directory: Directory) -> None:
    ex, verifier = plain(directory)
    result = run(ex.start(b64(b"bob\x00alice\x00correct horse")))
    assert isinstance(result, Failure) and result.reason is FailureReason.AUTHZ_MISMATCH
    assert result.authcid == "alice"
    assert verifier.calls == [] and directory.lookups == []


def test_plain_wrong_password(directory: Directory) -> None:
    ex, _ = plain(directory)
    result = run(ex.start(b64(b"\x00alice\x00battery staple")))
    assert result == Failure(FailureReason.INVALID_CREDENTIALS, "alice", "unknown user or wrong password")


def test_plain_non_ascii_identity_and_password(directory: Directory) -> None:
    ex, _ = plain(directory)
    result = run(ex.start(b64("\x00zoë\x00pässwörd".encode())))
    assert result == Success("zoë", "zoë")


def test_plain_saslprep_applies_to_identity_and_password(directory: Directory) -> None:
    # U+00AD SOFT HYPHEN is mapped to nothing, U+00A0 NO-BREAK SPACE to SPACE (RFC 4013 §2.1).
    ex, _ = plain(directory)
    result = run(ex.start(b64("\x00al\u00adice\x00correct\u00a0horse".encode())))
    assert result == Success("alice", "alice")


@pytest.mark.parametrize(
    "message",
    [
        b"alice",  # no NUL
        b"\x00alice",  # one NUL
        b"\x00alice\x00pw\x00",  # three NULs
        b"\x00\x00pw",  # empty authcid
        b"\x00alice\x00",  # empty password
        b"\x00al\xffice\x00pw",  # not UTF-8
        b"\xff\x00alice\x00pw",  # authzid not UTF-8
        b"\x00alice\x00p\xc3",  # password not UTF-8
        b"\x00al\x07ice\x00pw",  # SASLprep: control character (RFC 4013 §2.3)
        b"\x00\xc2\xad\x00pw",  # SASLprep maps it all to nothing
    ],
)
def test_plain_malformed(directory: Directory, message: bytes) -> None:
    ex, verifier = plain(directory)
    result = run(ex.start(b64(message)))
    assert isinstance(result, Failure) and result.reason is FailureReason.MALFORMED, result
    assert verifier.calls == []


def test_plain_empty_initial_response_is_malformed(directory: Directory) -> None:
    ex, _ = plain(directory)  # "AUTH PLAIN =" (RFC 4954 §4): an empty message
    result = run(ex.start(b"="))
    assert isinstance(result, Failure) and result.reason is FailureReason.MALFORMED


@pytest.mark.parametrize("initial", [True, False])
def test_plain_cancel(directory: Directory, initial: bool) -> None:
    ex, _ = plain(directory)
    result = run(ex.start(b"*")) if initial else (run(ex.start(None)), run(ex.step(b"*")))[1]
    assert isinstance(result, Failure) and result.reason is FailureReason.CANCELLED


@pytest.mark.parametrize(
    "line", [b"AGFsaWNl AGNvcnJlY3Q=", b"AGFsaWNlAGNvcnJlY3Q", b"%%%", b"=", b"A" * 12289]
)
def test_plain_bad_base64(directory: Directory, line: bytes) -> None:
    ex, _ = plain(directory)
    run(ex.start(None))
    result = run(ex.step(line))
    assert isinstance(result, Failure) and result.reason is FailureReason.BAD_ENCODING


def test_plain_step_after_done(directory: Directory) -> None:
    ex, _ = plain(directory)
    run(ex.start(b64(b"\x00alice\x00correct horse")))
    result = run(ex.step(b64(b"\x00alice\x00correct horse")))
    assert isinstance(result, Failure) and result.reason is FailureReason.SEQUENCE


def test_plain_async_lookup() -> None:
    d = Directory(asynchronous=True)
    d.add("alice", "pw")
    ex, _ = plain(d)
    assert run(ex.start(b64(b"\x00alice\x00pw"))) == Success("alice", "alice")


def test_plain_at_default_cost_end_to_end() -> None:
    # One run through the real costs and the default verifier (Argon2id in a thread).
    d = Directory()
    d.add("alice", "correct horse", cost=credentials.DEFAULT_COST)
    ex = PlainExchange(SaslBackend(lookup=d.lookup))
    assert run(ex.start(b64(b"\x00alice\x00correct horse"))) == Success("alice", "alice")


# --- LOGIN ------------------------------------------------------------------------------------


def login(directory: Directory) -> tuple[LoginExchange, CountingVerifier]:
    backend, verifier = make_backend(directory)
    return LoginExchange(backend), verifier


def test_login_transcript(directory: Directory) -> None:
    # S: 334 VXNlcm5hbWU6   C: YWxpY2U=   S: 334 UGFzc3dvcmQ6   C: Y29ycmVjdCBob3JzZQ==   S: 235
    ex, _ = login(directory)
    first = run(ex.start(None))
    assert isinstance(first, Challenge) and first.encoded() == b"VXNlcm5hbWU6"
    second = run(ex.step(b"YWxpY2U="))
    assert isinstance(second, Challenge) and second.encoded() == b"UGFzc3dvcmQ6"
    assert run(ex.step(b"Y29ycmVjdCBob3JzZQ==")) == Success("alice", "alice")


def test_login_username_as_initial_response(directory: Directory) -> None:
    ex, _ = login(directory)
    assert run(ex.start(b64(b"alice"))) == Challenge(b"Password:")
    assert run(ex.step(b64(b"correct horse"))) == Success("alice", "alice")


def test_login_wrong_password(directory: Directory) -> None:
    ex, _ = login(directory)
    run(ex.start(b64(b"alice")))
    result = run(ex.step(b64(b"nope")))
    assert isinstance(result, Failure) and result.reason is FailureReason.INVALID_CREDENTIALS
    assert result.authcid == "alice"


@pytest.mark.parametrize(
    ("username", "password"),
    [(b"", b"pw"), (b"alice", b""), (b"\xff", b"pw"), (b"alice", b"\xff"), (b"a\x00b", b"pw")],
)
def test_login_malformed(directory: Directory, username: bytes, password: bytes) -> None:
    ex, verifier = login(directory)
    run(ex.start(None))
    result = run(ex.step(b64(username)))
    if isinstance(result, Challenge):
        result = run(ex.step(b64(password)))
    assert isinstance(result, Failure) and result.reason is FailureReason.MALFORMED, result
    assert verifier.calls == []


def test_login_cancel_at_password(directory: Directory) -> None:
    ex, _ = login(directory)
    run(ex.start(b64(b"alice")))
    assert run(ex.step(b"*")) == Failure(FailureReason.CANCELLED, "alice", "client sent *")


def test_login_bad_base64(directory: Directory) -> None:
    ex, _ = login(directory)
    run(ex.start(None))
    result = run(ex.step(b"YWxpY2U"))
    assert isinstance(result, Failure) and result.reason is FailureReason.BAD_ENCODING


# --- unknown users cost the same KDF work -----------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_unknown_user_runs_the_same_kdf_as_a_known_one(directory: Directory, mechanism: str) -> None:
    backend, verifier = make_backend(directory)

    def attempt(user: bytes, password: bytes) -> object:
        if mechanism == "PLAIN":
            return run(PlainExchange(backend).start(b64(b"\x00" + user + b"\x00" + password)))
        ex = LoginExchange(backend)
        run(ex.start(b64(user)))
        return run(ex.step(b64(password)))

    known = attempt(b"alice", b"wrong")
    unknown = attempt(b"mallory", b"wrong")
    assert isinstance(known, Failure) and isinstance(unknown, Failure)
    assert known.reason is unknown.reason is FailureReason.INVALID_CREDENTIALS
    assert known.detail == unknown.detail
    # One Argon2id check each: against the real record, then against the fixed dummy.
    assert [ps for ps, _ in verifier.calls] == [directory.records["alice"], cheap_dummy()]
    assert directory.lookups == ["alice", "mallory"]
    # The dummy costs exactly what a real record of the same cost does.
    assert cheap_dummy().argon2id.split("$")[3] == directory.records["alice"].argon2id.split("$")[3]


def test_default_dummy_is_built_once_at_default_cost() -> None:
    dummy = run(credentials.get_dummy_password_set())
    assert dummy is credentials.dummy_password_set()
    params = dummy.argon2id.split("$")[3]
    assert params == f"m={credentials.ARGON2_MEMLIMIT // 1024},t={credentials.ARGON2_OPSLIMIT},p=1"
    assert not credentials.verify_password(dummy, "")


def test_backend_without_dummy_uses_default_dummy() -> None:
    calls: list[object] = []

    async def verify(ps: object, password: str) -> bool:
        calls.append(ps)
        return False

    backend = SaslBackend(lookup=lambda name: None, verify=verify)
    result = run(PlainExchange(backend).start(b64(b"\x00nobody\x00pw")))
    assert isinstance(result, Failure)
    assert calls == [credentials.dummy_password_set()]


# --- mechanism choice and reply mapping -------------------------------------------------------


def test_advertised_mechanisms() -> None:
    cb = {"tls-exporter": b"x" * 32}
    assert advertised_mechanisms(tls=True, channel_bindings=cb) == (
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256",
        "PLAIN",
        "LOGIN",
    )
    assert advertised_mechanisms(tls=True) == ("SCRAM-SHA-256", "PLAIN", "LOGIN")
    assert advertised_mechanisms(tls=False) == ("SCRAM-SHA-256",)


def test_create_exchange() -> None:
    backend = SaslBackend(lookup=lambda name: None)
    cb = {"tls-exporter": b"x" * 32}
    assert isinstance(create_exchange("plain", backend, tls=True), PlainExchange)
    assert isinstance(create_exchange("LOGIN", backend, tls=True), LoginExchange)
    assert create_exchange("PLAIN", backend, tls=False) is None  # never without TLS
    assert create_exchange("CRAM-MD5", backend, tls=True) is None
    assert create_exchange("PLA\u0131N", backend, tls=True) is None  # dotless i upper-cases to I
    assert create_exchange("SCRAM-SHA-256-PLUS", backend, tls=True) is None  # no binding data
    # tls-server-end-point alone: no -PLUS (clients that pick -PLUS by themselves cannot do it)
    assert create_exchange("SCRAM-SHA-256-PLUS", backend, tls=True,
                           channel_bindings={"tls-server-end-point": b"x" * 32}) is None
    plus = create_exchange("scram-sha-256-plus", backend, tls=True, channel_bindings=cb)
    assert isinstance(plus, ScramSha256Exchange) and plus.mechanism == "SCRAM-SHA-256-PLUS"
    scram = create_exchange("SCRAM-SHA-256", backend, tls=False)
    assert isinstance(scram, ScramSha256Exchange) and scram.mechanism == "SCRAM-SHA-256"


def test_y_flag_downgrade_detected_through_create_exchange() -> None:
    backend = SaslBackend(lookup=lambda name: None)
    ex = create_exchange("SCRAM-SHA-256", backend, tls=True, channel_bindings={"tls-exporter": b"x" * 32})
    assert ex is not None
    result = run(ex.start(b64(b"y,,n=alice,r=abc")))
    assert isinstance(result, Failure) and result.reason is FailureReason.CHANNEL_BINDING


@pytest.mark.parametrize(
    ("reason", "smtp", "imap"),
    [
        (FailureReason.CANCELLED, (501, "5.7.0", "Authentication cancelled"), ("BAD", None)),
        (FailureReason.BAD_ENCODING, (501, "5.5.2", "Cannot Base64-decode client response"), ("BAD", None)),
        (
            FailureReason.MALFORMED,
            (535, "5.7.8", "Authentication credentials invalid"),
            ("NO", "AUTHENTICATIONFAILED"),
        ),
        (
            FailureReason.INVALID_CREDENTIALS,
            (535, "5.7.8", "Authentication credentials invalid"),
            ("NO", "AUTHENTICATIONFAILED"),
        ),
        (
            FailureReason.AUTHZ_MISMATCH,
            (535, "5.7.8", "Authentication credentials invalid"),
            ("NO", "AUTHORIZATIONFAILED"),
        ),
        (
            FailureReason.CHANNEL_BINDING,
            (535, "5.7.8", "Authentication credentials invalid"),
            ("NO", "AUTHENTICATIONFAILED"),
        ),
        (
            FailureReason.SEQUENCE,
            (535, "5.7.8", "Authentication credentials invalid"),
            ("NO", "AUTHENTICATIONFAILED"),
        ),
    ],
)
def test_reply_mapping(
    reason: FailureReason, smtp: tuple[int, str, str], imap: tuple[str, str | None]
) -> None:
    assert reason.smtp_reply == smtp
    assert reason.imap_reply == imap
