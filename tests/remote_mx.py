"""Test bed: a remote mail domain in a private network namespace — signed DNS, validating unbound, Postfix as its MX, MTA-STS over HTTPS.

`RemoteMx.start(base)` builds, inside a namespace of its own (`unshare --net --mount`; only `lo`):

- unbound on 127.0.0.1:53, loading the DNSSEC-signed zone `remote.test` as an auth-zone it
  validates (tests/unbound_fixture.py, TESTBED §5b), so its answers carry the AD bit;
  /etc/resolv.conf is bind-mounted in the namespace's private mount table to point at it
  (`options trust-ad`), so Postfix, which asks only the system resolver, asks it too;
- Postfix (TESTBED §2, `postfix -c`, own queue and log) as the MX of every domain below, one
  smtpd per MX address on port 25 (DANE looks up `_25._tcp.HOST`), delivering what it accepts to
  one maildir (`arrived()` reads it; `smtpd_tls_received_header` puts the TLS of each session in
  its Received field) and refusing any bare LF (`smtpd_forbid_bare_newline`, no exclusions);
- HTTPS servers for the MTA-STS policies (certificates from the bed's own CA, `ca_pem`);
- a greylisting policy server and a blackhole listener (tests/remote_mx_ns.py).

Domains (`Bed.*`): GOOD `remote.test` (MX with TLSA 3 1 1 of its certificate, and an enforced
MTA-STS policy DANE takes precedence over), BAD_TLSA (TLSA that matches nothing), NO_TLS (no
STARTTLS), DANE_NO_TLS (TLSA published, no STARTTLS), OLD_TLS (STARTTLS offered, handshake fails: only TLS 1.1 and older), STS_OK and
STS_MISMATCH (MTA-STS `enforce`, no TLSA; the second MX's certificate names another host),
GREYLIST (4xx, then accept), REJECT (5xx), BLACKHOLE (no greeting ever), IDN (bücher.remote.test,
served by GOOD's MX), NULL_MX (RFC 7505), NXDOMAIN. With `relay=True` a second Postfix
(relay.client.test, on RELAY:10025, open to 127.0.0.0/8) delivers by MX lookup with
`smtp_tls_security_level = dane` through the same DNS.

Code under test joins the namespace through `bed.run(coro)`, which runs the coroutine on a
thread that entered the namespace (setns(2) on that thread only), so plan_delivery, attempt and
the MTA-STS fetch open real sockets to the bed's addresses; `bed.nsenter(argv)` prefixes a
command that should run inside (swaks), and `bed.mail_server()` gives an `eventmail serve` that
runs inside. Everything the bed starts is ended by PID; the namespace disappears with its last
process. Needs root, util-linux unshare/nsenter, iproute2, postfix, unbound and ldnsutils:
`unavailable()` says what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from eventmail.mailauth.resolver import Resolver, ResolverConfig
from eventmail.smtp.attempt import AttemptResult, Outcome, Timeouts, attempt
from eventmail.smtp.destination import DeliveryPlan, Route, plan_delivery
from eventmail.smtp.mtasts import PolicyCache, StsPolicy
from eventmail.smtp.mtastsfetch import FetchConfig, fetch_policy
from eventmail.smtp.tlspolicy import TlsMode

from .dns_fixture import process_alive, stop_process, txt_rdata, zone_text
from .mailserver import MailServer
from .unbound_fixture import write_config

T = TypeVar("T")

NS_SCRIPT = Path(__file__).with_name("remote_mx_ns.py")
POSTFIX_MASTER_CF = Path("/usr/share/postfix/master.cf.dist")
CLONE_NEWNET = 0x40000000
READY_TIMEOUT = 30.0
ZONE = "remote.test"
RELAY = "127.0.0.3"
RELAY_PORT = 10025
GREYLIST_POLICY = ("127.0.0.1", 10040)
# Short, so a test against a silent peer ends soon (RFC 5321 §4.5.3.2 gives minutes).
TIMEOUTS = Timeouts.all(10.0)


@dataclass(frozen=True)
class Mx:
    """One variant of the remote domain: its name, its MX host and that host's address."""

    domain: str
    host: str = ""
    address: str = ""
    smtpd: tuple[str, ...] = ()  # extra `-o` settings of this MX's smtpd
    tlsa: str = ""  # "good", "wrong" or "" (none)
    sts: str = ""  # the MTA-STS policy body served for the domain, "" for none
    sts_address: str = ""


