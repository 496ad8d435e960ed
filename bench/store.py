"""Store benchmark: fsync'd appends (1 and 50 writers), cold replay, and a 100,000-message checkpoint.

Prints figures; asserts nothing. The baseline beside it, on the same disk in the same run, is
SQLite in WAL mode with synchronous=FULL committing one row per transaction (a durable append
as a widely used embedded store does it).
"""

import argparse
import asyncio
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eventmail.mail.threads import thread_keys  # noqa: E402
from eventmail.mime.structure import parse_structure  # noqa: E402
from eventmail.opening import open_store  # noqa: E402
from eventmail.proto import events_pb2 as pb  # noqa: E402
from eventmail.store import MasterKeySource, Store, init_directory, load_master_key  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus" / "ham"


def children_cpu() -> float:
    """User and system CPU seconds of this process's ended children (store.reader's)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def spy_on_this_process(out: Path) -> subprocess.Popen[bytes]:
    """py-spy (200 Hz, raw stacks, the reading child too) on this process until it gets SIGINT."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    proc = subprocess.Popen([spy, "record", "--pid", str(os.getpid()), "--subprocesses", "-r", "200", "-f", "raw",
                             "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the replay starts
    return proc


def setting(i: int) -> pb.Event:
    return pb.Event(account_setting=pb.AccountSetting(key=f"key-{i}", value="v" * 64))


def sqlite_baseline(directory: Path, n: int) -> float:
    db = sqlite3.connect(directory / "baseline.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE log(seq INTEGER PRIMARY KEY, data BLOB)")
    start = time.perf_counter()
    for _ in range(n):
        db.execute("INSERT INTO log(data) VALUES (?)", (os.urandom(120),))
    elapsed = time.perf_counter() - start
    db.close()
    return n / elapsed


async def appends(store: Store, writers: int, per_writer: int) -> tuple[float, int]:
    async with store.use_account("bench") as a:
        batches = a._writer.batches

        async def one(w: int) -> None:
            for i in range(per_writer):
                await a.append([setting(w * 1_000_000 + i)])

        start = time.perf_counter()
        await asyncio.gather(*(one(w) for w in range(writers)))
        elapsed = time.perf_counter() - start
        return writers * per_writer / elapsed, a._writer.batches - batches


def corpus_pool(n: int) -> list[tuple[bytes, pb.MessageStructure]]:
    out = []
    for f in sorted(CORPUS.glob("*.eml"))[:n]:
        raw = f.read_bytes().split(b"\n", 1)[1].replace(b"\n", b"\r\n")
        out.append((raw, parse_structure(raw)))
    return out


async def big_account(store: Store, messages: int, old_events: bool = False) -> float:
    """Fill the account with `messages` deliveries (bytes from a pool of real messages, stored once),
    each carrying the thread keys as Account.add_message records them (`old_events`: without them,
    as events from before they were recorded)."""
    pool = corpus_pool(300)
    keys = [thread_keys(structure) for _raw, structure in pool]
    start = time.perf_counter()
    async with store.use_account("big") as a:
        boxes = [a.mailbox_required(n).id for n in ("INBOX", "Archive", "Sent")]
        blob_ids = [a.blobs.put(raw) for raw, _ in pool]
        uid = {b: 1 for b in boxes}
        chunk = 2000
        for base in range(0, messages, chunk):
            events = []
            for i in range(base, min(base + chunk, messages)):
                raw, structure = pool[i % len(pool)]
                box = boxes[i % len(boxes)]
                events.append(pb.Event(message_added=pb.MessageAdded(
                    mailbox_id=box, uid=uid[box], blob_id=blob_ids[i % len(pool)], size=len(raw),
                    internal_date=1_000_000_000 + i, flags=["\\Seen"] if i % 2 else [], structure=structure)))
                if not old_events:
                    own, subject = keys[i % len(pool)]
                    events[-1].message_added.thread_message_id = own or b""
                    events[-1].message_added.thread_subject = subject
                uid[box] += 1
            await a.append(events)
    return time.perf_counter() - start


