"""The `eventmail` command: keys, accounts, import/export, verify and log on a data directory."""

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from . import evloop, transfer
from .junk.cli import add_commands as add_junk_commands
from .logfmt import EscapingFormatter
from .opening import open_store
from .privileges import PrivilegeError
from .proto import events_pb2 as pb
from .store import (
    QUEUE,
    SYSTEM,
    DirectoryLocked,
    KeyFileExposed,
    MasterKeySource,
    MissingKey,
    NotFound,
    Store,
    StoreError,
    StreamShredded,
    WrongKey,
    account_stream,
    init_directory,
    load_master_key,
)
from .tls.certs import HostKeyError

if TYPE_CHECKING:
    from . import config as config_mod
    from . import serve

EXIT_USAGE = 2
ALLOW_KEY_FILE_MODE_HELP = "use a master key file that group or others may read (refused by default, as ssh does)"
RESERVED_NAMES = {SYSTEM, QUEUE}


class CliError(Exception):
    """An error to print as one line, with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- helpers


def _directory(args: argparse.Namespace) -> Path:
    return Path(args.dir)


def _key_source(args: argparse.Namespace) -> MasterKeySource:
    return MasterKeySource.default(_directory(args), args.key_file, args.passphrase_env,
                                   allow_loose_mode=args.allow_key_file_mode)


async def _open(args: argparse.Namespace, writable: bool, tolerate_damage: bool = False) -> Store:
    directory = _directory(args)
    source = _key_source(args)
    if not (directory / "keyring").exists():
        raise MissingKey(f"{directory} is not an eventmail data directory (run `eventmail key init --dir {directory}`)")
    return await open_store(
        directory, load_master_key(directory, source), writable=writable, tolerate_damage=tolerate_damage
    )


def _read_password(args: argparse.Namespace) -> str:
    """The password: stdin's or a file's first line, else asked twice on the terminal. Without a
    terminal and without either flag it is an error: an account must never end up without one."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            raise CliError(f"--password-file {args.password_file}: {getattr(e, 'strerror', None) or e}", EXIT_USAGE) from None
    if not sys.stdin.isatty():
        raise CliError("no password given and no terminal to ask on: use --password-stdin or --password-file", EXIT_USAGE)
    pw = getpass.getpass("password: ")
    if getpass.getpass("again: ") != pw:
        raise CliError("passwords differ", EXIT_USAGE)
    return pw


async def _admin(args: argparse.Namespace, command: str, params: dict[str, str]) -> None:
    """Run an admin operation of the mail layer and print its message: through the control socket
    of the server running on the data directory, else on the store opened here. Either way the
    same `Admin` operation runs, with the same validation."""
    from . import control
    from .mail.admin import PROGRESS, Admin, AdminError

    directory = _directory(args)
    bar = transfer.progress_bar()

    def ask() -> dict[str, Any] | None:
        return control.request_in(directory, command, params, progress=bar)

    try:
        reply = await asyncio.to_thread(ask)
        if reply is None:
            try:
                store = await _open(args, writable=True)
            except DirectoryLocked:
                # A server that took the directory after our look: its socket may answer by now.
                await asyncio.sleep(1.0)
                reply = await asyncio.to_thread(ask)
                if reply is None:
                    raise
            else:
                PROGRESS.set(bar)
                try:
                    reply = await Admin(store).run(command, params)
                except AdminError as e:
                    raise CliError(str(e), EXIT_USAGE) from None
                finally:
                    await store.close()
    except control.ControlError as e:
        raise CliError(str(e)) from None
    if "error" in reply:
        raise CliError(str(reply["error"]), int(reply.get("code", 1)))
    print(reply["message"])


def _password_set(account: str, password: str) -> pb.PasswordSet:
    from .sasl.credentials import make_password_set

    return make_password_set(account, password)


# ---------------------------------------------------------------- commands


async def cmd_key_init(args: argparse.Namespace) -> None:
    directory = _directory(args)
    source = _key_source(args)
    init_directory(directory, source)
    if source.passphrase_env:
        print(f"initialised {directory}: master key derived from ${source.passphrase_env} with Argon2id")
        print("KEEP THE PASSPHRASE SAFE: every message, log and backup of this server is encrypted with the "
              "key it gives, and without it all mail is lost for good.")
        return
    print(f"initialised {directory} with master key file {source.key_file}")
    print(f"BACK UP {source.key_file} NOW, somewhere other than this machine: every message, log and backup "
          "of this server is encrypted with it, and without it all mail is lost for good.")
    if source.inside(directory):
        print(
            "warning: the master key lies inside the data directory, so it protects nothing at rest; "
            "move it elsewhere and use --key-file or $EVENTMAIL_KEY_FILE",
            file=sys.stderr,
        )


async def cmd_key_change(args: argparse.Namespace) -> None:
    from .store import new_master_key

    if bool(args.new_key_file) == bool(args.new_passphrase_env):
        raise CliError("give one of --new-key-file PATH and --new-passphrase-env VAR", EXIT_USAGE)
    new_source = MasterKeySource(key_file=Path(args.new_key_file) if args.new_key_file else None,
                                 passphrase_env=args.new_passphrase_env)
    store = await _open(args, writable=True)  # the directory's lock: not while a server runs
    try:
        master, kdf = new_master_key(new_source)
        store.keyring.rewrap(master, kdf)
    finally:
        await store.close()
    what = f"the key file {args.new_key_file}" if args.new_key_file else f"the passphrase in ${args.new_passphrase_env}"
    print(f"the keyring of {args.dir} is now sealed under {what}; no record or blob was rewritten. "
          "The old key no longer opens this directory (backups made before still need it).")


async def cmd_key_rotate(args: argparse.Namespace) -> None:
    await _admin(args, "key.rotate", {})


