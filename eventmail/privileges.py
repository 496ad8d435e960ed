"""Dropping root: read the keys and bind the ports as root, then run as the configured `user` for good.

Started as root with `user` set, `eventmail serve`:
1. reads the master key, the TLS key and the configuration as root (they may stay root-only);
2. checks that the data directory and everything in it belongs to `user` (`check_owned`);
3. opens the store acting as `user` (effective ids only, `acting_as`), so every file it creates
   is the user's;
4. binds every listener as root (ports 25, 465, 587, 993 need it);
5. drops root for good (`drop`): supplementary groups, gid, uid, and checks root cannot come back.

The data directory is checked, not chowned: a root process that chowns a tree a less privileged
user can write to follows that user's hard links (to /etc/shadow, say) and hands over what they
point to. The operator chowns once (`chown -R USER: DIR`), knowingly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PrivilegeError", "Target", "acting_as", "check_owned", "drop", "target"]

log = logging.getLogger(__name__)


class PrivilegeError(Exception):
    """The user does not exist, its data directory is not its own, or root could not be dropped."""


@dataclass(frozen=True)
class Target:
    """The user to run as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def target(user: str | None) -> Target | None:
    """The user to drop to, or None when nothing is to change: not running as root, or `user`
    unset, or "root" (kept deliberately)."""
    if os.geteuid() != 0 or user is None or user == "root":
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"user {user!r} (the `user` setting) does not exist") from None
    if entry.pw_uid == 0:
        raise PrivilegeError(f"user {user!r} has uid 0: dropping to it would keep root")
    groups = tuple(sorted(set(os.getgrouplist(user, entry.pw_gid))))
    return Target(user, entry.pw_uid, entry.pw_gid, groups)


def check_owned(directory: Path, who: Target) -> None:
    """Everything under `directory` (itself included) belongs to `who` and no one else may write
    to it; raises naming the first path that does not."""
    for path in _tree(directory):
        st = path.lstat()
        if st.st_uid != who.uid:
            raise PrivilegeError(
                f"{path} belongs to uid {st.st_uid}, not to user {who.name} (uid {who.uid}): "
                f"run `chown -R {who.name}: {directory}` once"
            )
        if st.st_mode & stat.S_IWOTH and not stat.S_ISLNK(st.st_mode):
            raise PrivilegeError(f"{path} is writable by others (mode {st.st_mode & 0o7777:04o})")


def _tree(directory: Path) -> Iterator[Path]:
    if not directory.is_dir():
        raise PrivilegeError(f"data directory {directory} does not exist")
    yield directory
    for root, dirs, files in os.walk(directory, followlinks=False):
        for name in dirs + files:
            yield Path(root) / name


@contextlib.contextmanager
def acting_as(who: Target | None) -> Iterator[None]:
    """Within: effective uid and gid are `who`'s (files created belong to it); root after."""
    if who is None:
        yield
        return
    os.setegid(who.gid)
    os.seteuid(who.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def drop(who: Target | None) -> None:
    """Become `who` for good: groups first (only root may set them), then gid, then uid."""
    if who is None:
        return
    os.setgroups(list(who.groups))
    os.setgid(who.gid)
    os.setuid(who.uid)
    # Like OpenBSD's privsep daemons: make sure root is gone, not only believed gone.
    if os.getresuid() != (who.uid,) * 3 or os.getresgid() != (who.gid,) * 3:
        raise PrivilegeError(f"could not drop to user {who.name}")
    with contextlib.suppress(PermissionError):
        os.setuid(0)
        raise PrivilegeError("root could be regained after dropping it")
    log.info("running as user %s (uid %d, gid %d, groups %s)", who.name, who.uid, who.gid,
             ",".join(str(g) for g in who.groups) or "-")
