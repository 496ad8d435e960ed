"""QUOTA and QUOTA=RES-STORAGE (RFC 9208) over real sockets: GETQUOTA, GETQUOTAROOT, SETQUOTA refused, STATUS
DELETED-STORAGE, the account setting `quota_bytes` enforced at APPEND and COPY (NO [OVERQUOTA]) and at SMTP
delivery (452 4.2.2) of a real `eventmail serve`."""

from __future__ import annotations

import imaplib
import re
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventmail.imap import Limits
from eventmail.imap import commands as c
from eventmail.imap.wire import ImapWire
from eventmail.mail.admin import Admin, AdminError, parse_quota
from tests.imap_harness import USER, ImapServer
from tests.mailserver import MailServer


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path) as s:
        yield s


def body(n: int, subject: str = "filler") -> bytes:
    head = f"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: {subject}\r\nMessage-ID: <{subject}@x>\r\n\r\n"
    fill = n - len(head)
    lines, rest = divmod(fill, 72)
    return head.encode() + (b"x" * 70 + b"\r\n") * lines + b"y" * rest


def set_quota(srv: ImapServer, value: str) -> None:
    # The administrator's operation (eventmail/mail/admin.py), as `eventmail account set` runs it
    srv.call(Admin(srv.store).account_set({"name": USER, "key": "quota_bytes", "value": value}))


def test_capabilities_and_no_limit(srv: ImapServer) -> None:
    c = srv.raw()
    caps = c.cmd(b"c CAPABILITY")[0]
    assert b" QUOTA " in caps + b" " and b"QUOTA=RES-STORAGE" in caps and b"QUOTASET" not in caps
    c.login()
    # RFC 9208 §4.1.2: the root that applies, even for a mailbox that does not exist; no limit, no QUOTA
    assert c.cmd(b"q GETQUOTAROOT INBOX") == [b'* QUOTAROOT "INBOX" ""', b"q OK GETQUOTAROOT completed"]
    assert c.cmd(b"q GETQUOTAROOT Nowhere") == [b'* QUOTAROOT "Nowhere" ""', b"q OK GETQUOTAROOT completed"]
    assert c.cmd(b'q GETQUOTA ""') == [b"q OK GETQUOTA completed"]
    assert c.cmd(b"q GETQUOTA other")[-1].startswith(b"q NO [NONEXISTENT]")
    assert c.cmd(b'q SETQUOTA "" (STORAGE 100)')[-1].startswith(b"q NO [NOPERM]")
    assert c.cmd(b'q SETQUOTA "" (STORAGE x)')[-1].startswith(b"q BAD")
    c.close()
    d = srv.raw()
    assert d.cmd(b"q GETQUOTAROOT INBOX")[-1].startswith(b"q BAD")  # not before login
    d.close()


def test_usage_limit_and_overquota(srv: ImapServer) -> None:
    srv.deliver(body(1500, "one"))
    set_quota(srv, "4K")
    c = srv.raw()
    c.login()
    assert c.cmd(b'q GETQUOTA ""') == [b'* QUOTA "" (STORAGE 2 4)', b"q OK GETQUOTA completed"]
    out = c.cmd(b"q GETQUOTAROOT INBOX")
    assert out == [b'* QUOTAROOT "INBOX" ""', b'* QUOTA "" (STORAGE 2 4)', b"q OK GETQUOTAROOT completed"]
    c.close()
    m = srv.imap()
    m.append("INBOX", None, None, body(1500, "two"))  # 3000 of 4096
    typ, data = m.append("INBOX", None, None, body(1500, "three"))
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data  # RFC 9208 OVERQUOTA
    m.select("INBOX")
    typ, data = m.copy("1:2", "Archive")  # a copy takes storage too
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]"), data
    assert m.uid("MOVE", "1", "Archive")[0] == "OK"  # a move takes none: allowed
    # STATUS DELETED-STORAGE: what EXPUNGE would free, in KiB
    m.store("1", "+FLAGS", "(\\Deleted)")
    typ, data = m.status("INBOX", "(DELETED DELETED-STORAGE)")
    assert data[0] == b'"INBOX" (DELETED 1 DELETED-STORAGE 2)', data
    m.expunge()
    assert m.append("INBOX", None, None, body(1500, "four"))[0] == "OK"  # room again
    m.logout()
    set_quota(srv, "0")  # none
    m = srv.imap()
    assert m.append("INBOX", None, None, body(6000, "big"))[0] == "OK"
    m.logout()


