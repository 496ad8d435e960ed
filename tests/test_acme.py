"""ACME against Debian's pebble on loopback: HTTP-01 and TLS-ALPN-01 over IPv4 and IPv6, renewal seen by every listener without a restart, a CA that is down at start, a restart that reads the certificate back."""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from eventmail import serve
from eventmail.config import parse
from eventmail.mail.admin import Admin, Policy
from eventmail.mail.certificates import (
    Certificate,
    CertificateManager,
    in_window,
    record_certificate,
    record_renewal,
    stored_certificates,
)
from eventmail.store import MasterKeySource, init_directory
from eventmail.tls.acme import ACME_IDENTIFIER_OID, AriWindow, ari_cert_id, tls_alpn_context
from eventmail.tls.certs import (
    ACME_TLS_ALPN,
    CertificateHolder,
    client_hello_alpn,
    context_from_pem,
    self_signed_pem,
)

from .dns_fixture import DnsServer, async_test, zone_text
from .mailserver import free_port, ipv6_loopback
from .pebble_fixture import Pebble, needs_pebble

HOST = "mail.example.test"
# One name per address family, so that the CA's validation must reach the server over each:
# the mail host only by IPv4, autoconfig only by IPv6, mta-sts by either.
ZONE = zone_text("example.test", ["mail A 127.0.0.1", "autoconfig AAAA ::1", "mta-sts A 127.0.0.1",
                                  "mta-sts AAAA ::1"])
ORDER_TIMEOUT = 90.0


@dataclass
class Bed:
    """A DNS server, the ports the CA validates on, and pebble (started by `ca()`)."""

    work: Path
    dns: DnsServer
    pebble_port: int
    management_port: int
    http_port: int
    tls_port: int
    pebble: Pebble | None = None
    ca_host: str = "127.0.0.1"  # the address of the CA's ACME API

    def ca(self, nonce_reject: int = 5) -> Pebble:
        self.pebble = Pebble.start(self.work / "pebble", port=self.pebble_port, management_port=self.management_port,
                                   dns_port=self.dns.port, http_port=self.http_port, tls_port=self.tls_port,
                                   host=self.ca_host, nonce_reject=nonce_reject)
        return self.pebble

    def config(self, challenges: list[str], retry: float = 60.0, web: bool = False, host_key: bool = False) -> str:
        """`web`: HTTP-01 answered by the server's `http` listeners (the web application, as on
        port 80), and an `https` listener; else by the `http01_port` server of its own.
        `host_key`: the host's certificates keep [tls]'s key (host_key_file), as quickstart sets."""
        root = 'user = "root"\n' if os.geteuid() == 0 else ""
        ca_file = self.work / "pebble" / "pebble-cert.pem"
        return (
            f'{root}hostname = "{HOST}"\ndata_dir = "data"\nkey_file = "master.key"\n'
            f'[tls]\ncert = "cert.pem"\nkey = "key.pem"\n'
            f'[resolver]\nnameservers = ["127.0.0.1"]\nport = {self.dns.port}\n'
            f'[[listener]]\nkind = "smtp"\naddress = "127.0.0.1"\nport = {free_port()}\n'
            f'[[listener]]\nkind = "imaps"\naddress = "127.0.0.1"\nport = {self.tls_port}\n'
            f'[[listener]]\nkind = "imaps"\naddress = "::1"\nport = {self.tls_port}\n'
            f'[acme]\ndirectory = "https://{f"[{self.ca_host}]" if ":" in self.ca_host else self.ca_host}'
            f':{self.pebble_port}/dir"\nemail = "postmaster@example.test"\n'
            f'ca_file = "{ca_file}"\nchallenges = {challenges!r}\n'
            + ("" if web else f"http01_port = {self.http_port}\n")
            + f"retry_seconds = {retry}\n".replace("'", '"')
            + ('host_key_file = "key.pem"\n' if host_key else "")
            + ("".join(f'[[listener]]\nkind = "http"\naddress = "{a}"\nport = {self.http_port}\n'
                       for a in ("127.0.0.1", "::1"))
               + f'[[listener]]\nkind = "https"\naddress = "127.0.0.1"\nport = {free_port()}\n' if web else "")
        ).replace("'", '"')


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    from eventmail.tls.certs import make_self_signed

    init_directory(tmp_path / "data", MasterKeySource(key_file=tmp_path / "master.key"))
    make_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", [HOST])
    with DnsServer.start(tmp_path / "dns", {"example.test": ZONE}) as dns:
        b = Bed(tmp_path, dns, free_port(), free_port(), free_port(), free_port())
        try:
            yield b
        finally:
            if b.pebble is not None:
                b.pebble.stop()