async def cmd_queue_suppression(args: argparse.Namespace) -> None:
    params = {k: v for k in ("account", "address", "reason") if isinstance(v := getattr(args, k, None), str)}
    await _admin(args, f"queue.{args.queue_command}", params)


async def cmd_queue(args: argparse.Namespace) -> None:
    params = {"id": args.id} if getattr(args, "id", None) else {}
    if getattr(args, "all", False):
        params = {"all": "yes"}
    elif args.queue_command in ("retry", "drop", "hold", "release") and not params:
        raise CliError(f"queue {args.queue_command}: give a queue ID (or --all)", EXIT_USAGE)
    await _admin(args, f"queue.{args.queue_command}", params)


async def cmd_domain_add(args: argparse.Namespace) -> None:
    await _admin(args, "domain.add", {"domain": args.domain})


async def cmd_domain_remove(args: argparse.Namespace) -> None:
    await _admin(args, "domain.remove", {"domain": args.domain})


async def cmd_domain_list(args: argparse.Namespace) -> None:
    store = await _open(args, writable=False)
    try:
        system = store.system
        implied = {a.rpartition("@")[2] for a in system.addresses}
        for domain in sorted(system.domains | implied):
            users = sum(1 for a in system.addresses if a.rpartition("@")[2] == domain)
            keys = [sel for (d, sel), info in sorted(system.dkim.items()) if d == domain and info.active]
            how = "added" if domain in system.domains else "implied by its addresses"
            print(f"{domain}\t{how}\t{users} addresses\tDKIM: {', '.join(keys) or 'none'}")
    finally:
        await store.close()


async def cmd_account_add(args: argparse.Namespace) -> None:
    from .mail.admin import AdminError, check_account_name, check_address

    try:  # before asking for a password that would be thrown away
        check_account_name(args.name)
        check_address(args.address)
    except AdminError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    await _admin(args, "account.add", {"name": args.name, "address": args.address, "password": _read_password(args)})


async def cmd_account_add_address(args: argparse.Namespace) -> None:
    await _admin(args, "account.add-address", {"name": args.name, "address": args.address})


async def cmd_account_remove_address(args: argparse.Namespace) -> None:
    await _admin(args, "account.remove-address", {"name": args.name, "address": args.address})


async def cmd_account_list(args: argparse.Namespace) -> None:
    store = await _open(args, writable=False)
    try:
        for name, info in sorted(store.system.accounts.items()):
            pw = "password" if info.password is not None else "no password"
            print(f"{name}\t{', '.join(info.addresses)}\t{pw}")
        for name, gone in sorted(store.system.deleted.items()):
            until = datetime.fromtimestamp(gone.shred_after_us / 1e6, UTC).isoformat(timespec="minutes")
            print(f"{name}\t{', '.join(gone.info.addresses)}\tdeleted: restorable until {until}")
    finally:
        await store.close()


async def cmd_admin_set_password(args: argparse.Namespace) -> None:
    """The admin page's own credential: an Argon2id hash in DIR/admin-password (0600), read at each
    login, so a running server takes it at once; owned like the data directory (the server may
    run as another user than the one running this)."""
    from .web.admin import ADMIN_PASSWORD_FILE, write_admin_password

    directory = _directory(args)
    if not (directory / "keyring").exists():
        raise CliError(f"{directory} is not an eventmail data directory", EXIT_USAGE)
    password = _read_password(args)
    if len(password) < 8:
        raise CliError("the admin password must have at least 8 characters", EXIT_USAGE)
    path = directory / ADMIN_PASSWORD_FILE
    await asyncio.to_thread(write_admin_password, path, password)
    owner = directory.stat()
    if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
        os.chown(path, owner.st_uid, owner.st_gid)
    print(f"admin password set ({path}); the admin page (/admin/) takes it at the next login")


async def cmd_account_set_password(args: argparse.Namespace) -> None:
    await _admin(args, "account.set-password", {"name": args.name, "password": _read_password(args)})


async def cmd_account_delete(args: argparse.Namespace) -> None:
    await _admin(args, "account.delete", {"name": args.name, "shred": "1" if args.shred else ""})


async def cmd_account_set(args: argparse.Namespace) -> None:
    await _admin(args, "account.set", {"name": args.name, "key": args.key, "value": args.value})


async def cmd_junk_settings(args: argparse.Namespace) -> None:
    kind, action = getattr(args, "kind", ""), getattr(args, "action", None)
    if action is None and getattr(args, "items", None):
        raise CliError(f"junk {kind}: add or remove before the items", EXIT_USAGE)
    if action is not None and not args.items:
        raise CliError(f"junk {kind} {action}: at least one item", EXIT_USAGE)
    await _admin(args, "junk.settings", {"name": args.name, "kind": kind, "action": action or "show",
                                         "items": ",".join(getattr(args, "items", None) or [])})


async def cmd_account_webhook(args: argparse.Namespace) -> None:
    if args.what in ("show", "new-secret") and (args.url or args.authorization or args.events):
        raise CliError(f"account webhook {args.what} takes no URL, --authorization or --events", EXIT_USAGE)
    if args.what == "incoming" and args.events:
        raise CliError("--events is for the outgoing webhook", EXIT_USAGE)
    await _admin(args, "account.webhook", {"name": args.name, "what": args.what, "url": args.url or "",
                                           "authorization": args.authorization or "", "events": args.events or ""})


async def cmd_retention_collect(args: argparse.Namespace) -> None:
    await _admin(args, "retention.collect", {"name": args.name or ""})


async def cmd_import(args: argparse.Namespace) -> None:
    path = Path(args.path)
    if not path.exists():
        raise CliError(f"{path} does not exist")
    await _admin(args, "import", {"name": args.name, "path": str(path.resolve()), "mailbox": args.mailbox})


