"""Isolated reference peers for the SMTP benchmark: Debian's Postfix delivering to Dovecot over LMTP, on loopback.

    python bench/peers.py up DIR [--smtp-port N] [--lmtp-port N] [--imap-port N] [--domain D]
    python bench/peers.py down DIR
    python bench/peers.py status DIR

Dovecot: IMAP (plaintext login, no TLS) and LMTP on 127.0.0.1, one user `bench@DOMAIN` with the
password `benchpass`, maildir under DIR/mail, fsync settings left at their defaults
(mail_fsync = optimized: a delivered message is fsynced before LMTP answers).
Postfix: smtpd on 127.0.0.1, `virtual_mailbox_domains = DOMAIN`, `virtual_transport =
lmtp:inet:127.0.0.1:LMTP`, no content filter, no milters, no chroot, its own queue under DIR.

Nothing in /etc is read or written: Postfix runs with `-c DIR/postfix/etc`, Dovecot with
`-c DIR/dovecot/dovecot.conf`. Port 0 (the default) picks a free port. Needs root (both drop
privileges themselves) and the Debian packages postfix, dovecot-imapd and dovecot-lmtpd.
Stopping sends SIGTERM to each master by PID, waits, then SIGKILLs its former children that are
still alive, by PID.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from smtp_cpu import descendants  # the same /proc walk the CPU accounting uses

HOST = "127.0.0.1"
PASSWORD = "benchpass"
MAIL_UID = 1999  # numeric only, no /etc/passwd entry needed
DOVECOT_LMTP = Path("/usr/lib/dovecot/lmtp")
POSTFIX_MASTER_CF = Path("/usr/share/postfix/master.cf.dist")


class PeersUnavailable(Exception):
    """The peers cannot run here (not root, a package missing, a port taken); the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if port_open(port):
            return True
        time.sleep(0.1)
    return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int | None, comm: str | None = None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return False
    if st[st.rfind(")") + 2 :].split()[0] == "Z":
        return False
    return comm is None or st[st.find("(") + 1 : st.rfind(")")] == comm


def stop_pid(pid: int, label: str, timeout: float = 15.0) -> None:
    """SIGTERM the master, wait, then SIGKILL any of its former children still alive (by PID)."""
    if not alive(pid):
        return
    kids = descendants(pid)
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end and alive(pid):
        time.sleep(0.1)
    if alive(pid):
        print(f"{label}: master {pid} ignored SIGTERM, sending SIGKILL", file=sys.stderr)
        os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 5
    left = [k for k in kids if alive(k)]
    while left and time.monotonic() < end:
        time.sleep(0.1)
        left = [k for k in kids if alive(k)]
    for k in left:
        print(f"{label}: leftover child {k} still alive, SIGKILL", file=sys.stderr)
        try:
            os.kill(k, signal.SIGKILL)
        except OSError:
            pass


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)


