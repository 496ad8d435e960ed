"""Nothing readable at rest: canaries in mail never appear in any file under the data directory."""

import asyncio
import os
import subprocess
from email.message import EmailMessage
from pathlib import Path

import pytest

from eventmail.store import StoreFull

from .conftest import open_store, run

CANARY = "Zq7canaryXk9"


def canary_message(i: int) -> bytes:
    m = EmailMessage()
    m["From"] = f"sender{CANARY}@example.test"
    m["To"] = "alice@example.test"
    m["Subject"] = f"subject {CANARY} number {i}"
    m.set_content(f"the body mentions {CANARY} twice: {CANARY}\n")
    m.add_attachment(b"%PDF-1.4 " + CANARY.encode(), maintype="application", subtype="pdf", filename=f"{CANARY}-{i}.pdf")
    return bytes(m).replace(b"\n", b"\r\n")


def forms_of(canary: str) -> list[bytes]:
    """The canary as bytes, and as the encodings a careless store might write it in."""
    import base64

    raw = canary.encode()
    return [raw, raw.lower(), canary.encode("utf-16-le"), base64.b64encode(raw)[:12], raw.hex().encode()]


def test_canary_never_appears_in_any_file(keyed_dir: tuple[Path, bytes]) -> None:
    async def go() -> None:
        store = await open_store(keyed_dir)
        await store.create_account("alice", [f"alice{CANARY}@example.test"], None)
        async with store.use_account("alice") as a:
            await a.create_mailbox(f"Projects/{CANARY}")
            for i in range(20):
                await a.add_message("INBOX", canary_message(i))
            await a.add_message(f"Projects/{CANARY}", canary_message(99), flags=[f"${CANARY}"])
            a.write_checkpoint()
        await store.close()

    run(go())
    leaks = []
    for root, _, files in os.walk(keyed_dir[0]):
        for name in files:
            path = Path(root) / name
            assert CANARY not in str(path)
            data = path.read_bytes()
            leaks += [(str(path), f) for f in forms_of(CANARY) if f in data]
    assert not leaks


def test_canary_check_would_catch_a_plaintext_file(keyed_dir: tuple[Path, bytes]) -> None:
    """The scan above is not vacuous: a plaintext copy of a message is found."""
    (keyed_dir[0] / "leak.eml").write_bytes(canary_message(1))
    found = any(f in (keyed_dir[0] / "leak.eml").read_bytes() for f in forms_of(CANARY))
    assert found


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_gives_an_error_and_leaves_the_log_intact(tmp_path: Path) -> None:
    """A real full filesystem (a 3 MiB tmpfs): appends fail with StoreFull, the log still verifies."""
    from eventmail.store import MasterKeySource, init_directory, load_master_key

    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=True)
    try:
        d = mnt / "data"
        src = MasterKeySource(key_file=tmp_path / "k")
        init_directory(d, src)
        key = load_master_key(d, src)

        async def fill() -> tuple[int, int]:
            store = await open_store((d, key))
            await store.create_account("alice", ["alice@example.test"], None)
            acked = 0
            failures = 0
            big = os.urandom(200_000).hex().encode()
            async with store.use_account("alice") as a:
                for i in range(40):
                    try:
                        await a.add_message("INBOX", b"Subject: %d\r\n\r\n" % i + big[: 100_000 + i])
                        acked += 1
                    except StoreFull:
                        failures += 1
                # Small appends keep failing or succeeding cleanly, never tearing the log.
                for i in range(2000):
                    try:
                        # one keyword at a time (replace): within the keyword caps
                        await a.change_flags(1, [1], add=[f"k{i}" * 50], replace=True)
                        acked += 1
                    except StoreFull:
                        failures += 1
                        break
            await store.close()
            return acked, failures

        acked, failures = asyncio.run(fill())
        assert failures > 0

        async def check() -> None:
            store = await open_store((d, key))
            assert all(r.error is None for r in store.verify())
            async with store.use_account("alice") as a:
                assert a.head_seq >= acked
            await store.close()

        asyncio.run(check())
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