async def cmd_junk_retrain(args: argparse.Namespace) -> None:
    await _admin(args, "junk.retrain", {"name": args.name})


async def cmd_restore(args: argparse.Namespace) -> None:
    if args.undo:
        if args.at or args.mailbox or args.dry_run or args.into:
            raise CliError("--undo ID takes no --at, --mailbox, --into or --dry-run", EXIT_USAGE)
        await _admin(args, "restore.undo", {"name": args.name, "id": args.undo})
        return
    params = {"name": args.name, "at": args.at or "", "mailbox": args.mailbox or "", "dry_run": "1" if args.dry_run else "",
              "into": args.into or ""}
    await _admin(args, "restore", params)


async def cmd_export(args: argparse.Namespace) -> None:
    from .mail.admin import AdminError
    from .mail.restore import parse_moment

    try:
        at = parse_moment(args.at) if args.at else None
    except AdminError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    store = await _open(args, writable=False)
    try:
        acct = await store.account(args.name)
        n = await asyncio.to_thread(transfer.export, acct, Path(args.out), args.format, at)
    finally:
        await store.close()
    print(f"exported {n} messages to {args.out} ({args.format})")


async def cmd_verify(args: argparse.Namespace) -> None:
    await _verify_directory(args, _directory(args))


async def _verify_directory(args: argparse.Namespace, directory: Path) -> None:
    """Every chain and blob of a data directory (or backup repository) checked, one line a stream."""
    source = _key_source(args)
    if not (directory / "keyring").exists():
        raise MissingKey(f"{directory} has no keyring: not a data directory or a complete backup")
    store = await open_store(directory, load_master_key(directory, source), writable=False, tolerate_damage=True)
    try:
        reports = await asyncio.to_thread(store.verify)
    finally:
        await store.close()
    bad = 0
    for r in reports:
        status = "ok" if r.error is None else f"DAMAGED: {r.error}"
        print(f"{r.stream}\tseq {r.head.seq}\tchain {r.head.chain.hex()}\t{r.records} records\t{r.blobs} blobs\t{status}")
        bad += r.error is not None
    if bad:
        raise CliError(f"{bad} stream(s) damaged", code=1)


async def cmd_backup_create(args: argparse.Namespace) -> None:
    from .store import create_backup

    report = await asyncio.to_thread(create_backup, _directory(args), Path(args.dest), transfer.progress_bar())
    print(f"backup {args.dest}: {report.line()}")


async def cmd_backup_verify(args: argparse.Namespace) -> None:
    from .store import check_repository

    check_repository(Path(args.dest))
    await _verify_directory(args, Path(args.dest))


async def cmd_backup_restore(args: argparse.Namespace) -> None:
    from .store import restore_backup

    report = await asyncio.to_thread(restore_backup, Path(args.dest), _directory(args), transfer.progress_bar())
    print(f"restored into {args.dir}: {report.line()}")
    await _verify_directory(args, _directory(args))


def _event_json(event: pb.Event, full: bool) -> str:
    if not full and event.WhichOneof("kind") == "message_added":
        event = pb.Event.FromString(event.SerializeToString())
        event.message_added.ClearField("structure")
    if event.WhichOneof("kind") == "password_set":
        return json.dumps({"passwordSet": {"account": event.password_set.account, "secrets": "(not shown)"}})
    return json.dumps(json_format.MessageToDict(event), separators=(",", ":"), ensure_ascii=False)


async def cmd_log(args: argparse.Namespace) -> None:
    stream = args.name if args.name in RESERVED_NAMES else account_stream(args.name)
    store = await _open(args, writable=False)
    try:
        if stream.startswith("account/") and args.name not in store.system.accounts:
            raise NotFound(f"no account {args.name}")
        for c in store.stream(stream).events(args.since):
            when = datetime.fromtimestamp(c.time_us / 1e6, UTC).isoformat(timespec="milliseconds")
            print(f"{c.seq}\t{when}\t{_event_json(c.event, args.full)}")
    finally:
        await store.close()


async def cmd_dkim_add(args: argparse.Namespace) -> None:
    await _admin(args, "dkim.add", {"domain": args.domain, "selector": args.selector, "algorithm": args.algorithm})


async def cmd_dkim_list(args: argparse.Namespace) -> None:
    from .mailauth.dkim import public_key_record, zone_txt

    store = await _open(args, writable=False)
    try:
        for (domain, selector), d in sorted(store.system.dkim.items()):
            state = "active" if d.active else "inactive"
            print(f"{selector}._domainkey.{domain}. TXT {zone_txt(public_key_record(d.algorithm, d.private_key))}  ; {state}")
    finally:
        await store.close()


# ---------------------------------------------------------------- servers


MOMENT_FORMS = "ISO 8601 (local time without an offset), seconds since the epoch, or back from now (2h, 3d, 1w)"
LOCALSERVE_PORTS = {"smtp": 1025, "submission": 1587, "submissions": 1465, "imap": 1143, "imaps": 1993, "http": 1080}
LOCALSERVE_ACCOUNT = "you"
LOCALSERVE_ADDRESS = "you@localhost"
LOCALSERVE_DOMAIN = "localhost"
LOCALSERVE_SELECTOR = "localserve"


def _print_started(running: "serve.Running", extra: list[str]) -> None:
    names = {
        "smtp": "MX (SMTP)", "submission": "submission (STARTTLS)", "submissions": "submission (TLS)",
        "imap": "IMAP (STARTTLS)", "imaps": "IMAP (TLS)", "http": "HTTP", "https": "HTTPS",
        "metrics": "metrics (HTTP)",
    }
    for kind, port in running.ports.items():
        print(f"{names[kind]:<24} 127.0.0.1 port {port}")
    for line in extra:
        print(line)
    print("stop with ctrl-c", flush=True)


