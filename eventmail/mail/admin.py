"""Admin operations — domains, accounts, addresses, catch-alls, passwords, DKIM selectors, account
(junk) settings, data keys, import and junk retraining — each validated before anything is appended.

The CLI calls them on a store it opened, or sends the same request to a running server, whose
control socket calls them on its store (eventmail.control); either way the same function runs. A
request is a command name and a JSON object of strings (`ADMIN_COMMANDS`); an operation answers
with a JSON object whose "message" is what the CLI prints.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..junk.delivery import SETTING_DNSBL, SETTING_FORWARDERS, SETTING_LISTS
from ..mailauth.domains import DomainError, to_ascii_domain
from ..proto import events_pb2 as pb
from ..store import ACCOUNT_NAME, QUEUE, QUOTA_SETTING, SYSTEM, Store, StoreError, normalize_address

log = logging.getLogger(__name__)

# NIST SP 800-63B §5.1.1.1: memorized secrets chosen by the user are at least 8 characters; its
# 2024 revision keeps 8 as the floor when the password is not the only factor, and this server
# has no second factor, so 8 is the least we accept; config `min_password_length` raises it.
DEFAULT_MIN_PASSWORD_LENGTH = 8
# Argon2id and SCRAM hash any length, but a password line of megabytes is a mistake or an attack
# on the hashing time; 4096 characters is far beyond any passphrase (NIST asks for at least 64).
MAX_PASSWORD_LENGTH = 4096
# RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
MAX_LOCAL_OCTETS = 64
# RFC 5322 §3.2.3 atext, plus any non-ASCII character (RFC 6531 §3.3 allows UTF-8 local parts).
# Quoted local parts are legal but refused here: no one should be given "a b"@example.org.
LOCAL_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+")
# RFC 1035 §2.3.1 (with RFC 1123 §2.1's leading digit): letters, digits, hyphens inside a label.
LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
DKIM_ALGORITHMS = ("ed25519-sha256", "rsa-sha256")
# A deleted account can be brought back for this long (`eventmail restore NAME`), then is shredded:
# a week covers "deleted the wrong account on Friday" and keeps no one's mail long against their will.
DEFAULT_DELETION_GRACE_DAYS = 7.0
# How often a server looks for deleted accounts whose grace period has ended (and at its start).
SHRED_CHECK_SECONDS = 60.0
RESERVED_NAMES = frozenset({SYSTEM, QUEUE})
# The account settings an operator sets (eventmail.junk.delivery says what each does), and whether
# an item may be an IP network as well as a domain.
ACCOUNT_SETTINGS = {SETTING_LISTS: False, SETTING_FORWARDERS: True, SETTING_DNSBL: False}
# The junk filter's settings by their names in `eventmail junk lists|forwarders|dnsbl`.
JUNK_SETTINGS = (SETTING_LISTS, SETTING_FORWARDERS, SETTING_DNSBL)
JUNK_SETTING_NAMES = {SETTING_LISTS: "lists", SETTING_FORWARDERS: "forwarders", SETTING_DNSBL: "dnsbl"}
# A setting's value is read at every delivery; a list of hundreds of domains is a mistake.
MAX_SETTING_ITEMS = 100


Progress = Callable[[int, int], None]
# How a long operation (import, restore, and later backup) reports "done of total": the CLI's
# progress bar when it runs here, progress lines on the control socket when a server runs it.
PROGRESS: ContextVar[Progress | None] = ContextVar("admin_progress", default=None)


def _progress(done: int, total: int) -> None:
    report = PROGRESS.get()
    if report is not None:
        report(done, total)


class AdminError(Exception):
    """A request that was refused before anything was written: invalid, unknown, or a duplicate.
    The text is one line, for the CLI's stderr and the control socket's reply."""


@dataclass(frozen=True)
class Policy:
    min_password_length: int = DEFAULT_MIN_PASSWORD_LENGTH
    deletion_grace_days: float = DEFAULT_DELETION_GRACE_DAYS


# ---------------------------------------------------------------- validation


def check_account_name(name: str) -> str:
    if name in RESERVED_NAMES:
        raise AdminError(f"account name {name!r} is reserved")
    if not ACCOUNT_NAME.fullmatch(name):
        raise AdminError(f"account name {name!r}: use 1-64 of a-z 0-9 . _ - (starting with a letter or digit)")
    return name


def check_domain(domain: str, what: str = "domain") -> str:
    """`domain` as lower-case A-labels (IDNA 2008, UTS #46), or AdminError: each label a host-name label."""
    try:
        ascii_domain = to_ascii_domain(domain)
    except DomainError as e:
        raise AdminError(f"{what} {domain!r}: {e}") from None
    for label in ascii_domain.split("."):
        if not LDH_LABEL.fullmatch(label):
            raise AdminError(
                f"{what} {domain!r}: label {label!r} is not a host name label "
                "(letters, digits and inner hyphens, 1-63 characters; RFC 1123 §2.1)"
            )
        if label[2:4] == "--":
            # RFC 5890 §2.3.1: hyphens in the 3rd and 4th places are reserved; only "xn--"
            # A-labels are used, and each must decode to a valid U-label (RFC 5891 §5.4).
            if not label.startswith("xn--"):
                raise AdminError(f"{what} {domain!r}: label {label!r} has the reserved '--' in its 3rd and 4th places")
            try:
                label.encode("ascii").decode("idna")  # punycode, and the round trip back to this label
            except UnicodeError:
                raise AdminError(f"{what} {domain!r}: label {label!r} is not a valid A-label (RFC 5891 §5.4)") from None
    if ascii_domain.rpartition(".")[2].isdigit():
        # RFC 3696 §2: a top-level domain is never all-numeric, so this is an IP address or a typo.
        raise AdminError(f"{what} {domain!r}: the last label is all digits (an IP address is not a mail domain here)")
    return ascii_domain


def check_address(address: str, catch_all: bool = False) -> str:
    """`local@domain` (or `@domain` when `catch_all`), the domain as A-labels; else AdminError."""
    expected = "expected local@domain" + (", or @domain for a catch-all" if catch_all else "")
    local, at, domain = address.rpartition("@")
    if not at or not domain:
        raise AdminError(f"address {address!r}: {expected}")
    if not local:
        if catch_all:
            return "@" + check_domain(domain, f"address {address!r}: domain")
        raise AdminError(f"address {address!r}: {expected}")
    if len(local.encode()) > MAX_LOCAL_OCTETS:
        raise AdminError(f"address {address!r}: the local part is longer than {MAX_LOCAL_OCTETS} octets (RFC 5321 §4.5.3.1.1)")
    if not all(LOCAL_ATOM.fullmatch(atom) for atom in local.split(".")):
        raise AdminError(f"address {address!r}: the local part is not a dot-atom (RFC 5322 §3.4.1); {expected}")
    return f"{local}@{check_domain(domain, f'address {address!r}: domain')}"


def check_password(password: str, policy: Policy) -> str:
    if len(password) < policy.min_password_length:
        raise AdminError(f"password shorter than {policy.min_password_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AdminError(f"password longer than {MAX_PASSWORD_LENGTH} characters")
    return password


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# Above this a quota is a typo (a petabyte); RFC 9208 limits are number64 in KiB anyway.
MAX_QUOTA_BYTES = 1 << 50


def parse_quota(key: str, value: str) -> int:
    """A quota in bytes: a whole number, optionally with K, M, G or T (powers of 1024); empty or 0
    for none."""
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1:] if text[-1:] in _SIZE_UNITS and text[-1:] else ""
    number = text[: len(text) - len(unit)].strip()
    if not text:
        return 0
    if not number.isdigit() or int(number) * _SIZE_UNITS[unit] > MAX_QUOTA_BYTES:
        raise AdminError(f"setting {key}: a number of bytes (K, M, G, T allowed, up to 1P), 0 or empty for none")
    return int(number) * _SIZE_UNITS[unit]


def check_setting(key: str, value: str) -> str:
    """An account setting's value, normalised: comma-separated domains (or networks where allowed),
    or for the retention window a number of days (empty: the default)."""
    from .retention import SETTING_RETENTION

    if key == QUOTA_SETTING:
        return str(parse_quota(key, value))
    if key == SETTING_RETENTION:
        try:
            days = float(value) if value.strip() else None
        except ValueError:
            days = -1.0
        if days is not None and not 0 < days <= 36500:
            raise AdminError(f"setting {key}: a number of days above 0 (up to 36500), or empty for the default")
        return "" if days is None else repr(days)
    if key not in ACCOUNT_SETTINGS:
        names = sorted([*ACCOUNT_SETTINGS, SETTING_RETENTION, QUOTA_SETTING])
        raise AdminError(f"setting {key!r}: one of {', '.join(names)}")
    items = [x.strip() for x in value.split(",") if x.strip()]
    if len(items) > MAX_SETTING_ITEMS:
        raise AdminError(f"setting {key}: more than {MAX_SETTING_ITEMS} items")
    out = []
    for item in items:
        if ACCOUNT_SETTINGS[key] and any(c.isdigit() for c in item) and ("/" in item or ":" in item or
                                                                          item.replace(".", "").isdigit()):
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
                continue
            except ValueError:
                raise AdminError(f"setting {key}: {item!r} is not an IP network") from None
        out.append(check_domain(item, f"setting {key}: domain"))
    return ",".join(out)


async def _password_set(account: str, password: str) -> pb.PasswordSet:
    from ..sasl.credentials import make_password_set

    try:
        # Argon2id and PBKDF2 take a few hundred ms: off the loop, which serves mail meanwhile.
        return await asyncio.to_thread(make_password_set, account, password)
    except ValueError as e:  # SASLprep refuses control characters and the like (RFC 4013 §2.3)
        raise AdminError(f"password refused: {e}") from None


def _arg(args: Mapping[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str):
        raise AdminError(f"missing or non-text argument {name!r}")
    return value


# ---------------------------------------------------------------- operations


class Admin:
    """The admin operations on one open, writable store."""

    def __init__(self, store: Store, policy: Policy | None = None) -> None:
        self.store = store
        self.policy = policy or Policy()

    def commands(self) -> dict[str, Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]]:
        """Request name -> operation; every writing CLI command is one of these."""
        from .queue import QueueOps  # these modules use AdminError from here
        from .restore import RestoreOps
        from .webhooks import WebhookOps

        return {
            **QueueOps(self.store).commands(),
            **RestoreOps(self.store).commands(),
            **WebhookOps(self.store).commands(),
            "domain.add": self.domain_add,
            "domain.remove": self.domain_remove,
            "account.add": self.account_add,
            "account.add-address": self.add_address,
            "account.remove-address": self.remove_address,
            "account.set-password": self.set_password,
            "account.delete": self.account_delete,
            "account.set": self.account_set,
            "dkim.add": self.dkim_add,
            "key.rotate": self.key_rotate,
            "import": self.import_path,
            "junk.retrain": self.junk_retrain,
            "junk.settings": self.junk_settings,
            "retention.collect": self.retention_collect,
        }

    async def run(self, command: str, args: Mapping[str, Any]) -> dict[str, Any]:
        op = self.commands().get(command)
        if op is None:
            raise AdminError(f"unknown command {command!r}")
        return await op(args)

    def _existing_account(self, name: str) -> str:
        if name not in self.store.system.accounts:
            raise AdminError(f"no account {name}")
        return name

    def _free_address(self, address: str) -> None:
        owner = self.store.system.addresses.get(normalize_address(address))
        if owner is not None:
            raise AdminError(f"address {address} belongs to account {owner}")

    def _domain_users(self, domain: str) -> list[str]:
        """The addresses and catch-alls at `domain`, sorted."""
        return sorted(a for a in self.store.system.addresses if a.rpartition("@")[2] == domain)

    async def domain_add(self, args: Mapping[str, Any]) -> dict[str, Any]:
        domain = check_domain(_arg(args, "domain"))
        if domain in self.store.system.domains:
            raise AdminError(f"domain {domain} exists")
        await self.store.stream(SYSTEM).append([pb.Event(domain_added=pb.DomainAdded(domain=domain))])
        return {"message": f"domain {domain} added: give accounts addresses there (account add-address), "
                           f"and a signing key (dkim add {domain} SELECTOR)"}

    async def domain_remove(self, args: Mapping[str, Any]) -> dict[str, Any]:
        domain = check_domain(_arg(args, "domain"))
        if domain not in self.store.system.domains:
            raise AdminError(f"no domain {domain}")
        users = self._domain_users(domain)
        if users:
            shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
            raise AdminError(f"domain {domain} still has addresses ({shown}): remove them first")
        # Its signing keys stop signing with it: kept (inactive) so that the DNS records the
        # operator removes later still match something in `dkim list`.
        events = [pb.Event(domain_removed=pb.DomainRemoved(domain=domain))]
        for (d, _), sel in sorted(self.store.system.dkim.items()):
            if d == domain and sel.active:
                inactive = pb.DkimSelector()
                inactive.CopyFrom(sel)
                inactive.active = False
                events.append(pb.Event(dkim_selector=inactive))
        await self.store.stream(SYSTEM).append(events)
        return {"message": f"domain {domain} removed; mail for it is no longer accepted"}

    async def account_add(self, args: Mapping[str, Any]) -> dict[str, Any]:
        name = check_account_name(_arg(args, "name"))
        address = check_address(_arg(args, "address"))
        password = check_password(_arg(args, "password"), self.policy)
        if name in self.store.system.accounts:
            raise AdminError(f"account {name} exists")
        if name in self.store.system.deleted:
            raise AdminError(f"account {name} was deleted and is in its grace period: bring it back with "
                             f"`eventmail restore {name}`, or shred it now with `account delete {name} --shred`")
        self._free_address(address)
        ps = await _password_set(name, password)
        # Checked again after the hashing: another request may have taken the name meanwhile.
        if name in self.store.system.accounts:
            raise AdminError(f"account {name} exists")
        self._free_address(address)
        await self.store.create_account(name, [address], ps)
        return {"message": f"account {name} created with address {normalize_address(address)}"}

    async def add_address(self, args: Mapping[str, Any]) -> dict[str, Any]:
        name = self._existing_account(_arg(args, "name"))
        address = check_address(_arg(args, "address"), catch_all=True)
        self._free_address(address)
        await self.store.add_address(name, address)
        kind = "catch-all for " + address[1:] if address.startswith("@") else "address " + normalize_address(address)
        return {"message": f"account {name}: {kind} added"}

    async def remove_address(self, args: Mapping[str, Any]) -> dict[str, Any]:
        name = self._existing_account(_arg(args, "name"))
        given = _arg(args, "address")
        if self.store.system.addresses.get(normalize_address(given)) != name:
            raise AdminError(f"account {name} has no address {given}")
        await self.store.remove_address(name, given)
        return {"message": f"account {name}: {given} removed"}

    async def set_password(self, args: Mapping[str, Any]) -> dict[str, Any]:
        name = self._existing_account(_arg(args, "name"))
        ps = await _password_set(name, check_password(_arg(args, "password"), self.policy))
        self._existing_account(name)  # deleted while the password was hashed?
        await self.store.stream(SYSTEM).append([pb.Event(password_set=ps)])
        return {"message": f"password of {name} set"}

    async def account_delete(self, args: Mapping[str, Any]) -> dict[str, Any]:
        name = _arg(args, "name")
        shred = bool(args.get("shred"))
        if name in self.store.system.deleted and shred:
            await self.store.shred_account(name)
            return {"message": SHREDDED.format(name=name)}
        self._existing_account(name)
        grace_us = int(self.policy.deletion_grace_days * 86400 * 1e6)
        if shred or grace_us <= 0:
            await self.store.delete_account(name)
            return {"message": SHREDDED.format(name=name)}
        until = int(time.time() * 1e6) + grace_us
        await self.store.delete_account(name, shred_after_us=until)
        when = datetime.fromtimestamp(until / 1e6, UTC).isoformat(timespec="minutes")
        return {"message": f"account {name} deleted: it receives no mail and takes no logins. Until {when} "
                           f"`eventmail restore {name}` brings it back; then its keys are destroyed "
                           f"(now: `account delete {name} --shred`)"}

    async def account_set(self, args: Mapping[str, Any]) -> dict[str, Any]:
        name = self._existing_account(_arg(args, "name"))
        key = _arg(args, "key")
        value = check_setting(key, _arg(args, "value"))
        async with self.store.use_account(name) as acct:
            await acct.append([pb.Event(account_setting=pb.AccountSetting(key=key, value=value))])
        return {"message": f"account {name}: {key} = {value}" if value else f"account {name}: {key} cleared"}

    async def junk_settings(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Show the junk filter's account settings, or add or remove items of one of them (`kind`:
        lists, forwarders, dnsbl), validated as `account set` validates the whole value."""
        name = self._existing_account(_arg(args, "name"))
        action = args.get("action") or "show"
        kind = args.get("kind") or ""
        items = [x.strip() for x in str(args.get("items") or "").split(",") if x.strip()]
        async with self.store.use_account(name) as acct:
            if action == "show":
                lines = [f"{JUNK_SETTING_NAMES[k]}: {acct.view.setting(k) or '(none)'}" for k in JUNK_SETTINGS]
                return {"message": "\n".join(f"account {name} {line}" for line in lines)}
            key = next((k for k in JUNK_SETTINGS if JUNK_SETTING_NAMES[k] == kind), None)
            if key is None or action not in ("add", "remove") or not items:
                raise AdminError("junk settings: add or remove, one of lists, forwarders, dnsbl, and at least one item")
            current = [x for x in (acct.view.setting(key) or "").split(",") if x]
            changed = check_setting(key, ",".join(items)).split(",")
            if action == "add":
                value = ",".join([*current, *(x for x in changed if x not in current)])
            else:
                absent = [x for x in changed if x not in current]
                if absent:
                    raise AdminError(f"account {name} {kind}: no {', '.join(absent)}")
                value = ",".join(x for x in current if x not in changed)
            value = check_setting(key, value)
            await acct.append([pb.Event(account_setting=pb.AccountSetting(key=key, value=value))])
        return {"message": f"account {name} {kind}: {value or '(none)'}"}

    async def dkim_add(self, args: Mapping[str, Any]) -> dict[str, Any]:
        from ..mailauth.dkim import public_key_record, zone_txt

        domain = check_domain(_arg(args, "domain"))
        selector = _arg(args, "selector")
        algorithm = _arg(args, "algorithm")
        # RFC 6376 §3.1: a selector is a sub-domain, so it is made of host-name labels as well.
        check_domain(selector, "selector")
        selector = selector.lower()
        if algorithm not in DKIM_ALGORITHMS:
            raise AdminError(f"algorithm {algorithm!r}: one of {', '.join(DKIM_ALGORITHMS)}")
        if domain not in self.store.system.domains and not self._domain_users(domain):
            raise AdminError(f"{domain} is not a domain here and no account has an address at it: "
                             "a key for it would sign nothing")
        if (domain, selector) in self.store.system.dkim:
            raise AdminError(f"selector {selector} of {domain} exists")
        private_key = await asyncio.to_thread(new_dkim_key, algorithm)
        if (domain, selector) in self.store.system.dkim:
            raise AdminError(f"selector {selector} of {domain} exists")
        await self.store.stream(SYSTEM).append([pb.Event(dkim_selector=pb.DkimSelector(
            domain=domain, selector=selector, algorithm=algorithm, private_key=private_key, active=True,
        ))])
        return {"message": f"{selector}._domainkey.{domain}. TXT {zone_txt(public_key_record(algorithm, private_key))}"}

    async def key_rotate(self, args: Mapping[str, Any]) -> dict[str, Any]:
        n = self.store.keyring.rotate()
        return {"message": f"rotated the data keys of {n} streams; older records stay readable with the older keys"}


    async def import_path(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """An mbox file or a Maildir tree into an account. With a server running it is the
        server's process that reads the path, so the path must be absolute and readable to it."""
        from ..transfer import import_path

        name = self._existing_account(_arg(args, "name"))
        path = Path(_arg(args, "path"))
        mailbox = _arg(args, "mailbox")
        if not path.is_absolute():
            raise AdminError(f"{path}: expected an absolute path")
        if not os.access(path, os.R_OK):
            raise AdminError(f"{path} does not exist or is not readable (to the server's user, when a server runs)")
        async with self.store.use_account(name) as acct:
            summary = await import_path(acct, path, mailbox, _progress)
        return {"message": "\n".join(summary.lines())}

    async def retention_collect(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Remove the blobs of messages expunged before each account's retention window (one
        account, or all): what the server does every few hours, now."""
        from .retention import collect, collect_all

        name = str(args.get("name") or "")
        now = time.time()
        if name:
            self._existing_account(name)
            async with self.store.use_account(name) as acct:
                removed, before_us = await collect(acct, now)
            when = datetime.fromtimestamp(before_us / 1e6, UTC).isoformat(timespec="seconds")
            return {"message": f"account {name}: {removed} expunged messages removed; restorable from {when} on"}
        counts = await collect_all(self.store, now)
        return {"message": f"{sum(counts.values())} expunged messages removed from {len(counts)} accounts"}

    async def junk_retrain(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """The account's projections (junk statistics and reputation among them) rebuilt from its
        log: a check that they equal a rebuild, and the cure if they did not."""
        from ..junk.projection import junk_view

        name = self._existing_account(_arg(args, "name"))
        async with self.store.use_account(name) as acct:
            before = junk_view(acct).totals(), junk_view(acct).dump()
            await asyncio.to_thread(acct.rebuild_projection)
            after = junk_view(acct).totals(), junk_view(acct).dump()
        (h0, s0), (h1, s1) = before[0], after[0]
        lines = [f"rebuilt {name} from its log: {h1} not junk, {s1} junk messages trained"]
        if before[1] == after[1]:
            lines.append("the statistics and reputation index equal what they were")
        else:
            lines.append(f"the statistics changed: before {h0} not junk, {s0} junk")
        return {"message": "\n".join(lines)}


SHREDDED = ("account {name} shredded: its keys are destroyed here, on the secondary when it follows, and "
            "in each backup repository at its next run; its log and blobs are unreadable")


async def shred_due(store: Store, now: float) -> list[str]:
    """Shred the deleted accounts whose grace period has ended; returns their names."""
    due = sorted(n for n, d in store.system.deleted.items() if d.shred_after_us <= now * 1e6)
    for name in due:
        await store.shred_account(name)
        log.info("account %s shredded: its grace period after deletion ended", name)
    return due


async def shred_when_due(store: Store, clock: Callable[[], float] = time.time,
                         every: float = SHRED_CHECK_SECONDS) -> None:
    """A server's task (on the primary of a pair: the secondary follows its events and keyring):
    shred each deleted account when its grace period ends. It wakes at the next end it knows of,
    at least every `every` seconds, and at each system event (a deletion may end sooner)."""
    changes = store.stream(SYSTEM).subscribe()
    try:
        while True:
            try:
                await shred_due(store, clock())
            except StoreError as e:
                log.warning("shredding deleted accounts: %s (tried again in %.0f s)", e, every)
            ends = [d.shred_after_us / 1e6 - clock() for d in store.system.deleted.values()]
            wait = min([every, *(max(0.0, t) + 0.01 for t in ends)])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changes.get(), wait)
            changes.pending()
    finally:
        changes.close()


def new_dkim_key(algorithm: str) -> bytes:
    """A new private key: Ed25519's 32-byte seed in base64 (RFC 8463 §4), or RSA 2048 as PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if algorithm == "ed25519-sha256":
        return base64.b64encode(os.urandom(32))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