class Bed:
    """The domains of the bed (see the module docstring)."""

    GOOD = Mx("remote.test", "mx.remote.test", "127.0.0.10", tlsa="good",
              sts="version: STSv1\nmode: enforce\nmx: mx.remote.test\nmax_age: 86400\n", sts_address="127.0.0.20")
    BAD_TLSA = Mx("badtlsa.remote.test", "mx.badtlsa.remote.test", "127.0.0.11", tlsa="wrong")
    NO_TLS = Mx("notls.remote.test", "mx.notls.remote.test", "127.0.0.12", smtpd=("smtpd_tls_security_level=none",))
    # A TLSA record that would match, and no STARTTLS: under DANE, no delivery (RFC 7672 §2.2).
    DANE_NO_TLS = Mx("danenotls.remote.test", "mx.danenotls.remote.test", "127.0.0.19", tlsa="good",
                     smtpd=("smtpd_tls_security_level=none",))
    STS_MISMATCH = Mx("stsbad.remote.test", "mx.stsbad.remote.test", "127.0.0.13",
                      smtpd=("smtpd_tls_cert_file=$WRONG_CHAIN", "smtpd_tls_key_file=$WRONG_KEY"),
                      sts="version: STSv1\nmode: enforce\nmx: mx.stsbad.remote.test\nmax_age: 86400\n",
                      sts_address="127.0.0.21")
    STS_OK = Mx("stsok.remote.test", "mx.stsok.remote.test", "127.0.0.14",
                sts="version: STSv1\nmode: enforce\nmx: mx.stsok.remote.test\nmax_age: 86400\n",
                sts_address="127.0.0.22")
    GREYLIST = Mx("grey.remote.test", "mx.grey.remote.test", "127.0.0.15",
                  smtpd=(f"{{ smtpd_recipient_restrictions = check_policy_service "
                         f"inet:{GREYLIST_POLICY[0]}:{GREYLIST_POLICY[1]} }}",))
    REJECT = Mx("reject.remote.test", "mx.reject.remote.test", "127.0.0.16",
                smtpd=("smtpd_recipient_restrictions=reject",))
    BLACKHOLE = Mx("blackhole.remote.test", "mx.blackhole.remote.test", "127.0.0.17")
    # OpenSSL refuses TLS 1.1 and older on both sides: STARTTLS is offered and every handshake fails.
    OLD_TLS = Mx("oldtls.remote.test", "mx.oldtls.remote.test", "127.0.0.18",
                 smtpd=("{ smtpd_tls_protocols = <=TLSv1.1 }",))
    # An internationalized domain (bücher.remote.test), in the DNS as its A-label, served by GOOD's MX.
    IDN = Mx("xn--bcher-kva.remote.test", "mx.remote.test")
    NULL_MX = Mx("nullmx.remote.test")
    NXDOMAIN = Mx("nosuch.remote.test")

    @classmethod
    def all(cls) -> tuple[Mx, ...]:
        return tuple(v for v in vars(cls).values() if isinstance(v, Mx))

    @classmethod
    def listening(cls) -> tuple[Mx, ...]:
        """The variants with a Postfix smtpd (not the blackhole, which nothing answers)."""
        return tuple(v for v in cls.all() if v.address and v is not cls.BLACKHOLE)