async def cmd_localserve(args: argparse.Namespace) -> None:
    from . import config as config_mod
    from . import serve
    from .tls.certs import make_self_signed

    serve.share_malloc_arenas()
    directory = Path(args.dir)
    source = MasterKeySource(key_file=Path(args.key_file) if args.key_file else directory / "keys" / "master.key",
                             allow_loose_mode=args.allow_key_file_mode)
    if not (directory / "keyring").exists():
        init_directory(directory, source)
        print(f"created {directory} (a local instance: its key lies inside it, which protects nothing at rest)")
    cert, key = directory / "tls" / "cert.pem", directory / "tls" / "key.pem"
    if not cert.exists():
        make_self_signed(cert, key, ["localhost", "127.0.0.1", "::1"])
    store = await open_store(directory, load_master_key(directory, source))
    # The password stays from one start to the next (clients keep their login), in a file only the
    # owner reads; --password sets a new one.
    saved = directory / "localserve-password"
    password = args.password or (saved.read_text().strip() if saved.exists() else _generate_password())
    try:
        if LOCALSERVE_ACCOUNT not in store.system.accounts:
            await store.create_account(LOCALSERVE_ACCOUNT, [LOCALSERVE_ADDRESS], None)
        if args.password or not saved.exists():
            await store.stream(SYSTEM).append([pb.Event(password_set=_password_set(LOCALSERVE_ACCOUNT, password))])
            fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
        await _localserve_extras(store)
    except BaseException:
        await store.close()
        raise
    admin_password = await asyncio.to_thread(_localserve_admin_password, directory)
    ports = {k: getattr(args, f"{k}_port") for k in LOCALSERVE_PORTS}
    nameservers, dns_port = _dns(args.dns)
    cfg = config_mod.Config(
        hostname="localhost", data_dir=directory, key_file=source.key_file, passphrase_env=None,
        tls_cert=cert, tls_key=key,
        listeners=tuple(config_mod.Listener(k, "127.0.0.1", p) for k, p in ports.items()),
        resolver=config_mod.ResolverSettings(nameservers, dns_port),
        allow_plaintext_auth=True, deliver_all_to=LOCALSERVE_ACCOUNT, localserve=True,
    )
    extra = [
        f"account: {LOCALSERVE_ADDRESS} (login {LOCALSERVE_ADDRESS} or {LOCALSERVE_ACCOUNT}), password: {password} "
        f"(kept in {saved}; unless changed since with `account set-password`)",
        f"any address @{LOCALSERVE_DOMAIN} reaches it; what it sends is DKIM-signed (selector {LOCALSERVE_SELECTOR})",
        f"certificate (self-signed): {cert}",
        "every message you send is delivered to this account; nothing leaves the machine",
        f"account page: http://localhost:{args.http_port}/account/ (the account's password)",
        f"admin page:   http://localhost:{args.http_port}/admin/ with the admin password {admin_password} "
        f"(kept in {directory / 'localserve-admin-password'})",
        f"webapi:       http://localhost:{args.http_port}/webapi/v0/   metrics: http://localhost:{args.http_port}/metrics",
        "failures on request: a recipient ending in temperror, permerror, 4xx/5xx or timeout fails at DATA "
        "(at MAIL FROM / RCPT TO when it starts with mailfrom / rcptto)",
    ]
    await serve.run_until_signalled(lambda: serve.start(cfg, store), lambda r: _print_started(r, extra))


def _localserve_admin_password(directory: Path) -> str:
    """localserve's admin password, made once and kept in clear beside its hash (a local test bench,
    as its account password); the hash is what the admin page reads."""
    from .web.admin import ADMIN_PASSWORD_FILE, write_admin_password

    saved = directory / "localserve-admin-password"
    if saved.exists() and (directory / ADMIN_PASSWORD_FILE).exists():
        return saved.read_text().strip()
    password = _generate_password()
    write_admin_password(directory / ADMIN_PASSWORD_FILE, password)
    fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


async def _localserve_extras(store: Store) -> None:
    """What makes localserve a test bench (as Mox's): every local recipient is accepted (a
    catch-all for the domain) and outgoing mail is DKIM-signed, so a client sees what a real
    server would send."""
    from .mail.admin import Admin

    admin = Admin(store)
    if LOCALSERVE_DOMAIN not in store.system.domains:
        await admin.run("domain.add", {"domain": LOCALSERVE_DOMAIN})
    if store.system.addresses.get("@" + LOCALSERVE_DOMAIN) is None:
        await store.add_address(LOCALSERVE_ACCOUNT, "@" + LOCALSERVE_DOMAIN)
    if (LOCALSERVE_DOMAIN, LOCALSERVE_SELECTOR) not in store.system.dkim:
        await admin.run("dkim.add", {"domain": LOCALSERVE_DOMAIN, "selector": LOCALSERVE_SELECTOR,
                                     "algorithm": "ed25519-sha256"})


def _generate_password() -> str:
    import secrets

    return secrets.token_urlsafe(12)


def _dns(text: str | None) -> tuple[tuple[str, ...], int]:
    """--dns HOST[:PORT], else the system's resolvers."""
    if not text:
        from .mailauth.resolver import ResolverConfig

        rc = ResolverConfig.from_system()
        return rc.nameservers, rc.port
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "53")
    return (host,), int(port or 53)


