"""Server-side SASL exchanges (PLAIN, LOGIN, SCRAM-SHA-256[-PLUS]) as sans-IO state machines.

One object per AUTH/AUTHENTICATE exchange. It takes the client's lines as they came off the
wire (base64 text without CRLF, or "*") and returns a Challenge, a Success or a Failure; the
protocol layer turns those into `334`/`235`/`535` (SMTP) or `+`/`OK`/`NO` (IMAP). The only
things it awaits are the injected credential lookup and the injected password check (Argon2id
in a thread); it never touches a socket or the clock.
"""

from __future__ import annotations

import abc
import base64
import binascii
import enum
import hmac
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from eventmail.proto import events_pb2
from eventmail.sasl import credentials, scram
from eventmail.sasl.channelbinding import TLS_EXPORTER
from eventmail.sasl.saslprep import SaslPrepError, saslprep

__all__ = [
    "MAX_CLIENT_DATA",
    "MECHANISMS",
    "Admit",
    "Challenge",
    "Exchange",
    "Failure",
    "FailureReason",
    "LoginExchange",
    "Lookup",
    "PasswordVerifier",
    "PlainExchange",
    "Result",
    "SaslBackend",
    "ScramSha256Exchange",
    "Success",
    "advertised_mechanisms",
    "create_exchange",
]

# RFC 4954 §4: a server MUST accept an AUTH command line (with initial response) of up to 12288
# octets. We take the same bound for every client line of an exchange, before decoding, so no
# parser ever sees more than ~9 KiB.
MAX_CLIENT_DATA = 12288

# Strongest first (RFC 4422 §3.1 leaves order to the protocol; clients tend to pick the first).
MECHANISMS: Final = ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN")

Lookup = Callable[[str], events_pb2.PasswordSet | Awaitable[events_pb2.PasswordSet | None] | None]
"""username -> its current PasswordSet, or None if there is no such account; sync or async."""

PasswordVerifier = Callable[[events_pb2.PasswordSet, str], Awaitable[bool]]
"""(credential, cleartext password) -> matches? Default: credentials.verify_password_async."""


class FailureReason(enum.Enum):
    """Why an exchange failed; `smtp_reply` and `imap_reply` give the reply each protocol sends."""

    CANCELLED = "cancelled"  # the client sent "*"
    BAD_ENCODING = "bad-encoding"  # a client line that is not base64, or too long
    MALFORMED = "malformed"  # decoded, but not what the mechanism's grammar allows
    INVALID_CREDENTIALS = "invalid-credentials"  # unknown user or wrong password: told apart nowhere
    AUTHZ_MISMATCH = "authzid-mismatch"  # asked to act as another identity (we allow only oneself)
    CHANNEL_BINDING = "channel-binding"  # gs2 flag against the rules, unknown type, or c= mismatch
    SEQUENCE = "sequence"  # start()/step() called when the exchange does not expect it
    LIMITED = "too-many-failures"  # refused by the failed-login limits (sasl.guard), no check made

    @property
    def smtp_reply(self) -> tuple[int, str, str]:
        """(code, enhanced status, text) for SMTP AUTH (RFC 4954 §4, §6)."""
        return _SMTP_REPLIES.get(self, (535, "5.7.8", "Authentication credentials invalid"))

    @property
    def imap_reply(self) -> tuple[str, str | None]:
        """(tagged status, response code) for IMAP AUTHENTICATE (RFC 9051 §6.2.2, RFC 5530 §3)."""
        return _IMAP_REPLIES.get(self, ("NO", "AUTHENTICATIONFAILED"))


