"""THREAD (RFC 5256 §3): ORDEREDSUBJECT and REFERENCES over the matches of a SEARCH, as nested lists."""

# REFERENCES is the algorithm of RFC 5256 §3 (after Jamie Zawinski's): link by Message-ID,
# References (In-Reply-To when there is none), drop empty placeholders, group the roots by base
# subject (RFC 5256 §2.1, eventmail/mime/subject.py), then order siblings by sent date. Nothing is
# stored; the thread ids delivery records (OBJECTID THREADID) are eventmail/mail/threads.py's.

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from eventmail.imap import commands as c
from eventmail.imap import responses as r
from eventmail.imap.fetch import MessageData
from eventmail.imap.messages import matching
from eventmail.imap.sort import ascii_upper, base_subject_reply, sent_date
from eventmail.mime import headers

if TYPE_CHECKING:
    from eventmail.imap.session import Session

ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


@dataclass(eq=False)
class _Node:
    number: int | None = None  # sequence number or UID; None for a placeholder
    seq: int = 0
    date: int = 0
    subject: str = ""
    reply: bool = False
    parent: _Node | None = None
    children: list[_Node] = field(default_factory=list)

    def key(self) -> tuple[int, int]:
        """Sent date then sequence number; a placeholder sorts as its first child."""
        if self.number is None and self.children:
            return self.children[0].key()
        return (self.date, self.seq)


def _link(parent: _Node, child: _Node) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
    child.parent = parent
    parent.children.append(child)


def _reaches(node: _Node, target: _Node) -> bool:
    """Whether `target` is `node` or one of its ancestors (a link would make a loop)."""
    n: _Node | None = node
    while n is not None:
        if n is target:
            return True
        n = n.parent
    return False


def _references(data: MessageData) -> list[bytes]:
    body = data.structure().body
    return headers.references(data.raw(), body.header_start, body.body_start)


def _fill(node: _Node, data: MessageData, number: int, seq: int) -> None:
    node.number, node.seq, node.date = number, seq, sent_date(data)
    node.subject, node.reply = base_subject_reply(data.structure().envelope.subject)
    node.subject = ascii_upper(node.subject)


def references(found: list[tuple[int, int, MessageData]]) -> list[_Node]:
    """RFC 5256 §3 REFERENCES: the thread roots, each a tree, in order."""
    table: dict[bytes, _Node] = {}
    nodes: list[_Node] = []
    for number, seq, data in found:
        ids = headers.message_ids(data.structure().envelope.message_id)
        node = table.get(ids[0]) if ids else None
        if node is None or node.number is not None:
            node = _Node()  # no Message-ID, or a duplicate: a message of its own (§3 step 1A)
            if ids and ids[0] not in table:
                table[ids[0]] = node
        _fill(node, data, number, seq)
        nodes.append(node)
        prev: _Node | None = None
        for ref in _references(data):
            cur = table.setdefault(ref, _Node())
            if prev is not None and cur.parent is None and not _reaches(prev, cur):
                _link(prev, cur)
            prev = cur
        # §3 step 1B: the last reference is the parent, whatever was linked before
        if node.parent is not None:
            node.parent.children.remove(node)
            node.parent = None
        if prev is not None and not _reaches(prev, node):
            _link(prev, node)
    everything = {id(n): n for n in [*table.values(), *nodes]}
    roots = [n for n in everything.values() if n.parent is None]
    roots = _prune(roots, top=True)
    _sort(roots)
    roots = _group_by_subject(roots)
    _sort(roots)
    return roots


def _prune(nodes: list[_Node], top: bool) -> list[_Node]:
    """§3 step 3: empty placeholders go; a placeholder's children move up a level, except
    that a placeholder at the top keeps two or more children."""
    out: list[_Node] = []
    for n in nodes:
        n.children = _prune(n.children, top=False)
        for ch in n.children:
            ch.parent = n
        if n.number is None and not n.children:
            continue
        if n.number is None and (not top or len(n.children) == 1):
            for ch in n.children:
                ch.parent = n.parent
            out.extend(n.children)
            continue
        out.append(n)
    return out


def _sort(nodes: list[_Node]) -> None:
    """§3 step 6: siblings by sent date, depth first so placeholders sort by their first child."""
    for n in nodes:
        _sort(n.children)
    nodes.sort(key=_Node.key)


def _subject_of(n: _Node) -> tuple[str, bool]:
    src = n if n.number is not None or not n.children else n.children[0]
    return src.subject, src.reply


def _group_by_subject(roots: list[_Node]) -> list[_Node]:
    """§3 step 5: roots whose base subjects are equal join one thread."""
    table: dict[str, _Node] = {}
    for n in roots:
        subject, reply = _subject_of(n)
        if not subject:
            continue
        old = table.get(subject)
        if (old is None or (n.number is None and old.number is not None)
                or (old.number is not None and _subject_of(old)[1] and not reply and n.number is not None)):
            table[subject] = n
    out: list[_Node] = []
    for n in roots:
        subject, reply = _subject_of(n)
        t = table.get(subject) if subject else None
        if t is None or t is n:
            out.append(n)
            continue
        if t.number is None and n.number is None:
            for ch in list(n.children):
                _link(t, ch)
        elif t.number is None:
            _link(t, n)
        elif n.number is not None and reply and not _subject_of(t)[1]:
            _link(t, n)
        else:
            # neither is the other's reply: both under a new placeholder, in t's place
            holder = _Node()
            idx = out.index(t) if t in out else -1
            _link(holder, t)
            _link(holder, n)
            table[subject] = holder
            if idx >= 0:
                out[idx] = holder
            else:
                roots[roots.index(t)] = holder
    return out


def ordered_subject(found: list[tuple[int, int, MessageData]]) -> list[_Node]:
    """RFC 5256 §3 ORDEREDSUBJECT: by base subject then sent date; each run of one subject is a
    thread whose first message is the parent of all the others."""
    nodes = []
    for number, seq, data in found:
        n = _Node()
        _fill(n, data, number, seq)
        nodes.append(n)
    nodes.sort(key=lambda n: (n.subject, n.date, n.seq))
    roots: list[_Node] = []
    for n in nodes:
        if roots and roots[-1].subject == n.subject:
            _link(roots[-1], n)
        else:
            roots.append(n)
    roots.sort(key=_Node.key)
    return roots


def _members(n: _Node) -> str:
    """thread-members / thread-nested (RFC 5256 §4): a chain of single children as numbers,
    two or more children as adjacent parenthesised lists."""
    out: list[str] = []
    node = n
    while True:
        if node.number is not None:
            out.append(str(node.number))
        kids = node.children
        if len(kids) == 1 and node.number is not None:
            node = kids[0]
            continue
        if kids:
            out.append("".join(f"({_members(k)})" for k in kids))
        return " ".join(out)


def render(roots: Iterable[_Node]) -> bytes:
    return "".join(f"({_members(n)})" for n in roots).encode("ascii")


async def thread(s: Session, cmd: c.Thread) -> AsyncIterator[r.Response]:
    sel = s.need_selected()
    found = [(sel.uids[seq - 1] if cmd.uid else seq, seq, data) for seq, data in await matching(s, cmd.key)]
    roots = references(found) if cmd.algorithm == "REFERENCES" else ordered_subject(found)
    text = render(roots)
    yield r.Untagged((r.Atom("THREAD"), r.Raw(text)) if text else (r.Atom("THREAD"),))
    yield r.ok(cmd.tag, "THREAD completed")


__all__ = ["ALGORITHMS", "ordered_subject", "references", "render", "thread"]
