"""Harness for the IMAP tests: a store and IMAP listeners on an event loop in a background thread,
on free loopback ports with a self-signed certificate, and a raw client for transcript tests."""

from __future__ import annotations

import asyncio
import imaplib
import re
import socket
import ssl
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from nacl.pwhash import argon2id

from eventmail.imap import Limits, start_imap
from eventmail.opening import open_store
from eventmail.proto import events_pb2 as pb
from eventmail.sasl import HashCost, LoginLimiter, make_password_set
from eventmail.store import MasterKeySource, Store, init_directory, load_master_key
from eventmail.tls.certs import make_self_signed, server_context
from tests.conftest import corpus_messages, message_bytes

T = TypeVar("T")
USER, PASSWORD = "alice", "secret"
# Cheap credentials: the tests log in hundreds of times.
CHEAP = HashCost(argon2_opslimit=argon2id.OPSLIMIT_MIN, argon2_memlimit=argon2id.MEMLIMIT_MIN, scram_iterations=4096)
HOST = "127.0.0.1"


class ImapServer:
    """A data directory with account alice (password "secret") and three listeners: STARTTLS,
    implicit TLS, and plaintext with login allowed on loopback (as localserve runs it)."""

    def __init__(self, root: Path, *, limiter: LoginLimiter | None = None, limits: Limits | None = None,
                 autologout: float | None = None, preauth_timeout: float | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="imap-test-loop", daemon=True)
        self.thread.start()
        data = root / "data"
        src = MasterKeySource(key_file=root / "master.key")
        init_directory(data, src)
        self.cert, key = root / "cert.pem", root / "key.pem"
        make_self_signed(self.cert, key, ["localhost", HOST])
        ctx = server_context(self.cert, key)
        self.store: Store = self.call(open_store(data, load_master_key(data, src)))
        self.call(self.store.create_account(USER, ["alice@example.test"], make_password_set(USER, PASSWORD, cost=CHEAP)))
        kw: dict[str, Any] = {"limits": limits or Limits(), "limiter": limiter}
        if autologout is not None:
            kw["autologout"] = autologout
        if preauth_timeout is not None:
            kw["preauth_timeout"] = preauth_timeout
        self.servers = [
            self.call(start_imap(self.store, HOST, 0, starttls_context=ctx, **kw)),
            self.call(start_imap(self.store, HOST, 0, tls_context=ctx, **kw)),
            self.call(start_imap(self.store, HOST, 0, allow_plaintext_auth=True, **kw)),
        ]
        self.starttls_port, self.tls_port, self.plain_port = (s.sockets[0].getsockname()[1] for s in self.servers)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    # -- clients ---------------------------------------------------------------------------

    def imap(self, login: bool = True) -> imaplib.IMAP4:
        """imaplib over the plaintext-allowed listener (the common case in these tests)."""
        m = imaplib.IMAP4(HOST, self.plain_port, timeout=30)
        if login:
            m.login(USER, PASSWORD)
        return m

    def imaps(self, login: bool = True) -> imaplib.IMAP4_SSL:
        m = imaplib.IMAP4_SSL(HOST, self.tls_port, ssl_context=self.client_context(), timeout=30)
        if login:
            m.login(USER, PASSWORD)
        return m

    def raw(self, port: int | None = None, tls: bool = False) -> RawClient:
        return RawClient(HOST, port or self.plain_port, self.client_context() if tls else None)

    # -- the store, from the test thread ---------------------------------------------------

    def deliver(self, raw: bytes, mailbox: str = "INBOX", flags: tuple[str, ...] = ()) -> int:
        """Add a message as SMTP delivery would (through the store); returns its UID."""
        async def go() -> int:
            async with self.store.use_account(USER) as acct:
                c = await acct.add_message(mailbox, raw, flags, origin=pb.Origin(kind="smtp"))
                assert c is not None
                return c.event.message_added.uid
        return self.call(go())

    def events(self) -> list[pb.Event]:
        async def go() -> list[pb.Event]:
            async with self.store.use_account(USER) as acct:
                return [c.event for c in acct.events()]
        return self.call(go())

    def head_seq(self) -> int:
        """The account log's last seq: the MODSEQ of the latest change (RFC 7162 over the log)."""
        async def go() -> int:
            async with self.store.use_account(USER) as acct:
                return acct.head_seq
        return self.call(go())

    def view_flags(self, mailbox: str) -> dict[int, tuple[str, ...]]:
        async def go() -> dict[int, tuple[str, ...]]:
            async with self.store.use_account(USER) as acct:
                mb = acct.view.mailbox(mailbox)
                assert mb is not None
                return {m.uid: m.flags for m in acct.view.messages(mb.id)}
        return self.call(go())

    def close(self) -> None:
        async def stop() -> None:
            for s in self.servers:
                s.close()
            # Connections a failed test left open end here, on their loop, rather than as
            # coroutines garbage-collected later on another thread.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for s in self.servers:
                await s.wait_closed()
            await self.store.close()
        try:
            self.call(stop(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    def __enter__(self) -> ImapServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawClient:
    """A byte-level IMAP client for transcript tests: send exact bytes, read whole responses
    (literals included)."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection((host, port), timeout=15)
        self.sock: socket.socket = ctx.wrap_socket(sock, server_hostname="localhost") if ctx else sock
        self.buf = b""
        self.greeting = self.response()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self) -> bytes:
        """One response, with any literals it carries inlined (`{n}\\r\\n` + data kept)."""
        out = self.line()
        while True:
            m = re.search(rb"~?\{(\d+)\}$", out)
            if m is None:
                return out
            out += b"\r\n" + self.read(int(m.group(1))) + self.line()

    def until(self, tag: bytes) -> list[bytes]:
        """Responses up to and including the tagged one for `tag`."""
        out = []
        while True:
            resp = self.response()
            out.append(resp)
            if resp.startswith(tag + b" "):
                return out

    def cmd(self, line: bytes) -> list[bytes]:
        tag = line.split(b" ", 1)[0]
        self.send(line + b"\r\n")
        return self.until(tag)

    def login(self) -> None:
        assert self.cmd(f"L LOGIN {USER} {PASSWORD}".encode())[-1].startswith(b"L OK")

    def closed(self, timeout: float = 5) -> bool:
        """True when the server has closed the connection (after reading what is left)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except TimeoutError:
            return False
        except (ConnectionError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()


def corpus(n: int, kind: str = "ham") -> list[bytes]:
    return [message_bytes(p) for p in corpus_messages(kind, n)]


def simple_message(subject: str = "hello", body: str = "hello world", **headers: str) -> bytes:
    lines = ["From: Bob <bob@example.test>", "To: alice@example.test", f"Subject: {subject}",
             "Date: Mon, 7 Feb 1994 21:52:25 -0800", "Message-ID: <m1@example.test>"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()
