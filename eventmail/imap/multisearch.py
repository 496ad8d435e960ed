"""ESEARCH (MULTISEARCH, RFC 7377): one search over several mailboxes, answered per mailbox by UID."""

# The selected mailbox is searched as SEARCH searches it (messages.matching: its sequence
# numbers, its \Recent, its saved result); another mailbox in the order of its UIDs, with
# sequence numbers counted in it. RFC 7377 §2: every answer carries the mailbox name and its
# UIDVALIDITY (search-correlator), numbers are UIDs, and a mailbox with no match gets no answer.

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from eventmail.imap import commands as c
from eventmail.imap import filters, messages
from eventmail.imap import responses as r
from eventmail.imap.errors import bad
from eventmail.imap.fetch import MessageData
from eventmail.imap.search import Candidate, SearchContext, any_key, matches, needs_text, uses_modseq
from eventmail.imap.selected import uid_set
from eventmail.store import Account, Mailbox, Message

if TYPE_CHECKING:
    from eventmail.imap.session import Session

# Mailboxes one ESEARCH may search: each is a pass over its messages (and, for text keys, their
# bytes). An account rarely has more; a client naming "personal" on a huge tree gets NO [LIMIT].
MAX_MAILBOXES = 1000
_SLICE = 64  # messages between yields to other connections


def _saved(key: c.SearchKey) -> bool:
    return any_key(key, lambda k: isinstance(k, c.SearchSeq) and k.set.saved)


async def _search_other(acct: Account, mb: Mailbox, key: c.SearchKey) -> list[Message]:
    """The messages of a mailbox that is not selected that match `key`, in UID order."""
    msgs = acct.view.messages(mb.id)
    uids = [m.uid for m in msgs]

    def resolve(seqset: c.SequenceSet, uid: bool) -> set[int]:
        largest = uids[-1] if uid and uids else len(uids)
        out: set[int] = set()
        for lo, hi in seqset.iter_bounds(largest):
            if uid:
                out.update(u for u in uids if lo <= u <= hi)
            else:
                out.update(uids[max(lo, 1) - 1 : min(hi, len(uids))])
        return out

    ctx = SearchContext(resolve, time.time())
    slow = needs_text(key)
    found: list[Message] = []
    for start in range(0, len(msgs), _SLICE):
        chunk = msgs[start : start + _SLICE]
        datas = [MessageData(acct, m) for m in chunk]
        if slow:
            await MessageData.load_all(datas)
        for i, (m, data) in enumerate(zip(chunk, datas, strict=True)):
            # \Recent belongs to the session that has a mailbox selected: none here
            if matches(key, Candidate(m, start + i + 1, False, data), ctx):
                found.append(m)
        await asyncio.sleep(0)
    return found


def _response(tag: str, mb: Mailbox, opts: set[str], uids: list[int], modseq: int | None) -> r.Untagged:
    correlator: tuple[r.Value, ...] = (r.Atom("TAG"), tag.encode("ascii"), r.Atom("MAILBOX"), r.Mailbox(mb.name),
                                       r.Atom("UIDVALIDITY"), mb.uidvalidity)
    values: list[r.Value] = [r.Atom("ESEARCH"), correlator, r.Atom("UID")]
    if "MIN" in opts:
        values.extend((r.Atom("MIN"), min(uids)))
    if "MAX" in opts:
        values.extend((r.Atom("MAX"), max(uids)))
    if "COUNT" in opts:
        values.extend((r.Atom("COUNT"), len(uids)))
    if "ALL" in opts:
        values.extend((r.Atom("ALL"), uid_set(uids)))
    if modseq is not None:
        values.extend((r.Atom("MODSEQ"), modseq))  # RFC 7162 §3.1.5, as for SEARCH
    return r.Untagged(tuple(values))


async def esearch(s: Session, cmd: c.ESearch) -> AsyncIterator[r.Response]:
    acct = s.need_acct()
    sel = s.selected
    if not cmd.sources:
        # RFC 7377 §2: without IN, the selected mailbox
        if sel is None:
            raise bad("no mailbox selected; name the mailboxes with IN")
        sources: tuple[c.MailboxFilter, ...] = (c.MailboxFilter("SELECTED"),)
    else:
        sources = cmd.sources
        if sel is None and any(f.kind == "SELECTED" for f in sources):
            raise bad("no mailbox selected")
    boxes = filters.select(sources, acct.view.mailboxes(), set(acct.view.subscriptions()),
                           sel.mailbox_id if sel is not None else None)
    if len(boxes) > MAX_MAILBOXES:
        raise bad(f"at most {MAX_MAILBOXES} mailboxes in one ESEARCH", "LIMIT")
    only_selected = sel is not None and [mb.id for mb in boxes] == [sel.mailbox_id]
    opts = set(cmd.return_options) if cmd.return_options else {"ALL"}  # RFC 4731 §3.1: () means ALL
    if "SAVE" in opts and not only_selected:
        raise bad("SAVE only with the selected mailbox as the only source")  # RFC 7377 §2
    if _saved(cmd.key) and not only_selected:
        raise bad("$ names a result of the selected mailbox only")
    with_modseq = uses_modseq(cmd.key)
    if with_modseq:
        s.condstore = True  # RFC 7162 §3.1: a CONDSTORE-enabling command
    for mb in boxes:
        if sel is not None and mb.id == sel.mailbox_id:
            found = [data.msg for _seq, data in await messages.matching(s, cmd.key)]
        else:
            found = await _search_other(acct, mb, cmd.key)
        uids = [m.uid for m in found]
        if "SAVE" in opts and sel is not None:
            messages._save(sel, opts, uids)
        shown = opts - {"SAVE"}
        if uids and shown:
            modseq = messages._esearch_modseq(shown, list(enumerate(found, 1)), True) if with_modseq else None
            yield _response(cmd.tag, mb, shown, uids, modseq)
    yield r.ok(cmd.tag, "ESEARCH completed")


__all__ = ["MAX_MAILBOXES", "esearch"]
