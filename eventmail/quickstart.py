"""`eventmail quickstart ADDRESS`: a new domain's server set up in one non-interactive command — config,
data directory, master key, account, DKIM keys, systemd unit — and every DNS record it needs,
printed and written as a zone file, then what to do next.

It asks nothing and overwrites nothing: a directory that already holds a configuration is refused.
The configuration gets its certificates from Let's Encrypt by ACME ([acme]); a self-signed one is
presented until the first is issued (see the checklist it prints).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from .config import MtaStsSettings
from .mail.admin import Admin, AdminError, check_address
from .mailauth.dkim import public_key_record
from .mailauth.published import Lookup, caa_issuer, domain_records, tlsa_record, zone_signed
from .opening import open_store
from .store import MasterKeySource, init_directory, load_master_key
from .tls.certs import make_self_signed, read_host_key, tlsa_3_1_1
from .web.admin import ADMIN_PASSWORD_FILE, write_admin_password
from .web.clientconfig import mta_sts_id, mta_sts_policy

# Mox's quickstart uses these listeners too: MX on 25, submission with STARTTLS (RFC 6409) and
# implicit TLS (RFC 8314 §3.3), IMAP with STARTTLS and implicit TLS.
# HTTP and HTTPS: the account and admin pages, the webapi, autoconfig and the MTA-STS policy;
# /metrics on loopback only (docs/web.md).
LISTENERS = (("smtp", 25), ("submission", 587), ("submissions", 465), ("imap", 143), ("imaps", 993),
             ("http", 80), ("https", 443))
METRICS_LISTENER = ("127.0.0.1", 9100)
# --existing-webserver: the web listener the other web server forwards to.
PROXIED_HTTP = ("127.0.0.1", 1080)
# RFC 6376 §3.1: selectors are free-form; a year and a letter tell when a key was made and let the
# next rotation publish a new one beside it.
SELECTOR_ALGORITHMS = (("a", "ed25519-sha256"), ("b", "rsa-sha256"))
SERVICE_USER = "eventmail"
ACME_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


class QuickstartError(Exception):
    """A reason not to start: one line."""


@dataclass
class Result:
    config: Path
    data_dir: Path
    key_file: Path
    zone_file: Path
    unit_file: Path
    account: str
    address: str
    password: str
    admin_password: str
    records: list[str] = field(default_factory=list)
    checklist: list[str] = field(default_factory=list)
    tlsa: str = ""  # the host's TLSA record line, published or not
    zone_signed: bool | None = None  # as far as the resolver could tell


def account_name(address: str) -> str:
    """The account's name from the address's local part, in the characters account names allow."""
    local = address.rpartition("@")[0].lower()
    name = re.sub(r"[^a-z0-9._-]+", "-", local).strip("-._")[:64]
    return name or "mail"


def config_text(hostname: str, data_dir: Path, key_file: Path, cert: Path, key: Path, email: str,
                existing_webserver: bool = False) -> str:
    public = [(k, p) for k, p in LISTENERS if not (existing_webserver and k in ("http", "https"))]
    listeners = "".join(f'\n[[listener]]\nkind = "{kind}"\naddress = "0.0.0.0"\nport = {port}\n'
                        f'\n[[listener]]\nkind = "{kind}"\naddress = "::"\nport = {port}\n'
                        for kind, port in public)
    if existing_webserver:
        # Ports 80 and 443 are the other web server's: it forwards our names to this one.
        listeners += (f'\n[[listener]]\nkind = "http"\naddress = "{PROXIED_HTTP[0]}"\nport = {PROXIED_HTTP[1]}\n')
    listeners += f'\n[[listener]]\nkind = "metrics"\naddress = "{METRICS_LISTENER[0]}"\nport = {METRICS_LISTENER[1]}\n'
    proxy = ("# The web server in front (docs/web.md): its X-Forwarded-For/-Proto are believed.\n"
             'trusted_proxies = ["127.0.0.1", "::1"]\n') if existing_webserver else ""
    # Behind another web server port 443 is not ours: the CA's TLS-ALPN-01 cannot reach us.
    challenges = 'challenges = ["http-01"]\n' if existing_webserver else ""
    return (
        "# Written by `eventmail quickstart`. Every key is in docs/config.md (`eventmail config describe`).\n"
        f'hostname = "{hostname}"\n'
        f'data_dir = "{data_dir}"\n'
        "# The master key: outside the data directory, and backed up elsewhere (without it all mail is lost).\n"
        f'key_file = "{key_file}"\n'
        "# The server drops to this user once its ports are bound (create it: useradd --system eventmail).\n"
        f'user = "{SERVICE_USER}"\n'
        f"{proxy}"
        "\n[tls]\n"
        "# A self-signed certificate made by quickstart; with [acme] below every listener presents\n"
        "# the CA's certificates instead, once issued (docs/acme.md).\n"
        f'cert = "{cert}"\nkey = "{key}"\n'
        "\n[acme]\n"
        "# Certificates for the host and each domain's mta-sts and autoconfig names, renewed while running.\n"
        f'directory = "{ACME_DIRECTORY}"\nemail = "{email}"\n{challenges}'
        "# The host's certificates keep this key across renewals, so a DANE TLSA 3 1 1 record stays true.\n"
        f'host_key_file = "{key}"\n'
        "\n[resolver]\n"
        "# A validating resolver on this machine (unbound), as DNSSEC/DANE need.\n"
        'nameservers = ["127.0.0.1"]\n'
        f"{listeners}"
    )


def systemd_unit(config: Path, data_dir: Path) -> str:
    """A hardened unit: the server starts as root only to bind ports below 1024 and drops to its
    user itself (eventmail/privileges.py); systemd takes every other privilege away."""
    return f"""[Unit]
