"""localserve's error injection (as Mox's): local parts that ask for a failure at MAIL FROM, RCPT TO
or DATA, on the MX port and on submission, against a real localserve process with smtplib."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterator

import pytest

from eventmail.smtp.injected import injected

from .mailserver import start_localserve

PASSWORD = "pw-local-errors"
MESSAGE = b"From: you@localhost\r\nTo: x@localhost\r\nSubject: injected\r\n\r\nhi\r\n"


@pytest.fixture(scope="module")
def ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    ls = start_localserve(tmp_path_factory.mktemp("ls") / "d", "--password", PASSWORD)
    yield ls.ports
    ls.stop()


def mx(ports: dict[str, int]) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30)
    s.ehlo("client.example")
    return s


def submission(ports: dict[str, int]) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", ports["submission"], timeout=30)
    s.login("you@localhost", PASSWORD)
    return s


@pytest.mark.parametrize("connect", [mx, submission])
def test_failures_at_each_stage(ports: dict[str, int], connect: object) -> None:
    sender = "you@localhost"
    with connect(ports) as s:  # type: ignore[operator]
        if connect is mx:
            assert s.mail("mailfromtemperror@localhost")[0] == 451
            s.rset()
            assert s.mail("mailfrompermerror@localhost")[0] == 550
            s.rset()
        assert s.mail(sender)[0] == 250
        assert s.rcpt("rcpttotemperror@localhost")[0] == 451
        assert s.rcpt("rcptto554@localhost")[0] == 554
        assert s.rcpt("plain@localhost")[0] == 250
        s.rset()
        # Without a prefix the failure comes after DATA: the message was sent whole.
        assert s.mail(sender)[0] == 250
        assert s.rcpt("datapermerror@localhost")[0] == 250
        code, _ = s.data(MESSAGE)
        assert code == 550
        assert s.mail(sender)[0] == 250
        assert s.rcpt("anything452@localhost")[0] == 250
        assert s.data(MESSAGE)[0] == 452
        assert s.mail(sender)[0] == 250
        assert s.rcpt("ordinary@localhost")[0] == 250
        assert s.data(MESSAGE)[0] == 250  # nothing asked for, nothing injected


def test_timeout_gives_no_answer(ports: dict[str, int]) -> None:
    with mx(ports) as s:
        assert s.mail("you@localhost")[0] == 250
        s.sock.settimeout(3)
        s.putcmd("RCPT", "TO:<rcpttotimeout@localhost>")
        with pytest.raises((socket.timeout, smtplib.SMTPServerDisconnected)):
            s.getreply()
        s.close()
    with mx(ports) as s:  # the server serves on
        assert s.mail("you@localhost")[0] == 250


def test_injected_is_pure() -> None:
    assert injected("mailfromtemperror", "rcpt") is None  # asked for at MAIL FROM only
    hit = injected("MailFromPermError", "mail")
    assert hit is not None and hit.reply is not None and hit.reply.code == 550
    hit = injected("x421", "data")
    assert hit is not None and hit.reply is not None and hit.reply.code == 421
    assert injected("x321", "data") is None and injected("you", "data") is None
    hit = injected("rcpttotimeout", "rcpt")
    assert hit is not None and hit.timeout