def test_wire_parses_quota_commands() -> None:
    def one(line: bytes) -> c.Item:
        (item,) = ImapWire(Limits(), authenticated=True).receive(line)
        return item

    assert one(b'a GETQUOTA ""\r\n') == c.GetQuota("a", "")
    assert one(b"a GETQUOTAROOT Sent\r\n") == c.GetQuotaRoot("a", "Sent")
    assert one(b'a SETQUOTA "" (storage 512 MESSAGE 10)\r\n') == c.SetQuota("a", "", (("STORAGE", 512), ("MESSAGE", 10)))
    assert one(b'a SETQUOTA "" ()\r\n') == c.SetQuota("a", "", ())
    for bad in (b"a GETQUOTA\r\n", b'a SETQUOTA "" (STORAGE)\r\n', b'a SETQUOTA "" STORAGE 5\r\n',
                b'a SETQUOTA "" (STORAGE 5\r\n', b"a GETQUOTAROOT\r\n", b'a STATUS INBOX (DELETED-STORAGES)\r\n'):
        item = one(bad)
        assert isinstance(item, c.ProtocolError) and item.status == "BAD", (bad, item)


def test_import_stops_at_the_quota(srv: ImapServer, tmp_path: Path) -> None:
    from eventmail.transfer import import_path

    mbox = tmp_path / "in.mbox"
    mbox.write_bytes(b"".join(b"From x@y Mon Jan  1 00:00:00 2024\n" + body(1500, f"imp{i}").replace(b"\r\n", b"\n")
                              + b"\n\n" for i in range(3)))
    set_quota(srv, "2K")

    async def run() -> list[str]:
        async with srv.store.use_account(USER) as acct:
            summary = await import_path(acct, mbox, "INBOX", lambda done, total: None)
            assert summary.imported == 1 and summary.over_quota
            return summary.lines()

    lines = srv.call(run())
    assert lines[1].startswith("stopped at ") and "over quota" in lines[1], lines


def test_quota_setting_validation() -> None:
    assert parse_quota("quota_bytes", "10M") == 10 << 20
    assert parse_quota("quota_bytes", "") == 0
    for bad in ("1.5G", "lots", "-5", "9999T"):
        with pytest.raises(AdminError):
            parse_quota("quota_bytes", bad)


# ------------------------------------------------------------------------- SMTP, a real server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    base = tmp_path_factory.mktemp("quota")
    srv = MailServer(base, kinds=("smtp", "imaps"))
    srv.init()
    srv.add_account("alice", "alice@mail.test", "alice password 1")
    srv.add_account("bob", "bob@mail.test", "bob password 1")
    assert "quota_bytes = 4096" in srv.cli("account", "set", "alice", "quota_bytes", "4K")
    srv.start()
    yield srv
    srv.stop()


def send(srv: MailServer, rcpts: list[str], msg: bytes) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=30) as s:
        return s.sendmail("sender@example.test", rcpts, msg)


def test_smtp_over_quota_is_452_4_2_2(server: MailServer) -> None:
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(server, ["alice@mail.test"], body(6000, "toobig"))
    assert e.value.smtp_code == 452 and e.value.smtp_error.startswith(b"4.2.2")  # RFC 3463 mailbox full
    send(server, ["alice@mail.test"], body(3000, "fits"))
    assert len(server.wait_for("alice", 1)) == 1
    imap = imaplib.IMAP4_SSL("127.0.0.1", server.ports["imaps"], timeout=30,
                             ssl_context=ssl.create_default_context(cafile=str(server.cert)))
    imap.login("alice", "alice password 1")
    typ, data = imap.getquotaroot("INBOX")
    assert typ == "OK"
    used, limit = (int(x) for x in re.findall(rb"STORAGE (\d+) (\d+)", data[1][0])[0])
    assert limit == 4 and used >= 3
    imap.logout()
    # Full now (quota lowered under the usage): refused per recipient at RCPT; bob still gets it
    server.cli("account", "set", "alice", "quota_bytes", "1K")
    refused = send(server, ["alice@mail.test", "bob@mail.test"], body(500, "small"))
    assert refused["alice@mail.test"][0] == 452 and refused["alice@mail.test"][1].startswith(b"4.2.2")
    assert len(server.wait_for("bob", 1)) == 1
    server.wait_log("over quota")
