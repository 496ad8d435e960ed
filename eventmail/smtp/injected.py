"""localserve's error injection, as Mox's: a local part asks for the reply a test needs — pure, no I/O.

A local part ending in `temperror` gets a temporary failure (451), `permerror` a permanent one
(550), three digits `4xx`/`5xx` that very code, `timeout` no answer at all. A local part starting
with `mailfrom` fails at MAIL FROM (it is the sender's), with `rcptto` at RCPT TO; any other fails
at DATA, after the message was sent. So a program that sends mail can be tested against each
failure it must handle, on loopback, without a real remote server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .reply import Reply

_CODE = re.compile(r"([45][0-9][0-9])$")


@dataclass(frozen=True)
class Injected:
    """What to do instead of the normal answer: a reply, or (reply None) no answer."""

    reply: Reply | None

    @property
    def timeout(self) -> bool:
        return self.reply is None


def injected(local_part: str, stage: str) -> Injected | None:
    """The failure `local_part` asks for at `stage` ("mail", "rcpt" or "data"), or None."""
    lp = local_part.lower()
    where = "mail" if lp.startswith("mailfrom") else "rcpt" if lp.startswith("rcptto") else "data"
    if where != stage:
        return None
    if lp.endswith("timeout"):
        return Injected(None)
    if lp.endswith("temperror"):
        return Injected(Reply(451, "4.3.0", "temporary error on request (localserve: local part temperror)"))
    if lp.endswith("permerror"):
        return Injected(Reply(550, "5.7.0", "permanent error on request (localserve: local part permerror)"))
    m = _CODE.search(lp)
    if m:
        code = int(m.group(1))
        return Injected(Reply(code, f"{code // 100}.0.0", f"error {code} on request (localserve: local part)"))
    return None
