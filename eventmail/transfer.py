"""Import of mbox/Maildir into an account, and export of an account as it is or as it was at a moment."""

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import mailfiles
from .mail import ingest, mailboxes
from .proto import events_pb2 as pb
from .store import Account, Conflict, MailboxView, OverQuota

Progress = Callable[[int, int], None]


@dataclass
class ImportSummary:
    imported: int = 0
    duplicates: int = 0
    malformed: list[str] = field(default_factory=list)  # "position: reason"
    mailboxes_created: list[str] = field(default_factory=list)
    over_quota: str = ""  # where the import stopped because the account's quota was reached

    def lines(self) -> list[str]:
        out = [
            f"imported {self.imported} messages, skipped {self.duplicates} already present, "
            f"{len(self.malformed)} malformed"
        ]
        if self.over_quota:
            out.append(f"stopped at {self.over_quota}: the rest was not imported (account setting quota_bytes)")
        if self.mailboxes_created:
            out.append("created mailboxes: " + ", ".join(self.mailboxes_created))
        out.extend(f"malformed: {m}" for m in self.malformed)
        return out


def progress_bar() -> Progress:
    """A one-line progress bar on a terminal; silent when stderr is not one."""
    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        if not tty or total == 0:
            return
        width = 40
        filled = width * done // total
        end = "\n" if done == total else ""
        print(f"\r[{'#' * filled}{' ' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


async def import_path(account: Account, path: Path, mbox_mailbox: str, progress: Progress) -> ImportSummary:
    """Import every message under `path`. Duplicates (same bytes in the same mailbox) are skipped;
    malformed messages are reported by position and never stored."""
    summary = ImportSummary()
    messages = list(mailfiles.read_source(path, mbox_mailbox))
    total = len(messages)
    for i, m in enumerate(messages, 1):
        if m.problem is not None:
            summary.malformed.append(f"{m.position}: {m.problem}")
        else:
            if account.view.mailbox(m.mailbox) is None:
                try:
                    await mailboxes.create(account, m.mailbox)
                    summary.mailboxes_created.append(m.mailbox)
                except Conflict:
                    pass
            origin = pb.Origin(kind="import", source=m.position, source_lf=m.source_lf)
            try:
                added = await ingest.import_message(account, m.mailbox, m.raw, m.flags, m.internal_date, origin)
            except OverQuota as e:
                summary.over_quota = f"{m.position}: {e}"
                break
            if added is None:
                summary.duplicates += 1
            else:
                summary.imported += 1
        progress(i, total)
    return summary


def view_at(account: Account, at_us: int | None) -> MailboxView:
    """The account's mailbox view as of a moment: its log replayed up to that time into a new projection."""
    if at_us is None:
        return account.view
    return account.projector_at(at_us).view


def origins(account: Account) -> dict[bytes, bool]:
    """blob id -> whether the message came from a bare-LF file (export gives it back that way)."""
    out: dict[bytes, bool] = {}
    for c in account.events():
        if c.event.WhichOneof("kind") == "message_added":
            m = c.event.message_added
            out[m.blob_id] = out.get(m.blob_id, False) or m.origin.source_lf
    return out


def export(account: Account, out: Path, fmt: str, at_us: int | None) -> int:
    """Write each mailbox as a Maildir folder or an mbox file under `out`; returns messages written."""
    view = view_at(account, at_us)
    lf = origins(account)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for mb in view.mailboxes():
        msgs = view.messages(mb.id)
        parts = mb.name.split("/")
        if fmt == "mbox":
            target = out.joinpath(*parts[:-1], parts[-1] + ".mbox")
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out_file:
                for m in msgs:
                    out_file.write(mailfiles.mbox_entry(account.read_message_sync(m.blob_id), m.internal_date))
                    written += 1
            continue
        folder = out.joinpath(*parts)
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for m in msgs:
            raw = account.read_message_sync(m.blob_id)
            if lf.get(m.blob_id):
                raw = mailfiles.to_lf(raw)
            f = folder / "cur" / mailfiles.maildir_filename(m.internal_date, m.uid, m.flags)
            f.write_bytes(raw)
            os.utime(f, (m.internal_date, m.internal_date))
            written += 1
    return written