Description=eventmail mail server
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/env eventmail serve --config {config}
Restart=on-failure
RestartSec=5
# Binding ports 25, 80, 143, 443, 465, 587 and 993 is the one privilege needed; the server drops to user
# {SERVICE_USER} after binding.
CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_SETUID CAP_SETGID
AmbientCapabilities=
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={data_dir}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
UMask=0077

[Install]
WantedBy=multi-user.target
"""


def _zone_file(domain: str, hostname: str, records: list[str]) -> str:
    d = domain.rstrip(".") + "."
    serial = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d01")
    head = [
        f"; Zone file for {domain} written by `eventmail quickstart`: the mail records, to merge into",
        "; your zone. The SOA and NS below are placeholders (so the file loads on its own); keep yours.",
        f"$ORIGIN {d}",
        "$TTL 3600",
        f"@ IN SOA ns1.{d} hostmaster.{d} {serial} 7200 3600 1209600 3600",
        f"@ IN NS ns1.{d}",
    ]
    if not hostname.rstrip(".").endswith(domain.rstrip(".")):
        head.append(f"; {hostname} is in another zone: its A/AAAA and its own SPF record go there.")
    return "\n".join([*head, *records]) + "\n"


async def _setup_store(data_dir: Path, key_file: Path, domain: str, account: str, address: str,
                       password: str, year: int) -> list[tuple[str, str]]:
    source = MasterKeySource(key_file=key_file)
    init_directory(data_dir, source)
    store = await open_store(data_dir, load_master_key(data_dir, source))
    try:
        admin = Admin(store)
        await admin.run("domain.add", {"domain": domain})
        await admin.run("account.add", {"name": account, "address": address, "password": password})
        dkim = []
        for letter, algorithm in SELECTOR_ALGORITHMS:
            selector = f"{year}{letter}"
            await admin.run("dkim.add", {"domain": domain, "selector": selector, "algorithm": algorithm})
            d = store.system.dkim[(domain, selector)]
            dkim.append((selector, public_key_record(d.algorithm, d.private_key)))
        return dkim
    finally:
        await store.close()


def proxy_config(hostname: str, domain: str) -> str:
    """An nginx configuration for the web server in front (--existing-webserver): our names go to
    the local HTTP listener, with the client's address and scheme in X-Forwarded-* headers."""
    names = f"{hostname} autoconfig.{domain} mta-sts.{domain}"
    forward = (f"        proxy_pass http://{PROXIED_HTTP[0]}:{PROXIED_HTTP[1]};\n"
               "        proxy_set_header Host $host;\n"
               "        proxy_set_header X-Forwarded-For $remote_addr;\n"
               "        proxy_set_header X-Forwarded-Proto $scheme;\n")
    return (
        f"# nginx: forward eventmail's names to it (written by `eventmail quickstart --existing-webserver`).\n"
        f"# The certificate for these names on 443 is this web server's (for example from its own ACME\n"
        f"# client); eventmail gets its own, for SMTP and IMAP, through the HTTP-01 answers on port 80.\n"
        f"server {{\n    listen 80;\n    listen [::]:80;\n    server_name {names};\n"
        f"    location / {{\n{forward}    }}\n}}\n"
        f"server {{\n    listen 443 ssl;\n    listen [::]:443 ssl;\n    server_name {names};\n"
        f"    # ssl_certificate ...; ssl_certificate_key ...;\n"
        f"    location / {{\n{forward}    }}\n}}\n"
    )


