"""The admin audit log: who made which edit through the admin page, from where, recorded in the system stream and read back newest first."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..proto import events_pb2 as pb
from ..store import SYSTEM, Store

# Argument names never written into the log (a webhook's Authorization value is a credential).
SECRET_ARGS = frozenset({"password", "authorization"})


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time_us: int
    actor: str
    remote_ip: str
    command: str
    args: dict[str, Any]
    result: str


async def record(store: Store, actor: str, remote_ip: str, command: str, args: Mapping[str, Any], result: str) -> None:
    """Record one admin edit (or its refusal) after the operation ran."""
    shown = {k: v for k, v in args.items() if k not in SECRET_ARGS}
    await store.stream(SYSTEM).append([pb.Event(admin_audit=pb.AdminAudit(
        actor=actor, remote_ip=remote_ip, command=command, args_json=json.dumps(shown, sort_keys=True),
        result=result[:300]))])


def entries(store: Store, limit: int = 200) -> list[AuditEntry]:
    """The newest `limit` audit entries, newest first."""
    out: list[AuditEntry] = []
    for c in store.stream(SYSTEM).events():
        if c.event.WhichOneof("kind") == "admin_audit":
            a = c.event.admin_audit
            out.append(AuditEntry(c.seq, c.time_us, a.actor, a.remote_ip, a.command, json.loads(a.args_json or "{}"),
                                  a.result))
    return out[::-1][:limit]


__all__ = ["AuditEntry", "entries", "record"]