async def start(bed: Bed, challenges: list[str], retry: float = 60.0, web: bool = False,
                host_key: bool = False) -> serve.Running:
    return await serve.start(parse(bed.config(challenges, retry, web, host_key), bed.work))


def spki(cert_or_key: x509.Certificate | bytes) -> bytes:
    """The SubjectPublicKeyInfo (what TLSA 3 1 x names) of a certificate or of a PEM private key."""
    public = (cert_or_key.public_key() if isinstance(cert_or_key, x509.Certificate)
              else serialization.load_pem_private_key(cert_or_key, None).public_key())
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


async def wait_issued(running: serve.Running, names: tuple[str, ...], not_serial: str | None = None) -> str:
    """The serial of the certificate the manager installed for `names` (other than `not_serial`)."""
    manager = running.certificates
    assert manager is not None
    deadline = time.monotonic() + ORDER_TIMEOUT
    while True:
        cert = manager.certificates.get(names)
        if cert is not None and cert.serial != not_serial:
            return cert.serial
        assert time.monotonic() < deadline, f"no certificate for {names}"
        async with manager.issued:
            try:
                await asyncio.wait_for(manager.issued.wait(), 1.0)
            except TimeoutError:
                pass


def served(host: str, port: int, name: str | None, cafile: bytes | None = None) -> x509.Certificate:
    """The certificate a TLS listener presents for `name` (SNI); verified against `cafile` when given."""
    if cafile is not None:
        ctx = ssl.create_default_context(cadata=cafile.decode())
    else:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=name) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def served_starttls(port: int) -> x509.Certificate:
    """The certificate the SMTP listener presents after STARTTLS (no SNI: an address was dialled)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        smtp.starttls(context=ctx)
        assert isinstance(smtp.sock, ssl.SSLSocket)
        der = smtp.sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def sans(cert: x509.Certificate) -> list[str]:
    return sorted(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName))


async def issue_all(bed: Bed, challenges: list[str], web: bool = False) -> None:
    """Start with pebble up and a domain added while running: every name set gets a certificate
    by the given challenge, which verifies against pebble's root for its names, by IPv4 and IPv6."""
    pebble = bed.ca()
    running = await start(bed, challenges, web=web)
    try:
        await Admin(running.store, Policy()).domain_add({"domain": "example.test"})
        host_serial = await wait_issued(running, (HOST,))
        domain_serial = await wait_issued(running, ("autoconfig.example.test", "mta-sts.example.test"))
        root = await asyncio.to_thread(pebble.root_pem)
        for address, name, serial in (("127.0.0.1", HOST, host_serial), ("::1", "autoconfig.example.test", domain_serial),
                                      ("127.0.0.1", "mta-sts.example.test", domain_serial)):
            cert = await asyncio.to_thread(served, address, bed.tls_port, name, root)  # verified, name checked
            assert f"{cert.serial_number:x}" == serial
        cert = await asyncio.to_thread(served, "::1", bed.tls_port, "mta-sts.example.test", root)
        assert sans(cert) == ["autoconfig.example.test", "mta-sts.example.test"]
        # The log holds them sealed: no private key or certificate in the clear in the data directory.
        for path in (bed.work / "data").rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert b"PRIVATE KEY" not in data and b"BEGIN CERTIFICATE" not in data, path
    finally:
        await running.stop()


@needs_pebble
@async_test
async def test_http01_issues_for_the_host_and_each_domain_over_ipv4_and_ipv6(bed: Bed) -> None:
    await issue_all(bed, ["http-01"])


@needs_pebble
@async_test
async def test_http01_answered_by_the_http_listener(bed: Bed) -> None:
    """As on a real server: the CA fetches the token from the `http` listeners (IPv4 and IPv6),
    the web application's /.well-known/acme-challenge/ route."""
    await issue_all(bed, ["http-01"], web=True)


@needs_pebble
@async_test
async def test_tls_alpn01_issues_for_the_host_and_each_domain_over_ipv4_and_ipv6(bed: Bed) -> None:
    bed.ca_host = "::1"  # and the ACME API itself over IPv6
    await issue_all(bed, ["tls-alpn-01"])


