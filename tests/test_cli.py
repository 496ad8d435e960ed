"""The eventmail command: keys, accounts, import/export round trips, verify, log, refusals."""

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventmail import mailfiles
from eventmail.cli import build_parser
from eventmail.opening import open_store
from eventmail.store import MasterKeySource, load_master_key

from .conftest import ROOT, Cli, corpus_messages

HAM = corpus_messages("ham", 60)


def init(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli("key", "init", capsys=capsys)
    assert rc == 0, err
    p = cli.proc("account", "add", "alice", "alice@example.test", "--password-stdin", stdin="alice's password\n")
    assert p.returncode == 0, p.stderr


def make_mbox(path: Path, files: list[Path]) -> None:
    path.write_bytes(b"".join(f.read_bytes() for f in files))


def make_maildir(root: Path, files: list[Path], folder: str = "") -> list[Path]:
    """A Maildir (Maildir++ subfolder when `folder` is given) of LF files, with flags in the names."""
    d = root / f".{folder}" if folder else root
    for sub in ("cur", "new", "tmp"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    out = []
    for i, f in enumerate(files):
        data = f.read_bytes().split(b"\n", 1)[1][:-1]  # no From_ line, no mbox separator
        name = f"{1000 + i}.M{i}P1.host:2,{'S' if i % 2 else ''}{'F' if i % 3 == 0 else ''}"
        target = d / "cur" / name
        target.write_bytes(data)
        out.append(target)
    return out


def test_help_on_every_command() -> None:
    parser = build_parser()
    commands = [
        [], ["key"], ["key", "init"], ["key", "rotate"], ["account"], ["account", "add"], ["account", "list"],
        ["account", "set-password"], ["account", "delete"], ["import"], ["export"], ["verify"], ["log"],
    ]
    for argv in commands:
        out = subprocess.run([sys.executable, "-m", "eventmail", *argv, "--help"], capture_output=True, text=True)
        assert out.returncode == 0, argv
        assert "usage: eventmail" in out.stdout
        if argv and argv not in (["key"], ["account"]):
            assert "--dir" in out.stdout and "--key-file" in out.stdout and "--passphrase-env" in out.stdout
    assert parser.prog == "eventmail"


def test_key_init_inside_the_data_directory_warns(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "eventmail", "key", "init", "--dir", str(tmp_path / "d")],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert "protects nothing at rest" in out.stderr
    assert (tmp_path / "d" / "keys" / "master.key").exists()


def test_missing_or_wrong_key_is_one_line_exit_2_and_nothing_written(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init(cli, capsys)
    before = {p: p.stat().st_mtime_ns for p in cli.directory.rglob("*")}
    other = tmp_path / "other.key"
    Cli(tmp_path / "x", other).proc("key", "init")  # a valid key, but not this directory's
    for key_file in (tmp_path / "missing.key", other):
        for argv in (["account", "list"], ["account", "add", "bob", "bob@example.test", "--password-stdin"], ["verify"],
                     ["log", "alice"]):
            p = subprocess.run(
                [sys.executable, "-m", "eventmail", *argv, "--dir", str(cli.directory), "--key-file", str(key_file)],
                capture_output=True, text=True, input="bob's password\n",
            )
            assert p.returncode == 2, (argv, p.stderr)
            assert len(p.stderr.strip().splitlines()) == 1, p.stderr
            assert p.stdout == ""
    after = {p: p.stat().st_mtime_ns for p in cli.directory.rglob("*")}
    assert after == before


def test_passphrase_mode(tmp_path: Path) -> None:
    env = {"EM_PASS": "correct horse battery staple"}
    base = [sys.executable, "-m", "eventmail"]
    d = ["--dir", str(tmp_path / "d"), "--passphrase-env", "EM_PASS"]
    import os

    full = {**os.environ, **env}
    assert subprocess.run([*base, "key", "init", *d], env=full, capture_output=True).returncode == 0
    assert subprocess.run([*base, "account", "add", "a", "a@example.test", "--password-stdin", *d], env=full,
                          input=b"a's password\n", capture_output=True).returncode == 0
    wrong = {**os.environ, "EM_PASS": "wrong"}
    p = subprocess.run([*base, "account", "list", *d], env=wrong, capture_output=True, text=True)
    assert p.returncode == 2 and "does not open" in p.stderr
    p = subprocess.run([*base, "account", "list", *d], env=full, capture_output=True, text=True)
    assert p.returncode == 0 and "a@example.test" in p.stdout


def test_accounts_add_list_password_delete(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    init(cli, capsys)
    p = cli.proc("account", "add", "bob", "Bob@Example.TEST", "--password-stdin", stdin="s3cret-bob\n")
    assert p.returncode == 0, p.stderr
    rc, out, _ = cli("account", "list", capsys=capsys)
    assert "alice\talice@example.test\tpassword" in out
    assert "bob\tbob@example.test\tpassword" in out
    p = cli.proc("account", "set-password", "alice", "--password-stdin", stdin="another-one\n")
    assert p.returncode == 0, p.stderr
    rc, out, _ = cli("log", "system", capsys=capsys)
    assert "s3cret" not in out and "another" not in out  # no secret in logs
    p = cli.proc("account", "add", "carol", "bob@example.test", "--password-stdin", stdin="carol's password\n")
    assert p.returncode == 2 and "belongs to account bob" in p.stderr
    rc, out, _ = cli("account", "delete", "bob", capsys=capsys)
    assert rc == 0
    rc, out, _ = cli("account", "list", capsys=capsys)
    assert "bob\tbob@example.test\tdeleted: restorable until" in out  # its grace period
    rc, out, _ = cli("account", "delete", "bob", "--shred", capsys=capsys)
    assert rc == 0 and "shredded" in out
    rc, out, _ = cli("account", "list", capsys=capsys)
    assert "bob" not in out
    rc, _, err = cli("log", "bob", capsys=capsys)
    assert rc == 1 and "no account bob" in err


def test_mbox_import_export_is_byte_identical(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init(cli, capsys)
    mbox = tmp_path / "in.mbox"
    make_mbox(mbox, HAM)
    rc, out, err = cli("import", "alice", str(mbox), "--mailbox", "Lists/old", capsys=capsys)
    assert rc == 0, err
    assert f"imported {len(HAM)} messages, skipped 0 already present, 0 malformed" in out
    assert "created mailboxes: Lists/old" in out
    rc, out, err = cli("export", "alice", str(tmp_path / "out"), "--format", "mbox", capsys=capsys)
    assert rc == 0, err
    exported = list(mailfiles.read_mbox(tmp_path / "out" / "Lists" / "old.mbox", "x"))
    assert len(exported) == len(HAM)
    written = (tmp_path / "out" / "Lists" / "old.mbox").read_bytes().split(b"\nFrom MAILER-DAEMON ")
    assert len(written) == len(HAM)
    for src, entry in zip(HAM, written, strict=True):
        # Each entry's text after its From_ line is exactly the text in the source file (mboxrd
        # quoting included: ">From " lines read as "From " are written back as ">From ").
        original = src.read_bytes().split(b"\n", 1)[1]
        assert entry.split(b"\n", 1)[1] + (b"\n" if entry is not written[-1] else b"") == original


def test_maildir_import_export_is_byte_identical_with_flags(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init(cli, capsys)
    src = tmp_path / "Maildir"
    inbox_files = make_maildir(src, HAM[:20])
    sub_files = make_maildir(src, HAM[20:30], folder="Lists.python")
    rc, out, err = cli("import", "alice", str(src), capsys=capsys)
    assert rc == 0, err
    assert "imported 30 messages" in out and "Lists/python" in out
    rc, _, err = cli("export", "alice", str(tmp_path / "out"), capsys=capsys)
    assert rc == 0, err
    for folder, files in (("INBOX", inbox_files), ("Lists/python", sub_files)):
        got = sorted((tmp_path / "out" / folder / "cur").iterdir())
        assert sorted(f.read_bytes() for f in got) == sorted(f.read_bytes() for f in files)
        flags_in = sorted("".join(sorted(f.name.rsplit(":2,", 1)[1])) for f in files)
        flags_out = sorted(f.name.rsplit(":2,", 1)[1] for f in got)
        assert flags_in == flags_out and "FS" in flags_out


def test_importing_twice_is_deduplicated(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init(cli, capsys)
    mbox = tmp_path / "in.mbox"
    make_mbox(mbox, HAM[:10])
    assert cli("import", "alice", str(mbox), capsys=capsys)[0] == 0
    rc, out, _ = cli("import", "alice", str(mbox), capsys=capsys)
    assert "imported 0 messages, skipped 10 already present" in out
    rc, out, _ = cli("export", "alice", str(tmp_path / "out"), "--format", "mbox", capsys=capsys)
    assert len(list(mailfiles.read_mbox(tmp_path / "out" / "INBOX.mbox", "x"))) == 10


def test_malformed_messages_are_reported_by_position_and_skipped(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init(cli, capsys)
    good = HAM[0].read_bytes()
    mbox = tmp_path / "bad.mbox"
    mbox.write_bytes(
        good
        + b"From x@y Thu Aug 22 12:36:23 2002\nthis is not a header line\n\nbody\n\n"
        + b"From x@y Thu Aug 22 12:36:24 2002\nSubject: nul\n\nbin\x00ary\n\n"
        + HAM[1].read_bytes()
    )
    rc, out, _ = cli("import", "alice", str(mbox), capsys=capsys)
    assert rc == 0
    assert "imported 2 messages, skipped 0 already present, 2 malformed" in out
    line_of_bad = good.count(b"\n") + 1  # the From_ line that starts it
    assert f"bad.mbox:{line_of_bad}: does not start with a header field" in out
    assert "contains a NUL byte" in out


def test_export_at_gives_the_state_of_that_moment(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init(cli, capsys)
    mbox = tmp_path / "in.mbox"
    make_mbox(mbox, HAM[:6])
    cli("import", "alice", str(mbox), capsys=capsys)
    time.sleep(0.05)
    moment = time.time()
    time.sleep(0.05)

    async def change_history() -> None:
        key = load_master_key(cli.directory, MasterKeySource(key_file=cli.key_file))
        store = await open_store(cli.directory, key)
        async with store.use_account("alice") as a:
            inbox = a.mailbox_required("INBOX")
            archive = a.mailbox_required("Archive")
            await a.change_flags(inbox.id, [1, 2], add=["\\Seen", "\\Flagged"])
            await a.copy(inbox.id, [3], archive.id, move=True)
            await a.expunge(inbox.id, [4, 5])
        await store.close()

    asyncio.run(change_history())
    cli("export", "alice", str(tmp_path / "then"), "--at", str(moment), capsys=capsys)
    cli("export", "alice", str(tmp_path / "now"), capsys=capsys)
    then_inbox = sorted(p.name for p in (tmp_path / "then" / "INBOX" / "cur").iterdir())
    now_inbox = sorted(p.name for p in (tmp_path / "now" / "INBOX" / "cur").iterdir())
    assert len(then_inbox) == 6 and not any(n.endswith(("F", "FS", "S")) for n in then_inbox)
    assert len(now_inbox) == 3 and sum(n.endswith("FS") for n in now_inbox) == 2
    assert list((tmp_path / "then" / "Archive" / "cur").iterdir()) == []
    assert len(list((tmp_path / "now" / "Archive" / "cur").iterdir())) == 1
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(moment + 1))
    rc, out, err = cli("export", "alice", str(tmp_path / "iso"), "--at", iso, capsys=capsys)
    assert rc == 0, err


def test_verify_prints_heads_and_log_prints_events(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init(cli, capsys)
    mbox = tmp_path / "in.mbox"
    make_mbox(mbox, HAM[:3])
    cli("import", "alice", str(mbox), capsys=capsys)
    rc, out, _ = cli("verify", capsys=capsys)
    assert rc == 0
    lines = out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == ["system", "queue", "account/alice"]
    assert "seq 9\t" in lines[2] and lines[2].endswith("ok")  # 6 mailboxes + 3 messages
    rc, out, _ = cli("log", "alice", "--since", "6", capsys=capsys)
    assert rc == 0
    events = out.strip().splitlines()
    assert [e.split("\t")[0] for e in events] == ["7", "8", "9"]
    assert all('"messageAdded"' in e for e in events)
    seg = next((cli.directory / "streams").rglob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 1
    seg.write_bytes(bytes(data))
    rc, out, err = cli("verify", capsys=capsys)
    assert rc == 1 and "DAMAGED" in out and "damaged" in err


def test_second_writer_is_refused_while_one_runs(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    init(cli, capsys)

    async def hold() -> None:
        key = load_master_key(cli.directory, MasterKeySource(key_file=cli.key_file))
        store = await open_store(cli.directory, key)
        try:
            p = await asyncio.to_thread(cli.proc, "account", "add", "bob", "bob@example.test", "--password-stdin",
                                        stdin="bob's password\n")
            assert p.returncode == 2 and "in use by process" in p.stderr
            p = await asyncio.to_thread(cli.proc, "account", "list")  # readers are let in
            assert p.returncode == 0 and "alice" in p.stdout
        finally:
            await store.close()

    asyncio.run(hold())


def test_papercuts_of_a_new_user(tmp_path: Path) -> None:
    """What a new user met first (issue 18): each a one-line answer, never a traceback."""
    import dns.zone

    def run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "eventmail", *argv], capture_output=True, text=True,
                              timeout=120, cwd=ROOT, input=stdin)

    d, key = tmp_path / "data", tmp_path / "keys" / "master.key"
    flags = ["--dir", str(d), "--key-file", str(key)]
    init = run("key", "init", *flags)
    assert init.returncode == 0 and "BACK UP" in init.stdout and str(key) in init.stdout, init

    serve_help = run("serve", "--help")
    assert "--config" in serve_help.stdout and "--dir" not in serve_help.stdout and "--key-file" not in serve_help.stdout

    config = tmp_path / "eventmail.toml"
    config.write_text(f'hostname = "mail.test"\ndata_dir = "data"\nkey_file = "{key}"\nuser = "root"\n'
                      '[tls]\ncert = "missing-cert.pem"\nkey = "missing-key.pem"\n'
                      '[[listener]]\nkind = "smtp"\naddress = "127.0.0.1"\nport = 1\n')
    p = run("serve", "--config", str(config))
    assert p.returncode != 0 and "missing-cert.pem does not exist" in p.stderr and "Traceback" not in p.stderr, p.stderr

    assert run("account", "add", "alice", "alice@mail.test", "--password-stdin", *flags,
               stdin="a long password\n").returncode == 0
    p = run("export", "alice", str(tmp_path / "out"), "--at", "yesterday", *flags)
    assert p.returncode == 2 and "expected ISO 8601" in p.stderr and "Traceback" not in p.stderr, p.stderr

    # A reader that stops reading (`| head`): no BrokenPipe trace.
    for _ in range(30):
        assert run("account", "set", "alice", "junk.list-domains", "lists.example.test", *flags).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "eventmail", "log", "alice", "--full", *flags], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0 and err == "", err

    p = run("domain", "add", "mail.test", *flags)
    assert p.returncode == 0, p.stderr
    p = run("dkim", "add", "mail.test", "rsa1", "--algorithm", "rsa-sha256", *flags)
    assert p.returncode == 0, p.stderr
    line = p.stdout.strip()
    strings = line.split(" TXT ", 1)[1].split('" "')
    assert len(strings) == 2 and all(len(x.strip('"')) <= 255 for x in strings), line
    zone = dns.zone.from_text(f"$ORIGIN mail.test.\n@ 300 SOA ns1 hostmaster 1 3600 600 86400 60\n@ 300 NS ns1\n"
                              f"{line.replace(' TXT ', ' 300 TXT ', 1)}\n", relativize=False)
    (rdata,) = zone.find_rdataset("rsa1._domainkey.mail.test.", "TXT")
    assert b"".join(rdata.strings).startswith(b"v=DKIM1; k=rsa; p=")  # joined again, as a verifier does
