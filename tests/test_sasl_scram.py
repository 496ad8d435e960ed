"""SCRAM-SHA-256 and -PLUS exchanges: the RFC 7677 vector, channel binding, every malformed case."""

from __future__ import annotations

import base64

import pytest

from eventmail.proto import events_pb2
from eventmail.sasl import credentials, scram
from eventmail.sasl.mechanisms import (
    Challenge,
    Failure,
    FailureReason,
    SaslBackend,
    ScramSha256Exchange,
    Success,
)
from tests.test_sasl_support import CHEAP, Directory, RfcScramClient, b64, make_backend, run

# RFC 7677 §3, the SCRAM-SHA-256 example exchange (user "user", password "pencil").
C_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
S_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
S_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
C_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
S_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

EXPORTER = bytes(range(32))  # stands in for RFC 9266 tls-exporter output
END_POINT = bytes(range(100, 132))  # stands in for an RFC 5929 certificate hash


def rfc7677_directory() -> Directory:
    creds = credentials.make_scram_credentials(
        "pencil", salt=base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), iterations=4096
    )
    return Directory({"user": events_pb2.PasswordSet(account="user", scram_sha256=creds)})


def rfc7677_exchange(**kwargs: object) -> ScramSha256Exchange:
    backend, _ = make_backend(rfc7677_directory())
    return ScramSha256Exchange(backend, server_nonce=S_NONCE, **kwargs)  # type: ignore[arg-type]


def test_rfc7677_vector_with_data_in_success() -> None:
    ex = rfc7677_exchange(additional_data_with_success=True)
    assert run(ex.start(b64(C_FIRST))) == Challenge(S_FIRST)
    assert run(ex.step(b64(C_FINAL))) == Success(username="user", authcid="user", data=S_FINAL)
    assert ex.done


def test_rfc7677_vector_with_empty_response_round() -> None:
    # RFC 4422 §5 / RFC 4954 §4: v= travels as a challenge, the client answers with an empty line.
    ex = rfc7677_exchange()
    assert run(ex.start(None)) == Challenge(b"")
    assert run(ex.step(b64(C_FIRST))) == Challenge(S_FIRST)
    assert run(ex.step(b64(C_FINAL))) == Challenge(S_FINAL)
    assert run(ex.step(b"")) == Success(username="user", authcid="user")


def test_rfc7677_wire_encoding_of_challenge() -> None:
    ex = rfc7677_exchange()
    result = run(ex.start(b64(C_FIRST)))
    assert isinstance(result, Challenge)
    assert result.encoded() == base64.b64encode(S_FIRST)


def test_rfc7677_wrong_proof_fails() -> None:
    ex = rfc7677_exchange()
    run(ex.start(b64(C_FIRST)))
    bad = C_FINAL.replace(b"p=dHzb", b"p=eHzb")
    result = run(ex.step(b64(bad)))
    assert isinstance(result, Failure) and result.reason is FailureReason.INVALID_CREDENTIALS
    assert result.authcid == "user"


def exchange_for(
    client: RfcScramClient,
    directory: Directory,
    *,
    plus: bool = False,
    bindings: dict[str, bytes] | None = None,
) -> tuple[ScramSha256Exchange, object]:
    """Run a whole exchange; return it and the last result."""
    backend, _ = make_backend(directory)
    ex = ScramSha256Exchange(backend, plus=plus, channel_bindings=bindings, additional_data_with_success=True)
    first = run(ex.start(b64(client.first())))
    if not isinstance(first, Challenge):
        return ex, first
    return ex, run(ex.step(b64(client.final(first.data))))


@pytest.fixture(scope="module")
def directory() -> Directory:
    d = Directory()
    d.add("alice", "correct horse")
    d.add("a,b=c", "pw")
    return d


def test_round_trip_with_rfc_client(directory: Directory) -> None:
    client = RfcScramClient("alice", "correct horse")
    _, result = exchange_for(client, directory)
    assert isinstance(result, Success) and result.username == "alice"
    assert result.data is not None and client.check_server_final(result.data)


