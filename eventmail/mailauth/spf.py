"""SPF (RFC 7208) check of the SMTP envelope: pyspf on the event loop from cached DNS answers, else in a worker thread, DNS through our Resolver.

Decision: we wrap pyspf 2.0.14 rather than write our own evaluator. pyspf passes the RFC 7208
test suite (macros, include/redirect, the 10-lookup and 2-void-lookup limits of §4.6.4, exp=),
and one check costs about 1.5 ms; an evaluator of our own would be a second, less-tested copy of
that grammar. What pyspf lacks we supply around it:

- DNS: pyspf calls the process-global `spf.DNSLookup`. We install, once, a dispatcher that
  reads the Resolver from a `contextvars.ContextVar` set for the duration of one check; the
  executor thread runs in a copy of the caller's context, so concurrent checks with different
  resolvers do not interfere, and code that calls pyspf without our context gets pyspf's own
  lookup unchanged.
- Async: `check_spf` first runs the check on the event loop with lookups answered from the
  Resolver's cache only (a sender's records are cached after its first message; the check is
  about 0.5 ms of CPU, which a thread would only add hand-offs to). If any lookup would have to
  ask the network, that result is dropped and the check runs again, from the top, in a dedicated
  thread pool (so SPF does not starve the default executor used for DKIM hashing and RSA
  signing), bounded by a timeout.
- Robustness: any exception from pyspf becomes temperror/permerror with a reason.
- IDNA: the MAIL FROM / HELO domain is converted to A-labels before pyspf sees it (RFC 8616 §3).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import ipaddress
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import spf as pyspf

from ..cputime import stage
from .domains import DomainError, split_address, to_ascii_domain
from .resolver import DnsLookupFailed, DnsStatus, Resolver

SpfResultCode = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
SPF_RESULTS: frozenset[str] = frozenset(
    {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"}
)

# RFC 7208 §4.6.4: "MAY ... impose a limit ... at least 20 seconds" on the whole evaluation.
SPF_TIMEOUT = 20.0
# Worker threads for pyspf. Each check mostly waits on DNS, so more threads than cores is right;
# 16 bounds memory and the load a flood of connections can put on the recursive resolver.
SPF_THREADS = 16
# Explanations come from the sender's DNS (exp=, RFC 7208 §6.2): keep what we record short.
MAX_REASON_CHARS = 200

_current: contextvars.ContextVar[Resolver | None] = contextvars.ContextVar(
    "eventmail_spf_resolver", default=None
)
# Set while a check runs on the event loop from cached answers only: a lookup the cache cannot
# answer marks it (and raises), and the check is then run again in a thread, where lookups may
# wait for the network. The mark, not the exception, decides: pyspf swallows exceptions in a
# few places (exp= text, PTR names).
_cache_only: contextvars.ContextVar[list[bool] | None] = contextvars.ContextVar(
    "eventmail_spf_cache_only", default=None
)


class _NotCached(Exception):
    """A lookup of a check on the event loop that only the network could answer."""


_original_lookup = pyspf.DNSLookup
_install_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _dispatch_lookup(
    name: str, qtype: str, strict: object = True, timeout: float = 20.0
) -> list[tuple[tuple[str, str], object]]:
    """The pyspf DNS hook: our Resolver when a check of ours is running, pyspf's own otherwise."""
    resolver = _current.get()
    if resolver is None:
        return cast(list[tuple[tuple[str, str], object]], _original_lookup(name, qtype, strict, timeout))
    try:
        missed = _cache_only.get()
        if missed is None:
            return resolver.pyspf_lookup(name, qtype, strict, timeout)
        known = resolver.pyspf_known(name, qtype)
        if known is None:
            missed[0] = True
            raise _NotCached(name)
        return known
    except DnsLookupFailed as exc:
        if exc.answer.status is DnsStatus.PERMERROR:
            raise pyspf.PermError(f"DNS: {exc.answer.error}") from None
        raise pyspf.TempError(f"DNS: {exc.answer.error}") from None


def _install_hook() -> None:
    with _install_lock:
        if pyspf.DNSLookup is not _dispatch_lookup:
            pyspf.DNSLookup = _dispatch_lookup


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _install_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(SPF_THREADS, thread_name_prefix="spf")
        return _executor


