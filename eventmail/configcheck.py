"""`eventmail config test --config FILE`: everything `serve` would trip over, found before it starts —
each problem one line naming the key or the file."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

from .config import Config, ConfigError, load
from .opening import open_store
from .store import KeyFileExposed, MissingKey, WrongKey, load_master_key
from .store import MasterKeySource as KeySource
from .tls.certs import HostKeyError, read_host_key


def _readable(path: Path, what: str) -> list[str]:
    if not path.exists():
        return [f"{what}: {path} does not exist"]
    if not os.access(path, os.R_OK):
        return [f"{what}: {path} is not readable"]
    return []


def problems(config: Path) -> list[str]:
    """The configuration's problems; [] when `serve` should start with it."""
    try:
        cfg = load(config)
    except ConfigError as e:
        return [str(e)]
    out = _tls(cfg)
    if cfg.acme is not None and cfg.acme.ca_file is not None:
        out += _readable(cfg.acme.ca_file, "acme.ca_file")
    if cfg.acme is not None and cfg.acme.host_key_file is not None:
        out += _host_key(cfg.acme.host_key_file)
    out += _store(cfg)
    for domain, relay in [("", cfg.smarthost), *cfg.routes]:
        if relay is not None and relay.user and not relay.password:
            out.append(f"{'route ' + domain + ': ' if domain else ''}smarthost_password_file: empty")
    return out


def _host_key(path: Path) -> list[str]:
    unreadable = _readable(path, "acme.host_key_file")
    if unreadable:
        return unreadable
    try:
        read_host_key(path)
    except HostKeyError as e:
        return [f"acme.host_key_file: {e}"]
    return []


def _tls(cfg: Config) -> list[str]:
    out = _readable(cfg.tls_cert, "tls.cert") + _readable(cfg.tls_key, "tls.key")
    if out:
        return out
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
    except ssl.SSLError as e:
        reason = "the key does not belong to the certificate" if "KEY_VALUES_MISMATCH" in str(e) else (e.reason or str(e))
        return [f"tls.cert, tls.key: {cfg.tls_cert} with {cfg.tls_key}: {reason}"]
    return []


def _store(cfg: Config) -> list[str]:
    if not (cfg.data_dir / "keyring").exists():
        return [f"data_dir: {cfg.data_dir} is not an eventmail data directory (no keyring; `eventmail key init`)"]
    source = KeySource.default(cfg.data_dir, str(cfg.key_file) if cfg.key_file else None, cfg.passphrase_env,
                               allow_loose_mode=cfg.allow_key_file_mode)
    async def open_and_close() -> None:
        store = await open_store(cfg.data_dir, load_master_key(cfg.data_dir, source), writable=False)
        await store.close()

    try:
        asyncio.run(open_and_close())  # read-only: beside a running server too
    except (MissingKey, WrongKey, KeyFileExposed) as e:
        return [f"{'passphrase_env' if cfg.passphrase_env else 'key_file'}: {e}"]
    return []
