"""Real mail clients at their defaults against the server: mbsync and offlineimap syncing both ways with no difference left, mutt reading and sending (one copy in Sent).

Each client runs over STARTTLS and over implicit TLS, with no forced mechanism (no AuthMechs,
auth_mechanisms or smtp_authenticators: their SASL libraries choose). The short runs take part
in `make test`; the long ones (more messages, more rounds) run under `pytest -m peers`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imap_harness import PASSWORD, USER, ImapServer, corpus, simple_message
from tests.mailserver import MailServer

pytestmark = pytest.mark.peers

# maildir info letters (maildir spec, "2," section) ↔ IMAP system flags
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
SYNCED_FLAGS = frozenset(MAILDIR_FLAGS.values())
MAILBOXES = ("INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash")

State = dict[str, list[tuple[str, tuple[str, ...]]]]


def _long(request: pytest.FixtureRequest) -> None:
    if "peers" not in (request.config.option.markexpr or ""):
        pytest.skip("long client sync: run with `pytest -m peers`")


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")


def _digest(raw: bytes) -> str:
    """A message's identity across stores: its bytes with LF line ends, minus the X-TUID
    header mbsync adds to messages it uploads."""
    text = raw.replace(b"\r\n", b"\n")
    head, sep, body = text.partition(b"\n\n")
    head = b"\n".join(line for line in head.split(b"\n") if not line.lower().startswith(b"x-tuid:"))
    return hashlib.sha256(head + sep + body).hexdigest()[:16]


def server_state(srv: ImapServer) -> State:
    """Per mailbox, the sorted (message digest, synced flags) pairs the server holds."""
    async def go() -> State:
        async with srv.store.use_account(USER) as acct:
            out: State = {}
            for mb in acct.view.mailboxes():
                out[mb.name] = sorted(
                    (_digest(acct.read_message_sync(m.blob_id)), tuple(sorted(set(m.flags) & SYNCED_FLAGS)))
                    for m in acct.view.messages(mb.id))
            return out
    return srv.call(go())


def maildir_state(root: Path, inbox: Path) -> State:
    out: State = {}
    for name in MAILBOXES:
        d = inbox if name == "INBOX" else root / name
        items = []
        for sub in ("cur", "new"):
            for f in sorted((d / sub).glob("*")) if (d / sub).is_dir() else []:
                info = f.name.rsplit(":2,", 1)[1] if ":2," in f.name else ""
                flags = tuple(sorted(MAILDIR_FLAGS[ch] for ch in info if ch in MAILDIR_FLAGS))
                items.append((_digest(f.read_bytes()), flags))
        out[name] = sorted(items)
    return out


def _files(d: Path) -> list[Path]:
    return sorted([*(d / "cur").glob("*"), *(d / "new").glob("*")])


def _set_local_flags(f: Path, letters: str) -> Path:
    base = f.name.rsplit(":2,", 1)[0]
    new = f.parent.parent / "cur" / f"{base}:2,{''.join(sorted(letters))}"
    f.rename(new)
    return new


def _move_local(f: Path, dest: Path, strip: re.Pattern[str]) -> None:
    """Move a maildir file to another folder the way a local mail client does: a new name there
    (the sync tool's UID marker dropped, so it is a new message to upload)."""
    name = strip.sub("", f.name)
    f.rename(dest / "cur" / name)


def _server_changes(srv: ImapServer, fresh: int) -> None:
    """Flag changes, a move, an expunge and new deliveries, made on the server side."""
    m = srv.imap()
    m.select("INBOX")
    m.store("1", "+FLAGS", r"(\Seen)")
    m.store("2", "+FLAGS", r"(\Flagged \Answered)")
    m.uid("MOVE", "3", "Archive")
    m.store("4", "+FLAGS", r"(\Deleted)")
    m.expunge()
    m.logout()
    for raw in corpus(fresh + 40)[40:]:
        srv.deliver(raw)


def _local_changes(root: Path, inbox: Path, strip: re.Pattern[str]) -> None:
    """Flag changes, a move between folders, a deletion and a new draft, made in the maildir."""
    files = _files(inbox)
    _set_local_flags(files[-1], "FS")  # the last message: flagged and seen here
    _set_local_flags(files[-2], "S")
    _move_local(files[-3], root / "Junk", strip)  # into Junk: the server sets $Junk
    files[-4].unlink()  # deleted here: expunged there
    draft = root / "Drafts" / "cur" / f"{int(time.time())}.local1.host:2,D"
    draft.write_bytes(simple_message("draft from the maildir").replace(b"\r\n", b"\n"))


# ---------------------------------------------------------------------- mbsync


class Mbsync:
    """mbsync at its defaults but for where the server is: no AuthMechs (its SASL library picks
    the mechanism), STARTTLS on the IMAP port or implicit TLS (`tls`: "starttls" or "implicit")."""

    def __init__(self, srv: ImapServer, home: Path, tls: str = "starttls") -> None:
        self.root = home / "mail"
        self.inbox = self.root / "INBOX"
        self.root.mkdir(parents=True)
        self.rc = home / "mbsyncrc"
        port, kind = (srv.starttls_port, "STARTTLS") if tls == "starttls" else (srv.tls_port, "IMAPS")
        self.rc.write_text(
            f"IMAPAccount t\nHost localhost\nPort {port}\nUser {USER}\nPass {PASSWORD}\n"
            f"SSLType {kind}\nCertificateFile {srv.cert}\n\n"
            "IMAPStore far\nAccount t\n\n"
            f"MaildirStore near\nPath {self.root}/\nInbox {self.inbox}\nSubFolders Verbatim\n\n"
            "Channel c\nFar :far:\nNear :near:\nPatterns *\nCreate Both\nExpunge Both\nSyncState *\n"
        )

    def sync(self) -> None:
        p = subprocess.run(["mbsync", "-c", str(self.rc), "-q", "c"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr


MBSYNC_UID = re.compile(r",U=\d+")


def _mbsync_round_trip(srv: ImapServer, tmp_path: Path, messages: int, rounds: int, tls: str = "starttls") -> None:
    _need("mbsync")
    for raw in corpus(messages):
        srv.deliver(raw)
    srv.deliver(simple_message("archived"), mailbox="Archive", flags=("\\Seen",))
    mb = Mbsync(srv, tmp_path / "mbsync", tls)
    mb.sync()
    assert maildir_state(mb.root, mb.inbox) == server_state(srv)
    for _ in range(rounds):
        _server_changes(srv, fresh=3)
        _local_changes(mb.root, mb.inbox, MBSYNC_UID)
        mb.sync()
        mb.sync()  # a second pass settles what the first uploaded (mbsync then knows the new UIDs)
        assert maildir_state(mb.root, mb.inbox) == server_state(srv)
    # a resync with nothing changed changes nothing, on either side
    head = srv.head_seq()
    before = maildir_state(mb.root, mb.inbox)
    mb.sync()
    assert srv.head_seq() == head
    assert maildir_state(mb.root, mb.inbox) == before == server_state(srv)
    # the local draft arrived as a draft (a local move is an upload and a delete to the server)
    assert any("\\Draft" in flags for _d, flags in server_state(srv)["Drafts"])


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_mbsync_both_ways(srv: ImapServer, tmp_path: Path, tls: str) -> None:
    _mbsync_round_trip(srv, tmp_path, messages=15, rounds=1, tls=tls)


def test_mbsync_offline_move_into_junk_trains_like_a_move(srv: ImapServer, tmp_path: Path) -> None:
    """A message moved into Junk in the maildir reaches the server as an APPEND to Junk (with
    mbsync's X-TUID field added) and an expunge from INBOX; the server recognises the message
    it holds, and the Junk copy is $Junk and trained as junk, as a MOVE would make it. A new
    message appended to Junk is not: nothing says where it came from."""
    _need("mbsync")
    from eventmail.junk.projection import junk_view

    moved, kept = corpus(2)
    srv.deliver(moved)
    srv.deliver(kept)
    mb = Mbsync(srv, tmp_path / "mbsync")
    mb.sync()
    inbox = _files(mb.inbox)
    target = next(f for f in inbox if _digest(f.read_bytes()) == _digest(moved))
    _move_local(target, mb.root / "Junk", MBSYNC_UID)
    fresh = mb.root / "Junk" / "cur" / f"{int(time.time())}.local2.host:2,"
    fresh.write_bytes(simple_message("never on the server").replace(b"\r\n", b"\n"))
    mb.sync()
    mb.sync()

    async def junk() -> tuple[dict[str, tuple[str, ...]], tuple[int, int]]:
        async with srv.store.use_account(USER) as acct:
            box = acct.view.mailbox("Junk")
            assert box is not None
            msgs = acct.view.messages(box.id)
            return {_digest(acct.read_message_sync(m.blob_id)): tuple(m.flags) for m in msgs}, junk_view(acct).totals()

    flags, totals = srv.call(junk())
    assert "$Junk" in flags.pop(_digest(moved))
    (other,) = flags.values()
    assert "$Junk" not in other
    assert totals == (0, 1)  # one junk message trained, nothing else
    assert _digest(moved) not in [d for d, _f in server_state(srv)["INBOX"]]


def test_an_upload_into_junk_of_a_message_still_in_the_inbox_trains_like_a_move(srv: ImapServer) -> None:
    """The other order of an offline move (a client that uploads the new copy before it
    expunges the old, or a folder list with Junk first): the bytes APPENDed to Junk, with an
    X-TUID sync marker added, are still in INBOX; the Junk copy gets $Junk as a MOVE would."""
    raw = corpus(1)[0]
    srv.deliver(raw)
    m = srv.imap()
    try:
        typ, _ = m.append("Junk", None, None, b"X-TUID: 0123456789ab\r\n" + raw)
        assert typ == "OK"
        typ, _ = m.append("Junk", None, None, simple_message("never in the inbox"))
        assert typ == "OK"
    finally:
        m.logout()
    flags = list(srv.view_flags("Junk").values())
    assert len(flags) == 2
    assert "$Junk" in flags[0] and "$Junk" not in flags[1], flags


def test_mbsync_long(srv: ImapServer, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    _long(request)
    _mbsync_round_trip(srv, tmp_path, messages=200, rounds=3)


# ---------------------------------------------------------------------- offlineimap


class OfflineImap:
    """offlineimap at its defaults but for where the server is: implicit TLS (`ssl = yes`) or
    STARTTLS (`ssl = no`, `starttls = yes`); no `auth_mechanisms`."""

    def __init__(self, srv: ImapServer, home: Path, tls: str = "implicit") -> None:
        self.root = home / "mail"
        self.inbox = self.root / "INBOX"
        self.root.mkdir(parents=True)
        self.rc = home / "offlineimaprc"
        port, ssl_on, starttls = (srv.tls_port, "yes", "no") if tls == "implicit" else (srv.starttls_port, "no", "yes")
        self.rc.write_text(
            f"[general]\naccounts = t\nmetadata = {home}/meta\nui = basic\n\n"
            "[Account t]\nlocalrepository = near\nremoterepository = far\n\n"
            f"[Repository near]\ntype = Maildir\nlocalfolders = {self.root}\n\n"
            f"[Repository far]\ntype = IMAP\nremotehost = localhost\nremoteport = {port}\n"
            f"remoteuser = {USER}\nremotepass = {PASSWORD}\nssl = {ssl_on}\nstarttls = {starttls}\n"
            f"sslcacertfile = {srv.cert}\n"
        )

    def sync(self) -> None:
        p = subprocess.run(["timeout", "-k", "5", "120", "offlineimap", "-c", str(self.rc), "-o", "-u", "basic"],
                           capture_output=True, text=True, timeout=150)
        assert p.returncode == 0 and "ERROR" not in p.stdout + p.stderr, p.stdout[-3000:] + p.stderr[-3000:]


OFFLINEIMAP_UID = re.compile(r",U=\d+|,FMD5=[0-9a-f]+")


def _offlineimap_round_trip(
    srv: ImapServer, tmp_path: Path, messages: int, rounds: int, tls: str = "implicit",
) -> None:
    _need("offlineimap")
    for raw in corpus(messages):
        srv.deliver(raw)
    srv.deliver(simple_message("archived"), mailbox="Archive", flags=("\\Seen",))
    oi = OfflineImap(srv, tmp_path / "offlineimap", tls)
    oi.sync()
    assert maildir_state(oi.root, oi.inbox) == server_state(srv)
    for _ in range(rounds):
        _server_changes(srv, fresh=3)
        _local_changes(oi.root, oi.inbox, OFFLINEIMAP_UID)
        oi.sync()
        oi.sync()
        assert maildir_state(oi.root, oi.inbox) == server_state(srv)
    head = srv.head_seq()
    before = maildir_state(oi.root, oi.inbox)
    oi.sync()
    assert srv.head_seq() == head
    assert maildir_state(oi.root, oi.inbox) == before == server_state(srv)


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_offlineimap_both_ways(srv: ImapServer, tmp_path: Path, tls: str) -> None:
    _offlineimap_round_trip(srv, tmp_path, messages=12, rounds=1, tls=tls)


def test_offlineimap_long(srv: ImapServer, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    _long(request)
    _offlineimap_round_trip(srv, tmp_path, messages=150, rounds=3)


# ---------------------------------------------------------------------- mutt


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_mutt_reads_a_message(srv: ImapServer, tmp_path: Path, tls: str) -> None:
    """mutt opens INBOX over IMAPS, or over IMAP with STARTTLS (mutt's default for an imap://
    folder when the server offers it), and shows a message; reading it sets \\Seen on the server.
    mutt reads IMAP only with a terminal, so it runs inside a detached tmux session."""
    _need("mutt")
    _need("tmux")
    srv.deliver(simple_message("first unread", body="nothing to see"))
    srv.deliver(simple_message("mutt reads this", body="The secret word is PAPAYA."))
    rc = tmp_path / "muttrc"
    folder = f"imaps://localhost:{srv.tls_port}/" if tls == "implicit" else f"imap://localhost:{srv.starttls_port}/"
    rc.write_text(
        f'set folder = "{folder}"\nset spoolfile = "+INBOX"\n'
        f'set imap_user = "{USER}"\nset imap_pass = "{PASSWORD}"\n'
        f'set ssl_ca_certificates_file = "{srv.cert}"\nset certificate_file = "{tmp_path}/certs"\n'
        'set header_cache = ""\nset message_cachedir = ""\nset timeout = 5\nset move = no\n'
        "set sort = date\nset pager_stop = yes\nset mail_check = 1\n"
    )
    sock = f"eventmail-test-{os.getpid()}"
    env = {**os.environ, "HOME": str(tmp_path), "TERM": "xterm"}

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, env=env,
                              timeout=30).stdout

    tmux("new-session", "-d", "-s", "m", "-x", "120", "-y", "30", f"mutt -n -F {rc}")
    try:
        screen = _wait_screen(tmux, "mutt reads this")
        assert "first unread" in screen
        tmux("send-keys", "-t", "m", "End", "Enter")  # the newest message, opened in the pager
        screen = _wait_screen(tmux, "PAPAYA")
        tmux("send-keys", "-t", "m", "q", "q")
        deadline = time.monotonic() + 15
        while "\\Seen" not in srv.view_flags("INBOX")[2] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "\\Seen" in srv.view_flags("INBOX")[2]
        assert "\\Seen" not in srv.view_flags("INBOX")[1]
    finally:
        tmux("kill-server")


def _wait_screen(tmux: object, text: str, timeout: float = 20) -> str:
    assert callable(tmux)
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", "m")
        if text in screen:
            return str(screen)
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not on mutt's screen:\n{screen}")


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ImapServer]:
    with ImapServer(tmp_path / "server") as s:
        yield s


# ---------------------------------------------------------------------- mutt sends

SEND_PASSWORD = "mutt sends this"


@pytest.fixture(scope="module")
def mailserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailServer]:
    """A whole `eventmail serve`: submission (587, 465) and IMAP (143, 993), accounts alice and bob."""
    srv = MailServer(tmp_path_factory.mktemp("mutt-send"), kinds=("submission", "submissions", "imap", "imaps"))
    srv.init()
    srv.add_account("alice", "alice@mail.test", SEND_PASSWORD)
    srv.add_account("bob", "bob@mail.test", SEND_PASSWORD)
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_mutt_sends_and_keeps_one_copy_in_sent(mailserver: MailServer, tmp_path: Path, tls: str) -> None:
    """mutt at its defaults (no smtp_authenticators: GNU SASL picks the mechanism) sends through
    submission, STARTTLS on 587 or implicit TLS on 465, and saves its copy (Fcc) into Sent over
    IMAP: bob gets the message, and alice's Sent holds it once (the server's copy, which the Fcc
    APPEND folds into: eventmail.mail.ingest.sent_copy_of)."""
    _need("mutt")
    srv = mailserver
    if tls == "starttls":
        smtp, imap = f"smtp://alice@localhost:{srv.ports['submission']}/", f"imap://localhost:{srv.ports['imap']}/"
    else:
        smtp, imap = f"smtps://alice@localhost:{srv.ports['submissions']}/", f"imaps://localhost:{srv.ports['imaps']}/"
    rc = tmp_path / "muttrc"
    rc.write_text(
        f'set from = "alice@mail.test"\nset realname = "Alice"\nset use_from = yes\n'
        f'set smtp_url = "{smtp}"\nset smtp_pass = "{SEND_PASSWORD}"\n'
        f'set folder = "{imap}"\nset record = "+Sent"\nset imap_user = "alice"\nset imap_pass = "{SEND_PASSWORD}"\n'
        f'set ssl_ca_certificates_file = "{srv.cert}"\nset certificate_file = "{tmp_path}/certs"\n'
        'set header_cache = ""\nset message_cachedir = ""\nset copy = yes\n'
    )
    subject = f"sent by mutt over {tls}"
    env = {**os.environ, "HOME": str(tmp_path)}
    p = subprocess.run(["mutt", "-n", "-F", str(rc), "-s", subject, "bob@mail.test"], input="Hello Bob.\n",
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    deadline = time.monotonic() + 20
    while not any(subject.encode() in m for m in srv.messages("bob")):
        assert time.monotonic() < deadline, "bob did not get the message"
        time.sleep(0.2)
    sent = [m for m in srv.messages("alice", "Sent") if subject.encode() in m]
    assert len(sent) == 1, f"{len(sent)} copies in Sent"  # two before the Sent copy folded the Fcc in
