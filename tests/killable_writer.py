"""A writer process for crash tests: appends as fast as it can and prints each acknowledged append."""

import asyncio
import sys
from pathlib import Path

from eventmail.opening import open_store
from eventmail.proto import events_pb2 as pb
from eventmail.store import NotFound, Store, load_master_key
from eventmail.store.keys import MasterKeySource

CONCURRENCY = 8


async def writer(store: Store, tag: str, worker: int) -> None:
    i = 0
    async with store.use_account("victim") as acct:
        while True:
            i += 1
            name = f"{tag}-{worker}-{i}"
            if i % 3 == 0:
                raw = f"Subject: {name}\r\n\r\nbody of {name}\r\n".encode()
                c = await acct.add_message("INBOX", raw, structure=pb.MessageStructure())
                assert c is not None
                print(f"MSG {name} {c.seq} {c.event.message_added.uid}", flush=True)
            else:
                (c,) = await acct.append([pb.Event(account_setting=pb.AccountSetting(key=name, value=name))])
                print(f"SET {name} {c.seq}", flush=True)


async def main(directory: Path, key_file: Path, tag: str) -> None:
    store = await open_store(directory, load_master_key(directory, MasterKeySource(key_file=key_file)))
    try:
        await store.account("victim")
    except NotFound:
        await store.create_account("victim", ["victim@example.test"], None)
    print("READY", flush=True)
    await asyncio.gather(*(writer(store, tag, w) for w in range(CONCURRENCY)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
