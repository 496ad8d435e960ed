"""The store: a data directory's keyring, streams and accounts behind one small, typed API."""

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..proto import events_pb2 as pb
from . import reader
from .account import Account
from .blobs import BlobCache, BlobStore
from .errors import Conflict, DamagedBlob, DamagedLog, DirectoryLocked, MissingKey, NotFound, StoreError
from .fsutil import make_dirs
from .handle import StreamHandle
from .keyring import Keyring
from .log import Head, StreamLog
from .names import ACCOUNT_NAME, QUEUE, SYSTEM, account_stream
from .registration import Registration
from .replication_port import ReplicationPort
from .stream import Committed, StreamWriter, Subscription
from .system import SystemView, normalize_address

log = logging.getLogger(__name__)

# Accounts nobody used for five minutes are checkpointed and closed: memory follows activity.
IDLE_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class StreamReport:
    """What `verify` found for one stream."""

    stream: str
    head: Head
    records: int
    blobs: int
    error: str | None


class Store:
    """A data directory. Open it with `Store.open`; one writing process per directory."""

    def __init__(
        self, directory: Path, keyring: Keyring, writable: bool, idle_seconds: float, registration: Registration
    ) -> None:
        self.directory = directory
        self.registration = registration
        self.keyring = keyring
        self.writable = writable
        self.idle_seconds = idle_seconds
        self._lock_fd: int | None = None
        self._accounts: dict[str, Account] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self.system = SystemView()
        self._system_writer: StreamWriter | None = None
        self._queue_writer: StreamWriter | None = None
        self._reaper: asyncio.Task[None] | None = None
        self.queue_blobs: BlobStore | None = None
        self.blob_cache = BlobCache()  # decrypted account blobs recently read, in memory only
        self._other_writers: dict[str, StreamWriter] = {}
        self._gate: Callable[[str, int], Awaitable[None]] | None = None
        self._fenced: Callable[[str], str | None] = lambda stream: None
        self._commit_signal = asyncio.Event()
        self.replication = ReplicationPort(self)
        # Told the seconds of every log fsync, on the writing thread: the server hands its metrics
        # here (the store imports nothing above it).
        self.on_fsync: Callable[[float], None] | None = None

    # ---------------------------------------------------------------- opening

    @classmethod
    async def open(
        cls, directory: Path, master_key: bytes, writable: bool = True, idle_seconds: float = IDLE_SECONDS,
        tolerate_damage: bool = False, *, registration: Registration,
    ) -> "Store":
        """Open a data directory. A writer takes the directory's lock; readers never modify anything.

        `registration` is what the layers above add to each account (eventmail.opening.open_store
        supplies it: open through that)."""
        directory = Path(directory)
        if not (directory / "keyring").exists():
            raise MissingKey(f"{directory} is not an eventmail data directory (run `eventmail key init`)")
        Keyring.load(directory / "keyring", master_key)  # a wrong key is refused before anything is written
        lock_fd = _take_lock(directory) if writable else None
        try:
            keyring = Keyring.load(directory / "keyring", master_key)
            store = cls(directory, keyring, writable, idle_seconds, registration)
            store._lock_fd = lock_fd
            try:
                await asyncio.to_thread(store._open_system)
            except DamagedLog:
                # `verify` still has to look at everything and say what is wrong.
                if writable or not tolerate_damage:
                    raise
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        if writable:
            store._reaper = asyncio.get_running_loop().create_task(store._reap_idle())
        return store

    @staticmethod
    def initialize(directory: Path, keyring: Keyring) -> None:
        """Lay out a new data directory around a freshly created keyring."""
        for sub in ("streams", "blobs", "checkpoints"):
            make_dirs(directory / sub)

    @staticmethod
    def initialize_replica(directory: Path, keyring_data: bytes, master_key: bytes) -> None:
        """Lay out a new data directory around the primary's keyring (a new secondary)."""
        directory = Path(directory)
        if (directory / "keyring").exists():
            raise StoreError(f"{directory} already has a keyring")
        make_dirs(directory)
        ring = Keyring.from_bytes(directory / "keyring", keyring_data, master_key)
        ring.save()
        Store.initialize(directory, ring)

    def _stream_log(self, stream: str, create: bool) -> StreamLog:
        if not self.writable and stream not in self.keyring.streams and stream not in self.keyring.shredded:
            # A reader of a stream that was never written: an empty log.
            return StreamLog(stream, self._stream_path(self.keyring.dir_name(stream)), None, False)
        keys = self.keyring.stream(stream, create=create and self.writable)
        slog = StreamLog(stream, self._stream_path(keys.dir_name), keys, self.writable)
        slog.on_fsync = self._fsync_done
        return slog

    def _fsync_done(self, seconds: float) -> None:
        if self.on_fsync is not None:
            self.on_fsync(seconds)

    def _open_system(self) -> None:
        slog = self._stream_log(SYSTEM, create=True)
        for record, plaintext in slog.plaintexts():
            e = pb.Event()
            e.ParseFromString(plaintext)
            self.system.apply(record.seq, e)
        self._system_writer = self._attach(StreamWriter(slog, self._apply_system))
        qlog = self._stream_log(QUEUE, create=True)
        self._queue_writer = self._attach(StreamWriter(qlog, _unprojected))
        if qlog.keys is not None:
            self.queue_blobs = BlobStore(QUEUE, self.directory / "blobs" / qlog.keys.dir_name, qlog.keys)

    def _apply_system(self, committed: list[Committed]) -> list[Committed]:
        for c in committed:
            self.system.apply(c.seq, c.event)
        return committed

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for name in list(self._accounts):
            await self._close_account(name)
        for w in (self._system_writer, self._queue_writer, *self._other_writers.values()):
            if w is not None:
                await w.drain()
                w.log.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---------------------------------------------------------------- streams

    def _system(self) -> StreamWriter:
        assert self._system_writer is not None
        return self._system_writer

    def stream(self, name: str) -> StreamHandle:
        """One stream (system, queue, account/<name>, handoff/<node>): append, subscribe, events, blobs."""
        return StreamHandle(self, name)

    def _subscribe(self, stream: str) -> Subscription:
        if stream == SYSTEM:
            return self._system().subscribe()
        if stream == QUEUE:
            assert self._queue_writer is not None
            return self._queue_writer.subscribe()
        if stream.startswith("account/"):
            raise StoreError(f"{stream}: subscribe through the open account (Account.subscribe)")
        w = self._other_writers.get(stream)
        if w is None:
            w = self._attach(StreamWriter(self._stream_log(stream, create=False), _unprojected))
            self._other_writers[stream] = w
        return w.subscribe()

    def _events(self, stream: str, since: int = 0) -> Iterable[Committed]:
        slog = self._stream_log(stream, create=False)
        try:
            for record, plaintext in slog.plaintexts(since):
                e = pb.Event()
                e.ParseFromString(plaintext)
                yield Committed(stream, record.seq, record.time_us, e)
        finally:
            slog.close()

    # ---------------------------------------------------------------- accounts

    async def create_account(self, name: str, addresses: Iterable[str], password: pb.PasswordSet | None) -> None:
        """Record the account and its addresses, and give it the default mailboxes."""
        if not ACCOUNT_NAME.fullmatch(name):
            raise StoreError(f"account name {name!r}: use 1-64 of a-z 0-9 . _ - (starting with a letter or digit)")
        if name in self.system.accounts:
            raise Conflict(f"account {name} exists")
        if name in self.system.deleted:
            raise Conflict(f"account {name} was deleted and is in its grace period: bring it back with "
                           f"`eventmail restore {name}`, or shred it now with `account delete {name} --shred`")
        events = [pb.Event(account_created=pb.AccountCreated(name=name))]
        for addr in addresses:
            owner = self.system.addresses.get(normalize_address(addr))
            if owner is not None:
                raise Conflict(f"address {addr} belongs to account {owner}")
            events.append(pb.Event(address_added=pb.AddressAdded(account=name, address=addr)))
        if password is not None:
            events.append(pb.Event(password_set=password))
        self.keyring.stream(account_stream(name), create=True)
        await self._system().append(events)
        async with self.use_account(name) as acct:
            await acct.create_default_mailboxes()

    async def add_address(self, account: str, address: str) -> None:
        """Give an account one more address (an alias), or `@domain`: the domain's catch-all."""
        if account not in self.system.accounts:
            raise NotFound(f"no account {account}")
        local, at, domain = address.rpartition("@")
        if not at or not domain or any(c in address for c in " \t\r\n<>"):
            raise StoreError(f"address {address!r}: expected local@domain, or @domain for a catch-all")
        owner = self.system.addresses.get(normalize_address(address))
        if owner is not None:
            raise Conflict(f"address {address} belongs to account {owner}")
        await self._system().append([pb.Event(address_added=pb.AddressAdded(account=account, address=address))])

    async def remove_address(self, account: str, address: str) -> None:
        """Take an address (or catch-all) away from an account."""
        if self.system.addresses.get(normalize_address(address)) != account:
            raise NotFound(f"account {account} has no address {address}")
        await self._system().append([pb.Event(address_removed=pb.AddressRemoved(account=account, address=address))])

    async def delete_account(self, name: str, shred_after_us: int = 0) -> None:
        """Record the deletion: the account stops receiving mail and logins at once. Its data stays
        until `shred_after_us` (the grace period; `undelete_account` brings it back), or is
        crypto-shredded now when that is 0."""
        if name not in self.system.accounts:
            raise NotFound(f"no account {name}")
        await self._system().append([pb.Event(account_deleted=pb.AccountDeleted(name=name, shred_after_us=shred_after_us))])
        await self._close_account(name, checkpoint=bool(shred_after_us))
        if not shred_after_us:
            await self.shred_account(name)

    async def undelete_account(self, name: str) -> tuple[list[str], list[str]]:
        """Bring back an account in its grace period; returns (addresses it got back, addresses
        another account had taken meanwhile)."""
        gone = self.system.deleted.get(name)
        if gone is None:
            raise NotFound(f"no deleted account {name} (shredded, or never deleted)")
        if name in self.system.accounts:
            raise Conflict(f"account {name} exists")
        free = [a for a in gone.info.addresses if a not in self.system.addresses]
        taken = [a for a in gone.info.addresses if a in self.system.addresses]
        await self._system().append([pb.Event(account_undeleted=pb.AccountUndeleted(name=name, addresses=free))])
        return free, taken

    async def shred_account(self, name: str) -> None:
        """Crypto-shred a deleted account: the shredding is recorded, then its keys go (the
        keyring travels to the secondary and into backups), then its files."""
        if name in self.system.accounts:
            raise Conflict(f"account {name} is not deleted")
        await self._system().append([pb.Event(account_shredded=pb.AccountShredded(name=name))])
        await self._close_account(name, checkpoint=False)
        stream = account_stream(name)
        keys = self.keyring.streams.get(stream)
        self.keyring.shred(stream)
        if keys is not None:
            shutil.rmtree(self._stream_path(keys.dir_name), ignore_errors=True)
            self.blob_cache.drop_stream(stream)
            BlobStore(stream, self.directory / "blobs" / keys.dir_name, None).remove_all()
            (self.directory / "checkpoints" / keys.dir_name).unlink(missing_ok=True)
            shutil.rmtree(self.directory / "past-checkpoints" / keys.dir_name, ignore_errors=True)

    async def account(self, name: str) -> Account:
        """The open account (opened on demand). Prefer `use_account`, which keeps it from idling out."""
        acct = self._accounts.get(name)
        if acct is not None and acct.broken:
            # Its projections are behind its log (a commit failed after its write): reopening
            # rebuilds them from checkpoint and log.
            log.warning("account %s: reopening after a failed commit", name)
            await self._close_account(name, checkpoint=False)
            acct = None
        if acct is not None:
            return acct
        if name not in self.system.accounts:
            raise NotFound(f"no account {name}")
        lock = self._opening.setdefault(name, asyncio.Lock())
        async with lock:
            acct = self._accounts.get(name)
            if acct is None or acct.broken:
                acct = await asyncio.to_thread(self._open_account, name)
                self._attach(acct._writer)
                self._accounts[name] = acct
        return acct

    def _open_account(self, name: str) -> Account:
        stream = account_stream(name)
        slog = self._stream_log(stream, create=True)
        keys = slog.keys
        assert keys is not None
        return Account(
            name,
            stream,
            slog,
            BlobStore(stream, self.directory / "blobs" / keys.dir_name, keys, self.blob_cache),
            self.directory / "checkpoints" / keys.dir_name,
            self.registration,
        )

    @contextlib.asynccontextmanager
    async def use_account(self, name: str) -> AsyncIterator[Account]:
        acct = await self.account(name)
        acct.refs += 1
        try:
            yield acct
        finally:
            acct.refs -= 1
            acct.last_used = time.monotonic()

    def open_accounts(self) -> list[str]:
        return sorted(self._accounts)

    async def _close_account(self, name: str, checkpoint: bool = True) -> None:
        acct = self._accounts.pop(name, None)
        if acct is None:
            return
        await acct.close(checkpoint=checkpoint and self.writable)

    async def close_idle(self, now: float | None = None) -> list[str]:
        """Checkpoint and close accounts nobody holds and nobody listens to."""
        now = time.monotonic() if now is None else now
        closed = []
        for name, acct in list(self._accounts.items()):
            if acct.refs == 0 and not acct._writer.subscribers and now - acct.last_used >= self.idle_seconds:
                await self._close_account(name)
                closed.append(name)
        return closed

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(max(self.idle_seconds / 4, 1.0))
            try:
                await self.close_idle()
            except StoreError:
                log.exception("closing idle accounts")

    # ---------------------------------------------------------------- replication

    def _attach(self, writer: StreamWriter) -> StreamWriter:
        writer.gate = self._gate
        writer.fenced = self._fenced(writer.log.stream)
        writer.notify = self._commit_signal.set
        return writer

    def _writers(self) -> list[StreamWriter]:
        out = [w for w in (self._system_writer, self._queue_writer) if w is not None]
        out += [a._writer for a in self._accounts.values()]
        out += list(self._other_writers.values())
        return out

    @property
    def commit_signal(self) -> asyncio.Event:
        return self._commit_signal

    def _stream_path(self, dir_name: str) -> Path:
        """The directory of a stream's log (its keyring entry's `dir_name`)."""
        return self.directory / "streams" / dir_name

    def _blob_store(self, stream: str) -> BlobStore:
        if stream == QUEUE and self.queue_blobs is not None:
            return self.queue_blobs
        keys = self.keyring.streams[stream]
        return BlobStore(stream, self.directory / "blobs" / keys.dir_name, keys)

    async def _writer_for(self, stream: str) -> StreamWriter:
        if stream == SYSTEM:
            return self._system()
        if stream == QUEUE:
            assert self._queue_writer is not None
            return self._queue_writer
        if stream.startswith("account/"):
            name = stream.split("/", 1)[1]
            if name in self.system.accounts:
                return (await self.account(name))._writer
            # An account stream whose account the system stream does not (yet) name: never a
            # second writer beside the account's own.
            raise NotFound(f"stream {stream}: no such account")
        w = self._other_writers.get(stream)
        if w is None:
            w = self._attach(StreamWriter(self._stream_log(stream, create=False), _unprojected))
            self._other_writers[stream] = w
        return w

    # ---------------------------------------------------------------- verification

    def verify(self) -> list[StreamReport]:
        """Check every stream's chain and every record's decryption, and every blob the log names."""
        reports = []
        handoffs = sorted(s for s in self.keyring.streams if s.startswith("handoff/"))
        for stream in [SYSTEM, QUEUE, *sorted(account_stream(a) for a in self._account_names_on_disk()), *handoffs]:
            reports.append(self._verify_stream(stream))
        return reports

    def _account_names_on_disk(self) -> list[str]:
        return [s.split("/", 1)[1] for s in self.keyring.streams if s.startswith("account/")]

    def _verify_stream(self, stream: str) -> StreamReport:
        keys = self.keyring.streams[stream]
        blobs = BlobStore(stream, self.directory / "blobs" / keys.dir_name, keys)
        count = 0
        seen_blobs: set[bytes] = set()
        collected: set[bytes] = set()  # deleted by the retention collector, as recorded
        prev = bytes(32)
        head = Head(0, prev)
        slog: StreamLog | None = None
        try:
            slog = StreamLog(stream, self._stream_path(keys.dir_name), keys, writable=False)
            # Every record from the first (its chain from the first segment's header on, and its
            # decryption checked: verify_all, a remembered position is not trusted); when there are
            # many, the later 60% read by a child process while this one reads and parses the
            # first 40% and then parses the child's (store.reader): about even work for both.
            for seq, _time_us, plaintext in reader.plaintexts(slog, 0, own_share=VERIFY_OWN_SHARE, verify_all=True):
                count = seq
                e = pb.Event()
                e.ParseFromString(plaintext)
                kind = e.WhichOneof("kind")
                blob_id = (
                    e.message_added.blob_id if kind == "message_added"
                    else e.outbound_queued.blob_id if kind == "outbound_queued"
                    else e.handoff_queued.blob_id if kind == "handoff_queued" else None
                )
                if blob_id is not None:
                    seen_blobs.add(blob_id)
                elif kind == "blobs_collected":
                    collected.update(e.blobs_collected.blob_ids)
            head = slog.head if count == slog.head.seq else Head(count, slog.chain_before(count + 1))
            for blob_id in sorted(seen_blobs - collected):
                blobs.get(blob_id)
            return StreamReport(stream, head, count, len(seen_blobs - collected), None)
        except (DamagedLog, DamagedBlob) as err:
            if slog is not None and count:
                with contextlib.suppress(StoreError):
                    head = Head(count, slog.chain_before(count + 1))
            return StreamReport(stream, head, count, len(seen_blobs), str(err))
        finally:
            if slog is not None:
                slog.close()


# The share of a long stream's records `verify` reads itself (the rest: store.reader's child).
VERIFY_OWN_SHARE = 0.4


def _unprojected(committed: list[Committed]) -> list[Committed]:
    """The commit hook of streams without projections (queue, hand-off)."""
    return committed


def _take_lock(directory: Path) -> int:
    """The data directory's writer lock: a second writer is refused, never let in beside the first."""
    make_dirs(directory)
    path = directory / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise DirectoryLocked(
            f"data directory {directory} is in use by process {holder} (stop it, or run the command through it)"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
