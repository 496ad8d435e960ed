"""The one DNS resolver of mail authentication: async lookups, a TTL cache, answer checks, and sync shims.

Decisions (recorded here and in docs/ by the owner of docs):

- One `Resolver` object per configuration. Its nameservers and port are configurable, so tests
  point it at `tests/dnsserver.py` on a loopback port and production at the local recursive
  resolver (`ResolverConfig.from_system()`).
- Async code calls `await resolver.query(name, rdtype)`. pyspf and dkimpy are synchronous and
  run in worker threads; they reach DNS through the sync shims `query_sync`, `dkim_txt` and
  `pyspf_lookup`, which use a blocking dnspython resolver with the *same* servers, port,
  timeouts, answer checks and cache.
- Every outcome is a `DnsAnswer` with a status. Timeouts, SERVFAIL, REFUSED and malformed
  packets are `temperror`; answers whose data can never be valid for mail authentication
  (CNAME loops, over-long or too many TXT records, names that are not domain names) are
  `permerror`. Nothing raises out of `query`/`query_sync` except `asyncio.CancelledError`.

Thread safety: the cache is guarded by a `threading.Lock` (held only for dict operations), and
the dnspython resolver objects are configured once and never mutated, which dnspython allows
to be shared between threads. `query_sync` and the shims block; they must be called from worker
threads (`asyncio.to_thread` / an executor), never on the event loop thread, and they refuse to
run there.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdatatype
import dns.resolver
import dns.rrset

from .domains import DomainError, to_ascii_domain

# Record types the mail-authentication code looks up. Anything else is a programming error.
SUPPORTED_TYPES = frozenset({"A", "AAAA", "MX", "TXT", "PTR", "CNAME", "NS", "TLSA"})

# Upper bound for one TXT record (all its strings concatenated). The largest legitimate record we
# read is a DKIM RSA-8192 key (about 1.5 KB of base64); SPF records are meant to fit in one
# 512-octet UDP answer (RFC 7208 §3.4). Longer records are hostile or broken: permerror.
MAX_TXT_RECORD_OCTETS = 4096
# Upper bound for records in one answer set. RFC 7208 §4.6.4 already caps MX at 10 and PTR at
# 10 for SPF; 64 leaves room for busy TXT sets (verification tokens) while bounding work.
MAX_RECORDS = 64
# RFC 1034 §3.6.2 allows chains of CNAMEs; dnspython follows at most 16 links inside a response
# and raises ChainTooLong beyond, which we report as permerror (a loop never resolves).


class DnsStatus(enum.StrEnum):
    """Outcome of one lookup, in the vocabulary of RFC 7208 §5 / RFC 6376 §6.1.2."""

    OK = "ok"
    NXDOMAIN = "nxdomain"  # RFC 1035 RCODE 3: the name does not exist
    NODATA = "nodata"  # the name exists but has no record of this type (RFC 2308 §2.2)
    TEMPERROR = "temperror"  # timeout, SERVFAIL, REFUSED, malformed reply: retry later
    PERMERROR = "permerror"  # data that can never be valid (loop, oversized, bad name)


@dataclass(frozen=True)
class DnsAnswer:
    """Result of one lookup: a status, the records (for OK), a TTL and a readable error."""

    name: str
    rdtype: str
    status: DnsStatus
    rdatas: tuple[dns.rdata.Rdata, ...] = ()
    ttl: int = 0
    error: str = ""
    from_cache: bool = False
    # RFC 4035 §3.2.3 / RFC 6840 §5.7: the validating resolver set the AD bit, so the answer (or
    # the denial of existence) is DNSSEC-"secure". Only meaningful when the configured resolver is
    # a local validating one (RFC 7672 §8: DANE trusts the AD bit of a resolver on a trusted path).
    authenticated: bool = False
    # The owner name at the end of any CNAME chain (RFC 7672 §2.2.2 looks up TLSA there first);
    # "" when the answer had no chain to follow or is not OK.
    canonical_name: str = ""

    @property
    def ok(self) -> bool:
        return self.status is DnsStatus.OK

    @property
    def void(self) -> bool:
        """RFC 7208 §4.6.4: NXDOMAIN or an empty answer is a "void lookup"."""
        return self.status in (DnsStatus.NXDOMAIN, DnsStatus.NODATA)

    @property
    def failed(self) -> bool:
        return self.status in (DnsStatus.TEMPERROR, DnsStatus.PERMERROR)

    def txt_strings(self) -> tuple[tuple[bytes, ...], ...]:
        """Each TXT record as its list of character-strings."""
        return tuple(tuple(r.strings) for r in self.rdatas if r.rdtype == dns.rdatatype.TXT)  # type: ignore[attr-defined]

    def txt(self) -> tuple[bytes, ...]:
        """Each TXT record with its strings concatenated without separator
        (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
        return tuple(b"".join(strings) for strings in self.txt_strings())

    def addresses(self) -> tuple[str, ...]:
        return tuple(
            str(r.address)  # type: ignore[attr-defined]
            for r in self.rdatas
            if r.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        )

    def mx(self) -> tuple[tuple[int, str], ...]:
        """(preference, exchange) pairs, exchange without the trailing dot."""
        return tuple(
            (int(r.preference), r.exchange.to_text(omit_final_dot=True).lower())  # type: ignore[attr-defined]
            for r in self.rdatas
            if r.rdtype == dns.rdatatype.MX
        )

    def targets(self) -> tuple[str, ...]:
        """PTR / CNAME / NS targets without the trailing dot."""
        return tuple(
            r.target.to_text(omit_final_dot=True).lower()  # type: ignore[attr-defined]
            for r in self.rdatas
            if r.rdtype in (dns.rdatatype.PTR, dns.rdatatype.CNAME, dns.rdatatype.NS)
        )


class DnsLookupFailed(Exception):
    """Raised only by the sync shims, to hand a temperror/permerror to pyspf's own exception types."""

    def __init__(self, answer: DnsAnswer) -> None:
        super().__init__(f"{answer.status.value}: {answer.name}/{answer.rdtype}: {answer.error}")
        self.answer = answer


@dataclass(frozen=True)
class ResolverConfig:
    """Where and how to ask. Times are seconds."""

    nameservers: tuple[str, ...] = ("127.0.0.1",)
    port: int = 53
    timeout: float = 2.0  # one attempt at one server
    lifetime: float = 5.0  # one lookup, retries and TCP fallback included
    cache_entries: int = 4096
    max_ttl: int = 3600  # cap for positive answers (a hostile TTL of 2^31 must not pin data)
    max_negative_ttl: int = 300  # cap for NXDOMAIN/NODATA, RFC 2308 §5 recommends 1–3 hours max

    @classmethod
    def from_system(cls, **overrides: object) -> ResolverConfig:
        """Nameservers from /etc/resolv.conf (via dnspython), other fields from `overrides`.

        Without a usable resolv.conf the default is 127.0.0.1:53 (a local validating resolver,
        which is what a mail server should use anyway).
        """
        try:
            system = dns.resolver.Resolver(configure=True)
            servers, port = tuple(str(ns) for ns in system.nameservers), int(system.port)
        except (dns.exception.DNSException, OSError):
            servers, port = (), 53
        base = cls(nameservers=servers or ("127.0.0.1",), port=port)
        return replace(base, **overrides)  # type: ignore[arg-type]


@dataclass
class ResolverStats:
    """Counters, for tests and metrics."""

    queries: int = 0  # lookups that went to the network
    cache_hits: int = 0
    temperrors: int = 0
    permerrors: int = 0


_CacheKey = tuple[str, str]


class _TtlCache:
    """A small LRU cache whose entries expire after their DNS TTL; thread-safe."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._max = max_entries
        self._clock = clock
        self._data: OrderedDict[_CacheKey, tuple[float, DnsAnswer]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _CacheKey) -> DnsAnswer | None:
        now = self._clock()
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            expires, answer = item
            if expires <= now:
                del self._data[key]
                return None
            self._data.move_to_end(key)
        # Hand out the remaining TTL so callers that re-publish it do not extend it.
        return replace(answer, ttl=max(0, int(expires - now)), from_cache=True)

    def put(self, key: _CacheKey, answer: DnsAnswer, ttl: int) -> None:
        if ttl <= 0 or self._max <= 0:
            return
        with self._lock:
            self._data[key] = (self._clock() + ttl, answer)
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


def _negative_ttl(response: dns.message.Message | None, cap: int) -> int:
    """RFC 2308 §5: a negative answer is cached for min(SOA TTL, SOA MINIMUM); no SOA, no caching."""
    if response is None:
        return 0
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset) > 0:
            soa = rrset[0]
            return max(0, min(int(rrset.ttl), int(soa.minimum), cap))
    return 0


def _check_records(name: str, rdtype: str, rrset: dns.rrset.RRset) -> str:
    """Why the record set is unusable, or "" when it is fine."""
    if len(rrset) > MAX_RECORDS:
        return f"{len(rrset)} records, more than {MAX_RECORDS}"
    if rdtype == "TXT":
        for rdata in rrset:
            size = sum(len(s) for s in rdata.strings)
            if size > MAX_TXT_RECORD_OCTETS:
                return f"TXT record of {size} octets, more than {MAX_TXT_RECORD_OCTETS}"
    return ""


# Query names parsed and kept (`_cached_name`), least recently used out; longer texts, which
# cannot be names (RFC 1035 §2.3.4), are parsed each time and not kept.
CACHED_NAMES = 4096
CACHED_NAME_CHARS = 255


@functools.lru_cache(maxsize=CACHED_NAMES)
def _cached_name(name: str) -> tuple[dns.name.Name | str, str]:
    """`_qname`, and the cache key of an askable name, remembered: every lookup, cached or not,
    made both (dnspython parses and prints names in Python, ~30 µs a lookup), and a delivery
    asks the same few names message after message. Names are immutable; at most CACHED_NAMES kept."""
    qname = _qname(name)
    return qname, "" if isinstance(qname, str) else qname.to_text(omit_final_dot=True).lower()


def _qname(name: str) -> dns.name.Name | str:
    """The absolute query name for `name`, or the reason it cannot be asked for."""
    try:
        text = to_ascii_domain(name) if not name.isascii() else name.strip().rstrip(".")
    except DomainError as exc:
        return str(exc)
    if not text or text.startswith(".") or ".." in text or any(ch.isspace() for ch in text):
        return "not a domain name"
    try:
        return dns.name.from_text(text)
    except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
        return f"not a domain name: {exc}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class Resolver:
    """Async DNS lookups with a TTL cache, answer checks and blocking shims for pyspf/dkimpy."""

    def __init__(
        self, config: ResolverConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config or ResolverConfig()
        self._cache = _TtlCache(self._config.cache_entries, clock)
        self.stats = ResolverStats()
        self._stats_lock = threading.Lock()
        self._async = dns.asyncresolver.Resolver(configure=False)
        self._sync = dns.resolver.Resolver(configure=False)
        for r in (self._async, self._sync):
            r.nameservers = list(self._config.nameservers)
            r.port = self._config.port
            r.timeout = self._config.timeout
            r.lifetime = self._config.lifetime
            r.cache = None  # our own cache, shared by both paths
            r.use_edns(0, 0, 1232)  # DNS flag day 2020: 1232-octet UDP payload, TCP beyond
            # RFC 6840 §5.7: setting AD in the query asks a validating resolver to report, through
            # AD in the reply, whether the answer validated; no DO bit, so no RRSIGs are sent.
            r.flags = dns.flags.RD | dns.flags.AD

    @property
    def config(self) -> ResolverConfig:
        return self._config

    def clear_cache(self) -> None:
        self._cache.clear()

    def cache_size(self) -> int:
        return len(self._cache)

    # -- shared front and back halves -------------------------------------------------

    def _front(self, name: str, rdtype: str) -> tuple[_CacheKey, dns.name.Name | None, DnsAnswer | None]:
        key, qname, ready = self._known(name, rdtype)
        if ready is None:
            with self._stats_lock:
                self.stats.queries += 1
        return key, qname, ready

    def _known(self, name: str, rdtype: str) -> tuple[_CacheKey, dns.name.Name | None, DnsAnswer | None]:
        """The answer known without asking: the cache's, or the refusal of a name that cannot be asked."""
        rdtype = rdtype.upper()
        if rdtype not in SUPPORTED_TYPES:
            raise ValueError(f"unsupported record type {rdtype!r}")
        qname, text = _cached_name(name) if len(name) <= CACHED_NAME_CHARS else (_qname(name), "")
        if isinstance(qname, str):
            return (
                (name, rdtype),
                None,
                self._count(DnsAnswer(name, rdtype, DnsStatus.PERMERROR, error=qname)),
            )
        key = (text or qname.to_text(omit_final_dot=True).lower(), rdtype)
        cached = self._cache.get(key)
        if cached is not None:
            with self._stats_lock:
                self.stats.cache_hits += 1
        return key, qname, cached

    def _count(self, answer: DnsAnswer) -> DnsAnswer:
        if answer.status is DnsStatus.TEMPERROR:
            with self._stats_lock:
                self.stats.temperrors += 1
        elif answer.status is DnsStatus.PERMERROR:
            with self._stats_lock:
                self.stats.permerrors += 1
        return answer

    def _from_answer(self, key: _CacheKey, ans: dns.resolver.Answer) -> DnsAnswer:
        name, rdtype = key
        secure = ans.response is not None and bool(ans.response.flags & dns.flags.AD)
        if ans.rrset is None or len(ans.rrset) == 0:
            answer = DnsAnswer(name, rdtype, DnsStatus.NODATA, authenticated=secure)
            self._cache.put(key, answer, _negative_ttl(ans.response, self._config.max_negative_ttl))
            return answer
        problem = _check_records(name, rdtype, ans.rrset)
        if problem:
            return self._count(DnsAnswer(name, rdtype, DnsStatus.PERMERROR, error=problem))
        ttl = min(int(ans.rrset.ttl), self._config.max_ttl)
        canonical = ans.canonical_name.to_text(omit_final_dot=True).lower()
        answer = DnsAnswer(
            name,
            rdtype,
            DnsStatus.OK,
            tuple(ans.rrset),
            ttl,
            authenticated=secure,
            canonical_name=canonical if canonical != name else "",
        )
        self._cache.put(key, answer, ttl)
        return answer

    def _from_error(self, key: _CacheKey, exc: Exception) -> DnsAnswer:
        name, rdtype = key
        if isinstance(exc, dns.resolver.NXDOMAIN):
            response: dns.message.Message | None = None
            responses = exc.kwargs.get("responses") or {}
            if isinstance(responses, dict) and responses:
                first = next(iter(responses.values()))
                if isinstance(first, dns.message.Message):
                    response = first
            secure = response is not None and bool(response.flags & dns.flags.AD)
            answer = DnsAnswer(name, rdtype, DnsStatus.NXDOMAIN, authenticated=secure)
            self._cache.put(key, answer, _negative_ttl(response, self._config.max_negative_ttl))
            return answer
        if isinstance(exc, dns.resolver.NoAnswer):
            # Only with raise_on_no_answer=True, which we do not use; kept for safety.
            return DnsAnswer(name, rdtype, DnsStatus.NODATA)
        if isinstance(exc, dns.message.ChainTooLong):
            return self._count(
                DnsAnswer(
                    name,
                    rdtype,
                    DnsStatus.PERMERROR,
                    error=f"CNAME chain too long or looping: {_describe(exc)}",
                )
            )
        if isinstance(exc, dns.exception.Timeout):
            return self._count(
                DnsAnswer(name, rdtype, DnsStatus.TEMPERROR, error=f"timeout: {_describe(exc)}")
            )
        if isinstance(exc, dns.resolver.NoNameservers):
            errors = exc.kwargs.get("errors") or []
            if any(
                isinstance(e, tuple) and len(e) > 3 and isinstance(e[3], dns.message.ChainTooLong)
                for e in errors
            ):
                # Every server gave a CNAME chain that never ends: the data is broken, not the path.
                return self._count(
                    DnsAnswer(name, rdtype, DnsStatus.PERMERROR, error="CNAME chain too long or looping")
                )
            return self._count(
                DnsAnswer(name, rdtype, DnsStatus.TEMPERROR, error=f"no usable answer: {_describe(exc)}")
            )
        # Anything else (malformed packets that slipped through, YXDOMAIN, OS errors, bugs in
        # the library on hostile input) is a temporary failure: never an exception to callers.
        return self._count(
            DnsAnswer(name, rdtype, DnsStatus.TEMPERROR, error=f"{type(exc).__name__}: {_describe(exc)}")
        )

    # -- async ------------------------------------------------------------------------

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        """Look up `rdtype` records of `name` (A-labels or U-labels); never raises on bad DNS."""
        key, qname, ready = self._front(name, rdtype)
        if ready is not None:
            return ready
        assert qname is not None
        try:
            ans = await self._async.resolve(qname, key[1], raise_on_no_answer=False, search=False)
        except Exception as exc:  # classified, never propagated (module contract)
            return self._from_error(key, exc)
        try:
            return self._from_answer(key, ans)
        except Exception as exc:  # e.g. rdata attribute errors on odd answers
            return self._from_error(key, exc)

    # -- sync shims ------------------------------------------------------------------

    def query_sync(self, name: str, rdtype: str) -> DnsAnswer:
        """Blocking `query` for worker threads (pyspf, dkimpy). Refuses to run on an event loop thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("Resolver.query_sync blocks; call it from a worker thread, not the event loop")
        key, qname, ready = self._front(name, rdtype)
        if ready is not None:
            return ready
        assert qname is not None
        try:
            ans = self._sync.resolve(qname, key[1], raise_on_no_answer=False, search=False)
        except Exception as exc:  # classified, never propagated (module contract)
            return self._from_error(key, exc)
        try:
            return self._from_answer(key, ans)
        except Exception as exc:
            return self._from_error(key, exc)

    def dkim_txt(self, name: bytes, timeout: float = 5.0) -> bytes | None:
        """dkimpy `dnsfunc` contract: the first TXT record's strings joined, or None.

        Raises DnsLookupFailed on temperror/permerror so dkimpy's caller can tell "no key"
        from "could not ask". `timeout` is accepted for the contract; the configured
        lifetime applies.
        """
        del timeout
        answer = self.query_sync(name.decode("ascii", "replace"), "TXT")
        if answer.failed:
            raise DnsLookupFailed(answer)
        records = answer.txt()
        return records[0] if records else None

    def pyspf_lookup(
        self, name: str, qtype: str, strict: object = True, timeout: float = 20.0
    ) -> list[tuple[tuple[str, str], object]]:
        """pyspf `DNSLookup` contract: [((name, qtype), value), ...]; void lookups give [].

        Values: A/AAAA → address text; MX → (preference, exchange); PTR → target; TXT → the
        tuple of character-strings (pyspf joins them). Type 99 (SPF) is obsolete (RFC 7208
        §3.1) and answered with []. Failures raise DnsLookupFailed for the caller to map.
        """
        del strict, timeout
        qtype = qtype.upper()
        if qtype == "SPF":
            return []
        return self._pyspf_values(name, qtype, self.query_sync(name, qtype))

    def pyspf_known(self, name: str, qtype: str) -> list[tuple[tuple[str, str], object]] | None:
        """`pyspf_lookup` from what is known without asking (the cache): None when the network
        would have to be asked. Never blocks, so an SPF check whose answers are all cached runs
        on the event loop without a thread (mailauth.spf)."""
        qtype = qtype.upper()
        if qtype == "SPF":
            return []
        answer = self._known(name, qtype)[2]
        return None if answer is None else self._pyspf_values(name, qtype, answer)

    def _pyspf_values(self, name: str, qtype: str, answer: DnsAnswer) -> list[tuple[tuple[str, str], object]]:
        if answer.failed:
            raise DnsLookupFailed(answer)
        key = (name, qtype)
        values: list[object]
        if qtype in ("A", "AAAA"):
            values = list(answer.addresses())
        elif qtype == "MX":
            values = list(answer.mx())
        elif qtype == "PTR":
            values = list(answer.targets())
        elif qtype == "TXT":
            values = list(answer.txt_strings())
        else:
            values = []
        return [(key, v) for v in values]