async def cmd_quickstart(args: argparse.Namespace) -> None:
    from .quickstart import QuickstartError, quickstart

    try:
        r = await asyncio.to_thread(quickstart, args.address, args.hostname, Path(args.dir), args.existing_webserver,
                                    _dns(args.dns))
    except QuickstartError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    print(f"configuration:   {r.config}")
    print(f"data directory:  {r.data_dir}")
    print(f"master key:      {r.key_file}   <- back it up elsewhere: without it all mail is lost")
    print(f"systemd unit:    {r.unit_file}")
    print(f"account:         {r.account} ({r.address})")
    print(f"password:        {r.password}   <- shown once; change it with `eventmail account set-password`")
    print(f"admin password:  {r.admin_password}   <- the admin page's; shown once (`eventmail admin set-password`)")
    print()
    print(f"DNS records for {r.address.rpartition('@')[2]} (also in {r.zone_file}):")
    print()
    for line in r.records:
        print(line)
    print()
    if not r.zone_signed:
        print("Not in the records: TLSA (DANE), for a DNSSEC-signed zone only (see the checklist).")
        print()
    print("Next:")
    for i, step in enumerate(r.checklist, 1):
        print(f"{i}. {step}")


async def cmd_config_describe(args: argparse.Namespace) -> None:
    from . import configref

    print(configref.markdown() if args.markdown else configref.describe(), end="")


async def cmd_config_test(args: argparse.Namespace) -> None:
    from .configcheck import problems

    found = await asyncio.to_thread(problems, Path(args.config))
    for p in found:
        print(f"{args.config}: {p}", file=sys.stderr)
    if found:
        raise CliError(f"{args.config}: {len(found)} problem(s); serve would not start", code=1)
    print(f"{args.config}: OK")


def _load_config(args: argparse.Namespace) -> "config_mod.Config":
    """--config FILE, or a one-line error naming the file and the key."""
    from . import config as config_mod

    try:
        return config_mod.load(Path(args.config))
    except config_mod.ConfigError as e:
        raise CliError(f"{args.config}: {e}", code=EXIT_USAGE) from None


async def cmd_dns_check(args: argparse.Namespace) -> None:
    from .dnscheck import OK, check

    cfg = _load_config(args)
    findings = await asyncio.to_thread(check, cfg, args.domain)
    for f in findings:
        print(f.line())
    bad = [f for f in findings if f.status != OK]
    if bad:
        raise CliError(f"{len(bad)} of {len(findings)} records missing or wrong", code=1)
    print(f"all {len(findings)} records as they should be")


def _configure_logging(settings: "config_mod.LogSettings") -> None:
    """[log]: JSON or text lines on stderr, a level for everything and one per area (config.LOG_AREAS)."""
    from .config import LOG_AREAS
    from .logfmt import JsonFormatter

    root = logging.getLogger()
    if settings.format == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
    root.setLevel(settings.level.upper())
    for area, level in settings.levels:
        for name in LOG_AREAS[area]:
            logging.getLogger(name).setLevel(level.upper())


async def cmd_serve(args: argparse.Namespace) -> None:
    from . import serve

    serve.share_malloc_arenas()
    cfg = _load_config(args)
    if os.geteuid() == 0 and cfg.user is None:
        # A mail server parses hostile input all day: as root, any bug is the machine's.
        raise CliError(f"{args.config}: running as root: set `user` to the account to run as once the ports "
                       "are bound (or `user = \"root\"` to stay root deliberately)", code=EXIT_USAGE)
    _configure_logging(cfg.log)
    if os.geteuid() == 0 and cfg.user == "root":
        logging.getLogger("eventmail.serve").warning("running as root (user = \"root\"): every bug is root's")
    try:
        await serve.run_until_signalled(lambda: serve.start(cfg), lambda r: _print_started(r, []))
    except (PrivilegeError, HostKeyError) as e:
        raise CliError(f"{args.config}: {e}", code=EXIT_USAGE) from None


# ---------------------------------------------------------------- replication


def _replication_config(args: argparse.Namespace) -> "config_mod.Config":
    cfg = _load_config(args)
    if cfg.replication is None:
        raise CliError(f"{args.config}: no [replication] table", code=EXIT_USAGE)
    return cfg


def _control(args: argparse.Namespace, command: str) -> dict[str, object]:
    """A replication command to the running server's control socket (in its data directory)."""
    from . import control

    cfg = _replication_config(args)
    path = control.socket_path(cfg.data_dir)
    try:
        reply = control.request_in(cfg.data_dir, "replica." + command)
    except (OSError, control.ControlError) as e:
        raise CliError(f"no running server answers on {path}: {getattr(e, 'strerror', None) or e}") from None
    if reply is None:
        raise CliError(f"no running server answers on {path}")
    if "error" in reply:
        raise CliError(str(reply["error"]), int(reply.get("code", 1)))
    return reply


async def cmd_replica_status(args: argparse.Namespace) -> None:
    status = _control(args, "metrics" if args.metrics else "status")
    if args.metrics:
        print(status["metrics"], end="")
        return
    if args.json:
        print(json.dumps(status, indent=2))
        return
    print(f"node {status['node']}: {status['role']} in epoch {status['epoch']}, mode {status['mode']}, "
          f"peer {status['peer']} ({'follows us' if status['peer_follows_us'] else 'not following us'}; "
          f"{'we follow it' if status['we_follow_peer'] else 'we are not connected to it'})")
    print(f"{'stream':<32} {'role':<9} {'position':>9} {'peer':>9} {'lag rec':>8} {'lag s':>8}  mode")
    streams = status["streams"]
    assert isinstance(streams, list)
    for st in streams:
        lag_s = "-" if st["lag_seconds"] is None else f"{st['lag_seconds']:.3f}"
        mode = status["mode"] if st["role"] == "writer" else "follow"
        print(f"{st['stream']:<32} {st['role']:<9} {st['position']:>9} {st['peer_position']:>9} "
              f"{st['lag_records']:>8} {lag_s:>8}  {mode}")