def test_username_escaping(directory: Directory) -> None:
    # RFC 5802 §5.1: "=2C" and "=3D" stand for "," and "=".
    _, result = exchange_for(RfcScramClient("a,b=c", "pw"), directory)
    assert isinstance(result, Success) and result.username == "a,b=c"


def test_wrong_password(directory: Directory) -> None:
    _, result = exchange_for(RfcScramClient("alice", "wrong"), directory)
    assert isinstance(result, Failure) and result.reason is FailureReason.INVALID_CREDENTIALS


def test_unknown_user_fails_like_wrong_password(directory: Directory) -> None:
    _, result = exchange_for(RfcScramClient("mallory", "x"), directory)
    assert isinstance(result, Failure) and result.reason is FailureReason.INVALID_CREDENTIALS
    assert result.authcid == "mallory"


def server_first_for(name: str, directory: Directory) -> dict[str, str]:
    backend, _ = make_backend(directory)
    ex = ScramSha256Exchange(backend)
    result = run(ex.start(b64(RfcScramClient(name, "x").first())))
    assert isinstance(result, Challenge)
    return dict(a.split("=", 1) for a in result.data.decode().split(","))


def test_unknown_user_gets_stable_plausible_salt(directory: Directory) -> None:
    known = server_first_for("alice", directory)
    fake1 = server_first_for("mallory", directory)
    fake2 = server_first_for("mallory", directory)
    other = server_first_for("trudy", directory)
    assert fake1["s"] == fake2["s"] != other["s"]  # stable per name, differs between names
    assert len(base64.b64decode(fake1["s"])) == len(base64.b64decode(known["s"]))
    assert fake1["i"] == known["i"] == str(CHEAP.scram_iterations)
    assert fake1["r"] != fake2["r"]  # fresh server nonce every time


