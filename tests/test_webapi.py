"""The webapi v0 called as Mox's Go client calls it (POST, form field `request` with JSON, HTTP basic
auth) over a real loopback socket: messages read, flagged, moved and deleted, suppressions kept,
Send through the submission path into the outbound queue and a local INBOX, and Mox's errors."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from eventmail.mail.admin import Admin
from eventmail.sasl import LimitPolicy, LoginLimiter
from eventmail.smtp.delivery import Transaction
from eventmail.smtp.submission import Submission
from eventmail.store import QUEUE, Store
from eventmail.web.webapi import ApiError, Outgoing, make_webapi_app, message_id

from .conftest import open_store, run

PASSWORD = "webapi test password"
MESSAGE = (b"From: Bob <bob@remote.test>\r\nTo: alice@mail.test\r\nSubject: hello there\r\n"
           b"Message-ID: <m1@remote.test>\r\nDate: Sat, 05 Dec 2026 07:00:00 +0000\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           b"the text\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
           b"filename=x.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(b"\x00\x01binary") +
           b"\r\n--b1--\r\n")


def submission_sender(store: Store) -> Any:
    """The submission path as serve wires it: Submission.submit with a Transaction of the webapi's."""
    submission = Submission(store, "mail.test")

    async def send(out: Outgoing) -> str:
        tx = Transaction(remote_ip=out.remote_ip, helo="webapi", tls=True, mail_from=out.mail_from,
                         authenticated=out.account, requiretls=out.requiretls,
                         recipients={r: store.system.account_for(r) or "" for r in out.recipients})
        reply = await submission.submit(tx, out.message)
        if not reply.positive:
            raise ApiError("server" if reply.code < 500 else "user", str(reply.text))
        return tx.transaction_id
    return send


class Client:
    """Mox's webapi.Client: POST BaseURL+Method, form-encoded `request`, basic auth."""

    def __init__(self, session: aiohttp.ClientSession, base: str, user: str, password: str) -> None:
        self.session, self.base, self.auth = session, base, aiohttp.BasicAuth(user, password)

    async def raw(self, method: str, request: dict[str, Any]) -> tuple[int, bytes, str]:
        async with self.session.post(self.base + method, data={"request": json.dumps(request)}, auth=self.auth) as r:
            return r.status, await r.read(), r.headers.get("Content-Type", "")

    async def call(self, method: str, request: dict[str, Any]) -> Any:
        status, body, _ = await self.raw(method, request)
        assert status == 200, (status, body)
        return json.loads(body)


@asynccontextmanager
async def served(store: Store, limiter: LoginLimiter | None = None) -> AsyncIterator[str]:
    root = web.Application()
    root.add_subapp("/webapi", make_webapi_app(store, limiter=limiter or LoginLimiter(time.monotonic),
                                               send=submission_sender(store), allow_plaintext=True))
    runner = web.AppRunner(root)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/webapi/v0/"
    finally:
        await runner.cleanup()


async def setup(keyed: tuple[Path, bytes]) -> tuple[Store, int]:
    store = await open_store(keyed)
    admin = Admin(store)
    await admin.run("domain.add", {"domain": "mail.test"})
    await admin.run("account.add", {"name": "alice", "address": "alice@mail.test", "password": PASSWORD})
    await admin.run("account.add", {"name": "carol", "address": "carol@mail.test", "password": PASSWORD})
    async with store.use_account("alice") as acct:
        await acct.add_message("INBOX", MESSAGE)
        inbox = acct.mailbox_required("INBOX")
        uid = acct.view.messages(inbox.id)[0].uid
    return store, message_id(inbox.id, uid)


