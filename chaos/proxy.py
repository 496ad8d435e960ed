"""A TCP proxy for cutting the replication link: pass, delay, drop (reset and refuse), or black-hole."""

import asyncio
import contextlib
import threading

from tests.replica_pair import reserve_port

MODES = ("pass", "delay", "drop", "blackhole")


class Proxy:
    """Listens on 127.0.0.1:`port` and forwards to 127.0.0.1:`target`; runs its own event loop
    in a thread so a test can change the mode while processes talk through it."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.mode = "pass"
        self.delay = 0.0
        self._conns: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self.port = reserve_port()
        self._server: asyncio.Server | None = None
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        ready.set()
        self._loop.run_forever()

    def set(self, mode: str, delay: float = 0.0) -> None:
        assert mode in MODES
        done = threading.Event()

        def apply() -> None:
            self.mode, self.delay = mode, delay
            if mode == "drop":
                for w in list(self._conns):
                    w.transport.abort()  # an RST, as a crashed router or a firewall reject does
                self._conns.clear()
            done.set()

        self._loop.call_soon_threadsafe(apply)
        done.wait(5)

    def close(self) -> None:
        def stop() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._conns):
                w.transport.abort()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "drop":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._conns.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._conns.discard(w)
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                while self.mode == "blackhole":  # bytes go nowhere until the link heals
                    await asyncio.sleep(0.05)
                if self.mode == "drop":
                    return
                if self.mode == "delay":
                    await asyncio.sleep(self.delay)
                if writer.is_closing():  # the other side went away (uvloop's write would raise)
                    return
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