async def main(messages: int, replays: int, profile: Path | None, old_events: bool) -> None:
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    tmp = Path(tempfile.mkdtemp(prefix="em-bench-"))
    try:
        d = tmp / "data"
        src = MasterKeySource(key_file=tmp / "master.key")
        init_directory(d, src)
        key = load_master_key(d, src)
        store = await open_store(d, key)
        await store.create_account("bench", ["bench@example.test"], None)
        await store.create_account("big", ["big@example.test"], None)

        baseline = sqlite_baseline(tmp, 500)
        one, one_batches = await appends(store, 1, 500)
        fifty, fifty_batches = await appends(store, 50, 40)
        print("== appends with fsync (one event each)")
        print(f"1 writer:    {one:10.0f} appends/s  ({one_batches} fsyncs for 500 appends)")
        print(f"50 writers:  {fifty:10.0f} appends/s  ({fifty_batches} fsyncs for 2000 appends)")
        print(f"group commit gain (50 writers / 1 writer): {fifty / one:.1f}x")
        print(f"baseline SQLite WAL synchronous=FULL, 1 writer: {baseline:.0f} commits/s "
              f"-> eventmail 1 writer at {one / baseline:.2f}x of it")

        fill = await big_account(store, messages, old_events)
        print(f"== account of {messages} messages: appended in {fill:.1f} s ({messages / fill:.0f} events/s)")
        await store.close()

        ckpt_dir = d / "checkpoints"
        runs = []
        for n in range(replays):  # the same replay again: on a shared machine one run says little
            for f in ckpt_dir.iterdir():
                f.unlink()
            store = await open_store(d, key)
            spy = spy_on_this_process(profile) if profile is not None and n == 0 else None
            proc = psutil.Process()
            rss_before = proc.memory_info().rss
            start, cpu0, child0 = time.perf_counter(), time.process_time(), children_cpu()
            acct = await store.account("big")
            replay, replay_cpu = time.perf_counter() - start, time.process_time() - cpu0
            reader_cpu = children_cpu() - child0
            rss_after = proc.memory_info().rss
            events = acct.head_seq
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its samples when interrupted
                spy.wait()
                print(f"py-spy samples of the first cold replay (this process and its reading child): {profile}")
            runs.append((replay, replay_cpu, reader_cpu))
            print(f"cold replay (decrypt + project, no checkpoint): {replay:.2f} s, {events / replay:.0f} events/s "
                  f"({replay_cpu:.2f} CPU s folding, {events / replay_cpu:.0f} events per CPU second; "
                  f"{reader_cpu:.2f} CPU s in the reading child process; both: "
                  f"{(replay_cpu + reader_cpu) / events * 1e6:.1f} CPU µs an event; "
                  f"load {os.getloadavg()[0]:.1f})")
            if len(runs) < replays:
                await store.close()
        if replays > 1:
            best = min(runs)
            print(f"cold replay, fastest of {replays}: {best[0]:.2f} s, {events / best[0]:.0f} events/s; CPU s per "
                  f"process, lowest: folding {min(r[1] for r in runs):.2f}, child {min(r[2] for r in runs):.2f}")
        start = time.perf_counter()
        acct._checkpoint_seq = -1
        acct.write_checkpoint()
        ck_time = time.perf_counter() - start
        (ck_file,) = [f for f in ckpt_dir.iterdir() if f.stat().st_size > 100_000]
        print(f"checkpoint: {ck_file.stat().st_size / 1e6:.1f} MB sealed, written in {ck_time:.2f} s; "
              f"projection database {len(acct.view.db.serialize()) / 1e6:.1f} MB in memory")
        print(f"resident memory: {rss_after / 1e6:.0f} MB after opening the account ({(rss_after - rss_before) / 1e6:+.0f} MB)")
        await store.close()
        store = await open_store(d, key)
        start, cpu0 = time.perf_counter(), time.process_time()
        await store.account("big")
        print(f"open from checkpoint: {time.perf_counter() - start:.2f} s ({time.process_time() - cpu0:.2f} CPU s)")
        await store.close()
        store = await open_store(d, key, writable=False)
        start, cpu0 = time.perf_counter(), time.process_time()
        reports = store.verify()
        took, took_cpu = time.perf_counter() - start, time.process_time() - cpu0
        verified = sum(r.records for r in reports)
        assert all(r.error is None for r in reports)
        print(f"verify (every chain, record and named blob of every stream): {verified} records in {took:.2f} s, "
              f"{verified / took:.0f} records/s ({took_cpu:.2f} CPU s, {verified / took_cpu:.0f} per CPU second)")
        await store.close()
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--replays", type=int, default=1, help="cold replays of the account, one after the other")
    ap.add_argument("--profile", type=Path, help="record py-spy samples of the first cold replay into this file")
    ap.add_argument("--old-events", action="store_true",
                    help="deliveries without the thread keys recorded (as before issue 14's eleventh pass)")
    args = ap.parse_args()
    asyncio.run(main(args.messages, args.replays, args.profile, args.old_events))
