"""Web logins and sessions: passwords checked as IMAP checks them (SASL PLAIN under sasl.guard's limiter), sessions in HttpOnly SameSite=Strict cookies, a CSRF token per session.

Sessions live in memory: a restart logs everyone out, which is the safe direction, and keeps
session secrets out of the event log. A login always gets a new session id (no fixation: an id
an attacker planted before the login is never the one that gets authenticated), and the CSRF
token is per session, compared in constant time on every state-changing request.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from ..proto import events_pb2 as pb
from ..sasl import Failure, FailureReason, LoginLimiter, SaslBackend, Success, create_exchange, guarded
from ..store import Store, normalize_address

# Limits (docs/security.md): a session ends after this long without a request, or this long after
# the login whatever happens; at most this many sessions are kept (the oldest go first).
IDLE_SECONDS = 3600.0
MAX_AGE_SECONDS = 12 * 3600.0
MAX_SESSIONS = 10_000


def password_lookup(store: Store) -> Callable[[str], pb.PasswordSet | None]:
    """A login name is the account name or one of its addresses (not a catch-all), as for IMAP."""
    def lookup(name: str) -> pb.PasswordSet | None:
        system = store.system
        account = name if name in system.accounts else system.addresses.get(normalize_address(name))
        info = system.accounts.get(account) if account is not None else None
        return info.password if info is not None else None
    return lookup


async def check_password(store: Store, limiter: LoginLimiter, login: str, password: str, peer: str,
                         what: str, lookup: Callable[[str], pb.PasswordSet | None] | None = None) -> Success | Failure:
    """The account `login` names, if `password` is its password: one SASL PLAIN exchange under
    the failed-login limits (a Failure with reason LIMITED when they refuse). `lookup` replaces
    the accounts' credentials (the admin page's own)."""
    backend = SaslBackend(lookup=lookup if lookup is not None else password_lookup(store))
    exchange = create_exchange("PLAIN", backend, tls=True)
    assert exchange is not None
    # RFC 4616 §2: message = [authzid] NUL authcid NUL passwd
    initial = base64.b64encode(b"\x00" + login.encode("utf-8") + b"\x00" + password.encode("utf-8"))
    result = await guarded(exchange, limiter, peer=peer, conn=f"{what} {peer}", protocol=what).start(initial)
    if isinstance(result, Success | Failure):
        return result
    return Failure(FailureReason.BAD_ENCODING, login, "unexpected challenge")


@dataclass
class Session:
    id: str
    account: str
    csrf: str
    created: float
    seen: float
    data: dict[str, str] = field(default_factory=dict)


class Sessions:
    """The logged-in sessions of one app, by id; `cookie` names its cookie."""

    def __init__(self, cookie: str, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.cookie = cookie
        self.path = path
        self.clock = clock
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def start(self, response: web.StreamResponse, request: web.Request, account: str) -> Session:
        """A new session for `account`, its cookie set on `response`; any session the request
        carried is ended first."""
        self.end(request, response)
        now = self.clock()
        s = Session(secrets.token_urlsafe(32), account, secrets.token_urlsafe(32), now, now)
        self._by_id[s.id] = s
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        response.set_cookie(self.cookie, s.id, path=self.path, httponly=True, secure=request.secure,
                            samesite="Strict")
        return s

    def get(self, request: web.Request) -> Session | None:
        sid = request.cookies.get(self.cookie)
        s = self._by_id.get(sid) if sid else None
        if s is None:
            return None
        now = self.clock()
        if now - s.seen > IDLE_SECONDS or now - s.created > MAX_AGE_SECONDS:
            del self._by_id[s.id]
            return None
        s.seen = now
        return s

    def end(self, request: web.Request, response: web.StreamResponse) -> None:
        sid = request.cookies.get(self.cookie)
        if sid:
            self._by_id.pop(sid, None)
            response.del_cookie(self.cookie, path=self.path)

    def end_account(self, account: str, keep: str = "") -> None:
        """End every session of `account` but `keep` (after a password change)."""
        for sid in [sid for sid, s in self._by_id.items() if s.account == account and sid != keep]:
            del self._by_id[sid]


def csrf_ok(expected: str, given: object) -> bool:
    return isinstance(given, str) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())


class LoginTokens:
    """CSRF for the login form itself (no session yet): a double-submit token, a random value in
    a cookie and the same value in the form; a cross-site form cannot read the cookie to copy it."""

    def __init__(self, cookie: str, path: str) -> None:
        self.cookie = cookie
        self.path = path

    def value(self, request: web.Request) -> str:
        """The token to put in the form (the cookie's, or a new one that set() then sends)."""
        return request.cookies.get(self.cookie) or secrets.token_urlsafe(24)

    def set(self, request: web.Request, response: web.StreamResponse, token: str) -> None:
        response.set_cookie(self.cookie, token, path=self.path, httponly=True, secure=request.secure,
                            samesite="Strict")

    def ok(self, request: web.Request, given: object) -> bool:
        return csrf_ok(request.cookies.get(self.cookie, ""), given)


__all__ = ["LoginTokens", "Session", "Sessions", "check_password", "csrf_ok", "password_lookup"]