def unavailable() -> str | None:
    """Why the bed cannot run here, or None."""
    if os.geteuid() != 0:
        return "the remote-MX bed needs root (network namespace, Postfix on port 25)"
    for tool in ("unshare", "nsenter", "ip", "mount", "script", "postfix", "unbound", "unbound-checkconf",
                 "ldns-keygen", "ldns-signzone"):
        if shutil.which(tool) is None:
            return f"the remote-MX bed needs {tool} (tools/install-debian-packages installs it)"
    if not POSTFIX_MASTER_CF.exists():
        return f"no {POSTFIX_MASTER_CF}"
    if not Path("/etc/resolv.conf").exists():
        return "no /etc/resolv.conf to bind the bed's over (in the bed's private mount namespace)"
    probe = subprocess.run(["unshare", "--net", "--mount", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace here: {probe.stderr.strip()}"
    return None


# -- certificates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BedCerts:
    ca_pem: Path
    chain_pem: Path  # the MX certificate (every listening MX host and mta-sts name), then the CA
    key_pem: Path
    wrong_chain_pem: Path  # a certificate from the same CA for another host (mx.elsewhere.test)
    wrong_key_pem: Path
    spki_sha256: bytes  # of the MX certificate's key: the TLSA 3 1 1 association data

    def context(self) -> ssl.SSLContext:
        """A verifying client context trusting the bed's CA (for the MTA-STS fetch)."""
        return ssl.create_default_context(cafile=str(self.ca_pem))


def _make_certs(directory: Path, names: list[str]) -> BedCerts:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    later = now + datetime.timedelta(days=2)

    def dn(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(dn("remote-mx bed CA")).issuer_name(dn("remote-mx bed CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)

    def leaf(stem: str, sans: list[str]) -> tuple[Path, Path, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(dn(sans[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(later)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        chain, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return chain, key_path, key

    (directory / "ca.pem").write_bytes(ca_pem)
    chain, key_path, key = leaf("mx", names)
    wrong_chain, wrong_key, _ = leaf("wrong", ["mx.elsewhere.test"])
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return BedCerts(directory / "ca.pem", chain, key_path, wrong_chain, wrong_key, hashlib.sha256(spki).digest())


# -- DNS -------------------------------------------------------------------------------------------


def zone(certs: BedCerts, v6: bool) -> str:
    """The signed zone `remote.test`: every variant's MX, addresses, TLSA and MTA-STS records."""
    records: list[str] = []
    for v in Bed.all():
        if v is Bed.NXDOMAIN:
            continue
        if v is Bed.NULL_MX:
            records.append(f"{v.domain}. MX 0 .")  # RFC 7505 §3
            continue
        records.append(f"{v.domain}. MX 10 {v.host}.")
        if not v.address:
            continue  # another variant's MX host
        records.append(f"{v.host}. A {v.address}")
        if v is Bed.GOOD and v6:
            records.append(f"{v.host}. AAAA ::1")
        if v.tlsa == "good":
            records.append(f"_25._tcp.{v.host}. TLSA 3 1 1 {certs.spki_sha256.hex()}")
        elif v.tlsa == "wrong":
            records.append(f"_25._tcp.{v.host}. TLSA 3 1 1 {hashlib.sha256(b'no such key').hexdigest()}")
        if v.sts:
            policy_id = hashlib.sha256(v.sts.encode()).hexdigest()[:16]
            records += [f"_mta-sts.{v.domain}. TXT {txt_rdata(f'v=STSv1; id={policy_id}')}",
                        f"mta-sts.{v.domain}. A {v.sts_address}"]
    return zone_text(ZONE, records)


# -- Postfix ---------------------------------------------------------------------------------------


def _master_cf(listeners: list[tuple[str, tuple[str, ...]]]) -> str:
    """master.cf from Debian's dist copy: our smtpd listeners instead of *:25, chroot off (TESTBED §2)."""
    lines = []
    for line in POSTFIX_MASTER_CF.read_text().splitlines():
        if line.startswith("smtp      inet"):
            for endpoint, options in listeners:
                lines.append(f"{endpoint} inet n - n - - smtpd")
                lines += [f"  -o {o}" for o in options]
            continue
        parts = line.split()
        if len(parts) >= 5 and parts[1] == "unix" and parts[4] == "y":
            parts[4] = "n"
            line = " ".join(parts)
        lines.append(line)
    return "\n".join(lines) + "\n"


def _postfix_dirs(base: Path) -> tuple[Path, Path, Path]:
    etc, spool, data = base / "etc", base / "spool", base / "data"
    for d in (etc, spool, data):
        d.mkdir(parents=True, exist_ok=True)
    shutil.chown(data, "postfix")
    os.chmod(base, 0o755)
    return etc, spool, data


def _common_main_cf(base: Path, spool: Path, data: Path, name: str) -> str:
    return f"""compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {base}/postfix.log
maillog_file_prefixes = /var, /dev/stdout, {base}
syslog_name = postfix-{name}
alias_maps =
alias_database =
biff = no
mydestination =
local_recipient_maps =
# The client's name is of no use here and its PTR lookup only costs time.
smtpd_peername_lookup = no
"""


def mx_postfix(base: Path, certs: BedCerts, maildir_base: Path, v6: bool) -> Path:
    etc, spool, data = _postfix_dirs(base)
    maildir_base.mkdir(parents=True, exist_ok=True)
    shutil.chown(maildir_base, "postfix", "postfix")
    owner = pwd.getpwnam("postfix")
    domains = ", ".join(v.domain for v in Bed.all() if v.host)
    (etc / "main.cf").write_text(_common_main_cf(base, spool, data, "remote-mx") + f"""myhostname = mx.remote.test
mydomain = remote.test
inet_interfaces = all
inet_protocols = {"all" if v6 else "ipv4"}
mynetworks = 127.0.0.1/32
virtual_mailbox_domains = {domains}
virtual_mailbox_base = {maildir_base}
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:{owner.pw_uid}
virtual_gid_maps = static:{owner.pw_gid}
smtpd_tls_cert_file = {certs.chain_pem}
smtpd_tls_key_file = {certs.key_pem}
smtpd_tls_security_level = may
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
# RFC 5321 §2.3.8: a bare LF in a command or in DATA is refused, from every client ("yes" is
# "normalize" since the 2024 smuggling fixes: it would accept the message).
smtpd_forbid_bare_newline = reject
smtpd_forbid_bare_newline_exclusions =
smtp_dns_support_level = disabled
""")
    def options(v: Mx) -> tuple[str, ...]:
        return tuple(o.replace("$WRONG_CHAIN", str(certs.wrong_chain_pem)).replace("$WRONG_KEY", str(certs.wrong_key_pem))
                     for o in v.smtpd)

    listeners = [(f"{v.address}:25", options(v)) for v in Bed.listening()]
    if v6:
        listeners.append(("[::1]:25", ()))
    (etc / "master.cf").write_text(_master_cf(listeners))
    return etc


def relay_postfix(base: Path, certs: BedCerts) -> Path:
    """A sending Postfix: MX lookup through resolv.conf, DNSSEC, DANE where TLSA is published."""
    etc, spool, data = _postfix_dirs(base)
    (etc / "main.cf").write_text(_common_main_cf(base, spool, data, "relay") + f"""myhostname = relay.client.test
mydomain = client.test
inet_interfaces = {RELAY}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relayhost =
smtp_host_lookup = dns
smtp_dns_support_level = dnssec
smtp_tls_security_level = dane
smtp_tls_loglevel = 1
smtpd_tls_cert_file = {certs.chain_pem}
smtpd_tls_key_file = {certs.key_pem}
smtpd_tls_security_level = may
""")
    (etc / "master.cf").write_text(_master_cf([(f"{RELAY}:{RELAY_PORT}", ())]))
    return etc


# -- running code inside -----------------------------------------------------------------------------


_libc = ctypes.CDLL(None, use_errno=True)


def _enter(pid: int) -> None:
    """Move the calling thread (only) into the network namespace of `pid` (setns(2))."""
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns: {os.strerror(err)}")
    finally:
        os.close(fd)


@dataclass
class RemoteMx:
    base: Path
    holder: subprocess.Popen[bytes]
    certs: BedCerts
    v6: bool
    maildir: Path
    unbound: subprocess.Popen[bytes] | None = None
    postfix: list[Path] = field(default_factory=list)  # etc directories, in start order
    relay_etc: Path | None = None
    _own_base: bool = False

    # -- life cycle --

    @classmethod
    def start(cls, base: Path | None = None, *, relay: bool = False) -> RemoteMx:
        """Build and start the bed under `base` (default: a new 0755 directory). Postfix's daemons
        run as the postfix user: every directory above `base` must be searchable by it."""
        own = base is None
        if base is None:
            # Postfix's daemons run as postfix: pytest's 0700 temporary tree is out of their reach.
            base = Path(tempfile.mkdtemp(prefix="eventmail-remote-mx-"))
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o755)
        names = [v.host for v in Bed.listening() if v is not Bed.STS_MISMATCH]
        names += [f"mta-sts.{v.domain}" for v in Bed.all() if v.sts]
        certs = _make_certs(base / "certs", names)
        resolv = base / "resolv.conf"
        # trust-ad: glibc passes the AD bit on to Postfix (TESTBED §2b).
        resolv.write_text("nameserver 127.0.0.1\noptions trust-ad\n")
        addresses = [v.address for v in Bed.all() if v.address] + [v.sts_address for v in Bed.all() if v.sts]
        config = {
            "addresses": [*addresses, RELAY],
            "resolv_conf": str(resolv),
            "https": [
                {"address": v.sts_address, "port": 443, "cert": str(certs.chain_pem), "key": str(certs.key_pem),
                 "body": v.sts}
                for v in Bed.all() if v.sts
            ],
            "greylist": {"address": GREYLIST_POLICY[0], "port": GREYLIST_POLICY[1]},
            "blackholes": [{"address": Bed.BLACKHOLE.address, "port": 25}],
        }
        (base / "ns.json").write_text(json.dumps(config))
        log = (base / "ns.log").open("wb")
        holder = subprocess.Popen(
            ["unshare", "--net", "--mount", sys.executable, str(NS_SCRIPT), str(base / "ns.json")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
        )
        log.close()
        assert holder.stdout is not None
        line = holder.stdout.readline().decode()
        if not line.startswith("READY"):
            holder.kill()
            holder.wait(5)
            raise RuntimeError(f"namespace holder failed: {line!r} {(base / 'ns.log').read_text(errors='replace')}")
        # The holder's further output (greylist decisions, HTTPS requests) goes to ns.log.
        threading.Thread(target=_copy, args=(holder.stdout, base / "ns.log"), daemon=True).start()
        v6 = line.split("v6=")[1].strip() == "1"
        bed = cls(base, holder, certs, v6, base / "mx" / "mail" / "maildir", _own_base=own)
        try:
            bed._start_unbound()
            bed._start_postfix(mx_postfix(base / "mx", certs, base / "mx" / "mail", v6))
            bed._wait_listening(Bed.GOOD.address, 25)
            if relay:
                bed.relay_etc = relay_postfix(base / "relay", certs)
                bed._start_postfix(bed.relay_etc)
                bed._wait_listening(RELAY, RELAY_PORT)
        except BaseException:
            bed.stop()
            raise
        return bed

    def _start_unbound(self) -> None:
        directory = self.base / "unbound"
        conf = write_config(directory, {ZONE: zone(self.certs, self.v6)}, port=53)
        with (directory / "unbound.out").open("wb") as out:
            self.unbound = subprocess.Popen(
                self.nsenter(["unbound", "-d", "-c", str(conf)]), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def ready() -> bool:
            query = dns.message.make_query(ZONE, dns.rdatatype.SOA, flags=dns.flags.RD | dns.flags.AD)
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError, dns.exception.Timeout):
                    if dns.query.udp(query, "127.0.0.1", timeout=0.5, port=53).flags & dns.flags.AD:
                        return True
                time.sleep(0.1)
            return False

        if not self.call(ready):
            raise RuntimeError(f"unbound not validating {ZONE}: {(directory / 'unbound.log').read_text(errors='replace')[-2000:]}")

    def _start_postfix(self, etc: Path) -> None:
        subprocess.run(self.nsenter(["postfix", "-c", str(etc), "check"]), check=True, timeout=60)
        self.postfix.append(etc)
        subprocess.run(self.nsenter(["script", "-qc", f"postfix -c {etc} start", "/dev/null"]), check=True, timeout=60)

    def _wait_listening(self, address: str, port: int) -> None:
        def probe() -> bool:
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex((address, port)) == 0:
                        return True
                time.sleep(0.1)
            return False

        if not self.call(probe):
            raise RuntimeError(f"nothing listens on {address}:{port} in the bed: {self.log_tail()}")

    def stop(self) -> None:
        for etc in reversed(self.postfix):
            pidfile = etc.parent / "spool" / "pid" / "master.pid"
            master = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
            subprocess.run(self.nsenter(["script", "-qc", f"postfix -c {etc} stop", "/dev/null"]), timeout=60)
            if master is not None:  # the master we started is gone, by its PID
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and process_alive(master):
                    time.sleep(0.1)
                if process_alive(master):
                    os.kill(master, signal.SIGKILL)
        self.postfix = []
        if self.unbound is not None:
            stop_process(self.unbound)
            self.unbound = None
        if self.holder.poll() is None:
            assert self.holder.stdin is not None
            self.holder.stdin.close()  # the holder exits; the namespace goes with its last process
            try:
                self.holder.wait(10)
            except subprocess.TimeoutExpired:
                stop_process(self.holder)
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> RemoteMx:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- inside the namespace --

    def nsenter(self, argv: list[str]) -> list[str]:
        """`argv` run inside the bed (its network and mount namespaces)."""
        return ["nsenter", f"--target={self.holder.pid}", "--net", "--mount", "--", *argv]

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on a thread inside the bed's network namespace (threads it starts are inside too)."""
        out: list[T] = []
        failed: list[BaseException] = []

        def target() -> None:
            try:
                _enter(self.holder.pid)
                out.append(fn(*args))
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=target, name="remote-mx-bed")
        thread.start()
        thread.join()
        if failed:
            raise failed[0]
        return out[0]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """asyncio.run(coro) inside the bed."""
        return self.call(lambda: asyncio.run(coro))

    # -- what the code under test uses --

    def resolver(self) -> Resolver:
        """The bed's validating resolver (create and use it inside `run`)."""
        return Resolver(ResolverConfig(nameservers=("127.0.0.1",), port=53, timeout=1.0, lifetime=3.0))

    def fetch_config(self) -> FetchConfig:
        """MTA-STS fetches trusting the bed's CA (standing in for the public CAs)."""
        return FetchConfig(port=443, timeout=5.0, ssl_context=self.certs.context())

    async def plan(self, domain: str, *, cache: PolicyCache | None = None, attempt_no: int = 0,
                   dane: bool = True) -> DeliveryPlan:
        """plan_delivery for `domain` with the bed's resolver and MTA-STS fetch (call inside `run`)."""
        resolver = self.resolver()
        config = self.fetch_config()

        async def fetch(d: str) -> StsPolicy:
            return await fetch_policy(d, resolver, config)

        return await plan_delivery(domain, resolver=resolver, fetch_policy=fetch, cache=cache or PolicyCache(),
                                   now=time.time(), attempt=attempt_no, dane=dane)

    def trusted(self, route: Route) -> Route:
        """The route with the bed's CA as the PKIX trust store (MTA-STS `enforce` verifies against
        the public CAs; the bed's CA stands in for them)."""
        if route.tls.mode is TlsMode.PKIX:
            return replace(route, tls=replace(route.tls, cafile=str(self.certs.ca_pem)))
        return route

    async def deliver(self, plan: DeliveryPlan, mail_from: str, rcpts: list[str], message: bytes, *,
                      timeouts: Timeouts = TIMEOUTS) -> list[AttemptResult]:
        """Try the plan's routes in order, as a queue runner does within one attempt (RFC 5321
        §5.1): on to the next route while every recipient is still temporary; the results."""
        results = []
        for route in plan.routes:
            route = self.trusted(route)
            result = await attempt(route.host, route.address, 25, mail_from, rcpts, message, tls=route.tls,
                                   helo="client.test", timeouts=timeouts)
            results.append(result)
            if any(r.outcome is not Outcome.TEMPORARY for r in result.rcpts):
                break
        return results

    def mail_server(self, base: Path, **settings: Any) -> MailServer:
        """An `eventmail serve` instance (initialised, not started) that runs inside the bed: its
        listeners on the namespace's 127.0.0.1, its resolver the bed's unbound (127.0.0.1:53), and
        the bed's CA in its default trust store (SSL_CERT_FILE). `settings` are MailServer fields."""
        base.mkdir(parents=True, exist_ok=True)
        wrapper = base / "python-in-bed"
        # nsenter execs the interpreter inside, so the PID MailServer holds is the server's own.
        wrapper.write_text("#!/bin/sh\nexec " + " ".join(self.nsenter([sys.executable])) + ' "$@"\n')
        wrapper.chmod(0o755)
        settings.setdefault("env", {**os.environ, "SSL_CERT_FILE": str(self.certs.ca_pem)})
        srv = MailServer(base / "eventmail", dns_port=53, python=str(wrapper), **settings)
        srv.base.mkdir()
        srv.init()
        return srv

    # -- what arrived --

    def arrivals(self, needle: bytes) -> list[bytes]:
        """Messages the MX delivered to its maildir that contain `needle`."""
        out = []
        for sub in ("new", "cur"):
            d = self.maildir / sub
            if d.is_dir():
                for f in sorted(d.iterdir()):
                    with contextlib.suppress(FileNotFoundError):
                        data = f.read_bytes()
                        if needle in data:
                            out.append(data)
        return out

    def arrived(self, needle: bytes, timeout: float = 30.0) -> bytes:
        """The one message containing `needle`, waiting for the MX's local delivery."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.arrivals(needle)
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} never reached the MX's maildir; log:\n{self.log_tail()}")

    def count(self) -> int:
        return sum(len(os.listdir(self.maildir / s)) for s in ("new", "cur") if (self.maildir / s).is_dir())

    def mx_log(self) -> str:
        path = self.base / "mx" / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def relay_log(self) -> str:
        path = self.base / "relay" / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join((self.mx_log().splitlines() + self.relay_log().splitlines())[-lines:])

    def master_pid(self, etc: Path) -> int | None:
        pidfile = etc.parent / "spool" / "pid" / "master.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.exists() else None


def _copy(stream: Any, path: Path) -> None:
    with path.open("ab") as f:
        for line in stream:
            f.write(line)
            f.flush()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