def test_same_proof_work_for_unknown_and_known(directory: Directory, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = scram.verify_client_proof

    def counting(stored_key: bytes, auth_message: bytes, proof: bytes) -> bool:
        calls.append(stored_key)
        return real(stored_key, auth_message, proof)

    monkeypatch.setattr(scram, "verify_client_proof", counting)
    directory.lookups.clear()
    exchange_for(RfcScramClient("alice", "wrong"), directory)
    exchange_for(RfcScramClient("mallory", "wrong"), directory)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert directory.lookups == ["alice", "mallory"]


def test_authzid_same_as_user_succeeds(directory: Directory) -> None:
    _, result = exchange_for(RfcScramClient("alice", "correct horse", authzid="alice"), directory)
    assert isinstance(result, Success)


def test_authzid_other_user_refused(directory: Directory) -> None:
    directory.lookups.clear()
    _, result = exchange_for(RfcScramClient("alice", "correct horse", authzid="bob"), directory)
    assert isinstance(result, Failure) and result.reason is FailureReason.AUTHZ_MISMATCH
    assert directory.lookups == []


# --- channel binding (RFC 5802 §6, RFC 9266, RFC 5929) ---------------------------------------

BINDINGS = {"tls-exporter": EXPORTER, "tls-server-end-point": END_POINT}


@pytest.mark.parametrize(("name", "data"), sorted(BINDINGS.items()))
def test_plus_success(directory: Directory, name: str, data: bytes) -> None:
    client = RfcScramClient("alice", "correct horse", flag=f"p={name}", cb_data=data)
    ex, result = exchange_for(client, directory, plus=True, bindings=BINDINGS)
    assert ex.mechanism == "SCRAM-SHA-256-PLUS"
    assert isinstance(result, Success)


def test_plus_success_with_authzid(directory: Directory) -> None:
    client = RfcScramClient(
        "alice", "correct horse", flag="p=tls-exporter", authzid="alice", cb_data=EXPORTER
    )
    _, result = exchange_for(client, directory, plus=True, bindings=BINDINGS)
    assert isinstance(result, Success)


@pytest.mark.parametrize(
    ("flag", "cb_data", "bindings", "plus"),
    [
        ("p=tls-exporter", b"\x00" * 32, BINDINGS, True),  # data mismatch: another TLS channel
        ("p=tls-server-end-point", EXPORTER, BINDINGS, True),  # data of the other type
        ("p=tls-unique", b"x" * 12, BINDINGS, True),  # type we do not have
        ("p=tls-exporter", EXPORTER, {"tls-server-end-point": END_POINT}, True),  # type not offered
        ("n", b"", BINDINGS, True),  # -PLUS without binding
        ("y", b"", BINDINGS, True),  # -PLUS without binding
        ("p=tls-exporter", EXPORTER, BINDINGS, False),  # p= on the non-PLUS mechanism
        ("y", b"", BINDINGS, False),  # RFC 5802 §6 downgrade: y while -PLUS is advertised
    ],
)
def test_channel_binding_failures(
    directory: Directory, flag: str, cb_data: bytes, bindings: dict[str, bytes], plus: bool
) -> None:
    client = RfcScramClient("alice", "correct horse", flag=flag, cb_data=cb_data)
    _, result = exchange_for(client, directory, plus=plus, bindings=bindings)
    assert isinstance(result, Failure) and result.reason is FailureReason.CHANNEL_BINDING


def test_y_flag_accepted_when_plus_not_advertised(directory: Directory) -> None:
    _, result = exchange_for(RfcScramClient("alice", "correct horse", flag="y"), directory)
    assert isinstance(result, Success)


def test_n_flag_accepted_even_when_plus_advertised(directory: Directory) -> None:
    # "n": the client does not do channel binding at all; that is no downgrade (RFC 5802 §6).
    _, result = exchange_for(RfcScramClient("alice", "correct horse", flag="n"), directory, bindings=BINDINGS)
    assert isinstance(result, Success)


def test_c_attribute_must_repeat_gs2_header(directory: Directory) -> None:
    # Client said "n,," but claims "y,," in c= (eSws): the header was tampered with.
    backend, _ = make_backend(directory)
    ex = ScramSha256Exchange(backend)
    client = RfcScramClient("alice", "correct horse")
    first = run(ex.start(b64(client.first())))
    assert isinstance(first, Challenge)
    final = client.final(first.data).replace(b"c=biws", b"c=eSws")
    result = run(ex.step(b64(final)))
    assert isinstance(result, Failure) and result.reason is FailureReason.CHANNEL_BINDING


# --- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"n,,",
        b"n,",
        b"x,,n=user,r=abc",  # unknown gs2-cbind-flag
        b"p=,,n=user,r=abc",  # empty cb-name
        b"p=tls exporter,,n=user,r=abc",  # bad cb-name character
        b"n,user,n=user,r=abc",  # authzid without "a="
        b"n,a=,n=user,r=abc",  # empty authzid
        b"n,a=b=2Xc,n=user,r=abc",  # bad escape in authzid
        b"n,,m=ext,n=user,r=abc",  # RFC 5802 §5.1: reserved mandatory extension
        b"n,,n=us=3Xer,r=abc",  # "=" not followed by 2C or 3D
        b"n,,n=us=er,r=abc",
        b"n,,n=,r=abc",  # empty username
        b"n,,r=abc,n=user",  # wrong order
        b"n,,n=user",  # no nonce
        b"n,,n=user,r=",  # empty nonce
        b"n,,n=user,r=a\x7fb",  # nonce outside printable
        b"n,,n=user,r=abc,foo",  # bad extension
        b"n,,n=user,r=abc,",  # trailing comma
        b"n,,n=\xff\xfe,r=abc",  # not UTF-8
        b"n,,n=us\x00er,r=abc",  # NUL
        b"n,,n=\x07bell,r=abc",  # SASLprep prohibits control characters (RFC 4013 §2.3)
        b"n,,n=\xd8\xa71,r=abc",  # SASLprep bidi rule (RFC 3454 §6)
    ],
)
def test_malformed_client_first(directory: Directory, message: bytes) -> None:
    backend, _ = make_backend(directory)
    result = run(ScramSha256Exchange(backend).start(b64(message) if message else b"="))
    assert isinstance(result, Failure) and result.reason is FailureReason.MALFORMED, result


