"""Property tests for the MTA-STS policy parser, the TXT record parser and the mx pattern matcher (RFC 8461)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventmail.smtp.mtasts import (
    MAX_AGE_LIMIT,
    CachedPolicy,
    PolicyCache,
    StsError,
    StsPolicy,
    mx_matches,
    parse_policy,
    parse_record,
    select_record,
    valid_mx_pattern,
)

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
domain = st.lists(label, min_size=2, max_size=4).map(".".join)
pattern = st.one_of(domain, domain.map(lambda d: "*." + d))
mode = st.sampled_from(["enforce", "testing", "none"])
policies = st.builds(
    StsPolicy,
    mode=mode,
    max_age=st.integers(0, MAX_AGE_LIMIT),
    mx=st.lists(pattern, min_size=1, max_size=5, unique=True).map(tuple),
)


def _recase(text: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flips[i % len(flips)] else c for i, c in enumerate(text)) if flips else text


@settings(max_examples=150, deadline=None)
@given(
    policies,
    st.sampled_from(["\r\n", "\n"]),
    st.sampled_from(["", " ", "\t", "  "]),
    st.lists(st.booleans(), max_size=8),
    st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True), st.from_regex(r"[!-~]{1,20}", fullmatch=True)), max_size=3),
    st.randoms(use_true_random=False),
)
def test_rendered_policies_parse_back(
    policy: StsPolicy, eol: str, ws: str, flips: list[bool], extensions: list[tuple[str, str]], rnd: object
) -> None:
    lines = [
        f"{_recase('version', flips)}{ws}:{ws}STSv1",
        f"mode:{ws}{policy.mode}",
        *(f"mx{ws}: {m}" for m in policy.mx),
        f"max_age: {policy.max_age}{ws}",
    ]
    lines += [f"{k}: {v}" for k, v in extensions if k.lower() not in ("version", "mode", "mx", "max_age")]
    rnd.shuffle(lines)  # type: ignore[attr-defined]
    body = eol.join(lines) + eol
    parsed = parse_policy(body.encode())
    # mx order follows the file; it carries no meaning (RFC 8461 §4.1 matches any pattern)
    assert (parsed.mode, parsed.max_age, sorted(parsed.mx)) == (policy.mode, policy.max_age, sorted(policy.mx))
    assert parse_policy(policy.render().encode()) == policy


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_any_input_parses_to_a_valid_policy_or_raises_sts_error(body: bytes) -> None:
    try:
        policy = parse_policy(body)
    except StsError:
        return
    assert policy.mode in ("enforce", "testing", "none")
    assert 0 <= policy.max_age <= MAX_AGE_LIMIT
    assert all(valid_mx_pattern(m) for m in policy.mx)
    assert policy.mx or policy.mode == "none"


@settings(max_examples=200, deadline=None)
@given(policies, st.sampled_from(["version: STSv1", "mode: enforce", "max_age: 5"]))
def test_a_repeated_single_field_is_refused(policy: StsPolicy, extra: str) -> None:
    with pytest.raises(StsError):
        parse_policy((policy.render() + extra + "\r\n").encode())


@settings(max_examples=100, deadline=None)
@given(policies, st.integers(MAX_AGE_LIMIT + 1, 9_999_999_999))
def test_max_age_above_the_limit_is_refused(policy: StsPolicy, age: int) -> None:
    text = policy.render().replace(f"max_age: {policy.max_age}", f"max_age: {age}")
    with pytest.raises(StsError):
        parse_policy(text.encode())


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"version: STSv1\nmode: enforce\nmax_age: 10\n",  # enforce without mx
        b"version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 10\n",
        b"version: STSv1\nmode: strict\nmx: a.b\nmax_age: 10\n",
        b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n",
        b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 12345678901\n",
        b"version: STSv1\nmode: enforce\nmx: *.*.b\nmax_age: 10\n",
        b"version: STSv1\nmode: enforce\nmx: a*.b.c\nmax_age: 10\n",
        b"version: STSv1\nmode: enforce\nmx: b\xc3\xbccher.de\nmax_age: 10\n",
        b"version: STSv1\n\nmode: enforce\nmx: a.b\nmax_age: 10\n",  # blank line inside
        b"version STSv1\nmode: enforce\nmx: a.b\nmax_age: 10\n",
        b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 10\nbad key: x\n",
        b"\xff\xfe",
    ],
)
def test_nonconforming_policies_are_refused(body: bytes) -> None:
    with pytest.raises(StsError):
        parse_policy(body)


def test_mode_none_may_omit_mx_and_unknown_fields_are_ignored() -> None:
    assert parse_policy(b"version: STSv1\nmode: none\nmax_age: 0\nfoo_bar: baz\n\n\n") == StsPolicy("none", 0, ())


@settings(max_examples=300, deadline=None)
@given(label, label, domain)
def test_wildcard_matches_exactly_one_leftmost_label(first: str, second: str, base: str) -> None:
    assert mx_matches("*." + base, f"{first}.{base}")
    assert mx_matches("*." + base, f"{first}.{base}.".upper())
    assert not mx_matches("*." + base, base)
    assert not mx_matches("*." + base, f"{second}.{first}.{base}")
    assert not mx_matches("*." + base, f"{first}x{base}")


@settings(max_examples=300, deadline=None)
@given(domain, domain)
def test_exact_patterns_match_only_the_same_name(p: str, host: str) -> None:
    assert mx_matches(p, p.upper() + ".")
    assert mx_matches(p, host) == (p == host)
    assert not mx_matches(p, "x." + p)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_record_parser_never_raises_anything_else(text: str) -> None:
    try:
        record = parse_record(text)
    except StsError:
        return
    assert 1 <= len(record.id) <= 32 and record.id.isalnum()


def test_record_examples() -> None:
    assert parse_record("v=STSv1; id=20160831085700Z;").id == "20160831085700Z"
    assert parse_record("v=STSv1;id=abc ; ext=x").id == "abc"
    for bad in ("v=STSv1; id=", "id=1; v=STSv1", "v=STSv1; id=a-b", "v=STSv1; id=1; id=2", "v=STSv2; id=1"):
        with pytest.raises(StsError):
            parse_record(bad)
    assert select_record((b"something else", b"v=STSv1; id=x1")).id == "x1"
    with pytest.raises(StsError):
        select_record((b"v=STSv1; id=a", b"v=STSv1; id=b"))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(domain, policies, st.floats(0, 2e9)), max_size=5))
def test_cache_round_trips_through_json(items: list[tuple[str, StsPolicy, float]]) -> None:
    cache = PolicyCache()
    for d, policy, when in items:
        cache = cache.put(CachedPolicy(d, "id1", policy, when))
    assert PolicyCache.from_json(cache.to_json()) == cache
