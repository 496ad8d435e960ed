"""UIDONLY (RFC 9586): which commands name messages by sequence number, refused once it is enabled.

Once a client has enabled UIDONLY, the session answers such a command with BAD [UIDREQUIRED]
(RFC 9586 §3): FETCH, STORE, COPY, MOVE, SEARCH, SORT, THREAD and REPLACE without UID, a search
program with a sequence set (`$`, the saved result, holds UIDs and stays allowed), and SELECT's
QRESYNC sequence-match data. In the other direction, responses carry no sequence numbers:
FETCH responses go out as UIDFETCH (eventmail/imap/responses.py), expunges as VANISHED
(Session.vanished), and SELECT leaves out the OK [UNSEEN n] of IMAP4rev1.
"""

from __future__ import annotations

from eventmail.imap import commands as c
from eventmail.imap.search import any_key

_BY_NUMBER = (c.Fetch, c.Store, c.Copy, c.Move, c.Search, c.Sort, c.Thread, c.Replace)


def _sequence_key(key: c.SearchKey) -> bool:
    return isinstance(key, c.SearchSeq) and not key.uid and not key.set.saved


def uses_sequence_numbers(cmd: c.Command) -> bool:
    """Whether `cmd` names a message by its sequence number anywhere."""
    if isinstance(cmd, _BY_NUMBER) and not cmd.uid:
        return True
    key = getattr(cmd, "key", None)
    if key is not None and any_key(key, _sequence_key):
        return True
    return isinstance(cmd, c.Select) and cmd.qresync is not None and cmd.qresync.seq_match is not None


__all__ = ["uses_sequence_numbers"]
