"""Protocol code writes no account and appends no event itself: it calls the mail layer (eventmail.mail).

import-linter (the contracts in pyproject.toml) checks which modules import which; it cannot say
"may import the store but not call its writes". This test reads the protocol modules with `ast`
and fails on any reference to a write method of Account or Store. The write methods are read
from the store's own source (Account's "writes" section, Store's methods named as writes), so a
new write method is covered the day it is added.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "eventmail"

# What must call the mail layer rather than write: the protocols, import/export and the junk filter.
GUARDED = ("smtp", "imap", "web", "webapi", "jmap", "junk", "transfer.py")

# Methods of the store's classes that write, by their names' first word: Store, a stream's handle
# (`store.stream(NAME)`) and the replication port (`store.replication`).
STORE_WRITE_PREFIXES = ("append", "put_", "create_", "add_", "remove_", "delete_", "truncate_", "install_", "write_")
STORE_CLASSES = (("store.py", "Store"), ("handle.py", "StreamHandle"), ("replication_port.py", "ReplicationPort"))

# Names too common to flag on any receiver (list.append, a projector's copy(), responses.expunge):
# flagged only on a receiver named as an account or a store is (acct, account, s.acct, self.store).
GENERIC = frozenset({"append", "copy", "expunge"})
STORE_LIKE = ("acct", "account", "store", "stream", "replication")

# Left on purpose, each with why (none now: the outbound runner records through mail.queue).
ALLOWED: frozenset[tuple[str, str]] = frozenset()


def _methods(tree: ast.Module, cls: str) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield item


def account_writes() -> set[str]:
    """Account's public methods below its "writes" section comment."""
    path = PACKAGE / "store" / "account.py"
    source = path.read_text()
    marker = next(i for i, line in enumerate(source.splitlines(), 1) if line.strip().startswith("# ---") and
                  line.strip().endswith(" writes"))
    return {f.name for f in _methods(ast.parse(source), "Account") if f.lineno > marker and not f.name.startswith("_")}


def store_writes() -> set[str]:
    out: set[str] = set()
    for module, cls in STORE_CLASSES:
        tree = ast.parse((PACKAGE / "store" / module).read_text())
        out |= {f.name for f in _methods(tree, cls) if f.name.startswith(STORE_WRITE_PREFIXES)}
    return out


def _receiver_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        return _receiver_name(node.func)
    return ""


def violations(source: str, writes: set[str]) -> list[tuple[int, str]]:
    """(line, what) for each reference to a write method in `source`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in writes:
            receiver = _receiver_name(node.value).lower()
            if node.attr in GENERIC and not any(receiver.endswith(s) for s in STORE_LIKE):
                continue
            found.append((node.lineno, f"{receiver}.{node.attr}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in writes - GENERIC:
            found.append((node.lineno, f"getattr(..., {node.value!r})"))
    return found


def guarded_files() -> Iterable[Path]:
    for name in GUARDED:
        path = PACKAGE / name
        if path.is_dir():
            yield from sorted(path.rglob("*.py"))
        elif path.exists():
            yield path


def test_write_methods_are_found() -> None:
    writes = account_writes()
    assert {"add_message", "change_flags", "copy", "expunge", "append", "create_mailbox", "rename_mailbox",
            "delete_mailbox", "set_subscribed"} <= writes
    assert not writes & {"subscribe", "read_message", "mailbox_required", "events", "close"}
    assert {"append", "put_blob", "append_raw", "put_blob_files", "truncate_stream", "write_node_state",
            "create_account"} <= store_writes()


def test_the_check_flags_account_writes_and_not_lists() -> None:
    writes = account_writes() | store_writes()
    bad = """
async def f(acct, s, self):
    await acct.add_message("INBOX", b"")
    await s.acct.copy(1, [1], 2)
    await self.store.stream("queue").append([])
    await account.expunge(1, [2])
    await store.append([])
    m = getattr(acct, "change_flags")
    await self.store.stream("queue").put_blob(b"")
    await store.replication.append_raw("system", [])
"""
    assert sorted(line for line, _ in violations(bad, writes)) == [3, 4, 5, 6, 7, 8, 9, 10]
    fine = """
def f(out, projector, r, mail):
    out.append(1)
    projector.copy()
    r.expunge(3)
    mail.ingest.deliver()
    {}.copy()
"""
    assert violations(fine, writes) == []


def test_protocols_write_accounts_only_through_the_mail_layer() -> None:
    writes = account_writes() | store_writes()
    problems = []
    for path in guarded_files():
        rel = path.relative_to(PACKAGE).as_posix()
        for line, what in violations(path.read_text(), writes):
            if (rel, what.rpartition(".")[2]) not in ALLOWED:
                problems.append(f"eventmail/{rel}:{line}: {what}")
    assert not problems, "writes outside the mail layer (call eventmail.mail instead):\n" + "\n".join(problems)


def test_a_server_without_http_never_loads_the_http_or_acme_client_libraries() -> None:
    """aiohttp (about 9 MB resident, its URL library yarl 1.4 MB) and certbot's `acme` (about 7 MB) are imported where they
    are first used (an MTA-STS fetch, a webhook, the web listeners, an ACME order), so starting
    an MX-only server loads neither."""
    import subprocess
    import sys

    code = ("import sys, eventmail.serve, eventmail.mail.certificates, eventmail.smtp.outbound, "
            "eventmail.mail.webhookqueue; print(sorted({m.split('.')[0] for m in sys.modules} & {'aiohttp', 'acme', 'yarl'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
