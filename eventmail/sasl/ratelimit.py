"""Failed-login limiter per remote address and per account: delay, then refuse for a cool-down.

Pure: the clock is injected and nothing sleeps. sasl.guard asks `check()` before an exchange
and again once the client has named the account, awaits the returned delay (or refuses), and
reports the outcome with `record_failure()` / `record_success()`.

The per-account count is about strangers: a refusal per account would otherwise be a way to
lock its owner out. So the networks an account logged in from successfully (KNOWN_NETWORK_TTL)
are exempt from the account's count and refusal; only the per-address limits apply to them.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Decision", "LimitPolicy", "LoginLimiter", "address_key", "network_key"]


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """Thresholds for one kind of key. Failures count within a sliding `window` (seconds)."""

    delay_after: int  # failures in the window before each further attempt is slowed
    refuse_after: int  # failures in the window that start a cool-down
    window: float
    cooldown: float
    base_delay: float = 1.0  # first delay; doubles per extra failure ...
    max_delay: float = 8.0  # ... up to this, well under client command timeouts (RFC 5321 §4.5.3.2)

    def __post_init__(self) -> None:
        if not 0 < self.delay_after <= self.refuse_after:
            raise ValueError("need 0 < delay_after <= refuse_after")
        if self.window <= 0 or self.cooldown < 0 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("bad durations")


# Per address: 5 failures are typos and a wrong saved password retried by a couple of clients;
# past that each try waits 1, 2, 4, 8 s. 20 failures in 15 min is a guesser: refuse for 15 min.
# With 20 guesses per 15 min an address tries under 2,000 passwords a day.
DEFAULT_ADDRESS_POLICY = LimitPolicy(delay_after=5, refuse_after=20, window=900.0, cooldown=900.0)
# Per account, from networks it has not logged in from: refusing an account would let anyone lock
# its owner out, so the threshold is higher and the cool-down shorter, and the owner's own
# networks are exempt (see the module docstring); it caps distributed guessing at about 50
# guesses per 20 min per account. A success does not reset it: the owner's phone logging in
# every few minutes would otherwise give a botnet a fresh 49 guesses each time.
DEFAULT_ACCOUNT_POLICY = LimitPolicy(delay_after=10, refuse_after=50, window=900.0, cooldown=300.0)
# How long a network an account logged in from stays exempt from the account's count, and how
# many such networks are kept per account: a month covers a user's home, office and phone
# networks between visits; eight is more networks than one person uses in a month.
KNOWN_NETWORK_TTL = 30 * 86400.0
MAX_KNOWN_NETWORKS = 8
# Keys tracked per table. An entry is a deque of at most `refuse_after` floats plus a few fields,
# roughly 1 KiB at the defaults, so 50,000 keys stay under ~50 MiB per table.
DEFAULT_MAX_ENTRIES = 50_000

# IPv6 is keyed by /64: one end site normally gets a whole /64 (RFC 6177 §2 recommends at least a
# /64 per site), so keying single addresses would let one attacker rotate freely.
IPV6_PREFIX = 64


def address_key(address: str) -> str:
    """The key for a remote address: IPv4 as is, IPv4-mapped IPv6 as IPv4, other IPv6 by /64."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # not an IP literal (e.g. a Unix socket path): key as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


# A "network" for the exemption is wider than an address key for IPv4: a home or office gets a
# new address from its provider's pool now and then, most often within the same /24. For IPv6
# the /64 of one site (RFC 6177 §2) is already the network.
IPV4_NETWORK_PREFIX = 24


def network_key(address: str) -> str:
    """The network of a remote address whose successful logins exempt it from an account's count."""
    key = address_key(address)
    try:
        ip = ipaddress.ip_address(key)
    except ValueError:
        return key  # an IPv6 /64 already, or not an IP literal
    return str(ipaddress.IPv4Network((ip, IPV4_NETWORK_PREFIX), strict=False))


@dataclass(frozen=True, slots=True)
class Decision:
    """`allowed=False`: refuse now (retry_after seconds left). Otherwise wait `delay` seconds first."""

    allowed: bool
    delay: float = 0.0
    retry_after: float = 0.0


@dataclass(slots=True)
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float = 0.0
    touched: float = 0.0


