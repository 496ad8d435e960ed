"""One stream of the store behind four verbs: append, subscribe, events, blobs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..proto import events_pb2 as pb
from .stream import Committed, Subscription

if TYPE_CHECKING:
    from .store import Store


class StreamHandle:
    """`store.stream(name)`: the system, queue, an account's or a hand-off stream, by name.

    An open account (`Store.account`) is the handle of its own stream with its projections;
    through this handle an account stream's appends go to that same writer."""

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self.name = name

    async def append(self, events: Sequence[pb.Event]) -> list[Committed]:
        """Commit events (group-committed, fsynced; in sync replication mode acknowledged by
        the secondary) and return them with their sequence numbers."""
        return await (await self._store._writer_for(self.name)).append(events)

    def subscribe(self) -> Subscription:
        """Committed events from now on (not for account streams: `Account.subscribe`)."""
        return self._store._subscribe(self.name)

    def events(self, since: int = 0) -> Iterable[Committed]:
        """Decrypted events after `since`, read from disk (any stream, also with no writer here)."""
        return self._store._events(self.name, since)

    async def put_blob(self, data: bytes) -> bytes:
        """Store bytes (encrypted, fsynced) before the event that names them; their blob id."""
        return await asyncio.to_thread(self._store._blob_store(self.name).put, data)

    async def read_blob(self, blob_id: bytes) -> bytes:
        """A blob's bytes, read and decrypted off the event loop."""
        return await asyncio.to_thread(self._store._blob_store(self.name).get, blob_id)

    async def replicated(self) -> None:
        """Wait, as an append would in synchronous replication mode, until the secondary has the
        stream's current head (a retried delivery whose first try was committed but not yet
        acknowledged must not be answered before the secondary has it)."""
        gate = self._store._gate
        if gate is not None:
            head = (await self._store._writer_for(self.name)).log.head
            if head.seq:
                await gate(self.name, head.seq)