def versions() -> dict[str, str]:
    out = {}
    try:
        out["dovecot"] = subprocess.run(["dovecot", "--version"], capture_output=True, text=True).stdout.strip()
        out["postfix"] = subprocess.run(
            ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pass
    return out


def check_available() -> None:
    """Raise PeersUnavailable unless Postfix and Dovecot (with LMTP) can run here."""
    if os.geteuid() != 0:
        raise PeersUnavailable("Postfix and Dovecot need root (they drop privileges themselves)")
    missing = [n for n in ("postfix", "postconf", "dovecot", "script") if shutil.which(n) is None]
    if missing:
        raise PeersUnavailable(f"not installed: {', '.join(missing)} (Debian: postfix, dovecot-imapd, util-linux)")
    if not DOVECOT_LMTP.exists():
        raise PeersUnavailable("Dovecot's LMTP server is not installed (Debian: apt-get install dovecot-lmtpd)")
    if not POSTFIX_MASTER_CF.exists():
        raise PeersUnavailable(f"{POSTFIX_MASTER_CF} is missing (Debian's postfix package provides it)")
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        raise PeersUnavailable("no postfix user (install Debian's postfix package)") from None


@dataclass
class Peers:
    """One isolated Postfix + Dovecot pair under `directory`."""

    directory: Path
    smtp_port: int = 0
    lmtp_port: int = 0
    imap_port: int = 0
    domain: str = "example.test"
    postfix_pid: int | None = None
    dovecot_pid: int | None = None

    @property
    def user(self) -> str:
        return f"bench@{self.domain}"

    @property
    def dovecot_dir(self) -> Path:
        return self.directory / "dovecot"

    @property
    def postfix_dir(self) -> Path:
        return self.directory / "postfix"

    @property
    def mail_root(self) -> Path:
        return self.directory / "mail"

    @property
    def maildir(self) -> Path:
        """The INBOX maildir of the one user (new/ and cur/ hold the delivered messages)."""
        return self.mail_root / self.user / "Maildir"

    # -- Dovecot ------------------------------------------------------------------------------

    def dovecot_conf(self) -> str:
        d = self.dovecot_dir
        return f"""# generated by bench/peers.py -- isolated benchmark instance
base_dir = {d}/run
state_dir = {d}/state
instance_name = bench-dovecot-{self.lmtp_port}
log_path = {d}/dovecot.log
protocols = imap lmtp
listen = {HOST}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {HOST}
    port = {self.lmtp_port}
  }}
}}
"""

    def _dovecot_up(self) -> int:
        d = self.dovecot_dir
        for sub in ("run", "state"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.mail_root.mkdir(parents=True, exist_ok=True)
        os.chown(self.mail_root, MAIL_UID, MAIL_UID)
        self.mail_root.chmod(0o755)
        users = d / "users"
        _write(users, f"{self.user}:{{PLAIN}}{PASSWORD}:{MAIL_UID}:{MAIL_UID}::{self.mail_root}/{self.user}\n", 0o640)
        try:
            os.chown(users, 0, grp.getgrnam("dovecot").gr_gid)
        except KeyError:
            users.chmod(0o644)
        conf = d / "dovecot.conf"
        _write(conf, self.dovecot_conf())
        check = subprocess.run(["dovecot", "-c", str(conf), "-n"], capture_output=True, text=True)
        if check.returncode != 0:
            raise PeersUnavailable("dovecot: config check failed:\n" + check.stderr)
        # Dovecot daemonizes and its daemon keeps inherited descriptors open: never give it a pipe.
        with (d / "start.out").open("w") as out:
            rc = subprocess.run(["dovecot", "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT).returncode
        if rc != 0:
            raise PeersUnavailable(f"dovecot: start failed ({rc}): {(d / 'start.out').read_text()}")
        pidfile = d / "run" / "master.pid"
        for _ in range(150):  # the listeners open before master.pid is written
            pid = read_pid(pidfile)
            if alive(pid, "dovecot"):
                self.dovecot_pid = pid
                break
            time.sleep(0.1)
        else:
            raise PeersUnavailable(f"dovecot: no live master.pid; see {d}/dovecot.log")
        if not (wait_port(self.imap_port) and wait_port(self.lmtp_port)):
            raise PeersUnavailable(f"dovecot: ports did not open; see {d}/dovecot.log")
        assert pid is not None
        return pid

    # -- Postfix ------------------------------------------------------------------------------

    def postfix_main_cf(self) -> str:
        p = self.postfix_dir
        return f"""# generated by bench/peers.py -- isolated benchmark instance (postfix -c {p}/etc)
compatibility_level = 3.6
queue_directory = {p}/spool
data_directory = {p}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench-mta.bench.invalid
mydomain = bench.invalid
myorigin = $myhostname
inet_interfaces = {HOST}
inet_protocols = ipv4
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled in this instance
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
virtual_mailbox_domains = {self.domain}
virtual_mailbox_maps = inline:{{ {self.user}=bench }}
virtual_alias_maps =
virtual_transport = lmtp:inet:{HOST}:{self.lmtp_port}
relayhost =
default_transport = error:outbound mail is disabled in this instance
content_filter =
smtpd_milters =
non_smtpd_milters =
alias_maps =
alias_database =
biff = no
maillog_file = {p}/postfix.log
maillog_file_prefixes = /var, {self.directory}
syslog_name = postfix-bench-{self.smtp_port}
"""

    def postfix_master_cf(self) -> str:
        out = []
        for line in POSTFIX_MASTER_CF.read_text().splitlines(keepends=True):
            parts = line.split()
            if line[:1] not in "# \t\n" and len(parts) >= 8:
                if parts[0] == "smtp" and parts[1] == "inet":
                    parts[0] = f"{HOST}:{self.smtp_port}"
                if parts[4] == "y":  # chroot column: off everywhere
                    parts[4] = "n"
                line = "  ".join(parts) + "\n"
            out.append(line)
        return "".join(out)

    def _postfix_cmd(self, *args: str) -> tuple[int, str]:
        """postfix prints its errors to syslog only unless stderr is a tty, hence script(1)."""
        cmd = " ".join(["postfix", "-c", str(self.postfix_dir / "etc"), *args])
        out_path = self.postfix_dir / f"{args[0]}.out"
        with out_path.open("w") as out:
            rc = subprocess.run(["script", "-qec", cmd, "/dev/null"], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT).returncode
        return rc, out_path.read_text()

    def _postfix_up(self) -> int:
        p = self.postfix_dir
        for sub in ("etc", "spool", "data"):
            (p / sub).mkdir(parents=True, exist_ok=True)
        p.chmod(0o755)
        os.chown(p / "data", pwd.getpwnam("postfix").pw_uid, -1)
        _write(p / "etc" / "main.cf", self.postfix_main_cf())
        _write(p / "etc" / "master.cf", self.postfix_master_cf())
        rc, out = self._postfix_cmd("check")
        if rc != 0:
            raise PeersUnavailable("postfix: check failed:\n" + out)
        rc, out = self._postfix_cmd("start")
        if rc != 0:
            raise PeersUnavailable(f"postfix: start failed ({rc}):\n{out}")
        if not wait_port(self.smtp_port):
            raise PeersUnavailable(f"postfix: port {self.smtp_port} did not open; see {p}/postfix.log")
        for _ in range(50):
            pid = read_pid(p / "spool" / "pid" / "master.pid")
            if alive(pid, "master"):
                assert pid is not None
                self.postfix_pid = pid
                return pid
            time.sleep(0.1)
        raise PeersUnavailable(f"postfix: no live master.pid under {p}/spool/pid")

    # -- both ---------------------------------------------------------------------------------

    def up(self) -> Peers:
        """Start Dovecot (LMTP first, so Postfix can deliver from the start), then Postfix."""
        check_available()
        self.smtp_port = self.smtp_port or free_port()
        self.lmtp_port = self.lmtp_port or free_port()
        self.imap_port = self.imap_port or free_port()
        for port in (self.smtp_port, self.lmtp_port, self.imap_port):
            if port_open(port):
                raise PeersUnavailable(f"port {port} is already taken by someone else")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        parent = self.directory.resolve()
        while parent != parent.parent:  # the mail uid and postfix must be able to traverse every parent
            if not parent.stat().st_mode & 0o001:
                raise PeersUnavailable(f"{parent} is not world-traversable; choose another directory")
            parent = parent.parent
        try:
            self._dovecot_up()
            self._postfix_up()
        except BaseException:
            self.down()
            raise
        (self.directory / "peers.json").write_text(json.dumps(
            {**asdict(self), "directory": str(self.directory), "user": self.user, "password": PASSWORD,
             "maildir": str(self.maildir), "versions": versions()}, indent=2) + "\n")
        return self

    def down(self) -> None:
        """Stop by PID: Postfix first (so it does not retry into a gone LMTP), then Dovecot."""
        pid = self.postfix_pid or read_pid(self.postfix_dir / "spool" / "pid" / "master.pid")
        if alive(pid, "master"):
            assert pid is not None
            stop_pid(pid, "postfix")
        pid = self.dovecot_pid or read_pid(self.dovecot_dir / "run" / "master.pid")
        if alive(pid, "dovecot"):
            assert pid is not None
            stop_pid(pid, "dovecot")
        self.postfix_pid = self.dovecot_pid = None

    @classmethod
    def load(cls, directory: Path) -> Peers:
        info = json.loads((directory / "peers.json").read_text())
        return cls(directory, info["smtp_port"], info["lmtp_port"], info["imap_port"], info["domain"],
                   info["postfix_pid"], info["dovecot_pid"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("up", "down", "status"))
    ap.add_argument("directory", type=Path)
    ap.add_argument("--smtp-port", type=int, default=0)
    ap.add_argument("--lmtp-port", type=int, default=0)
    ap.add_argument("--imap-port", type=int, default=0)
    ap.add_argument("--domain", default="example.test")
    a = ap.parse_args()
    d = a.directory.resolve()
    try:
        if a.command == "up":
            peers = Peers(d, a.smtp_port, a.lmtp_port, a.imap_port, a.domain).up()
            print(f"SMTP  (Postfix smtpd)  {HOST}:{peers.smtp_port}   rcpt {peers.user}")
            print(f"LMTP  (Dovecot lmtp)   {HOST}:{peers.lmtp_port}")
            print(f"IMAP  (Dovecot imap)   {HOST}:{peers.imap_port}   login {peers.user} / {PASSWORD}")
            print(f"INBOX maildir          {peers.maildir}")
            print(f"PIDs  postfix {peers.postfix_pid}  dovecot {peers.dovecot_pid}   (also in {d}/peers.json)")
        elif a.command == "down":
            Peers.load(d).down()
        else:
            peers = Peers.load(d)
            print(f"postfix pid {peers.postfix_pid} alive={alive(peers.postfix_pid, 'master')} "
                  f"smtp:{peers.smtp_port} open={port_open(peers.smtp_port)}")
            print(f"dovecot pid {peers.dovecot_pid} alive={alive(peers.dovecot_pid, 'dovecot')} "
                  f"lmtp:{peers.lmtp_port} open={port_open(peers.lmtp_port)} "
                  f"imap:{peers.imap_port} open={port_open(peers.imap_port)}")
    except PeersUnavailable as e:
        print(f"peers: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