@needs_pebble
@async_test
async def test_renewal_reaches_smtp_imaps_and_https_without_a_restart(bed: Bed) -> None:
    """With host_key_file (as quickstart writes it) every certificate of the host, the self-signed
    one before the first issue too, has the host's lasting key: a TLSA 3 1 1 record stays true."""
    bed.ca()
    host_key = (bed.work / "key.pem").read_bytes()
    running = await start(bed, ["tls-alpn-01", "http-01"], web=True, host_key=True)
    assert running.tls is not None and running.certificates is not None
    https_port = running.ports["https"]  # the web listener (eventmail/web/server.py)
    try:
        first = await wait_issued(running, (HOST,))
        keys: set[bytes] = set()

        async def serials() -> list[str]:
            smtp = await asyncio.to_thread(served_starttls, running.ports["smtp"])
            imaps = await asyncio.to_thread(served, "::1", bed.tls_port, HOST)
            https = await asyncio.to_thread(served, "127.0.0.1", https_port, HOST)
            keys.update(spki(c) for c in (smtp, imaps, https))
            return [f"{c.serial_number:x}" for c in (smtp, imaps, https)]

        assert await serials() == [first] * 3
        async with aiohttp.ClientSession() as session:  # the HTTPS listener really serves over it
            async with session.get(f"https://127.0.0.1:{https_port}/account/", ssl=False) as r:
                assert r.status == 200 and "Strict-Transport-Security" in r.headers
        # The CA moves the renewal time before now (as ARI does before a revocation): the
        # manager renews at once and swaps the certificate in.
        cert = running.certificates.certificates[(HOST,)]
        await record_renewal(running.store, cert, time.time() - 1)
        second = await wait_issued(running, (HOST,), not_serial=first)
        assert second != first
        assert await serials() == [second] * 3
        assert keys == {spki(host_key)}  # both certificates, on every listener: the host's key
    finally:
        await running.stop()


@needs_pebble
@async_test
async def test_ca_down_at_start_then_up_then_restart_reads_the_store(bed: Bed, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    running = await start(bed, ["http-01"], retry=0.5)  # nothing listens at the CA's address yet
    try:
        cert = await asyncio.to_thread(served, "127.0.0.1", bed.tls_port, HOST)
        assert cert.issuer == cert.subject and sans(cert) == [HOST]  # self-signed, for the host
        assert any("SELF-SIGNED" in r.getMessage() and HOST in r.getMessage() for r in caplog.records)
        deadline = time.monotonic() + 20
        while not any("try 1 failed" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        pebble = bed.ca()  # the CA comes up; the retries reach it
        serial = await wait_issued(running, (HOST,))
        root = await asyncio.to_thread(pebble.root_pem)
        assert f"{(await asyncio.to_thread(served, '127.0.0.1', bed.tls_port, HOST, root)).serial_number:x}" == serial
    finally:
        await running.stop()
    pebble.stop()  # down again: a restart must not need it
    caplog.clear()
    running = await start(bed, ["http-01"], retry=0.5)
    try:
        cert = await asyncio.to_thread(served, "127.0.0.1", bed.tls_port, HOST, root)
        assert f"{cert.serial_number:x}" == serial
        assert not any("SELF-SIGNED" in r.getMessage() for r in caplog.records)
        assert any("presenting the stored certificate" in r.getMessage() for r in caplog.records)
        assert len(stored_certificates(running.store)) == 1
        assert not any("ordering a certificate" in r.getMessage() for r in caplog.records)
    finally:
        await running.stop()


@needs_pebble
@async_test
async def test_a_ca_refusing_many_nonces_still_issues_at_the_first_try(bed: Bed, caplog: pytest.LogCaptureFixture) -> None:
    """RFC 8555 §6.5: a request refused for its nonce is sent again with a fresh one. A CA that
    refuses 40 % of them (pebble refuses 5 % by default, as a CA may) still issues every name set
    at the first try: the package's single retry lost most orders here."""
    caplog.set_level(logging.INFO)
    bed.ca(nonce_reject=40)
    running = await start(bed, ["http-01"])  # a failed try waits 60 s: wait_issued would time out
    try:
        await Admin(running.store, Policy()).domain_add({"domain": "example.test"})
        await wait_issued(running, (HOST,))
        await wait_issued(running, ("autoconfig.example.test", "mta-sts.example.test"))
        assert not any("failed" in r.getMessage() for r in caplog.records if r.name.endswith("certificates"))
    finally:
        await running.stop()


# ---------------------------------------------------------------- the holder, without a CA


@async_test
async def test_tls_alpn_challenge_goes_only_to_handshakes_offering_acme_tls(tmp_path: Path) -> None:
    base_cert, base_key = self_signed_pem(["base.test"])
    host_cert, host_key = self_signed_pem([HOST])
    holder = CertificateHolder(context_from_pem(base_cert, base_key))
    holder.install([HOST], context_from_pem(host_cert, host_key), default=True)
    holder.add_tls_alpn_challenge(HOST, tls_alpn_context(HOST, "token.thumbprint"))
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=holder.context)
    port = server.sockets[0].getsockname()[1]

    def handshake(alpn: list[str] | None, name: str) -> tuple[x509.Certificate, str | None]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname=name) as s:
            der = s.getpeercert(binary_form=True)
            assert der is not None
            return x509.load_der_x509_certificate(der), s.selected_alpn_protocol()

    try:
        cert, alpn = await asyncio.to_thread(handshake, [ACME_TLS_ALPN], HOST)
        ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
        assert ext.critical and alpn == ACME_TLS_ALPN and len(ext.value.value) == 34  # OCTET STRING of SHA-256
        for offer in (None, ["h2", "http/1.1"]):
            cert, alpn = await asyncio.to_thread(handshake, offer, HOST)
            assert alpn is None
            with pytest.raises(x509.ExtensionNotFound):
                cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
            assert sans(cert) == [HOST]
        holder.remove_tls_alpn_challenge(HOST)
        cert, alpn = await asyncio.to_thread(handshake, [ACME_TLS_ALPN], HOST)
        assert sans(cert) == [HOST] and alpn is None
        cert, _ = await asyncio.to_thread(handshake, None, "unknown.test")  # unknown name: the default
        assert sans(cert) == [HOST]
    finally:
        server.close()
        await server.wait_closed()