class _Table:
    """Failure history per key, least recently touched first, bounded by `max_entries`."""

    def __init__(self, policy: LimitPolicy, max_entries: int) -> None:
        self.policy = policy
        self.max_entries = max_entries
        self.entries: OrderedDict[str, _Entry] = OrderedDict()

    def _expired(self, entry: _Entry, now: float) -> bool:
        return entry.blocked_until <= now and entry.touched + self.policy.window <= now

    def _prune(self, entry: _Entry, now: float) -> None:
        while entry.failures and entry.failures[0] + self.policy.window <= now:
            entry.failures.popleft()

    def evict(self, now: float) -> None:
        # Entries are in touch order, so the expired ones are at the front (amortised O(1)).
        while self.entries:
            key, entry = next(iter(self.entries.items()))
            if not self._expired(entry, now) and len(self.entries) <= self.max_entries:
                break
            del self.entries[key]  # expired, or the oldest when over the bound

    def decide(self, key: str, now: float) -> Decision:
        entry = self.entries.get(key)
        if entry is None:
            return Decision(True)
        if entry.blocked_until > now:
            return Decision(False, retry_after=entry.blocked_until - now)
        self._prune(entry, now)
        over = len(entry.failures) - self.policy.delay_after
        if over < 0:
            return Decision(True)
        return Decision(True, delay=min(self.policy.max_delay, self.policy.base_delay * 2.0**over))

    def fail(self, key: str, now: float) -> None:
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = _Entry()
        else:
            self.entries.move_to_end(key)
        entry.touched = now
        self._prune(entry, now)
        entry.failures.append(now)
        if len(entry.failures) >= self.policy.refuse_after:
            entry.blocked_until = now + self.policy.cooldown
            entry.failures.clear()  # the cool-down is the punishment; start afresh after it
        self.evict(now)

    def reset(self, key: str) -> None:
        self.entries.pop(key, None)


class LoginLimiter:
    """Counts failed logins per remote address and per account (see DEFAULT_*_POLICY)."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        address_policy: LimitPolicy = DEFAULT_ADDRESS_POLICY,
        account_policy: LimitPolicy = DEFAULT_ACCOUNT_POLICY,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        known_network_ttl: float = KNOWN_NETWORK_TTL,
    ) -> None:
        """`clock` returns seconds on a monotonic scale (time.monotonic in production)."""
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._clock = clock
        self._addresses = _Table(address_policy, max_entries)
        self._accounts = _Table(account_policy, max_entries)
        self._max_entries = max_entries
        self._known_ttl = known_network_ttl
        # account key -> {network: time of the last success from it}, least recently used first
        self._known: OrderedDict[str, OrderedDict[str, float]] = OrderedDict()

    def check(self, address: str, account: str | None = None) -> Decision:
        """May a login from `address` (for `account`, if known yet) go ahead, and after what delay?

        The stricter of the two answers wins: a refusal over a delay, the longer delay. The
        account's answer does not apply to a network the account recently logged in from.
        """
        now = self._clock()
        decisions = [self._addresses.decide(address_key(address), now)]
        if account is not None and not self.known_network(address, account):
            decisions.append(self._accounts.decide(_account_key(account), now))
        refused = [d for d in decisions if not d.allowed]
        if refused:
            return Decision(False, retry_after=max(d.retry_after for d in refused))
        return Decision(True, delay=max(d.delay for d in decisions))

    def check_account(self, address: str, account: str) -> Decision:
        """The account's answer alone (the address was checked before the exchange began)."""
        if self.known_network(address, account):
            return Decision(True)
        return self._accounts.decide(_account_key(account), self._clock())

    def known_network(self, address: str, account: str) -> bool:
        """Did `account` log in successfully from the network of `address` recently?"""
        networks = self._known.get(_account_key(account))
        seen = networks.get(network_key(address)) if networks is not None else None
        return seen is not None and seen + self._known_ttl > self._clock()

    def record_failure(self, address: str, account: str | None = None) -> None:
        """Count one failed exchange (any Failure, including cancellation, counts). A failure
        from one of the account's own networks counts for the address only."""
        now = self._clock()
        self._addresses.fail(address_key(address), now)
        if account is not None and not self.known_network(address, account):
            self._accounts.fail(_account_key(account), now)

    def record_success(self, address: str, account: str) -> None:
        """Remember the network the account logged in from. Neither count is cleared: not the
        address's, so one valid account does not let an address wipe its record while it guesses
        at others; not the account's, see DEFAULT_ACCOUNT_POLICY."""
        now = self._clock()
        key = _account_key(account)
        networks = self._known.get(key)
        if networks is None:
            networks = self._known[key] = OrderedDict()
        else:
            self._known.move_to_end(key)
        net = network_key(address)
        networks.pop(net, None)
        networks[net] = now
        while len(networks) > MAX_KNOWN_NETWORKS:
            networks.popitem(last=False)
        while len(self._known) > self._max_entries:
            self._known.popitem(last=False)
        self._addresses.evict(now)
        self._accounts.evict(now)

    def tracked(self) -> tuple[int, int]:
        """(address keys, account keys) currently held: for metrics and tests."""
        return len(self._addresses.entries), len(self._accounts.entries)

    def tracked_networks(self) -> int:
        """Known (account, network) pairs held: for metrics and tests."""
        return sum(len(n) for n in self._known.values())


def _account_key(account: str) -> str:
    # Case-folded so "Bob" and "bob" share a budget even if lookup tells them apart.
    return account.casefold()
