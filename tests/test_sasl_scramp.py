"""Interop with scramp, an independent SCRAM implementation, as the client (skipped if not installed)."""

from __future__ import annotations

import base64

import pytest

from eventmail.sasl import credentials
from eventmail.sasl.mechanisms import Challenge, Failure, FailureReason, ScramSha256Exchange, Success
from tests.test_sasl_support import Directory, make_backend, run

scramp = pytest.importorskip("scramp", exc_type=ImportError)

END_POINT = bytes(range(32))


@pytest.fixture(scope="module")
def directory() -> Directory:
    d = Directory()
    d.add("alice", "correct horse")
    d.add("zoë", "pä\u00adss wörd")  # exercises SASLprep on both sides
    return d


def run_scramp(
    client: object,
    directory: Directory,
    *,
    plus: bool = False,
    bindings: dict[str, bytes] | None = None,
) -> Success | Failure:
    backend, _ = make_backend(directory)
    ex = ScramSha256Exchange(backend, plus=plus, channel_bindings=bindings)
    first = run(ex.start(base64.b64encode(client.get_client_first().encode())))  # type: ignore[attr-defined]
    if not isinstance(first, Challenge):
        return first
    client.set_server_first(first.data.decode())  # type: ignore[attr-defined]
    final = run(ex.step(base64.b64encode(client.get_client_final().encode())))  # type: ignore[attr-defined]
    if not isinstance(final, Challenge):
        return final
    client.set_server_final(final.data.decode())  # type: ignore[attr-defined]  # raises if v= is wrong
    result = run(ex.step(b""))
    assert not isinstance(result, Challenge)
    return result


@pytest.mark.parametrize(("user", "password"), [("alice", "correct horse"), ("zoë", "päss wörd")])
def test_scramp_client_logs_in(directory: Directory, user: str, password: str) -> None:
    client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
    assert run_scramp(client, directory) == Success(username=user, authcid=user)


def test_scramp_client_wrong_password(directory: Directory) -> None:
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", "wrong")
    result = run_scramp(client, directory)
    assert isinstance(result, Failure) and result.reason is FailureReason.INVALID_CREDENTIALS


def test_scramp_plus_tls_server_end_point(directory: Directory) -> None:
    # scramp does not do tls-exporter; tls-server-end-point exercises the same -PLUS path.
    client = scramp.ScramClient(
        ["SCRAM-SHA-256-PLUS"], "alice", "correct horse", channel_binding=("tls-server-end-point", END_POINT)
    )
    result = run_scramp(client, directory, plus=True, bindings={"tls-server-end-point": END_POINT})
    assert result == Success(username="alice", authcid="alice")


def test_scramp_plus_other_channel(directory: Directory) -> None:
    client = scramp.ScramClient(
        ["SCRAM-SHA-256-PLUS"], "alice", "correct horse", channel_binding=("tls-server-end-point", END_POINT)
    )
    other = {"tls-server-end-point": bytes(32)}
    result = run_scramp(client, directory, plus=True, bindings=other)
    assert isinstance(result, Failure) and result.reason is FailureReason.CHANNEL_BINDING


def test_scramp_y_flag(directory: Directory) -> None:
    # A client that can bind but was offered no -PLUS sends "y" (RFC 5802 §6).
    def client() -> object:
        return scramp.ScramClient(
            ["SCRAM-SHA-256"], "alice", "correct horse", channel_binding=("tls-server-end-point", END_POINT)
        )

    assert isinstance(run_scramp(client(), directory), Success)  # we did not offer -PLUS: fine
    downgraded = run_scramp(client(), directory, bindings={"tls-server-end-point": END_POINT})
    assert isinstance(downgraded, Failure) and downgraded.reason is FailureReason.CHANNEL_BINDING


def test_scramp_derives_the_same_keys() -> None:
    salt = bytes(range(16))
    ours = credentials.make_scram_credentials("pä\u00adss", salt=salt, iterations=4096)
    mech = scramp.ScramMechanism("SCRAM-SHA-256")
    s, stored_key, server_key, iterations = mech.make_auth_info("pä\u00adss", iteration_count=4096, salt=salt)
    assert (s, stored_key, server_key, iterations) == (ours.salt, ours.stored_key, ours.server_key, 4096)