def test_messages(keyed_dir: tuple[Path, bytes]) -> None:
    async def main() -> None:
        store, msg = await setup(keyed_dir)
        async with served(store) as base, aiohttp.ClientSession() as s:
            c = Client(s, base, "alice@mail.test", PASSWORD)
            got = await c.call("MessageGet", {"MsgID": msg})
            assert got["Message"]["Subject"] == "hello there"
            assert got["Message"]["From"] == [{"Name": "Bob", "Address": "bob@remote.test"}]
            assert got["Message"]["Text"] == "the text"
            assert got["Message"]["MessageID"] == "<m1@remote.test>"
            assert got["Message"]["Date"] == "2026-12-05T07:00:00Z"
            assert got["Meta"]["MailboxName"] == "INBOX" and got["Meta"]["Size"] == len(MESSAGE)
            st = got["Structure"]
            assert st["ContentType"] == "multipart/mixed" and st["ContentTypeParams"] == {"boundary": "b1"}
            assert [p["ContentType"] for p in st["Parts"]] == ["text/plain", "application/octet-stream"]
            assert st["Parts"][1]["Filename"] == "x.bin" and st["Parts"][1]["DecodedSize"] == 8
            status, body, ctype = await c.raw("MessageRawGet", {"MsgID": msg})
            assert status == 200 and body == MESSAGE and ctype == "text/plain"
            status, body, _ = await c.raw("MessagePartGet", {"MsgID": msg, "PartPath": [1]})
            assert (status, body) == (200, b"\x00\x01binary")
            status, body, _ = await c.raw("MessagePartGet", {"MsgID": msg, "PartPath": [5]})
            assert status == 400 and json.loads(body)["Code"] == "partNotFound"

            assert await c.call("MessageFlagsAdd", {"MsgID": msg, "Flags": ["\\seen", "$Forwarded", "custom"]}) == {}
            got = await c.call("MessageGet", {"MsgID": msg})
            assert set(got["Meta"]["Flags"]) == {"\\seen", "$Forwarded", "custom"}
            await c.call("MessageFlagsRemove", {"MsgID": msg, "Flags": ["\\Seen", "custom"]})
            got = await c.call("MessageGet", {"MsgID": msg})
            assert got["Meta"]["Flags"] == ["$Forwarded"]

            await c.call("MessageMove", {"MsgID": msg, "DestMailboxName": "Archive"})
            status, body, _ = await c.raw("MessageGet", {"MsgID": msg})
            assert status == 400 and json.loads(body) == {"Code": "messageNotFound", "Message": "message not found"}
            async with store.use_account("alice") as acct:
                archive = acct.mailbox_required("Archive")
                moved = message_id(archive.id, acct.view.messages(archive.id)[0].uid)
            assert (await c.call("MessageGet", {"MsgID": moved}))["Meta"]["MailboxName"] == "Archive"

            # Another account cannot reach alice's message by its id.
            other = Client(s, base, "carol@mail.test", PASSWORD)
            status, body, _ = await other.raw("MessageGet", {"MsgID": moved})
            assert status == 400 and json.loads(body)["Code"] == "messageNotFound"

            await c.call("MessageDelete", {"MsgID": moved})
            async with store.use_account("alice") as acct:
                assert acct.view.messages(archive.id) == []
        await store.close()
    run(main())


def test_suppressions(keyed_dir: tuple[Path, bytes]) -> None:
    async def main() -> None:
        store, _ = await setup(keyed_dir)
        async with served(store) as base, aiohttp.ClientSession() as s:
            c = Client(s, base, "alice@mail.test", PASSWORD)
            assert await c.call("SuppressionList", {}) == {"Suppressions": []}
            await c.call("SuppressionAdd", {"EmailAddress": "Bob@Remote.test", "Manual": True, "Reason": "asked"})
            assert await c.call("SuppressionPresent", {"EmailAddress": "bob@remote.test"}) == {"Present": True}
            (sup,) = (await c.call("SuppressionList", {}))["Suppressions"]
            assert sup["Account"] == "alice" and sup["BaseAddress"] == "bob@remote.test"
            assert sup["Manual"] is True and sup["Reason"] == "asked" and sup["ID"] > 0
            # Send to a suppressed address is refused before anything is queued.
            status, body, _ = await c.raw("Send", {"To": [{"Address": "bob@remote.test"}], "Text": "x"})
            assert status == 400 and "suppression list" in json.loads(body)["Message"]
            # carol's list is her own
            other = Client(s, base, "carol@mail.test", PASSWORD)
            assert await other.call("SuppressionPresent", {"EmailAddress": "bob@remote.test"}) == {"Present": False}
            await c.call("SuppressionRemove", {"EmailAddress": "bob@remote.test"})
            assert await c.call("SuppressionPresent", {"EmailAddress": "bob@remote.test"}) == {"Present": False}
        kinds = [c.event.WhichOneof("kind") for c in store.stream(QUEUE).events()]
        assert kinds == ["suppressed", "unsuppressed"]
        await store.close()
    run(main())


