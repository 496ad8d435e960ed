"""MTA-STS without I/O: the TXT record, the policy file, mx patterns and the policy cache as a value (RFC 8461).

The cache is a pure, serialisable value (`PolicyCache`). The destination policy returns the entry
it fetched (`CachedPolicy`) beside its plan; the queue records that entry as an event and folds
it into its cache, so a replay of the queue stream rebuilds the same cache and never re-fetches
(DESIGN "decide once, record the decision").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

StsMode = Literal["enforce", "testing", "none"]

# RFC 8461 §3.2: max_age is at most 31557600 seconds (about a year).
MAX_AGE_LIMIT = 31_557_600
# Bound on the policy body. RFC 8461 §3.3 leaves limits on the fetch to the sender; 64 KiB is far
# above any real policy (a few hundred octets) and keeps a hostile server from feeding us more.
MAX_POLICY_BYTES = 64 * 1024

# RFC 8461 §3.1: sts-id = 1*32(ALPHA / DIGIT).
_ID_RE = re.compile(r"[A-Za-z0-9]{1,32}")
# RFC 8461 §3.1/§3.2: extension names: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".").
_EXT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}")
# RFC 8461 §3.1: sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E), no ";" or "=" or spaces.
_TXT_EXT_VALUE_RE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
# RFC 5321 §4.1.2 sub-domain: Let-dig [Ldh-str].
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_WSP = " \t"


class StsError(ValueError):
    """A TXT record or policy file that does not follow RFC 8461; the domain then has no usable policy."""


@dataclass(frozen=True)
class StsRecord:
    """The `_mta-sts` TXT record: only its id matters to a sender (RFC 8461 §3.1)."""

    id: str


def parse_record(txt: str) -> StsRecord:
    """One TXT record, e.g. `v=STSv1; id=20160831085700Z;` (RFC 8461 §3.1)."""
    fields = [f.strip(_WSP) for f in txt.split(";")]
    if fields and fields[-1] == "":
        fields.pop()  # the trailing ";" is optional
    if not fields or fields[0] != "v=STSv1":
        # RFC 8461 §3.1: "v" MUST be the first field and is exactly "STSv1".
        raise StsError("record does not start with v=STSv1")
    ids: list[str] = []
    for field in fields[1:]:
        key, eq, value = field.partition("=")
        if not eq:
            raise StsError(f"field without '=': {field!r}")
        if key == "id":
            if not _ID_RE.fullmatch(value):
                raise StsError(f"bad id {value!r}")
            ids.append(value)
        elif not _EXT_NAME_RE.fullmatch(key) or not _TXT_EXT_VALUE_RE.fullmatch(value):
            raise StsError(f"bad extension field {field!r}")
    if len(ids) != 1:
        raise StsError("record needs exactly one id")
    return StsRecord(ids[0])


def select_record(txts: tuple[bytes, ...]) -> StsRecord:
    """RFC 8461 §3.1: drop records not starting with "v=STSv1;"; exactly one must remain and parse."""
    candidates = [t for t in txts if t.startswith(b"v=STSv1;") or t == b"v=STSv1"]
    if len(candidates) != 1:
        raise StsError(f"{len(candidates)} v=STSv1 TXT records, need exactly one")
    try:
        text = candidates[0].decode("ascii")
    except UnicodeDecodeError as exc:
        raise StsError("TXT record is not ASCII") from exc
    return parse_record(text)


def _domain_ok(name: str) -> bool:
    labels = name.split(".")
    return (
        len(name) <= 253 and len(labels) >= 2 and all(_LABEL_RE.fullmatch(label) for label in labels)
    )


def valid_mx_pattern(pattern: str) -> bool:
    """RFC 8461 §3.2: sts-policy-mx-value = ["*."] Domain (LDH labels, so A-labels for IDNs)."""
    body = pattern[2:] if pattern.startswith("*.") else pattern
    return _domain_ok(body)


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: an exact, case-insensitive name match, or "*." standing for exactly one
    left-most label ("*.example.com" matches "mx.example.com", not "example.com" or "a.b.example.com")."""
    pattern = pattern.lower()
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern


@dataclass(frozen=True)
class StsPolicy:
    """A parsed policy file (RFC 8461 §3.2)."""

    mode: StsMode
    max_age: int
    mx: tuple[str, ...] = ()

    def matches(self, host: str) -> bool:
        return any(mx_matches(p, host) for p in self.mx)

    def render(self) -> str:
        """The policy file text (CRLF lines), as a server would publish it."""
        lines = ["version: STSv1", f"mode: {self.mode}", *(f"mx: {m}" for m in self.mx), f"max_age: {self.max_age}"]
        return "".join(line + "\r\n" for line in lines)