def quickstart(address: str, hostname: str | None, directory: Path, existing_webserver: bool = False,
               resolver: tuple[tuple[str, ...], int] | None = None) -> Result:
    """`resolver`: (nameservers, port) asked whether the host's zone is DNSSEC-signed (for TLSA);
    None: do not ask (the records then leave TLSA out and the checklist says when to add it)."""
    try:
        address = check_address(address)
    except AdminError as e:
        raise QuickstartError(str(e)) from None
    domain = address.rpartition("@")[2].lower()
    hostname = (hostname or f"mail.{domain}").lower().rstrip(".")
    directory = directory.resolve()
    config = directory / "eventmail.toml"
    if config.exists() or (directory / "data").exists():
        raise QuickstartError(f"{directory} already holds a configuration or data directory: give a new --dir")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_dir, key_file = directory / "data", directory / "keys" / "master.key"
    tls_dir = directory / "tls"
    tls_dir.mkdir(mode=0o700, exist_ok=True)
    cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
    make_self_signed(cert, key, [hostname])
    account = account_name(address)
    password = secrets.token_urlsafe(18)
    year = datetime.datetime.now(datetime.UTC).year
    dkim = asyncio.run(_setup_store(data_dir, key_file, domain, account, address, password, year))
    admin_password = secrets.token_urlsafe(18)
    write_admin_password(data_dir / ADMIN_PASSWORD_FILE, admin_password)
    config.write_text(config_text(hostname, data_dir, key_file, cert, key, address, existing_webserver))
    if existing_webserver:
        (directory / "nginx-eventmail.conf").write_text(proxy_config(hostname, domain))
    os.chmod(config, 0o600)
    policy_id = mta_sts_id(mta_sts_policy(hostname, MtaStsSettings()))
    published = domain_records(domain, hostname, address, dkim, policy_id, caa_issuer(ACME_DIRECTORY))
    # The key of quickstart's self-signed certificate is the host's lasting key: every ACME
    # certificate of the host is made with it ([acme] host_key_file), so TLSA 3 1 1 stays true.
    tlsa = tlsa_record(hostname, tlsa_3_1_1(read_host_key(key)))
    signed = zone_signed(Lookup(*resolver, lifetime=5.0), hostname) if resolver is not None else None
    if signed:
        published.append(tlsa)
    records = [line for r in published for line in (f"; {r.why}", r.line())]
    zone_file = directory / f"{domain}.zone"
    zone_file.write_text(_zone_file(domain, hostname, records))
    unit_file = directory / "eventmail.service"
    unit_file.write_text(systemd_unit(config, data_dir))
    checklist = [
        f"Back up {key_file} somewhere other than this machine NOW: without it all mail is lost for good.",
        f"Create the service user: useradd --system --home-dir {directory} {SERVICE_USER}; "
        f"chown -R {SERVICE_USER} {data_dir}",
        f"Give {hostname} A and AAAA records for this machine, then publish the records above "
        f"(also written to {zone_file}).",
        f"Ask your hosting provider for reverse DNS (PTR) of this machine's IPv4 and IPv6 addresses: {hostname}.",
        (f"Forward {hostname}, autoconfig.{domain} and mta-sts.{domain} from your web server to "
         f"http://{PROXIED_HTTP[0]}:{PROXIED_HTTP[1]} (an nginx example: {directory / 'nginx-eventmail.conf'}); "
         "the mail host's certificate then comes from Let's Encrypt through port 80 (HTTP-01)."
         if existing_webserver else
         f"Let ports 80 and 443 reach this machine: once {hostname}, mta-sts.{domain} and autoconfig.{domain} "
         "resolve here, the server gets their certificates from Let's Encrypt by itself and renews them "
         "(until then it presents a self-signed one, and says so in its log)."),
        *([] if signed else [
            ("Your zone is not DNSSEC-signed" if signed is False else "Whether your zone is DNSSEC-signed could not be "
             "told") + f"; once it is, publish DANE's TLSA record too (RFC 7672): {tlsa.line()}"]),
        "Run a validating resolver (unbound) on 127.0.0.1, as [resolver] says.",
        f"Install the unit: cp {unit_file} /etc/systemd/system/ && systemctl enable --now eventmail",
        f"Configure your mail client: {address}, IMAP {hostname} port 993 (TLS), "
        f"submission {hostname} port 465 (TLS); user name {account}. Thunderbird and Outlook find these "
        f"themselves once autoconfig.{domain} and the SRV records are published.",
        f"Your account page: https://{hostname}/account/; the admin page: https://{hostname}/admin/ "
        "with the admin password above (change it with `eventmail admin set-password`).",
    ]
    return Result(config, data_dir, key_file, zone_file, unit_file, account, address, password, admin_password,
                  records, checklist, tlsa.line(), signed)
