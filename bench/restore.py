"""Restore and backup benchmark: a point-in-time restore of a large account, and backup create /
restore throughput beside `cp -a` of the same data directory on the same disk, as ratios.

    python bench/restore.py [--messages 100000] [--blobs 3000] [--dir DIR]

The account gets --messages deliveries (MessageAdded events; their bytes are nine tenths of --blobs
real messages from tests/data/corpus, each stored once as an encrypted blob and used in turn; the
last tenth is for the deliveries after the moment), spread over INBOX, Archive and Sent. The moment to restore to is then taken; after it come "a week of events" — 10% more
deliveries and flag changes on 10% of INBOX — and the accident: half of INBOX expunged. The restore
(eventmail.mail.restore, the code `eventmail restore` runs) brings the account back to the moment:
its time is the plan (replaying the log to the moment, comparing with now) and the apply (the new
events, fsynced, in commits of 500). Then `backup create` into a new repository, a second
(incremental) run after 1,000 more deliveries, and `backup restore` into a new directory, each beside
`cp -a` of the same tree. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eventmail.mail.restore import apply, new_restore_id, plan, tally  # noqa: E402
from eventmail.mime.structure import parse_structure  # noqa: E402
from eventmail.opening import open_store  # noqa: E402
from eventmail.proto import events_pb2 as pb  # noqa: E402
from eventmail.store import (  # noqa: E402
    Account,
    MasterKeySource,
    create_backup,
    init_directory,
    load_master_key,
    restore_backup,
)

CORPUS = ROOT / "tests" / "data" / "corpus"


def pool(n: int) -> list[tuple[bytes, pb.MessageStructure]]:
    files = sorted(CORPUS.glob("*/*.eml"))
    out = []
    for i in range(n):
        raw = files[i % len(files)].read_bytes().split(b"\n", 1)[1].replace(b"\n", b"\r\n")
        raw = f"X-Bench-Seq: {i}\r\n".encode() + raw  # each blob distinct
        out.append((raw, parse_structure(raw)))
    return out


async def deliver(acct: Account, blobs: list[tuple[bytes, pb.MessageStructure, int]], count: int, start: int) -> None:
    boxes = [acct.mailbox_required(n).id for n in ("INBOX", "Archive", "Sent")]
    for base in range(start, start + count, 2000):
        by_box: dict[int, list[pb.MessageAdded]] = {}
        for i in range(base, min(base + 2000, start + count)):
            raw_id, structure, size = blobs[i % len(blobs)]
            box = boxes[i % len(boxes)]
            by_box.setdefault(box, []).append(pb.MessageAdded(
                blob_id=raw_id, size=size, internal_date=1_000_000_000 + i,
                flags=["\\Seen"] if i % 2 else [], structure=structure))
        for box, items in by_box.items():
            await acct.add_existing(box, items)


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def timed_cp(src: Path, dst: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    subprocess.run(["sync", "-f", str(dst)], check=True)  # cp does not fsync; the backup does
    return time.perf_counter() - start


async def main(messages: int, nblobs: int, workdir: Path) -> None:
    d = workdir / "data"
    src = MasterKeySource(key_file=workdir / "master.key")
    init_directory(d, src)
    key = load_master_key(d, src)
    store = await open_store(d, key)
    await store.create_account("big", ["big@example.test"], None)
    raw = pool(nblobs)
    start = time.perf_counter()
    async with store.use_account("big") as acct:
        stored = [(acct.blobs.put(r), s, len(r)) for r, s in raw]
        # The week after the moment brings other messages than those before it.
        blobs, later = stored[: nblobs * 9 // 10], stored[nblobs * 9 // 10:]
        print(f"== {nblobs} distinct blobs stored in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        await deliver(acct, blobs, messages, 0)
        print(f"== account of {messages} messages appended in {time.perf_counter() - start:.1f} s")
        time.sleep(0.01)
        moment = int(time.time() * 1e6)
        time.sleep(0.01)
        # A week of events after the moment, then the accident.
        week = messages // 10
        await deliver(acct, later, week, messages)
        inbox = acct.mailbox_required("INBOX")
        uids = [m.uid for m in acct.view.messages(inbox.id)]
        flagged = uids[-len(uids) // 10:]
        for i in range(0, len(flagged), 500):
            await acct.change_flags(inbox.id, flagged[i:i + 500], add=["$Label1"])
        expunged = uids[: len(uids) // 2]
        for i in range(0, len(expunged), 2000):
            await acct.expunge(inbox.id, expunged[i:i + 2000])
        events_at = sum(1 for c in acct.events() if c.time_us <= moment)
        print(f"   then {week} more deliveries, flags on {len(uids) // 10} INBOX messages, "
              f"{len(expunged)} INBOX messages expunged; log head {acct.head_seq} events")

        # The same view of the past without kept checkpoints: the whole log replayed.
        past = d / "past-checkpoints"
        hidden = workdir / "past-hidden"
        past.rename(hidden)
        start = time.perf_counter()
        await plan(acct, moment)
        cold = time.perf_counter() - start
        hidden.rename(past)
        start = time.perf_counter()
        p = await plan(acct, moment)
        planned = time.perf_counter() - start
        counts = tally(p)
        start = time.perf_counter()
        await apply(acct, p, new_restore_id())
        applied = time.perf_counter() - start
    print(f"== restore to the moment ({events_at} events of log before it): plan {planned:.2f} s from the newest "
          f"kept checkpoint before it (without kept checkpoints: {cold:.2f} s, {events_at / cold:.0f} events/s "
          f"replayed), apply {applied:.2f} s "
          f"({counts['back']} messages back at {counts['back'] / applied:.0f}/s, flags set back on {counts['flags']}); "
          f"total {planned + applied:.2f} s")
    await store.close()

    size = tree_bytes(d)
    repo = workdir / "repo"
    start = time.perf_counter()
    first = await asyncio.to_thread(create_backup, d, repo)
    t_create = time.perf_counter() - start
    t_cp = timed_cp(d, workdir / "cp-copy")
    print(f"== backup create, first run: {size / 1e6:.0f} MB in {t_create:.2f} s = {size / 1e6 / t_create:.0f} MB/s; "
          f"cp -a + sync: {t_cp:.2f} s = {size / 1e6 / t_cp:.0f} MB/s; eventmail at {t_cp / t_create:.2f}x of cp")
    store = await open_store(d, key)
    async with store.use_account("big") as acct:
        await deliver(acct, later, 1000, messages + week)
    await store.close()
    start = time.perf_counter()
    second = await asyncio.to_thread(create_backup, d, repo)
    t_second = time.perf_counter() - start
    print(f"== backup create, incremental after 1,000 deliveries: {t_second:.2f} s "
          f"({second.bytes_copied / 1e6:.1f} MB copied; first run copied {first.bytes_copied / 1e6:.0f} MB)")
    start = time.perf_counter()
    await asyncio.to_thread(restore_backup, repo, workdir / "restored")
    t_restore = time.perf_counter() - start
    t_cp2 = timed_cp(repo, workdir / "cp-copy2")
    print(f"== backup restore: {size / 1e6:.0f} MB in {t_restore:.2f} s = {size / 1e6 / t_restore:.0f} MB/s; "
          f"cp -a + sync: {t_cp2:.2f} s; eventmail at {t_cp2 / t_restore:.2f}x of cp")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--blobs", type=int, default=3000)
    ap.add_argument("--dir", help="work directory (default: a new temporary one, removed after)")
    a = ap.parse_args()
    work = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="em-restore-bench-"))
    try:
        asyncio.run(main(a.messages, a.blobs, work))
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)
