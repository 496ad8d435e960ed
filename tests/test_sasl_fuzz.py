"""Hypothesis fuzzing: start()/step() never raise and never succeed on junk; parsers fail cleanly."""

from __future__ import annotations

import base64

from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.proto import events_pb2
from eventmail.sasl import scram
from eventmail.sasl.mechanisms import (
    Challenge,
    Exchange,
    Failure,
    FailureReason,
    LoginExchange,
    PlainExchange,
    SaslBackend,
    ScramSha256Exchange,
)
from eventmail.sasl.saslprep import SaslPrepError, saslprep
from tests.test_sasl_support import CHEAP, RfcScramClient, b64, run

RECORD = events_pb2.PasswordSet(
    account="user",
    argon2id="$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    scram_sha256=events_pb2.ScramCredentials(
        salt=b"s" * 16, iterations=4096, stored_key=b"k" * 32, server_key=b"v" * 32
    ),
)


async def never(ps: events_pb2.PasswordSet, password: str) -> bool:
    return False  # fuzzing the state machines, not Argon2id


BACKEND = SaslBackend(
    lookup=lambda name: RECORD if name == "user" else None,
    verify=never,
    dummy=RECORD,
    fake_iterations=CHEAP.scram_iterations,
)
BINDINGS = {"tls-exporter": b"e" * 32}


def exchanges() -> list[Exchange]:
    return [
        PlainExchange(BACKEND),
        LoginExchange(BACKEND),
        ScramSha256Exchange(BACKEND),
        ScramSha256Exchange(BACKEND, plus=True, channel_bindings=BINDINGS),
        ScramSha256Exchange(BACKEND, channel_bindings=BINDINGS, additional_data_with_success=True),
    ]


# Wire lines: raw junk, base64 of junk, and the special forms.
raw = st.binary(max_size=300)
wire = st.one_of(
    raw,
    raw.map(base64.b64encode),
    st.sampled_from([b"", b"*", b"=", b"==", b"*\r\n"]),
    st.text(max_size=100).map(lambda t: base64.b64encode(t.encode("utf-8", "surrogatepass"))),
)


def check(result: object, ex: Exchange) -> None:
    assert isinstance(result, Challenge | Failure), result
    if isinstance(result, Failure):
        assert isinstance(result.reason, FailureReason)
        assert ex.done


@settings(max_examples=300, deadline=None)
@given(initial=st.one_of(st.none(), wire), steps=st.lists(wire, max_size=4))
def test_random_lines_never_raise(initial: bytes | None, steps: list[bytes]) -> None:
    async def go() -> None:
        for ex in exchanges():
            check(await ex.start(initial), ex)
            for line in steps:
                result = await ex.step(line)
                check(result, ex)
            if ex.done:
                after = await ex.step(b"")
                assert isinstance(after, Failure) and after.reason is FailureReason.SEQUENCE

    run(go())


# Structured junk for SCRAM: attribute lists that get past base64 into the grammar.
attr = st.builds(
    lambda k, v: f"{k}={v}",
    st.sampled_from([*"nrcpamsixyv", "", "nn"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
)
scram_message = st.lists(attr, max_size=6).map(lambda xs: ",".join(xs).encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(gs2=st.sampled_from(["n,,", "y,,", "p=tls-exporter,,", "n,a=user,", ""]), bare=scram_message)
def test_scram_grammar_junk_in_client_first(gs2: str, bare: bytes) -> None:
    async def go() -> None:
        for ex in exchanges()[2:]:
            check(await ex.start(b64(gs2.encode() + bare)), ex)

    run(go())


@settings(max_examples=300, deadline=None)
@given(final=scram_message, flag=st.sampled_from(["n", "p=tls-exporter"]))
def test_scram_grammar_junk_in_client_final(final: bytes, flag: str) -> None:
    async def go() -> None:
        plus = flag != "n"
        ex = ScramSha256Exchange(BACKEND, plus=plus, channel_bindings=BINDINGS if plus else None)
        first = await ex.start(b64(RfcScramClient("user", "pw", flag=flag).first()))
        assert isinstance(first, Challenge)
        result = await ex.step(b64(final))
        # Junk never authenticates: the stored key is not derived from any password.
        check(result, ex)
        assert isinstance(result, Failure)

    run(go())


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_scram_parsers_fail_only_with_scram_error(data: bytes) -> None:
    for parse in (scram.parse_client_first, scram.parse_client_final):
        try:
            parse(data)
        except scram.ScramError:
            pass


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=50), st.booleans())
def test_saslprep_fails_only_with_saslprep_error(text: str, allow_unassigned: bool) -> None:
    try:
        out = saslprep(text, allow_unassigned=allow_unassigned)
    except SaslPrepError:
        return
    assert isinstance(out, str)
    out.encode("utf-8")  # never a lone surrogate
