"""Tests for eventmail.mailauth.psl: the Public Suffix List's own test vectors, and RFC 7489 §3.2 cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventmail.mailauth.domains import DomainError, to_ascii_domain
from eventmail.mailauth.psl import PublicSuffixList, default_list, organizational_domain

from .conftest import count_name_parses

# checkPublicSuffix(domain, registrable) vectors from the PSL project's test_psl.txt
# (public domain, CC0), as shipped in publicsuffixlist 1.1.2.20261023.
VECTORS: list[tuple[str | None, str | None]] = [
    (None, None),
    ("COM", None),
    ("example.COM", "example.com"),
    ("WwW.example.COM", "example.com"),
    (".com", None),
    (".example", None),
    (".example.com", None),
    (".example.example", None),
    ("example", None),
    ("example.example", "example.example"),
    ("b.example.example", "example.example"),
    ("a.b.example.example", "example.example"),
    ("biz", None),
    ("domain.biz", "domain.biz"),
    ("b.domain.biz", "domain.biz"),
    ("a.b.domain.biz", "domain.biz"),
    ("com", None),
    ("example.com", "example.com"),
    ("b.example.com", "example.com"),
    ("a.b.example.com", "example.com"),
    ("uk.com", None),
    ("example.uk.com", "example.uk.com"),
    ("b.example.uk.com", "example.uk.com"),
    ("a.b.example.uk.com", "example.uk.com"),
    ("test.ac", "test.ac"),
    ("mm", None),
    ("c.mm", None),
    ("b.c.mm", "b.c.mm"),
    ("a.b.c.mm", "b.c.mm"),
    ("jp", None),
    ("test.jp", "test.jp"),
    ("www.test.jp", "test.jp"),
    ("ac.jp", None),
    ("test.ac.jp", "test.ac.jp"),
    ("www.test.ac.jp", "test.ac.jp"),
    ("kyoto.jp", None),
    ("test.kyoto.jp", "test.kyoto.jp"),
    ("ide.kyoto.jp", None),
    ("b.ide.kyoto.jp", "b.ide.kyoto.jp"),
    ("a.b.ide.kyoto.jp", "b.ide.kyoto.jp"),
    ("c.kobe.jp", None),
    ("b.c.kobe.jp", "b.c.kobe.jp"),
    ("a.b.c.kobe.jp", "b.c.kobe.jp"),
    ("city.kobe.jp", "city.kobe.jp"),
    ("www.city.kobe.jp", "city.kobe.jp"),
    ("ck", None),
    ("test.ck", None),
    ("b.test.ck", "b.test.ck"),
    ("a.b.test.ck", "b.test.ck"),
    ("www.ck", "www.ck"),
    ("www.www.ck", "www.ck"),
    ("us", None),
    ("test.us", "test.us"),
    ("www.test.us", "test.us"),
    ("ak.us", None),
    ("test.ak.us", "test.ak.us"),
    ("www.test.ak.us", "test.ak.us"),
    ("k12.ak.us", None),
    ("test.k12.ak.us", "test.k12.ak.us"),
    ("www.test.k12.ak.us", "test.k12.ak.us"),
    ("食狮.com.cn", "食狮.com.cn"),
    ("食狮.公司.cn", "食狮.公司.cn"),
    ("www.食狮.公司.cn", "食狮.公司.cn"),
    ("shishi.公司.cn", "shishi.公司.cn"),
    ("公司.cn", None),
    ("食狮.中国", "食狮.中国"),
    ("www.食狮.中国", "食狮.中国"),
    ("shishi.中国", "shishi.中国"),
    ("中国", None),
    ("xn--85x722f.com.cn", "xn--85x722f.com.cn"),
    ("xn--85x722f.xn--55qx5d.cn", "xn--85x722f.xn--55qx5d.cn"),
    ("www.xn--85x722f.xn--55qx5d.cn", "xn--85x722f.xn--55qx5d.cn"),
    ("shishi.xn--55qx5d.cn", "shishi.xn--55qx5d.cn"),
    ("xn--55qx5d.cn", None),
    ("xn--85x722f.xn--fiqs8s", "xn--85x722f.xn--fiqs8s"),
    ("www.xn--85x722f.xn--fiqs8s", "xn--85x722f.xn--fiqs8s"),
    ("shishi.xn--fiqs8s", "shishi.xn--fiqs8s"),
    ("xn--fiqs8s", None),
]


def registrable(domain: str | None) -> str | None:
    """The checkPublicSuffix contract on top of our API (None for suffixes and bad input)."""
    if domain is None or domain.startswith("."):
        return None
    try:
        ascii_domain = to_ascii_domain(domain)
    except DomainError:
        return None
    psl = default_list()
    labels = ascii_domain.split(".")
    if psl.public_suffix_labels(labels) >= len(labels):
        return None
    return psl.organizational_domain(ascii_domain)


@pytest.mark.parametrize(("domain", "expected"), VECTORS)
def test_psl_vectors(domain: str | None, expected: str | None) -> None:
    want = to_ascii_domain(expected) if expected is not None else None
    assert registrable(domain) == want


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("a.b.example.co.uk", "example.co.uk"),
        ("example.co.uk", "example.co.uk"),
        ("co.uk", "co.uk"),  # a public suffix is its own organizational domain
        ("mail.dmarc.test", "dmarc.test"),  # unlisted TLD: the default rule "*"
        ("user.github.io", "user.github.io"),  # PRIVATE section is used
        ("a.b.c.kawasaki.jp", "b.c.kawasaki.jp"),  # wildcard *.kawasaki.jp
        ("www.city.kawasaki.jp", "city.kawasaki.jp"),  # exception !city.kawasaki.jp
        ("xn--bcher-kva.test", "xn--bcher-kva.test"),
    ],
)
def test_organizational_domain(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


def test_bundled_list_has_a_version() -> None:
    psl = default_list()
    assert psl.version.startswith("20") and len(psl.rules) > 5000 and psl.exceptions


def test_parse_small_list() -> None:
    psl = PublicSuffixList.parse("// c\nuk\nco.uk\n*.ck\n!www.ck\n公司.cn   trailing words ignored\n")
    assert psl.organizational_domain("x.y.co.uk") == "y.co.uk"
    assert psl.organizational_domain("a.b.ck") == "a.b.ck"
    assert psl.organizational_domain("a.www.ck") == "www.ck"
    assert psl.public_suffix("x.xn--55qx5d.cn") == "xn--55qx5d.cn"


@given(st.lists(st.from_regex(r"[a-z0-9*!-]{1,10}", fullmatch=True), min_size=1, max_size=6))
def test_org_domain_is_a_suffix_of_the_domain(labels: list[str]) -> None:
    domain = ".".join(labels)
    org = organizational_domain(domain)
    assert domain == org or domain.endswith("." + org)
    assert organizational_domain(org) == org


def test_the_bundled_list_is_parsed_once_when_asked_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first messages arrive together, each junk-feature thread asking for the list."""
    import threading

    from eventmail.mailauth import psl as psl_mod

    monkeypatch.setattr(psl_mod, "_DEFAULT", [])
    parses: list[int] = []
    real = PublicSuffixList.parse.__func__  # type: ignore[attr-defined]

    def counting(cls: type[PublicSuffixList], text: str) -> PublicSuffixList:
        parses.append(1)
        return real(cls, text)  # type: ignore[no-any-return]

    monkeypatch.setattr(PublicSuffixList, "parse", classmethod(counting))
    start = threading.Barrier(6)
    got: list[PublicSuffixList] = []

    def ask() -> None:
        start.wait()
        got.append(default_list())

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(parses) == 1 and len(got) == 6 and all(g is got[0] for g in got)


def test_a_domain_is_converted_once_and_a_bad_one_is_refused_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivery converts the same few domains many times (SPF, DKIM, DMARC, the junk features):
    dnspython converts each text once; a text that is no domain raises each time it is asked."""
    from eventmail.mailauth import domains

    calls = count_name_parses(monkeypatch)
    name = "Once.Converted-Twice-Asked.test"
    assert to_ascii_domain(name) == to_ascii_domain(name) == "once.converted-twice-asked.test"
    assert calls == [name]
    for _ in range(2):
        with pytest.raises(DomainError):
            to_ascii_domain("bad..converted.test")
    # Texts longer than any name are converted (and refused) without being kept.
    with pytest.raises(DomainError):
        to_ascii_domain("a" * (domains.MAX_NAME_CHARS + 5))
    assert domains._cached.cache_info().currsize <= domains.CACHED_DOMAINS