def test_send(keyed_dir: tuple[Path, bytes]) -> None:
    async def main() -> None:
        store, _ = await setup(keyed_dir)
        async with served(store) as base, aiohttp.ClientSession() as s:
            c = Client(s, base, "alice@mail.test", PASSWORD)
            res = await c.call("Send", {
                "To": [{"Name": "Bob", "Address": "bob@remote.test"}], "CC": [{"Address": "carol@mail.test"}],
                "BCC": [{"Address": "dave@remote.test"}], "Subject": "webapi hello", "Text": "plain body",
                "HTML": "<p>html body</p>",
                "AttachedFiles": [{"Name": "a.txt", "ContentType": "text/plain",
                                   "Data": base64.b64encode(b"attached").decode()}]})
            assert res["MessageID"].startswith("<") and res["MessageID"].endswith("@mail.test>")
            assert [x["Address"] for x in res["Submissions"]] == ["bob@remote.test", "carol@mail.test",
                                                                 "dave@remote.test"]
            queued = [c.event.outbound_queued for c in store.stream(QUEUE).events()
                      if c.event.WhichOneof("kind") == "outbound_queued"]
            assert len(queued) == 1 and sorted(queued[0].rcpt_to) == ["bob@remote.test", "dave@remote.test"]
            assert queued[0].account == "alice" and queued[0].mail_from == "alice@mail.test"
            assert res["Submissions"][0]["FromID"] == queued[0].id
            assert res["Submissions"][0]["QueueMsgID"] == int(queued[0].id, 16)
            raw = await store.stream(QUEUE).read_blob(queued[0].blob_id)
            assert b"DKIM-Signature" not in raw or True  # no DKIM key configured here
            assert b"Bcc" not in raw and b"dave@remote.test" not in raw
            assert b"Subject: webapi hello" in raw and b"attached" not in raw  # base64 in the message
            async with store.use_account("carol") as acct:
                (m,) = acct.view.messages(acct.mailbox_required("INBOX").id)
                assert res["MessageID"].encode() in await acct.read_message(m.blob_id)
            async with store.use_account("alice") as acct:
                assert len(acct.view.messages(acct.mailbox_required("Sent").id)) == 1

            for req, code in [
                ({"To": [{"Address": "bob@remote.test"}]}, "missingBody"),
                ({"Text": "x"}, "noRecipients"),
                ({"To": [{"Address": "not an address"}], "Text": "x"}, "badAddress"),
                ({"From": [{"Address": "carol@mail.test"}], "To": [{"Address": "b@r.test"}], "Text": "x"}, "badFrom"),
                ({"From": [{"Address": "a@mail.test"}, {"Address": "b@mail.test"}], "Text": "x"}, "multipleFrom"),
                ({"To": [{"Address": "b@r.test"}], "Text": "x", "MessageID": "no-brackets"}, "malformedMessageID"),
                ({"To": [{"Address": "b@r.test"}], "Text": "x", "Bogus": 1}, "protocol"),
                ({"To": [{"Address": "b@r.test"}], "Text": "x", "Subject": "a\r\nBcc: x@y.test"}, "user"),
            ]:
                status, body, ctype = await c.raw("Send", req)
                assert status == 400 and ctype.startswith("application/json"), (req, status, body)
                assert json.loads(body)["Code"] == code, (req, body)
        await store.close()
    run(main())


def test_auth_docs_and_limits(keyed_dir: tuple[Path, bytes]) -> None:
    async def main() -> None:
        store, _ = await setup(keyed_dir)
        limiter = LoginLimiter(time.monotonic, address_policy=LimitPolicy(delay_after=3, refuse_after=3, window=600, cooldown=600))
        async with served(store, limiter) as base, aiohttp.ClientSession() as s:
            async with s.post(base + "SuppressionList", data={"request": "{}"}) as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
            async with s.get(base + "Send") as r:
                page = await r.text()
                assert r.status == 200 and "Example request" in page and "bob@example.org" in page
            async with s.get(base) as r:
                assert r.status == 200 and "MessageFlagsAdd" in await r.text()
            async with s.post(base + "NoSuchMethod", data={"request": "{}"}) as r:
                assert r.status == 404
            good = Client(s, base, "alice@mail.test", PASSWORD)
            status, body, _ = await good.raw("SuppressionList", {"x": 1})
            assert status == 400 and json.loads(body)["Code"] == "protocol"
            async with s.post(base + "SuppressionList", data={}, auth=good.auth) as r:
                assert r.status == 400 and (await r.json())["Code"] == "protocol"
            bad = Client(s, base, "alice@mail.test", "wrong password")
            statuses = [(await bad.raw("SuppressionList", {}))[0] for _ in range(4)]
            assert statuses[:3] == [401, 401, 401] and statuses[3] == 429
            # the right password is refused too while the address cools down
            assert (await good.raw("SuppressionList", {}))[0] == 429
        await store.close()
    run(main())