async def cmd_replica_promote(args: argparse.Namespace) -> None:
    reply = _control(args, "promote")
    if reply.get("before") == reply.get("epoch"):
        print(f"already the primary in epoch {reply['epoch']}")
    else:
        print(f"promoted: epoch {reply['before']} -> {reply['epoch']}; this node now writes every stream")


async def cmd_replica_cert(args: argparse.Namespace) -> None:
    from .tls.certs import make_self_signed

    make_self_signed(Path(args.cert), Path(args.key), [args.node], days=args.days)
    print(f"certificate for node {args.node}: {args.cert} (give it to the peer as its peer_cert); key: {args.key}")


# ---------------------------------------------------------------- argument parsing


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("data directory and key")
    g.add_argument("--dir", default=os.environ.get("EVENTMAIL_DIR", "data"), help="data directory (default: $EVENTMAIL_DIR or ./data)")
    g.add_argument(
        "--key-file",
        help="master key file (default: $EVENTMAIL_KEY_FILE, else DIR/keys/master.key)",
    )
    g.add_argument("--passphrase-env", metavar="VAR", help="derive the master key from the passphrase in environment variable VAR (Argon2id)")
    g.add_argument("--allow-key-file-mode", action="store_true", help=ALLOW_KEY_FILE_MODE_HELP)
    return p


Handler = Callable[[argparse.Namespace], Awaitable[None]]