def test_extensions_in_client_first_are_ignored(directory: Directory) -> None:
    backend, _ = make_backend(directory)
    result = run(ScramSha256Exchange(backend).start(b64(b"n,,n=alice,r=abc,x=whatever")))
    assert isinstance(result, Challenge)


def start_alice(directory: Directory) -> tuple[ScramSha256Exchange, RfcScramClient, bytes]:
    backend, _ = make_backend(directory)
    ex = ScramSha256Exchange(backend)
    client = RfcScramClient("alice", "correct horse")
    first = run(ex.start(b64(client.first())))
    assert isinstance(first, Challenge)
    return ex, client, first.data


def final_parts(client: RfcScramClient, server_first: bytes) -> tuple[str, str, str]:
    c, r, p = client.final(server_first).decode().split(",")
    return c, r, p


@pytest.mark.parametrize(
    "build",
    [
        lambda c, r, p: f"{c},{r}",  # no proof
        lambda c, r, p: f"{c},{p},{r}",  # proof not last
        lambda c, r, p: f"{r},{c},{p}",  # wrong order
        lambda c, r, p: f"{r},{p}",  # no c=
        lambda c, r, p: f"{c},{p}",  # no r=
        lambda c, r, p: f"{c},{r},{p[:-1]}",  # proof base64 not canonical
        lambda c, r, p: f"{c},{r},p=!!!!",  # proof not base64
        lambda c, r, p: f"c=bi ws,{r},{p}",  # c= not base64
        lambda c, r, p: f"{c},{r},bogus,{p}",  # bad extension
        lambda c, r, p: f"{c},{r}X,{p}",  # nonce mismatch (RFC 5802 §5.1)
        lambda c, r, p: f"{c},r={r[2:12]},{p}",  # truncated nonce
        lambda c, r, p: f"{c},{r}\x00,{p}",
        lambda c, r, p: "\udcff",
    ],
)
def test_malformed_client_final(directory: Directory, build: object) -> None:
    ex, client, server_first = start_alice(directory)
    message = build(*final_parts(client, server_first))  # type: ignore[operator]
    result = run(ex.step(b64(message.encode("utf-8", "surrogateescape"))))
    assert isinstance(result, Failure) and result.reason is FailureReason.MALFORMED, result
    assert result.authcid == "alice"


def test_short_proof_is_invalid_credentials(directory: Directory) -> None:
    ex, client, server_first = start_alice(directory)
    c, r, _ = final_parts(client, server_first)
    result = run(ex.step(b64(f"{c},{r},p=AAAA".encode())))
    assert isinstance(result, Failure) and result.reason is FailureReason.INVALID_CREDENTIALS


def test_extension_not_seen_by_client_breaks_proof(directory: Directory) -> None:
    # Extensions before p= are part of client-final-message-without-proof (RFC 5802 §7), so one
    # slipped in by a middlebox changes AuthMessage and the proof no longer matches.
    ex, client, server_first = start_alice(directory)
    c, r, p = final_parts(client, server_first)
    result = run(ex.step(b64(f"{c},{r},x=1,{p}".encode())))
    assert isinstance(result, Failure) and result.reason is FailureReason.INVALID_CREDENTIALS


def test_cancel_instead_of_client_first(directory: Directory) -> None:
    backend, _ = make_backend(directory)
    ex = ScramSha256Exchange(backend)
    assert run(ex.start(b"*")) == Failure(FailureReason.CANCELLED, None, "client sent *")
    assert ex.done


def test_cancel_instead_of_client_final(directory: Directory) -> None:
    ex, _, _ = start_alice(directory)
    assert run(ex.step(b"*")) == Failure(FailureReason.CANCELLED, "alice", "client sent *")