# RFC 4954 §4: "*" MUST be answered with 501; a response that cannot be base64-decoded MUST be
# answered with 501 5.5.2. Everything else is a failed authentication, 535 5.7.8 (§6).
_SMTP_REPLIES: Final = {
    FailureReason.CANCELLED: (501, "5.7.0", "Authentication cancelled"),
    FailureReason.BAD_ENCODING: (501, "5.5.2", "Cannot Base64-decode client response"),
    # RFC 4954 §6: 454 4.7.0 temporary authentication failure: try again later.
    FailureReason.LIMITED: (454, "4.7.0", "too many failed logins, try again later"),
}
# RFC 9051 §6.2.2 (and RFC 3501 §6.2.2): "*" or invalid base64 MUST get a tagged BAD. RFC 5530
# §3: AUTHORIZATIONFAILED when the authzid is refused, AUTHENTICATIONFAILED otherwise.
_IMAP_REPLIES: Final = {
    FailureReason.CANCELLED: ("BAD", None),
    FailureReason.BAD_ENCODING: ("BAD", None),
    FailureReason.AUTHZ_MISMATCH: ("NO", "AUTHORIZATIONFAILED"),
    FailureReason.LIMITED: ("NO", "UNAVAILABLE"),  # RFC 5530 §3: temporary, try again later
}


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send `data` to the client (SMTP `334 <b64>`, IMAP `+ <b64>`) and call step() with the reply."""

    data: bytes

    def encoded(self) -> bytes:
        """`data` in base64, as it goes on the wire (empty for an empty challenge)."""
        return base64.b64encode(self.data)


@dataclass(frozen=True, slots=True)
class Success:
    """Authenticated as `username` (the account of the credential record)."""

    username: str
    authcid: str  # the identity as the client gave it, after SASLprep
    data: bytes | None = None  # RFC 4422 §3.6 additional data with success; see ScramSha256Exchange

    def encoded(self) -> bytes | None:
        return None if self.data is None else base64.b64encode(self.data)


@dataclass(frozen=True, slots=True)
class Failure:
    """The exchange is over and failed. `detail` is for logs only, never for the client."""

    reason: FailureReason
    authcid: str | None = None  # who it claimed to be, once known: for per-account rate limits
    detail: str = ""


Result = Challenge | Success | Failure

Admit = Callable[[str], Awaitable[Failure | None]]
"""account -> None to go on, or the Failure that ends the exchange (see Exchange.admit)."""


@dataclass(frozen=True, slots=True)
class SaslBackend:
    """What every exchange of a server shares: how to find and check credentials.

    `dummy` is the credential checked for unknown users so they cost the same Argon2id work as
    known ones; None means credentials.get_dummy_password_set() at DEFAULT_COST (built once, on
    first use; call it at start-up to keep that first build out of a login's time).
    `fake_salt_key` keys the stable fake SCRAM salts of unknown users (default: per process).
    """

    lookup: Lookup
    verify: PasswordVerifier = credentials.verify_password_async
    dummy: events_pb2.PasswordSet | None = None
    fake_salt_key: bytes | None = None
    fake_iterations: int = credentials.SCRAM_ITERATIONS

    async def find(self, username: str) -> events_pb2.PasswordSet | None:
        found = self.lookup(username)
        if inspect.isawaitable(found):
            found = await found
        return found

    async def dummy_password_set(self) -> events_pb2.PasswordSet:
        if self.dummy is not None:
            return self.dummy
        return await credentials.get_dummy_password_set()


class _Cancelled(Exception):
    pass


class _BadEncoding(Exception):
    pass


def _decode_line(line: bytes, *, initial: bool) -> bytes:
    """Decode one client line of an exchange (RFC 4954 §4, RFC 9051 §6.2.2, RFC 4959 §3)."""
    if len(line) > MAX_CLIENT_DATA:
        raise _BadEncoding("client line too long")
    if line == b"*":
        raise _Cancelled
    if initial and line == b"=":
        return b""  # RFC 4954 §4 / RFC 4959 §3: "=" is an empty initial response
    try:
        return base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _BadEncoding("client line is not base64") from exc


def _utf8(data: bytes) -> str:
    return data.decode("utf-8")  # raises UnicodeDecodeError, a ValueError


class Exchange(abc.ABC):
    """One SASL exchange, server side. Call start() once, then step() while it returns Challenge."""

    def __init__(self, backend: SaslBackend, mechanism: str) -> None:
        self._backend = backend
        self.mechanism = mechanism  # the registered name (RFC 4422 §3.1)
        self._started = False
        self._done = False
        self._authcid: str | None = None
        self._account: str | None = None
        self._found: events_pb2.PasswordSet | None = None
        # Asked once the client has named the account, before any credential is looked at
        # (sasl.guard sets it to apply the per-account failed-login limit).
        self.admit: Admit | None = None

    @property
    def done(self) -> bool:
        """True once a Success or Failure has been returned."""
        return self._done

    @property
    def authcid(self) -> str | None:
        """The identity the client gave, after SASLprep, once known."""
        return self._authcid

    @property
    def account(self) -> str | None:
        """The account the client named, once known: the account its authcid belongs to, or the
        authcid itself when there is no such account (so guessed names count too)."""
        return self._account

    async def _identify(self, authcid: str) -> Failure | None:
        """The client named `authcid`: look it up once and ask `admit` before going on."""
        self._authcid = authcid
        self._found = await self._backend.find(authcid)
        self._account = (self._found.account if self._found is not None else "") or authcid
        if self.admit is None:
            return None
        return await self.admit(self._account)

    async def start(self, initial_response: bytes | None) -> Result:
        """Begin. `initial_response` is None when the client sent none, else its wire form:
        base64, "=" for an empty response (RFC 4954 §4, RFC 4959 §3), or "*" to cancel."""
        if self._started:
            return self._finish(Failure(FailureReason.SEQUENCE, self._authcid, "start() called twice"))
        self._started = True
        if initial_response is None:
            return self._reply(self._first_challenge())
        return await self._receive(initial_response, initial=True)

    async def step(self, client_data: bytes) -> Result:
        """Feed the client's answer to the last Challenge: base64 text without CRLF, or "*"."""
        if not self._started or self._done:
            return self._finish(Failure(FailureReason.SEQUENCE, self._authcid, "no challenge outstanding"))
        return await self._receive(client_data, initial=False)

    async def _receive(self, line: bytes, *, initial: bool) -> Result:
        try:
            data = _decode_line(line, initial=initial)
        except _Cancelled:
            return self._finish(Failure(FailureReason.CANCELLED, self._authcid, "client sent *"))
        except _BadEncoding as exc:
            return self._finish(Failure(FailureReason.BAD_ENCODING, self._authcid, str(exc)))
        try:
            result = await self._respond(data)
        except (scram.ScramError, SaslPrepError, UnicodeError) as exc:
            # scram.ScramError: RFC 5802 §7 grammar; SaslPrepError: RFC 4013 §2.3-2.5.
            result = Failure(FailureReason.MALFORMED, self._authcid, f"{type(exc).__name__}: {exc}")
        return self._reply(result)

    def _reply(self, result: Result) -> Result:
        return result if isinstance(result, Challenge) else self._finish(result)

    def _finish(self, result: Success | Failure) -> Success | Failure:
        self._done = True
        return result

    def _fail(self, reason: FailureReason, detail: str) -> Failure:
        return Failure(reason, self._authcid, detail)

    @abc.abstractmethod
    def _first_challenge(self) -> Result:
        """What the server sends first when there is no initial response."""

    @abc.abstractmethod
    async def _respond(self, data: bytes) -> Result:
        """Handle one decoded client response."""

    async def _check_password(self, authcid: str, password: str) -> Result:
        """Check `password` for `authcid` (looked up by _identify), doing the same KDF work
        whether or not it exists."""
        found = self._found if authcid == self._authcid else await self._backend.find(authcid)
        known = found is not None and bool(found.argon2id or found.HasField("scram_sha256"))
        target = found if found is not None and known else await self._backend.dummy_password_set()
        matched = await self._backend.verify(target, password)
        if matched and found is not None and known:
            return Success(username=found.account or authcid, authcid=authcid)
        return self._fail(FailureReason.INVALID_CREDENTIALS, "unknown user or wrong password")


def _prepare_identity(text: str) -> str:
    # RFC 4616 §2 / RFC 5802 §5.1: identities are prepared with SASLprep (query rules, §2.5).
    prepared = saslprep(text, allow_unassigned=True)
    if not prepared:
        raise SaslPrepError("empty identity")
    return prepared


class PlainExchange(Exchange):
    """PLAIN (RFC 4616): one message, [authzid] NUL authcid NUL passwd."""

    def __init__(self, backend: SaslBackend) -> None:
        super().__init__(backend, "PLAIN")

    def _first_challenge(self) -> Result:
        return Challenge(b"")  # RFC 4616 §2, RFC 4954 §4: empty challenge ("334 "), client sends message

    async def _respond(self, data: bytes) -> Result:
        # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
        parts = data.split(b"\x00")
        if len(parts) != 3:
            return self._fail(FailureReason.MALFORMED, "PLAIN message needs exactly two NULs")
        raw_authzid, raw_authcid, raw_passwd = parts
        if not raw_authcid or not raw_passwd:
            return self._fail(FailureReason.MALFORMED, "empty authcid or passwd")  # 1*SAFE
        authcid = self._authcid = _prepare_identity(_utf8(raw_authcid))
        password = _utf8(raw_passwd)  # SASLprep'd by the verifier (RFC 4616 §2)
        if raw_authzid and _prepare_identity(_utf8(raw_authzid)) != authcid:
            # RFC 4616 §2: the server checks the authcid may act as the authzid. Policy: only as
            # itself. Refused before any lookup or password work; this depends on client input alone.
            return self._fail(FailureReason.AUTHZ_MISMATCH, "authzid differs from authcid")
        refused = await self._identify(authcid)
        if refused is not None:
            return refused
        return await self._check_password(authcid, password)


class LoginExchange(Exchange):
    """LOGIN (draft-murchison-sasl-login-00): username and password, one challenge each."""

    # The draft's §2 has the server send "User Name" and "Password"; deployed servers (Postfix,
    # Dovecot, Exchange) send "Username:" and "Password:", and some clients look for exactly
    # those. The draft says clients must not depend on the text, so we match practice.
    USERNAME_CHALLENGE: ClassVar[bytes] = b"Username:"
    PASSWORD_CHALLENGE: ClassVar[bytes] = b"Password:"

    def __init__(self, backend: SaslBackend) -> None:
        super().__init__(backend, "LOGIN")
        self._username: str | None = None

    def _first_challenge(self) -> Result:
        return Challenge(self.USERNAME_CHALLENGE)

    async def _respond(self, data: bytes) -> Result:
        if self._username is None:
            # The draft allows the username as an initial response; it lands here too.
            if not data:
                return self._fail(FailureReason.MALFORMED, "empty username")
            self._username = _prepare_identity(_utf8(data))
            refused = await self._identify(self._username)
            if refused is not None:
                return refused
            return Challenge(self.PASSWORD_CHALLENGE)
        if not data:
            return self._fail(FailureReason.MALFORMED, "empty password")
        return await self._check_password(self._username, _utf8(data))


class ScramSha256Exchange(Exchange):
    """SCRAM-SHA-256 (RFC 5802 + RFC 7677), or SCRAM-SHA-256-PLUS with channel binding.

    `channel_bindings` maps channel-binding type to the data the TLS layer gave for this
    connection: "tls-exporter" (RFC 9266 §2, 32 bytes, label "EXPORTER-Channel-Binding") and/or
    "tls-server-end-point" (RFC 5929 §4.1, see channelbinding.tls_server_end_point). When it is
    non-empty the server is taken to advertise -PLUS, which decides the "y" rule (RFC 5802 §6).
    With `additional_data_with_success=False` (what SMTP needs, as 235 carries no data, RFC 4954
    §4, and what every IMAP client understands) the final "v=" goes out as one more Challenge that
    the client answers with an empty line (RFC 4422 §4); with True it comes back in Success.data
    for a protocol whose success reply can carry it (RFC 4422 §3.6).
    """

    def __init__(
        self,
        backend: SaslBackend,
        *,
        plus: bool = False,
        channel_bindings: Mapping[str, bytes] | None = None,
        additional_data_with_success: bool = False,
        server_nonce: str | None = None,
    ) -> None:
        super().__init__(backend, "SCRAM-SHA-256-PLUS" if plus else "SCRAM-SHA-256")
        self._plus = plus
        self._bindings = dict(channel_bindings or {})
        self._data_with_success = additional_data_with_success
        if server_nonce is not None and not scram.PRINTABLE.fullmatch(server_nonce):
            raise ValueError("server nonce must be printable ASCII without ','")  # RFC 5802 §7
        self._server_nonce = server_nonce  # None: a fresh random one. Tests pin it.
        self._first: scram.ClientFirst | None = None
        self._cbind_input = b""
        self._creds: events_pb2.ScramCredentials | None = None
        self._known: events_pb2.PasswordSet | None = None
        self._nonce = ""
        self._server_first = ""
        self._final_pending: Success | None = None

    def _first_challenge(self) -> Result:
        return Challenge(b"")  # RFC 5802 §5: the client speaks first, so an empty challenge

    async def _respond(self, data: bytes) -> Result:
        if self._first is None:
            return await self._client_first(data)
        if self._final_pending is None:
            return self._client_final(data)
        # RFC 4422 §4: additional data sent as a challenge is acknowledged by an empty response.
        if data:
            return self._fail(FailureReason.MALFORMED, "expected an empty response after v=")
        return self._final_pending

    def _check_gs2(self, first: scram.ClientFirst) -> Failure | None:
        """RFC 5802 §6 rules for the gs2-cbind-flag; sets the expected cbind-input."""
        if self._plus:
            # -PLUS means channel binding is in use: the flag must be "p=".
            if first.cbind_flag != "p" or first.cb_name is None:
                return self._fail(FailureReason.CHANNEL_BINDING, "-PLUS without p= flag")
            data = self._bindings.get(first.cb_name)
            if not data:
                # RFC 5802 §7 e=unsupported-channel-binding-type
                return self._fail(FailureReason.CHANNEL_BINDING, f"unsupported type {first.cb_name}")
            self._cbind_input = first.gs2_header.encode("utf-8") + data  # RFC 5802 §7 cbind-input
            return None
        if first.cbind_flag == "p":
            # The client asked for binding with a mechanism that has none (RFC 5802 §6).
            return self._fail(FailureReason.CHANNEL_BINDING, "p= flag with non-PLUS mechanism")
        if first.cbind_flag == "y" and self._bindings:
            # RFC 5802 §6: "y" means the client thinks we lack channel binding. We advertise
            # -PLUS, so someone stripped it: a downgrade. MUST fail.
            return self._fail(FailureReason.CHANNEL_BINDING, "y flag but -PLUS is advertised")
        self._cbind_input = first.gs2_header.encode("utf-8")  # no cbind-data for "n" and "y"
        return None

    async def _client_first(self, data: bytes) -> Result:
        first = scram.parse_client_first(data)
        # RFC 5802 §5.1: the username is SASLprep'd ("=2C"/"=3D" already decoded).
        authcid = self._authcid = _prepare_identity(first.username)
        failed = self._check_gs2(first)
        if failed is not None:
            return failed
        if first.authzid is not None and _prepare_identity(first.authzid) != authcid:
            # RFC 5802 §5.1 "a=": policy as for PLAIN, only oneself.
            return self._fail(FailureReason.AUTHZ_MISMATCH, "authzid differs from username")
        refused = await self._identify(authcid)
        if refused is not None:
            return refused
        found = self._found
        if found is not None and _usable_scram(found):
            self._known, self._creds = found, found.scram_sha256
        else:
            # Unknown user (or no SCRAM keys): carry on with fake credentials so the reply and
            # the work look the same; the proof can never match.
            self._creds = credentials.dummy_scram_credentials(
                self._authcid, iterations=self._backend.fake_iterations, key=self._backend.fake_salt_key
            )
        self._first = first
        # RFC 5802 §5.1: the server appends its own nonce to the client's.
        self._nonce = first.client_nonce + (self._server_nonce or scram.new_server_nonce())
        self._server_first = scram.server_first_message(self._nonce, self._creds.salt, self._creds.iterations)
        return Challenge(self._server_first.encode("ascii"))

    def _client_final(self, data: bytes) -> Result:
        assert self._first is not None and self._creds is not None
        final = scram.parse_client_final(data)
        # RFC 5802 §5.1: c= must carry the gs2-header (plus cbind-data for "p") of the first message.
        if not hmac.compare_digest(final.channel_binding, self._cbind_input):
            return self._fail(FailureReason.CHANNEL_BINDING, "channel binding data does not match")
        # RFC 5802 §5.1: r= must be exactly the nonce the server sent.
        if not hmac.compare_digest(final.nonce.encode("ascii"), self._nonce.encode("ascii")):
            return self._fail(FailureReason.MALFORMED, "nonce mismatch")
        # RFC 5802 §3: AuthMessage := client-first-message-bare + "," + server-first-message + ","
        #                              + client-final-message-without-proof
        auth_message = f"{self._first.bare},{self._server_first},{final.without_proof}".encode()
        proof_ok = scram.verify_client_proof(self._creds.stored_key, auth_message, final.proof)
        if not proof_ok or self._known is None:
            return self._fail(FailureReason.INVALID_CREDENTIALS, "unknown user or wrong proof")
        # RFC 5802 §7: server-final-message = verifier = "v=" base64(ServerSignature)
        signature = scram.server_signature(self._creds.server_key, auth_message)
        verifier = b"v=" + base64.b64encode(signature)
        username = self._known.account or self._authcid or ""
        if self._data_with_success:
            return Success(username=username, authcid=self._authcid or "", data=verifier)
        self._final_pending = Success(username=username, authcid=self._authcid or "")
        return Challenge(verifier)


def _usable_scram(found: events_pb2.PasswordSet) -> bool:
    creds = found.scram_sha256
    return (
        found.HasField("scram_sha256")
        and creds.iterations >= credentials.SCRAM_MIN_ITERATIONS
        and len(creds.stored_key) == scram.KEY_LENGTH
        and len(creds.server_key) == scram.KEY_LENGTH
        and len(creds.salt) > 0
    )


def advertised_mechanisms(
    *, tls: bool, channel_bindings: Mapping[str, bytes] | None = None
) -> tuple[str, ...]:
    """Mechanisms to offer on a connection, strongest first.

    PLAIN and LOGIN send the password itself, so only under TLS (RFC 4954 §4, RFC 9051 §11.1 /
    RFC 8314 §3). -PLUS only with tls-exporter channel-binding data (RFC 9266), the binding that
    clients which pick -PLUS by themselves can do: GNU SASL (Debian's mutt) and others choose
    -PLUS whenever it is offered and speak tls-exporter (tls-unique is undefined in TLS 1.3), so
    offering -PLUS with only tls-server-end-point made their logins fail. Python 3.11's ssl cannot
    export keying material, so -PLUS is not offered today (docs/security.md).
    """
    offered = []
    for name in MECHANISMS:
        if name.endswith("-PLUS") and not (channel_bindings and TLS_EXPORTER in channel_bindings):
            continue
        if name in ("PLAIN", "LOGIN") and not tls:
            continue
        offered.append(name)
    return tuple(offered)


def create_exchange(
    mechanism: str,
    backend: SaslBackend,
    *,
    tls: bool,
    channel_bindings: Mapping[str, bytes] | None = None,
    additional_data_with_success: bool = False,
) -> Exchange | None:
    """A new exchange for `mechanism` (case-insensitive), or None if it is not offered here.

    None maps to SMTP `504 5.5.4` (RFC 4954 §4) and IMAP `NO` (RFC 9051 §6.2.2).
    """
    if not mechanism.isascii():
        return None  # RFC 4422 §3.1: names are ASCII; "plaın".upper() would be "PLAIN"
    name = mechanism.upper()
    # Only the bindings -PLUS is offered with (see advertised_mechanisms) count, also for the
    # "y" rule: a client that sees no -PLUS and says "y" is right, not downgraded.
    bindings = {k: v for k, v in (channel_bindings or {}).items() if k == TLS_EXPORTER}
    if name not in advertised_mechanisms(tls=tls, channel_bindings=bindings):
        return None
    if name == "PLAIN":
        return PlainExchange(backend)
    if name == "LOGIN":
        return LoginExchange(backend)
    return ScramSha256Exchange(
        backend,
        plus=name.endswith("-PLUS"),
        channel_bindings=bindings,
        additional_data_with_success=additional_data_with_success,
    )