def test_client_hello_alpn_parses_what_a_client_sends() -> None:
    """The ClientHello bytes Python's own client writes, read back by the parser."""
    seen: list[bytes] = []
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["acme-tls/1", "http/1.1"])
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="x.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    record = outgoing.read()
    seen = client_hello_alpn(record[5:])  # the handshake message after the 5-byte record header
    assert seen == [b"acme-tls/1", b"http/1.1"]
    assert client_hello_alpn(record[5:60]) == []  # cut short: nothing, no exception


def test_ari_certificate_id_is_rfc_9773s_example() -> None:
    """RFC 9773 §4.1: keyIdentifier 69:88:5B:..:D4 and serial 0x87654321 (DER with a leading
    zero octet, the top bit being set) give "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x87654321).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.AuthorityKeyIdentifier(
                bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4"), None, None), critical=False)
            .sign(key, hashes.SHA256()))
    assert ari_cert_id(cert) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_a_renewal_time_is_inside_the_ari_window_and_never_before_now() -> None:
    now = time.time()
    utc = datetime.UTC
    ahead = AriWindow(datetime.datetime.fromtimestamp(now + 1000, utc), datetime.datetime.fromtimestamp(now + 2000, utc),
                      datetime.datetime.fromtimestamp(now + 60, utc))
    for _ in range(50):
        assert now + 1000 <= in_window(ahead, now) <= now + 2000
    started = AriWindow(ahead.start - datetime.timedelta(seconds=5000), ahead.end, ahead.ask_again)
    for _ in range(50):
        assert now <= in_window(started, now) <= now + 2000
    past = AriWindow(ahead.start - datetime.timedelta(days=9), ahead.start - datetime.timedelta(days=8), ahead.ask_again)
    assert in_window(past, now) == now


@async_test
async def test_a_domain_added_gets_its_names_and_a_removed_one_loses_them(keyed_dir: tuple[Path, bytes]) -> None:
    """Without a CA (nothing listens at its address): the names of a domain added while running
    are presented with its stored certificate (self-signed when there is none), fall back to the
    host's once it is removed, and come back with the stored one when it is added back."""
    from eventmail.config import AcmeSettings

    from .conftest import open_store

    store = await open_store(keyed_dir)
    names = ("autoconfig.example.test", "mta-sts.example.test")
    chain, key = self_signed_pem(list(names))
    stored = x509.load_pem_x509_certificate(chain)
    await record_certificate(store, Certificate(names, chain, key, time.time() + 86400 * 90, time.time() + 86400 * 60,
                                                f"{stored.serial_number:x}"), "https://ca.test/dir")
    base_cert, base_key = self_signed_pem(["base.test"])
    holder = CertificateHolder(context_from_pem(base_cert, base_key))
    settings = AcmeSettings(directory=f"https://127.0.0.1:{free_port()}/dir", retry_seconds=3600)
    manager = CertificateManager(store, holder, settings, HOST)
    manager.install_stored()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=holder.context)
    port = server.sockets[0].getsockname()[1]

    async def presented(name: str) -> x509.Certificate:
        return await asyncio.to_thread(served, "127.0.0.1", port, name)

    try:
        assert sans(await presented("mta-sts.example.test")) == [HOST]
        for _ in range(2):  # added, removed, added back
            await Admin(store, Policy()).domain_add({"domain": "example.test"})
            await manager.check()
            assert (await presented("autoconfig.example.test")).serial_number == stored.serial_number
            await Admin(store, Policy()).domain_remove({"domain": "example.test"})
            await manager.check()
            assert sans(await presented("mta-sts.example.test")) == [HOST]
        await Admin(store, Policy()).domain_add({"domain": "other.test"})  # nothing stored: self-signed
        await manager.check()
        assert sans(await presented("mta-sts.other.test")) == ["autoconfig.other.test", "mta-sts.other.test"]
    finally:
        server.close()
        await server.wait_closed()
        await store.close()
