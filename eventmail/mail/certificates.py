"""The server's ACME certificates: which names, when to issue and renew, each certificate recorded (with its key) in the system stream and installed in the listeners' holder.

Names: the mail host, and `autoconfig.DOMAIN` and `mta-sts.DOMAIN` of every domain, one
certificate for the host and one per domain (a domain added later gets its own order; one that
fails does not hold up the others). A certificate and its key are an event in the system stream
(encrypted at rest like the whole log), so a restart presents the last one without asking the CA
again, and a secondary has them too. When to renew is decided once per certificate and recorded
with it: in the CA's ARI window when it offers one (RFC 9773 §4.2, a random time inside it), else
`renew_before_days` before notAfter; a later ARI answer whose window no longer holds that time
records a new one (CertificateRenewal). Failures are retried with doubling delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509

from ..config import AcmeSettings
from ..proto import events_pb2 as pb
from ..store import SYSTEM, Store, Subscription
from ..tls.acme import (
    HTTP_01,
    AcmeError,
    AriWindow,
    Challenge,
    new_private_key_pem,
    tls_alpn_context,
)
from ..tls.certs import CertificateHolder, context_from_pem, self_signed_pem, tlsa_3_1_1

if TYPE_CHECKING:
    from ..tls.acmeclient import AcmeClient

log = logging.getLogger(__name__)

RETRY_MAX_SECONDS = 6 * 3600.0  # the longest wait between tries when the CA keeps failing
CHECK_MAX_SECONDS = 6 * 3600.0  # wake at least this often (ARI's default Retry-After, RFC 9773 §4.3)
ORDER_SECONDS = 120.0  # how long one order may take from answering to the certificate


@dataclass(frozen=True)
class Certificate:
    """A certificate of a name set as recorded: chain, key, and the decided renewal time."""

    names: tuple[str, ...]
    fullchain_pem: bytes
    key_pem: bytes = field(repr=False)
    not_after: float  # Unix seconds
    renew_after: float
    serial: str


def wanted_names(hostname: str, domains: Iterable[str]) -> list[tuple[str, ...]]:
    """The name sets to hold certificates for: the mail host first, then one per domain."""
    sets: list[tuple[str, ...]] = [(hostname.lower().rstrip("."),)]
    for d in sorted(domains):
        sets.append((f"autoconfig.{d}", f"mta-sts.{d}"))
    return sets


def stored_certificates(store: Store) -> dict[tuple[str, ...], Certificate]:
    """The newest certificate of each name set in the system stream, with its latest renewal time."""
    out: dict[tuple[str, ...], Certificate] = {}
    for c in store.stream(SYSTEM).events():
        kind = c.event.WhichOneof("kind")
        if kind == "certificate_issued":
            e = c.event.certificate_issued
            names = tuple(e.names)
            out[names] = Certificate(names, e.fullchain_pem, e.key_pem, e.not_after_us / 1e6, e.renew_after_us / 1e6,
                                     e.serial)
        elif kind == "certificate_renewal":
            r = c.event.certificate_renewal
            cert = out.get(tuple(r.names))
            if cert is not None and cert.serial == r.serial:
                out[cert.names] = _with_renewal(cert, r.renew_after_us / 1e6)
    return out


def stored_account(store: Store, directory: str) -> pb.AcmeAccount | None:
    """The newest account recorded for the CA at `directory`."""
    found = None
    for c in store.stream(SYSTEM).events():
        if c.event.WhichOneof("kind") == "acme_account" and c.event.acme_account.directory == directory:
            found = c.event.acme_account
    return found


async def record_account(store: Store, directory: str, key_pem: bytes, uri: str) -> None:
    await store.stream(SYSTEM).append([pb.Event(acme_account=pb.AcmeAccount(directory=directory, key_pem=key_pem,
                                                                            uri=uri))])


async def record_certificate(store: Store, cert: Certificate, directory: str) -> None:
    await store.stream(SYSTEM).append([pb.Event(certificate_issued=pb.CertificateIssued(
        names=list(cert.names), fullchain_pem=cert.fullchain_pem, key_pem=cert.key_pem,
        not_after_us=int(cert.not_after * 1e6), renew_after_us=int(cert.renew_after * 1e6), directory=directory,
        serial=cert.serial))])


async def record_renewal(store: Store, cert: Certificate, renew_after: float) -> None:
    await store.stream(SYSTEM).append([pb.Event(certificate_renewal=pb.CertificateRenewal(
        names=list(cert.names), serial=cert.serial, renew_after_us=int(renew_after * 1e6)))])


def _with_renewal(cert: Certificate, renew_after: float) -> Certificate:
    return Certificate(cert.names, cert.fullchain_pem, cert.key_pem, cert.not_after, renew_after, cert.serial)


def in_window(window: AriWindow, now: float) -> float:
    """A uniformly random time in the window, not before now (RFC 9773 §4.2)."""
    start, end = window.start.timestamp(), window.end.timestamp()
    if end <= now:
        return now
    return random.uniform(max(start, now), end)


class CertificateManager:
    """Keeps a current certificate for every wanted name set in the holder; `run` until cancelled."""

    def __init__(self, store: Store, holder: CertificateHolder, settings: AcmeSettings, hostname: str,
                 clock: Callable[[], float] = time.time, host_key_pem: bytes | None = None) -> None:
        """`host_key_pem`: the key of every certificate of the host's name set ([acme] host_key_file,
        read by the caller while it may still read root's files)."""
        self.store = store
        self.host_key_pem = host_key_pem
        self.holder = holder
        self.settings = settings
        self.hostname = hostname.lower().rstrip(".")
        self.clock = clock
        self.certificates = stored_certificates(store)
        self._failures: dict[tuple[str, ...], int] = {}
        self._next_try: dict[tuple[str, ...], float] = {}
        self._ari_next: dict[tuple[str, ...], float] = {}
        self._client: AcmeClient | None = None
        self._account_key: bytes | None = None
        self._installed: set[tuple[str, ...]] = set()
        self._wake = asyncio.Event()
        self.issued = asyncio.Condition()  # notified after each certificate is installed (tests, logs)

    def wanted(self) -> list[tuple[str, ...]]:
        return wanted_names(self.hostname, self.store.system.domains)

    def install_stored(self) -> None:
        """Before the listeners start: each name set's stored certificate, else a self-signed one
        (logged: clients will not trust it) until the CA issues one."""
        for names in self.wanted():
            cert = self.certificates.get(names)
            if cert is not None:
                self._install(cert)
                log.info("acme: presenting the stored certificate for %s (serial %s, expires %s)",
                         ", ".join(names), cert.serial, _when(cert.not_after))
                continue
            self._install_self_signed(names)

    def _install_self_signed(self, names: tuple[str, ...]) -> None:
        host_key = self.host_key_pem if names[0] == self.hostname else None  # DANE-EE holds for it too
        chain, key = self_signed_pem(list(names), days=7, key_pem=host_key)
        self.holder.install(names, context_from_pem(chain, key), default=names[0] == self.hostname)
        self._installed.add(names)
        log.warning("acme: no certificate for %s in the store yet: presenting a SELF-SIGNED one until the CA "
                    "issues one", ", ".join(names))

    def _install(self, cert: Certificate) -> None:
        self.holder.install(cert.names, context_from_pem(cert.fullchain_pem, cert.key_pem),
                            default=cert.names[0] == self.hostname)
        self._installed.add(cert.names)

    async def run(self) -> None:
        """Issue, renew and follow domain changes until cancelled."""
        changes = self.store.stream(SYSTEM).subscribe()
        # A secondary starts this when promoted: what the primary issued since it started came
        # as events.
        for names, cert in stored_certificates(self.store).items():
            known = self.certificates.get(names)
            if known is None or known.serial != cert.serial:
                self.certificates[names] = cert
                if names in self.wanted():
                    self._install(cert)
        watcher = asyncio.get_running_loop().create_task(self._watch(changes))
        try:
            while True:
                wait = await self.check()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(wait, 0.05))
        finally:
            watcher.cancel()
            changes.close()

    async def _watch(self, changes: Subscription) -> None:
        while True:
            c = await changes.get()
            if c.event.WhichOneof("kind") in ("domain_added", "domain_removed", "certificate_renewal"):
                if c.event.WhichOneof("kind") == "certificate_renewal":
                    r = c.event.certificate_renewal
                    cert = self.certificates.get(tuple(r.names))
                    if cert is not None and cert.serial == r.serial:
                        self.certificates[cert.names] = _with_renewal(cert, r.renew_after_us / 1e6)
                self._wake.set()

    async def check(self) -> float:
        """One round: issue what is missing or due, ask ARI where it is time to; seconds until
        the next thing to do."""
        wanted = self.wanted()
        for names in [n for n in self._installed if n not in wanted]:
            self.holder.remove(names)  # the domain was removed
            self._installed.discard(names)
        for names in wanted:
            if names not in self._installed:  # a domain added while running (or added back)
                stored = self.certificates.get(names)
                if stored is not None:
                    self._install(stored)
                else:
                    self._install_self_signed(names)
        now = self.clock()
        for names in wanted:
            if self._next_try.get(names, 0) > now:
                continue
            cert = self.certificates.get(names)
            try:
                if cert is None or now >= cert.renew_after or self._wrong_key(cert):
                    await self._issue(names, renewal=cert is not None)
                elif now >= self._ari_next.get(names, 0):
                    await self._ask_ari(cert)
                self._failures.pop(names, None)
                self._next_try.pop(names, None)
            except AcmeError as e:
                n, delay = self._failed(names)
                log.warning("acme: %s: %s; try %d failed, next in %.0f s", ", ".join(names), e, n, delay)
            except Exception:
                # A bug must not end the loop: log it and retry later as for a CA failure.
                n, delay = self._failed(names)
                log.exception("acme: %s: unexpected error; next try in %.0f s", ", ".join(names), delay)
        now = self.clock()
        times = [now + CHECK_MAX_SECONDS]
        for names in wanted:
            if names in self._next_try:
                times.append(self._next_try[names])
            elif names in self.certificates:
                times.append(self.certificates[names].renew_after)
                times.append(self._ari_next.get(names, now))
        return max(min(times) - now, 0.0)

    def _key_for(self, names: tuple[str, ...]) -> bytes:
        """The host's lasting key for its own name set (DANE's TLSA 3 1 1 names it), else a new one."""
        if self.host_key_pem is not None and names[0] == self.hostname:
            return self.host_key_pem
        return new_private_key_pem()

    def _wrong_key(self, cert: Certificate) -> bool:
        """A stored host certificate made before host_key_file was set: replaced now, or a
        published TLSA record of the lasting key would not match what senders are shown."""
        return (self.host_key_pem is not None and cert.names[0] == self.hostname
                and tlsa_3_1_1(cert.key_pem) != tlsa_3_1_1(self.host_key_pem))

    def _failed(self, names: tuple[str, ...]) -> tuple[int, float]:
        """Count a failure; the next try after `retry_seconds`, doubling up to RETRY_MAX_SECONDS."""
        n = self._failures[names] = self._failures.get(names, 0) + 1
        delay = min(self.settings.retry_seconds * 2 ** (n - 1), RETRY_MAX_SECONDS)
        self._next_try[names] = self.clock() + delay
        return n, delay

    async def _connect(self) -> AcmeClient:
        if self._client is not None:
            return self._client
        s = self.settings
        account = stored_account(self.store, s.directory)
        if self._account_key is None:
            self._account_key = account.key_pem if account is not None else new_private_key_pem()
        from ..tls.acmeclient import AcmeClient  # only now: see eventmail.tls.acme

        client = AcmeClient(s.directory, self._account_key, s.email, str(s.ca_file) if s.ca_file else None)
        uri = await asyncio.to_thread(client.connect)
        if account is None or account.uri != uri or account.key_pem != self._account_key:
            await record_account(self.store, s.directory, self._account_key, uri)
            log.info("acme: account %s at %s", uri, s.directory)
        self._client = client
        return client

    async def _issue(self, names: tuple[str, ...], renewal: bool) -> None:
        try:
            client = await self._connect()
        except AcmeError:
            self._client = None
            raise
        log.info("acme: %s a certificate for %s", "renewing" if renewal else "ordering", ", ".join(names))
        key_pem = self._key_for(names)
        try:
            order = await asyncio.to_thread(client.new_order, list(names), key_pem)
            pending = await asyncio.to_thread(client.challenges, order, self.settings.challenges)
            for ch in pending:
                self._arm(ch)
            try:
                for ch in pending:
                    await asyncio.to_thread(client.answer, ch)
                chain = await asyncio.to_thread(client.finalize, order, ORDER_SECONDS)
            finally:
                for ch in pending:
                    self._disarm(ch)
        except AcmeError:
            self._client = None  # reconnect next time: the CA may have been restarted (nonces, account)
            raise
        leaf = x509.load_pem_x509_certificate(chain)
        not_after = leaf.not_valid_after_utc.timestamp()
        serial = f"{leaf.serial_number:x}"
        renew_after = not_after - self.settings.renew_before_days * 86400
        try:
            window = await asyncio.to_thread(client.ari_window, chain)
        except AcmeError as e:
            window = None
            log.warning("acme: %s: no renewal information (%s); renewing %s before expiry", ", ".join(names), e,
                        f"{self.settings.renew_before_days:g} days")
        if window is not None:
            renew_after = in_window(window, self.clock())
            self._ari_next[names] = window.ask_again.timestamp()
        cert = Certificate(names, chain, key_pem, not_after, renew_after, serial)
        await record_certificate(self.store, cert, self.settings.directory)
        self.certificates[names] = cert
        self._install(cert)
        log.info("acme: installed the certificate for %s (serial %s, expires %s, renewal from %s)", ", ".join(names),
                 serial, _when(not_after), _when(renew_after))
        async with self.issued:
            self.issued.notify_all()

    async def _ask_ari(self, cert: Certificate) -> None:
        """RFC 9773 §4.3: ask again when told to; a window that no longer holds the decided
        time (the CA wants an earlier renewal, e.g. before a revocation) gets a new one."""
        client = await self._connect()
        window = await asyncio.to_thread(client.ari_window, cert.fullchain_pem)
        now = self.clock()
        if window is None:
            self._ari_next[cert.names] = now + CHECK_MAX_SECONDS
            return
        self._ari_next[cert.names] = max(window.ask_again.timestamp(), now + 60)
        if not window.start.timestamp() <= cert.renew_after <= window.end.timestamp():
            renew_after = in_window(window, now)
            await record_renewal(self.store, cert, renew_after)
            self.certificates[cert.names] = _with_renewal(cert, renew_after)
            log.info("acme: the CA moved the renewal of %s (serial %s) to %s", ", ".join(cert.names), cert.serial,
                     _when(renew_after))

    def _arm(self, ch: Challenge) -> None:
        if ch.kind == HTTP_01:
            self.holder.http01[ch.token] = ch.key_authorization
        else:
            self.holder.add_tls_alpn_challenge(ch.name, tls_alpn_context(ch.name, ch.key_authorization))

    def _disarm(self, ch: Challenge) -> None:
        if ch.kind == HTTP_01:
            self.holder.http01.pop(ch.token, None)
        else:
            self.holder.remove_tls_alpn_challenge(ch.name)


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


__all__ = ["Certificate", "CertificateManager", "record_account", "record_certificate", "record_renewal",
           "stored_account", "stored_certificates", "wanted_names"]