@dataclass(frozen=True)
class SpfResult:
    """The outcome of check_host() for one identity (RFC 7208 §2.3, §2.6)."""

    result: SpfResultCode
    domain: str  # A-label domain that was checked ("" when there was none)
    identity: Literal["mailfrom", "helo"]
    sender: str  # the address checked: MAIL FROM, or postmaster@HELO for the null path
    helo: str
    remote_ip: str
    mechanism: str = ""  # the mechanism that matched, e.g. "ip4:192.0.2.0/24"
    reason: str = ""

    def to_dict(self) -> dict[str, str]:
        return dict(vars(self))  # flat: what asdict gives, without its deep copy

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpfResult:
        result = str(data.get("result", "permerror"))
        identity = str(data.get("identity", "mailfrom"))
        return cls(
            result=cast(SpfResultCode, result if result in SPF_RESULTS else "permerror"),
            domain=str(data.get("domain", "")),
            identity="helo" if identity == "helo" else "mailfrom",
            sender=str(data.get("sender", "")),
            helo=str(data.get("helo", "")),
            remote_ip=str(data.get("remote_ip", "")),
            mechanism=str(data.get("mechanism", "")),
            reason=str(data.get("reason", "")),
        )


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def normalise_ip(remote_ip: str) -> str | None:
    """The client address as pyspf wants it: IPv4-mapped IPv6 becomes IPv4 (RFC 7208 §5 note)."""
    text = remote_ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _run_pyspf(ip: str, sender: str, helo: str, timeout: float, receiver: str) -> tuple[str, str, str]:
    """Blocking: one pyspf check. Returns (result, mechanism, explanation); never raises."""
    with stage("spf"):
        return _pyspf_check(ip, sender, helo, timeout, receiver)


def _pyspf_check(ip: str, sender: str, helo: str, timeout: float, receiver: str) -> tuple[str, str, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            q = pyspf.query(i=ip, s=sender, h=helo, receiver=receiver or "eventmail", querytime=timeout)
            result, _code, explanation = q.check()
            mechanism = str(getattr(q, "mechanism", "") or "")
    except pyspf.TempError as exc:
        return "temperror", "", f"DNS error: {exc}"
    except pyspf.PermError as exc:
        return "permerror", "", str(exc)
    except Exception as exc:
        # pyspf on hostile records (e.g. undecodable explanation text); never let it escape.
        return "permerror", "", f"SPF evaluation failed: {type(exc).__name__}: {exc}"
    return str(result).lower(), mechanism, str(explanation or "")


async def check_spf(
    remote_ip: str,
    mail_from: str,
    helo: str,
    resolver: Resolver,
    *,
    timeout: float = SPF_TIMEOUT,
    receiver: str = "",
) -> SpfResult:
    """RFC 7208 check_host() for MAIL FROM, or for postmaster@HELO when MAIL FROM is null (§2.4)."""
    local, domain = split_address(mail_from)
    identity: Literal["mailfrom", "helo"] = "mailfrom"
    if not domain:
        # RFC 7208 §2.4: with a null reverse-path the HELO identity is checked as
        # "postmaster@<HELO domain>".
        identity, local, domain = "helo", "postmaster", helo.strip()
    if not local:
        local = "postmaster"  # RFC 7208 §4.3: a sender without local-part
    ip = normalise_ip(remote_ip)

    def done(result: SpfResultCode, reason: str, domain_ascii: str = "", mechanism: str = "") -> SpfResult:
        return SpfResult(
            result,
            domain_ascii,
            identity,
            f"{local}@{domain}" if domain else "",
            helo,
            remote_ip,
            mechanism,
            _short(reason),
        )

    if ip is None:
        return done("permerror", f"remote address {remote_ip!r} is not an IP address")
    try:
        domain_ascii = to_ascii_domain(domain)
    except DomainError as exc:
        # RFC 7208 §4.3: a malformed domain (or a domain literal) gives "none".
        return done("none", f"no valid domain to check: {exc}")
    if "." not in domain_ascii:
        return done("none", "domain is not a multi-label domain name (RFC 7208 §4.3)", domain_ascii)
    _install_hook()
    sender = f"{local}@{domain_ascii}"
    helo_ascii = helo.strip()
    try:
        helo_ascii = to_ascii_domain(helo_ascii)
    except DomainError:
        pass  # only used for the %{h} macro; pyspf copes with any text
    token = _current.set(resolver)
    try:
        # First on the event loop from cached answers (a sender's records are cached after its
        # first message): pyspf's CPU without a thread's hand-offs. Else in a thread, from the top.
        missed = [False]
        mark = _cache_only.set(missed)
        try:
            result, mechanism, explanation = _run_pyspf(ip, sender, helo_ascii, timeout, receiver)
        finally:
            _cache_only.reset(mark)
        if not missed[0]:
            return _checked(done, result, mechanism, explanation, domain_ascii)
        ctx = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(_pool(), ctx.run, _run_pyspf, ip, sender, helo_ascii, timeout, receiver)
        result, mechanism, explanation = await asyncio.wait_for(future, timeout + 1.0)
    except TimeoutError:
        return done("temperror", f"SPF evaluation exceeded {timeout:.0f} s (RFC 7208 §4.6.4)", domain_ascii)
    finally:
        _current.reset(token)
    return _checked(done, result, mechanism, explanation, domain_ascii)


def _checked(done: Callable[..., SpfResult], result: str, mechanism: str, explanation: str,
             domain_ascii: str) -> SpfResult:
    if result not in SPF_RESULTS:
        return done("permerror", f"unexpected SPF result {result!r}", domain_ascii)
    return done(cast(SpfResultCode, result), explanation, domain_ascii, mechanism)