def test_cancel_instead_of_empty_acknowledgement(directory: Directory) -> None:
    ex, client, server_first = start_alice(directory)
    verifier = run(ex.step(b64(client.final(server_first))))
    assert isinstance(verifier, Challenge) and client.check_server_final(verifier.data)
    result = run(ex.step(b"*"))
    assert isinstance(result, Failure) and result.reason is FailureReason.CANCELLED


@pytest.mark.parametrize("line", [b"bi ws", b"biws\r\n", b"biw", b"b!ws", b"\xff\xff", b"A" * 12289])
def test_bad_base64(directory: Directory, line: bytes) -> None:
    ex, _, _ = start_alice(directory)
    result = run(ex.step(line))
    assert isinstance(result, Failure) and result.reason is FailureReason.BAD_ENCODING


def test_non_empty_response_after_verifier(directory: Directory) -> None:
    backend, _ = make_backend(directory)
    ex = ScramSha256Exchange(backend)
    client = RfcScramClient("alice", "correct horse")
    first = run(ex.start(b64(client.first())))
    assert isinstance(first, Challenge)
    assert isinstance(run(ex.step(b64(client.final(first.data)))), Challenge)
    result = run(ex.step(b64(b"x")))
    assert isinstance(result, Failure) and result.reason is FailureReason.MALFORMED


def test_sequence_errors(directory: Directory) -> None:
    backend, _ = make_backend(directory)
    ex = ScramSha256Exchange(backend)
    assert run(ex.step(b"")).reason is FailureReason.SEQUENCE  # type: ignore[union-attr]
    ex = ScramSha256Exchange(backend)
    run(ex.start(None))
    assert run(ex.start(None)).reason is FailureReason.SEQUENCE  # type: ignore[union-attr]
    assert run(ex.step(b"")).reason is FailureReason.SEQUENCE  # type: ignore[union-attr]


def test_step_after_success_is_sequence_error() -> None:
    ex = rfc7677_exchange(additional_data_with_success=True)
    run(ex.start(b64(C_FIRST)))
    assert isinstance(run(ex.step(b64(C_FINAL))), Success)
    assert run(ex.step(b64(C_FINAL))) == Failure(FailureReason.SEQUENCE, "user", "no challenge outstanding")


def test_record_without_scram_keys_is_treated_as_unknown() -> None:
    record = credentials.make_password_set("alice", "pw", cost=CHEAP)
    record.ClearField("scram_sha256")
    backend, _ = make_backend(Directory({"alice": record}))
    ex = ScramSha256Exchange(backend)
    client = RfcScramClient("alice", "pw")
    first = run(ex.start(b64(client.first())))
    assert isinstance(first, Challenge)
    result = run(ex.step(b64(client.final(first.data))))
    assert isinstance(result, Failure) and result.reason is FailureReason.INVALID_CREDENTIALS


def test_async_lookup() -> None:
    d = Directory(asynchronous=True)
    d.add("alice", "pw")
    _, result = exchange_for(RfcScramClient("alice", "pw"), d)
    assert isinstance(result, Success)


def test_lookup_may_map_to_canonical_account() -> None:
    record = credentials.make_password_set("alice@example.org", "pw", cost=CHEAP)
    backend = SaslBackend(lookup=lambda name: record if name.lower() == "alice" else None)
    ex = ScramSha256Exchange(backend, additional_data_with_success=True)
    client = RfcScramClient("Alice", "pw")
    first = run(ex.start(b64(client.first())))
    assert isinstance(first, Challenge)
    result = run(ex.step(b64(client.final(first.data))))
    assert result == Success(username="alice@example.org", authcid="Alice", data=result.data)  # type: ignore[union-attr]


def test_server_nonce_must_be_printable() -> None:
    backend, _ = make_backend(Directory())
    with pytest.raises(ValueError):
        ScramSha256Exchange(backend, server_nonce="a,b")
