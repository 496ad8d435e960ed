"""The failed-login limiter, driven by a fake clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.sasl.ratelimit import (
    DEFAULT_ACCOUNT_POLICY,
    DEFAULT_ADDRESS_POLICY,
    Decision,
    LimitPolicy,
    LoginLimiter,
    address_key,
    network_key,
)


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


POLICY = LimitPolicy(
    delay_after=3, refuse_after=6, window=60.0, cooldown=120.0, base_delay=1.0, max_delay=4.0
)
LOOSE = LimitPolicy(delay_after=100, refuse_after=100, window=60.0, cooldown=1.0)


def limiter(clock: FakeClock, **kwargs: object) -> LoginLimiter:
    kwargs.setdefault("address_policy", POLICY)
    kwargs.setdefault("account_policy", LOOSE)
    return LoginLimiter(clock, **kwargs)  # type: ignore[arg-type]


def test_defaults_are_sane() -> None:
    for policy in (DEFAULT_ADDRESS_POLICY, DEFAULT_ACCOUNT_POLICY):
        assert 0 < policy.delay_after < policy.refuse_after
    assert DEFAULT_ACCOUNT_POLICY.refuse_after > DEFAULT_ADDRESS_POLICY.refuse_after
    LoginLimiter(FakeClock())  # constructible with defaults


def test_delay_then_refuse_then_cooldown() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    seen = []
    for _ in range(6):
        seen.append(lim.check("192.0.2.1"))
        lim.record_failure("192.0.2.1")
        clock.advance(1)
    assert seen == [
        Decision(True),
        Decision(True),
        Decision(True),
        Decision(True, delay=1.0),  # 3 failures: delay starts
        Decision(True, delay=2.0),
        Decision(True, delay=4.0),
    ]
    # the 6th failure started a 120 s cool-down (at t=1005; now t=1006)
    assert lim.check("192.0.2.1") == Decision(False, retry_after=119.0)
    assert lim.check("192.0.2.2") == Decision(True)  # other addresses unaffected
    clock.advance(119)
    assert lim.check("192.0.2.1") == Decision(True)  # cool-down over, counts start afresh


def test_delay_is_capped() -> None:
    clock = FakeClock()
    lim = limiter(clock, address_policy=LimitPolicy(2, 50, 60.0, 10.0, base_delay=1.0, max_delay=3.0))
    for _ in range(10):
        lim.record_failure("192.0.2.1")
    assert lim.check("192.0.2.1") == Decision(True, delay=3.0)


def test_window_slides() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    for _ in range(3):
        lim.record_failure("192.0.2.1")
        clock.advance(25)
    # failures at t=1000, 1025, 1050; now 1075: the first left the 60 s window
    assert lim.check("192.0.2.1") == Decision(True)
    lim.record_failure("192.0.2.1")
    assert lim.check("192.0.2.1") == Decision(True, delay=1.0)
    clock.advance(60)
    assert lim.check("192.0.2.1") == Decision(True)


def test_account_limit_across_addresses() -> None:
    clock = FakeClock()
    lim = limiter(clock, address_policy=LOOSE, account_policy=POLICY)
    for i in range(6):
        lim.record_failure(f"198.51.100.{i}", "alice")
    decision = lim.check("203.0.113.9", "alice")
    assert not decision.allowed and decision.retry_after == 120.0
    assert lim.check("203.0.113.9", "bob") == Decision(True)
    assert lim.check("203.0.113.9", "ALICE").allowed is False  # keys are case-folded
    assert lim.check("203.0.113.9") == Decision(True)  # account not known yet: address only


def test_stricter_answer_wins() -> None:
    clock = FakeClock()
    lim = limiter(clock, address_policy=POLICY, account_policy=POLICY)
    for _ in range(4):
        lim.record_failure("192.0.2.1")
    for _ in range(3):
        lim.record_failure("192.0.2.2", "alice")
    assert lim.check("192.0.2.1", "alice") == Decision(True, delay=2.0)
    for _ in range(2):
        lim.record_failure("192.0.2.1")
    assert not lim.check("192.0.2.1", "alice").allowed


def test_success_exempts_its_network_and_resets_nothing() -> None:
    clock = FakeClock()
    lim = limiter(clock, address_policy=POLICY, account_policy=POLICY)
    for _ in range(4):
        lim.record_failure("192.0.2.1", "alice")
    assert lim.check("192.0.2.9", "alice").delay == 2.0
    lim.record_success("198.51.100.7", "alice")
    # the owner's network (its /24) is exempt from the account's count ...
    assert lim.check("198.51.100.200", "alice") == Decision(True)
    assert lim.known_network("198.51.100.200", "ALICE")
    # ... and a failure from it counts for its address only
    lim.record_failure("198.51.100.8", "alice")
    assert lim.check("192.0.2.9", "alice").delay == 2.0  # still 4 failures for strangers
    # a success does not reset the account: the owner's client logging in every few minutes
    # would otherwise hand a distributed guesser a fresh budget each time
    for _ in range(2):
        lim.record_failure("203.0.113.1", "alice")
    assert not lim.check("203.0.113.50", "alice").allowed
    assert lim.check("198.51.100.9", "alice") == Decision(True)
    assert lim.check("192.0.2.1").delay == 2.0  # the address keeps its record
    clock.advance(31 * 86400)  # the exemption lasts a month
    assert not lim.known_network("198.51.100.9", "alice")


def test_known_networks_are_bounded() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_entries=4)
    for i in range(20):
        lim.record_success(f"10.{i}.0.1", "alice")
        lim.record_success("10.0.0.1", f"user{i}")
    assert lim.tracked_networks() <= 4 * 8
    assert lim.known_network("10.19.0.1", "alice") and not lim.known_network("10.0.0.1", "alice")


def test_network_keys() -> None:
    assert network_key("192.0.2.77") == "192.0.2.0/24"
    assert network_key("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert network_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"


def test_address_keys() -> None:
    assert address_key("192.0.2.1") == "192.0.2.1"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2::9") == address_key("2001:db8:1:2:ffff::1")
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("/run/eventmail.sock") == "/run/eventmail.sock"


def test_ipv6_neighbours_share_a_budget() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    for i in range(6):
        lim.record_failure(f"2001:db8::{i + 1:x}")
    assert not lim.check("2001:db8::ffff").allowed


def test_memory_is_bounded() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_entries=100)
    for i in range(5000):
        lim.record_failure(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", f"user{i}")
    assert lim.tracked() == (100, 100)
    # the most recent keys are the ones kept
    lim2 = limiter(clock, max_entries=2, address_policy=POLICY)
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        for _ in range(3):
            lim2.record_failure(ip)
    assert lim2.check("192.0.2.1") == Decision(True)
    assert lim2.check("192.0.2.3").delay == 1.0


def test_old_entries_are_evicted() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    for i in range(50):
        lim.record_failure(f"192.0.2.{i}", "alice")
    assert lim.tracked() == (50, 1)
    clock.advance(61)
    lim.record_failure("198.51.100.1")
    assert lim.tracked() == (1, 1)
    clock.advance(61)
    lim.record_success("198.51.100.1", "alice")
    assert lim.tracked() == (0, 0)


def test_blocked_entries_outlive_the_window() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    for _ in range(6):
        lim.record_failure("192.0.2.1")
    clock.advance(100)  # past the 60 s window, inside the 120 s cool-down
    lim.record_failure("192.0.2.2")
    assert not lim.check("192.0.2.1").allowed


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay_after": 0, "refuse_after": 5},
        {"delay_after": 6, "refuse_after": 5},
        {"delay_after": 1, "refuse_after": 5, "window": 0.0},
        {"delay_after": 1, "refuse_after": 5, "base_delay": 5.0, "max_delay": 1.0},
    ],
)
def test_policy_validation(kwargs: dict[str, float]) -> None:
    params: dict[str, float] = {"window": 60.0, "cooldown": 60.0}
    params.update(kwargs)
    with pytest.raises(ValueError):
        LimitPolicy(**params)  # type: ignore[arg-type]


def test_max_entries_validation() -> None:
    with pytest.raises(ValueError):
        LoginLimiter(FakeClock(), max_entries=0)


ops = st.lists(
    st.tuples(
        st.sampled_from(["fail", "ok", "check"]),
        st.integers(0, 30),  # address
        st.one_of(st.none(), st.integers(0, 5)),  # account
        st.floats(0, 200),  # time step
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_random_sequences_keep_invariants(sequence: list[tuple[str, int, int | None, float]]) -> None:
    clock = FakeClock()
    lim = limiter(clock, max_entries=8, account_policy=POLICY)
    for op, addr, account, step in sequence:
        clock.advance(step)
        address = f"192.0.2.{addr}"
        name = None if account is None else f"user{account}"
        if op == "fail":
            lim.record_failure(address, name)
        elif op == "ok" and name is not None:
            lim.record_success(address, name)
        decision = lim.check(address, name)
        assert decision.delay >= 0 and decision.retry_after >= 0
        assert decision.delay <= max(POLICY.max_delay, LOOSE.max_delay)
        assert decision.allowed or decision.retry_after <= POLICY.cooldown
        addresses, accounts = lim.tracked()
        assert addresses <= 8 and accounts <= 8
        assert lim.tracked_networks() <= 8 * 8
