"""Public Suffix List: public suffixes and DMARC organizational domains (RFC 7489 §3.2)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import resources

from .domains import DomainError, to_ascii_domain

# The bundled copy of https://publicsuffix.org/list/public_suffix_list.dat (MPL-2.0); see
# data/README.md for where it came from and how to refresh it.
PSL_RESOURCE = "public_suffix_list.dat"


def _rule_to_ascii(rule: str) -> str | None:
    """One PSL rule (without "!" prefix) as lower-case A-labels; "*" labels are kept."""
    labels = rule.split(".")
    out: list[str] = []
    for label in labels:
        if label == "*":
            out.append(label)
            continue
        try:
            out.append(to_ascii_domain(label) if not label.isascii() else label.lower())
        except DomainError:
            return None
    return ".".join(out)


@dataclass(frozen=True)
class PublicSuffixList:
    """A parsed list: plain rules, wildcard rules ("*.ck") and exception rules ("!www.ck").

    Both the ICANN and the PRIVATE sections are used, as opendmarc and Mox do: a private
    suffix such as `github.io` makes each tenant its own organizational domain, so one
    tenant cannot align with another.
    """

    rules: frozenset[str]
    exceptions: frozenset[str]
    version: str

    @classmethod
    def parse(cls, text: str) -> PublicSuffixList:
        """Parse the PSL file format (https://publicsuffix.org/list/ "Format")."""
        rules: set[str] = set()
        exceptions: set[str] = set()
        version = ""
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("// VERSION:"):
                version = line.removeprefix("// VERSION:").strip()
            # Format: each line is only read up to the first whitespace; "//" starts a comment.
            if not line or line.startswith("//"):
                continue
            token = line.split()[0]
            is_exception = token.startswith("!")
            rule = _rule_to_ascii(token.removeprefix("!"))
            if rule is None:
                continue
            (exceptions if is_exception else rules).add(rule)
        return cls(frozenset(rules), frozenset(exceptions), version)

    def public_suffix_labels(self, labels: list[str]) -> int:
        """How many trailing labels of `labels` form the public suffix (at least 1)."""
        n = len(labels)
        # Algorithm step: an exception rule, if any matches, is the prevailing rule; the
        # public suffix is the rule minus its leftmost label.
        for k in range(n, 0, -1):
            if ".".join(labels[n - k :]) in self.exceptions:
                return k - 1
        # Otherwise the matching rule with the most labels prevails ("*" matches one label).
        for k in range(n, 0, -1):
            suffix = labels[n - k :]
            if ".".join(suffix) in self.rules:
                return k
            if ".".join(["*", *suffix[1:]]) in self.rules:
                return k
        # No rule matches: the implicit default rule "*".
        return 1

    def public_suffix(self, domain: str) -> str:
        """The public suffix of an A-label domain, e.g. `co.uk` for `a.example.co.uk`."""
        labels = domain.lower().rstrip(".").split(".")
        k = self.public_suffix_labels(labels)
        return ".".join(labels[len(labels) - k :])

    def organizational_domain(self, domain: str) -> str:
        """RFC 7489 §3.2: the public suffix plus one more label of `domain`.

        A domain that is itself a public suffix (or shorter) is its own organizational
        domain: there is no "x+1"th label to add.
        """
        labels = domain.lower().rstrip(".").split(".")
        k = self.public_suffix_labels(labels)
        if k >= len(labels):
            return ".".join(labels)
        return ".".join(labels[len(labels) - k - 1 :])


_DEFAULT: list[PublicSuffixList] = []
_DEFAULT_LOCK = threading.Lock()


def default_list() -> PublicSuffixList:
    """The bundled list, parsed once per process (about 20 ms alone). Under a lock: the first
    messages arrive together (ten APPENDs at once in imaptest's stress run), and each of their
    worker threads parsed it again while the others held the GIL, seconds of CPU in all."""
    if not _DEFAULT:
        with _DEFAULT_LOCK:
            if not _DEFAULT:
                text = resources.files(__package__).joinpath("data", PSL_RESOURCE).read_text(encoding="utf-8")
                _DEFAULT.append(PublicSuffixList.parse(text))
    return _DEFAULT[0]


def organizational_domain(domain: str, psl: PublicSuffixList | None = None) -> str:
    """RFC 7489 §3.2 organizational domain of an A-label domain, from the bundled PSL."""
    return (psl or default_list()).organizational_domain(domain)