def parse_policy(body: bytes) -> StsPolicy:
    """Parse a policy file strictly (RFC 8461 §3.2); raise StsError on anything that does not conform.

    Lines end in CRLF or LF; "key: value" with optional WSP around the colon; version, mode and
    max_age exactly once; mx at least once unless mode is "none"; unknown keys that are valid
    extension names are ignored. Blank lines are tolerated only at the end (a trailing newline is
    common; the ABNF allows one terminator).
    """
    if len(body) > MAX_POLICY_BYTES:
        raise StsError(f"policy larger than {MAX_POLICY_BYTES} octets")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StsError("policy is not UTF-8") from exc
    lines = text.split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise StsError("empty policy")
    version: list[str] = []
    mode: list[str] = []
    max_age: list[str] = []
    mx: list[str] = []
    for number, line in enumerate(lines, 1):
        key, colon, value = line.partition(":")
        if not colon:
            raise StsError(f"line {number}: no ':'")
        key = key.rstrip(_WSP)
        value = value.strip(_WSP)
        if any(ch in key for ch in _WSP) or not key:
            raise StsError(f"line {number}: bad key {key!r}")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            raise StsError(f"line {number}: control character in value")
        lower = key.lower()  # RFC 5234 §2.3: ABNF literal strings are case-insensitive
        if lower == "version":
            version.append(value)
        elif lower == "mode":
            mode.append(value.lower())
        elif lower == "max_age":
            max_age.append(value)
        elif lower == "mx":
            mx.append(value.lower())
        elif not _EXT_NAME_RE.fullmatch(key) or not value:
            raise StsError(f"line {number}: bad extension field {key!r}")
    if len(version) != 1 or version[0].lower() != "stsv1":
        raise StsError("need exactly one 'version: STSv1'")
    if len(mode) != 1 or mode[0] not in ("enforce", "testing", "none"):
        raise StsError("need exactly one mode of enforce, testing or none")
    if len(max_age) != 1 or not re.fullmatch(r"[0-9]{1,10}", max_age[0]):
        raise StsError("need exactly one max_age of 1 to 10 digits")
    age = int(max_age[0])
    if age > MAX_AGE_LIMIT:
        raise StsError(f"max_age {age} above {MAX_AGE_LIMIT}")
    for pattern in mx:
        if not valid_mx_pattern(pattern):
            raise StsError(f"bad mx pattern {pattern!r}")
    the_mode: StsMode = mode[0]  # type: ignore[assignment]
    if not mx and the_mode != "none":
        raise StsError("policy without mx")
    return StsPolicy(the_mode, age, tuple(dict.fromkeys(mx)))


@dataclass(frozen=True)
class CachedPolicy:
    """A policy as fetched: the domain, the TXT id it was fetched for, and when (seconds since the epoch)."""

    domain: str
    policy_id: str
    policy: StsPolicy
    fetched_at: float

    @property
    def expires_at(self) -> float:
        return self.fetched_at + self.policy.max_age

    def fresh(self, now: float) -> bool:
        """RFC 8461 §5.1: a cached policy is used until max_age after it was fetched."""
        return now < self.expires_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "id": self.policy_id,
            "mode": self.policy.mode,
            "max_age": self.policy.max_age,
            "mx": list(self.policy.mx),
            "fetched_at": self.fetched_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CachedPolicy:
        mode = str(data["mode"])
        if mode not in ("enforce", "testing", "none"):
            raise StsError(f"bad cached mode {mode!r}")
        policy = StsPolicy(mode, int(data["max_age"]), tuple(str(m) for m in data["mx"]))  # type: ignore[arg-type]
        return cls(str(data["domain"]), str(data["id"]), policy, float(data["fetched_at"]))


@dataclass(frozen=True)
class PolicyCache:
    """Fetched policies by domain: an immutable value; `put` returns a new cache."""

    entries: tuple[CachedPolicy, ...] = ()

    def get(self, domain: str, now: float) -> CachedPolicy | None:
        """The domain's policy if it has not expired."""
        for entry in self.entries:
            if entry.domain == domain:
                return entry if entry.fresh(now) else None
        return None

    def put(self, entry: CachedPolicy) -> PolicyCache:
        kept = tuple(e for e in self.entries if e.domain != entry.domain)
        return replace(self, entries=(*kept, entry))

    def expire(self, now: float) -> PolicyCache:
        return replace(self, entries=tuple(e for e in self.entries if e.fresh(now)))

    def to_json(self) -> str:
        return json.dumps([e.to_dict() for e in self.entries], sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PolicyCache:
        return cls(tuple(CachedPolicy.from_dict(d) for d in json.loads(text)))