def _password_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    g.add_argument("--password-file", metavar="FILE", help="read the password from the first line of FILE (for scripts)")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="eventmail", description="eventmail: a mail server whose accounts are encrypted event logs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]", name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    key = sub.add_parser("key", help="create or rotate keys", description="create or rotate keys")
    ksub = key.add_subparsers(dest="key_command", required=True, metavar="KEY_COMMAND")
    add(ksub, "init", cmd_key_init, "create the master key (or use a passphrase) and the keyring of a new data directory")
    add(ksub, "rotate", cmd_key_rotate, "give every stream a new data key; old records stay readable")
    p = add(ksub, "change", cmd_key_change, "seal the keyring under a new master key or passphrase "
            "(with the server stopped); no record or blob is rewritten")
    p.add_argument("--new-key-file", metavar="PATH", help="the new key file (made if it does not exist)")
    p.add_argument("--new-passphrase-env", metavar="VAR", help="the environment variable holding the new passphrase")

    adm = sub.add_parser("admin", help="the admin web page", description="the admin web page (docs/web.md)")
    admsub = adm.add_subparsers(dest="admin_command", required=True, metavar="ADMIN_COMMAND")
    p = add(admsub, "set-password", cmd_admin_set_password, "set the admin page's password (prompted, or from stdin or a file)")
    _password_flags(p)

    que = sub.add_parser("queue", help="the outbound queue", description="the outbound queue (docs/operations.md)")
    qsub = que.add_subparsers(dest="queue_command", required=True, metavar="QUEUE_COMMAND")
    add(qsub, "list", cmd_queue, "the queued messages: id, age, size, sender, recipients left, next try")
    p = add(qsub, "show", cmd_queue, "one queued message and each recipient's state and last reply")
    p.add_argument("id")
    for name, what in (("retry", "try now"), ("drop", "drop without a notice"), ("hold", "stop trying until released"),
                       ("release", "try again on the schedule")):
        p = add(qsub, name, cmd_queue, f"{what}: a queued message, or --all")
        p.add_argument("id", nargs="?")
        p.add_argument("--all", action="store_true")

    p = add(qsub, "suppress", cmd_queue_suppression, "stop sending an account's mail to an address")
    p.add_argument("account")
    p.add_argument("address")
    p.add_argument("--reason", default="")
    p = add(qsub, "unsuppress", cmd_queue_suppression, "take an address off an account's suppression list")
    p.add_argument("account")
    p.add_argument("address")
    p = add(qsub, "suppressions", cmd_queue_suppression, "the suppression lists (hard bounces and manual entries)")
    p.add_argument("account", nargs="?")

    dom = sub.add_parser("domain", help="manage domains", description="the domains this server receives mail for")
    domsub = dom.add_subparsers(dest="domain_command", required=True, metavar="DOMAIN_COMMAND")
    p = add(domsub, "add", cmd_domain_add, "receive mail for a domain (its addresses are added to accounts)")
    p.add_argument("domain")
    p = add(domsub, "remove", cmd_domain_remove, "stop receiving mail for a domain that has no addresses left")
    p.add_argument("domain")
    add(domsub, "list", cmd_domain_list, "list the domains, their addresses and signing keys")

    acct = sub.add_parser("account", help="manage accounts", description="manage accounts and their addresses")
    asub = acct.add_subparsers(dest="account_command", required=True, metavar="ACCOUNT_COMMAND")
    p = add(asub, "add", cmd_account_add, "create an account with one address and the default mailboxes")
    p.add_argument("name")
    p.add_argument("address")
    _password_flags(p)
    add(asub, "list", cmd_account_list, "list accounts and their addresses")
    p = add(asub, "add-address", cmd_account_add_address, "give an account another address, or @DOMAIN as catch-all")
    p.add_argument("name")
    p.add_argument("address")
    p = add(asub, "remove-address", cmd_account_remove_address, "take an address or catch-all from an account")
    p.add_argument("name")
    p.add_argument("address")
    p = add(asub, "set-password", cmd_account_set_password, "set an account's password (prompted, or from stdin or a file)")
    p.add_argument("name")
    _password_flags(p)
    p = add(asub, "delete", cmd_account_delete, "delete an account: restorable for the grace period "
            "(deletion_grace_days, default 7), then crypto-shredded")
    p.add_argument("name")
    p.add_argument("--shred", action="store_true", help="destroy its keys now (also for an account deleted before): "
                   "no way back")
    p = add(asub, "set", cmd_account_set, "set an account setting: junk.list-domains, junk.forwarders "
            "or junk.dnsbl (comma-separated), retention.days, or quota_bytes (RFC 9208 storage limit; K, M, G, T "
            "allowed; 0 for none) (an empty VALUE clears it)")
    p.add_argument("name")
    p.add_argument("key")
    p.add_argument("value", nargs="?", default="")

    p = add(asub, "webhook", cmd_account_webhook, "set an account's webhook for incoming messages or outgoing "
            "delivery events (an empty URL clears it), show them, or make a new signing secret (docs/webhooks.md)")
    p.add_argument("name")
    p.add_argument("what", choices=["incoming", "outgoing", "show", "new-secret"])
    p.add_argument("url", nargs="?", default="", help="https://... (http only to a loopback address)")
    p.add_argument("--authorization", default="", help="the Authorization header's value, e.g. 'Basic ...'")
    p.add_argument("--events", default="", help="outgoing: comma-separated events "
                   "(delivered, delayed, failed, canceled, ...; default all)")

    dkim = sub.add_parser("dkim", help="DKIM signing keys", description="DKIM signing keys of the domains")
    dsub = dkim.add_subparsers(dest="dkim_command", required=True, metavar="DKIM_COMMAND")
    p = add(dsub, "add", cmd_dkim_add, "create a signing key for a domain and print its DNS record")
    p.add_argument("domain")
    p.add_argument("selector")
    p.add_argument("--algorithm", choices=["ed25519-sha256", "rsa-sha256"], default="ed25519-sha256")
    add(dsub, "list", cmd_dkim_list, "print the DNS record of every signing key")

    ret = sub.add_parser("retention", help="the retention window of expunged messages",
                         description="the retention window of expunged messages (docs/restore.md)")
    rtsub = ret.add_subparsers(dest="retention_command", required=True, metavar="RETENTION_COMMAND")
    p = add(rtsub, "collect", cmd_retention_collect, "remove now what fell out of the retention window "
            "(the server does it every 6 hours)")
    p.add_argument("name", nargs="?", help="one account (default: all)")

    p = add(sub, "import", cmd_import, "import an mbox file or a Maildir tree into an account")
    p.add_argument("name")
    p.add_argument("path")
    p.add_argument("--mailbox", default="INBOX", help="mailbox for a single mbox file (default INBOX)")

    p = add(sub, "export", cmd_export, "export an account, as it is or as it was at a moment")
    p.add_argument("name")
    p.add_argument("out")
    p.add_argument("--format", choices=["mbox", "maildir"], default="maildir")
    p.add_argument("--at", metavar="TIME", help=f"the moment: {MOMENT_FORMS} (default: now)")

    p = add(sub, "restore", cmd_restore, "bring an account (or one mailbox tree) back to how it was at a moment, "
            "as new events; or undo a restore")
    p.add_argument("name")
    p.add_argument("--at", metavar="TIME", help=f"the moment: {MOMENT_FORMS}")
    p.add_argument("--mailbox", metavar="M", help="restore only this mailbox and the mailboxes under it")
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    p.add_argument("--into", metavar="NEWNAME", help="restore into a new account (its own log and keys) instead")
    p.add_argument("--undo", metavar="ID", help="take back the restore with this id (printed by the restore)")

    add(sub, "verify", cmd_verify, "check every stream's chain and every blob; print each stream's head")

    bk = sub.add_parser("backup", help="backup repositories", description="backup repositories (docs/restore.md)")
    bsub = bk.add_subparsers(dest="backup_command", required=True, metavar="BACKUP_COMMAND")
    p = add(bsub, "create", cmd_backup_create, "bring the backup repository DEST up to the data directory "
            "(incremental, ciphertext only, while the server runs)")
    p.add_argument("dest")
    p = add(bsub, "verify", cmd_backup_verify, "check every chain and blob of the repository DEST, without restoring")
    p.add_argument("dest")
    p = add(bsub, "restore", cmd_backup_restore, "make the new data directory --dir from the repository DEST, "
            "then verify it")
    p.add_argument("dest")

    p = add(sub, "log", cmd_log, "decrypt and print a stream's events, one a line (NAME: an account, system or queue)")
    p.add_argument("name")
    p.add_argument("--since", type=int, default=0, metavar="SEQ", help="only events after SEQ")
    p.add_argument("--full", action="store_true", help="include each message's parsed structure")

    p = sub.add_parser(
        "localserve", help="a complete local mail server on loopback, for trying eventmail with any mail client",
        description="a complete local mail server on loopback: one account you@localhost, a self-signed "
        "certificate, and every outgoing message delivered locally",
    )
    p.set_defaults(handler=cmd_localserve)
    p.add_argument("--dir", default=os.environ.get("EVENTMAIL_DIR", "localserve-data"), help="data directory (default: $EVENTMAIL_DIR or ./localserve-data)")
    p.add_argument("--key-file", help="master key file (default DIR/keys/master.key)")
    p.add_argument("--allow-key-file-mode", action="store_true", help=ALLOW_KEY_FILE_MODE_HELP)
    p.add_argument("--passphrase-env", help=argparse.SUPPRESS)
    p.add_argument("--password", help="the account's password (default: a new random one, printed)")
    p.add_argument("--dns", metavar="HOST[:PORT]", help="DNS server for SPF/DKIM/DMARC checks (default: the system's)")
    for kind, port in LOCALSERVE_PORTS.items():
        p.add_argument(f"--{kind}-port", type=int, default=port, help=f"{kind} port (default {port})")

    jsub = add_junk_commands(sub, add, _open)
    p = add(jsub, "retrain", cmd_junk_retrain, "rebuild the account's junk statistics and reputation index from its log")
    p.add_argument("name")
    p = add(jsub, "settings", cmd_junk_settings, "show an account's mailing-list domains, forwarders and DNSBL zones")
    p.add_argument("name")
    for kind, help_ in (("lists", "mailing-list domains whose verified List-Id mail is accepted (junk.list-domains)"),
                        ("forwarders", "forwarders (domains or IP networks) not held to the author's DMARC policy "
                                       "and gathering no reputation (junk.forwarders)"),
                        ("dnsbl", "DNSBL zones asked about senders without history, in order (junk.dnsbl; "
                                  "none by default)")):
        p = add(jsub, kind, cmd_junk_settings, f"show, add or remove {help_}")
        p.set_defaults(kind=kind)
        p.add_argument("name")
        p.add_argument("action", nargs="?", choices=("add", "remove"))
        p.add_argument("items", nargs="*", metavar="ITEM")

    p = sub.add_parser("quickstart", help="set up a server for a new domain: config, keys, account, DNS records",
                       description="set up a server for a new domain in one command: configuration, data "
                       "directory, master key, account, DKIM keys, systemd unit, and every DNS record, printed "
                       "and written as a zone file (docs/quickstart.md). It asks nothing.")
    p.set_defaults(handler=cmd_quickstart)
    p.add_argument("address", help="the first account's address, e.g. you@example.org")
    p.add_argument("--hostname", help="the mail host's name (default: mail.DOMAIN)")
    p.add_argument("--existing-webserver", action="store_true",
                   help="ports 80 and 443 belong to another web server: listen for web requests on "
                   "127.0.0.1:1080 behind it, and write an nginx example that forwards to it")
    p.add_argument("--dir", default="eventmail", help="where to put everything (default ./eventmail; must be new)")
    p.add_argument("--dns", metavar="HOST[:PORT]", help="the resolver asked whether the host's zone is "
                   "DNSSEC-signed, for its TLSA record (default: the system's)")

    cfgp = sub.add_parser("config", help="the configuration file", description="the configuration file (docs/config.md)")
    csub = cfgp.add_subparsers(dest="config_command", required=True, metavar="CONFIG_COMMAND")
    p = csub.add_parser("test", help="check a configuration as serve would use it: every key, every file it "
                        "names, the certificate against its key, the master key against the keyring",
                        description="check a configuration as serve would use it; exit 1 on any problem")
    p.set_defaults(handler=cmd_config_test)
    p.add_argument("--config", required=True, help="the TOML configuration file")
    p = csub.add_parser("describe", help="every key of the file: its table, type, default and meaning",
                        description="every key of the configuration file, from the code (eventmail/configref.py)")
    p.set_defaults(handler=cmd_config_describe)
    p.add_argument("--markdown", action="store_true", help="as the tables of docs/config.md")

    dnsp = sub.add_parser("dns", help="the domain's DNS records", description="the domain's DNS records")
    dsub2 = dnsp.add_subparsers(dest="dns_command", required=True, metavar="DNS_COMMAND")
    p = dsub2.add_parser("check", help="compare what DOMAIN publishes with what this server needs; "
                         "non-zero exit when anything is missing or wrong",
                         description="compare what DOMAIN publishes in DNS with what this server needs, record "
                         "by record, with the exact fix (docs/quickstart.md)")
    p.set_defaults(handler=cmd_dns_check)
    p.add_argument("domain")
    p.add_argument("--config", required=True, help="the server's TOML configuration file")

    # Its configuration names the data directory and the key: no --dir/--key-file flags to ignore.
    p = sub.add_parser("serve", help="run the server with the static settings of a TOML file",
                       description="run the server with the static settings of a TOML file (docs/operations.md)")
    p.set_defaults(handler=cmd_serve)
    p.add_argument("--config", required=True, help="the TOML configuration file")

    repl = sub.add_parser("replica", help="replication between a primary and a secondary",
                          description="replication between a primary and a secondary (docs/replication.md)")
    rsub = repl.add_subparsers(dest="replica_command", required=True, metavar="REPLICA_COMMAND")
    p = rsub.add_parser("status", help="per stream: position, lag in records and seconds, mode")
    p.set_defaults(handler=cmd_replica_status)
    p.add_argument("--config", required=True, help="the running server's TOML configuration file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--metrics", action="store_true", help="print the replication metrics (Prometheus text)")
    p = rsub.add_parser("promote", help="make this node the primary in a new epoch (takeover or switch back)")
    p.set_defaults(handler=cmd_replica_promote)
    p.add_argument("--config", required=True, help="the running server's TOML configuration file")
    p = rsub.add_parser("cert", help="make a node's replication certificate and key (pinned by the peer)")
    p.set_defaults(handler=cmd_replica_cert)
    p.add_argument("node", help="the node's name, as in replication.node")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--days", type=int, default=3650)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server = args.handler in (cmd_localserve, cmd_serve)
    # One record, one line: client text in a message can neither span nor forge lines (logfmt).
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s" if server else "%(levelname)s %(name)s: %(message)s"
    ))
    logging.basicConfig(level=logging.INFO if server else logging.WARNING, handlers=[handler])
    try:
        evloop.run(args.handler(args))
        sys.stdout.flush()  # here, where a reader that went away is caught, not at the exit
    except (MissingKey, WrongKey, KeyFileExposed, DirectoryLocked) as e:
        print(f"eventmail: {e}", file=sys.stderr)
        return EXIT_USAGE
    except StreamShredded as e:
        print(f"eventmail: {e}", file=sys.stderr)
        return 1
    except CliError as e:
        print(f"eventmail: {e}", file=sys.stderr)
        return e.code
    except BrokenPipeError:
        # `eventmail log ... | head`: the reader has what it wanted. Point stdout at /dev/null so
        # the interpreter's own flush at exit does not raise again (Python docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (StoreError, OSError) as e:
        print(f"eventmail: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


