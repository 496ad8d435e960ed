"""One IMAP connection's session: its states, the commands of each, and the store behind them."""

# RFC 9051 §3 states: not authenticated → authenticated ⇄ selected → logout. The session takes
# the items ImapWire.receive() returns and yields the responses to encode; it never touches a
# socket. What the connection must do besides writing (start TLS, start compression, close)
# it says in `action`, which the server reads after each item. It reaches account data only
# through the store's public API: reads from the account's view, writes as events, and other
# writers' changes from the account's subscription (see selected.py).

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from eventmail import metrics
from eventmail.imap import commands as c
from eventmail.imap import context, mailboxes, messages, metadata, multisearch, notify, quota, sort, thread
from eventmail.imap import responses as r
from eventmail.imap.auth import Authenticator, plain_response, wire_form
from eventmail.imap.errors import ImapError, MailboxGone, bad, no
from eventmail.imap.recent import marks as recent_marks
from eventmail.imap.selected import Notify, Selected, uid_set
from eventmail.imap.uidonly import uses_sequence_numbers
from eventmail.imap.wire import ImapWire, Limits
from eventmail.mail import ingest, moves
from eventmail.sasl import Challenge, Failure, FailureReason, GuardedExchange, Success
from eventmail.store import (
    Account,
    Committed,
    Conflict,
    LimitExceeded,
    NotFound,
    NotWriter,
    OverQuota,
    ReplicationTimeout,
    Store,
    StoreError,
    StoreFull,
    Subscription,
    SubscriptionOverflow,
)

log = logging.getLogger("eventmail.imap")

# RFC 9051 §5.4: an autologout timer for authenticated sessions must be at least 30 minutes
# (and IDLE clients re-issue IDLE within 29, RFC 2177 §3).
AUTOLOGOUT = 30 * 60.0
# Before login nothing is worth waiting for: a client logs in within seconds of connecting.
PREAUTH_TIMEOUT = 60.0
# The BYE of a LOGOUT (RFC 9051 §6.1.3): the one BYE the listener does not log, as the
# "disconnected" line follows it anyway (a client reconnecting all day logged it all day).
LOGOUT_BYE = r.bye("logging out")
# Failed logins one connection may make before it is closed (the limiter counts across them).
MAX_AUTH_FAILURES = 5
SERVER_ID = (("name", "eventmail"), ("vendor", "eventmail"), ("support-url", "https://example.invalid/eventmail"))


@dataclass(frozen=True)
class ServerOptions:
    """What every session of one listener shares."""

    store: Store
    auth: Authenticator
    limits: Limits
    starttls: bool  # this listener offers STARTTLS
    autologout: float = AUTOLOGOUT
    preauth_timeout: float = PREAUTH_TIMEOUT
    # Where an APPENDed message is parsed and tokenized (the server's analysis processes, if
    # configured: eventmail.mail.ingest.Analyze); None: a thread.
    analyze: ingest.Analyze | None = None


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


_ANY = (c.Capability, c.Noop, c.Logout, c.Id)
_NOT_AUTH = (c.StartTls, c.Authenticate, c.Login)
_SELECTED_ONLY = (c.Check, c.Close, c.Unselect, c.Expunge, c.Search, c.Sort, c.Thread, c.Fetch, c.Store, c.Copy, c.Move,
                  c.CancelUpdate, c.Replace)
# Commands that may tell expunges (RFC 9051 §7.5.1): all but FETCH, STORE, SEARCH by number.
_NO_EXPUNGE = (c.Fetch, c.Store, c.Search, c.Sort, c.Thread)
# Commands after which a held selection's changes are not worth telling first.
_NO_PRESYNC = (c.Select, c.Close, c.Unselect, c.Logout, c.Idle)


def command_name(cmd: c.Command) -> str:
    """The command's name for the metrics, from its parsed type (never the client's text): FETCH,
    UID FETCH, EXAMINE..."""
    if isinstance(cmd, c.Select) and cmd.readonly:
        return "EXAMINE"
    name = type(cmd).__name__.upper()
    if getattr(cmd, "uid", False) or (isinstance(cmd, c.Expunge) and cmd.uids is not None):
        return "UID " + name
    return name


class Session:
    """The session of one connection. `handle()` each wire item; write what it yields."""

    def __init__(self, opts: ServerOptions, wire: ImapWire, *, conn: str, peer: str, tls: bool) -> None:
        self.opts = opts
        self.wire = wire
        self.conn = conn  # connection id for logs
        self.peer = peer
        self.tls = tls
        self.state = State.NOT_AUTHENTICATED
        self.action: str | None = None  # "starttls", "compress" or "close", for the server
        self.idle_tag: str | None = None
        self.account: str | None = None
        self.acct: Account | None = None
        self.sub: Subscription | None = None
        self.selected: Selected | None = None
        self.condstore = False  # RFC 7162 §3.1: on after any CONDSTORE-enabling command
        self.qresync = False
        self.uidonly = False  # RFC 9586: no sequence numbers either way once enabled
        self.rev2 = False  # ENABLE IMAP4rev2 (RFC 9051 §6.3.1)
        self.utf8 = False  # ENABLE UTF8=ACCEPT (RFC 6855) or IMAP4rev2
        self.notify: notify.NotifyState | None = None  # NOTIFY SET (RFC 5465; imap/notify.py)
        self.suppressed: set[int] = set()  # own writes whose FETCHes the command sent itself
        self._events: collections.deque[Committed] = collections.deque()
        self._sasl: tuple[str, GuardedExchange] | None = None
        self._auth_failures = 0
        self._errors = 0  # BAD responses so far (Limits.max_errors)
        # (tag, name) of the command whose tagged response is still to come, for the metrics:
        # IDLE's comes with DONE, AUTHENTICATE's at the end of its exchange.
        self._counting: tuple[str, str] | None = None
        self._stack = contextlib.AsyncExitStack()

    # ------------------------------------------------------------------ what the server asks

    @property
    def timeout(self) -> float:
        return self.opts.preauth_timeout if self.state is State.NOT_AUTHENTICATED else self.opts.autologout

    def greeting(self) -> r.Response:
        return r.ok(None, "eventmail IMAP4rev2 server ready", r.capability_code(self.capabilities()))

    def tls_started(self) -> None:
        self.tls = True

    async def close(self) -> None:
        self.selected = None
        self.sub = None
        self.acct = None
        await self._stack.aclose()

    def capabilities(self) -> list[str]:
        limits = self.opts.limits
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL-" if limits.literal_minus else "LITERAL+"]
        if self.state is State.NOT_AUTHENTICATED:
            if self.opts.starttls and not self.tls:
                caps.append("STARTTLS")
            mechs = self.opts.auth.mechanisms(self.tls, self.peer)
            if mechs:
                caps.extend(f"AUTH={m}" for m in mechs)
                caps.append("SASL-IR")
            else:
                caps.append("LOGINDISABLED")  # RFC 9051 §6.2.3
        caps += [
            "ENABLE", "IDLE", "NAMESPACE", "ID", "UNSELECT", "UIDPLUS", "MOVE", "CHILDREN", "SPECIAL-USE",
            "CREATE-SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "ESEARCH", "SEARCHRES", "WITHIN",
            "CONDSTORE", "QRESYNC", "BINARY", "MULTIAPPEND", f"APPENDLIMIT={limits.max_append}", "UTF8=ACCEPT",
            "STATUS=SIZE", "SORT", "SORT=DISPLAY", "ESORT", "CONTEXT=SEARCH", "CONTEXT=SORT",
            "CATENATE", "REPLACE", "PREVIEW",
            "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "OBJECTID", "SAVEDATE", *quota.CAPABILITIES, "UIDONLY",
            "INPROGRESS", "METADATA", "METADATA-SERVER", "LIST-METADATA", "MULTISEARCH", "NOTIFY",
        ]
        if not self.wire.compressing:
            caps.append("COMPRESS=DEFLATE")
        return caps

    async def wait_change(self) -> None:
        """While idling: wait for the next committed event of the account (cancel-safe)."""
        if self.sub is None:
            await asyncio.Event().wait()  # nothing can change before login
            return
        try:
            self._events.append(await self.sub.get())
        except SubscriptionOverflow:
            pass  # told by the next _sync (idle_updates)

    @property
    def notifying(self) -> bool:
        """NOTIFY SET is on: changes are told between commands too, not only during IDLE."""
        return self.notify is not None

    def idle_updates(self, between: bool = False) -> list[r.Response]:
        """What to tell an idling client about the changes received so far; `between`: a client
        with NOTIFY set that is running no command (RFC 5465)."""
        try:
            return self._sync(None, between=between)
        except MailboxGone:
            self.action = "close"
            return [r.bye("the selected mailbox was deleted")]
        except SubscriptionOverflow:
            return [self._overflowed()]

    # ------------------------------------------------------------------ items

    async def handle(self, item: c.Item) -> AsyncIterator[r.Response]:
        if isinstance(item, c.ProtocolError) and item.tag is not None and (self._sasl is None or item.tag != self._sasl[0]):
            self._counting = (item.tag, "INVALID")
        elif not isinstance(item, c.ProtocolError | c.Continuation | c.IdleDone | c.SaslResponse | c.SaslCancel):
            self._counting = (item.tag, command_name(item))
        async for resp in self._handle(item):
            if isinstance(resp, r.StatusResponse):
                if resp.status == "BAD":
                    self._errors += 1
                if self._counting is not None and resp.tag == self._counting[0]:
                    metrics.imap_command(self._counting[1], resp.status)
                    self._counting = None
            yield resp
        if self._errors >= self.opts.limits.max_errors and self.action != "close":
            # Each BAD is a log line: a client sending nothing but errors is closed before it
            # can flood the log (and it is no client that will ever work).
            log.warning("imap %s: %d protocol errors, closing the connection", self.conn, self._errors)
            self.action = "close"
            yield r.bye("too many errors")

    async def _handle(self, item: c.Item) -> AsyncIterator[r.Response]:
        if isinstance(item, c.Continuation):
            yield r.ContinuationRequest()
        elif isinstance(item, c.ProtocolError):
            if self._sasl is not None and item.tag == self._sasl[0]:
                # the wire refused a SASL line (and ended the exchange): a failed attempt
                self._sasl_failed(self._sasl[1].abandon(item.text))
            yield r.error_response(item)
            if item.close:
                if item.status != "BYE":
                    yield r.bye("closing connection")
                self.action = "close"
        elif isinstance(item, c.IdleDone):
            if self.idle_tag is None:
                yield r.bad(None, "unexpected DONE")
                return
            tag, self.idle_tag = self.idle_tag, None
            for resp in self.idle_updates():
                yield resp
            if self.action != "close":
                yield r.ok(tag, "IDLE terminated")
        elif isinstance(item, c.SaslResponse | c.SaslCancel):
            async for resp in self._sasl_step(item):
                yield resp
        else:
            if self.idle_tag is not None:
                # RFC 2177 §3: only DONE may follow IDLE
                tag, self.idle_tag = self.idle_tag, None
                yield r.bad(tag, "expected DONE")
            async for resp in self._command(item):
                yield resp

    async def _command(self, cmd: c.Command) -> AsyncIterator[r.Response]:
        handler = _HANDLERS[type(cmd)]
        refusal = self._state_refusal(cmd)
        if refusal is not None:
            yield r.bad(cmd.tag, refusal)
            return
        if self.uidonly and uses_sequence_numbers(cmd):
            yield r.bad(cmd.tag, "message sequence numbers are not used with UIDONLY", r.ResponseCode("UIDREQUIRED"))
            return
        if self.sub is not None and self.sub.overflowed and not isinstance(cmd, c.Logout):
            yield self._overflowed()  # before the command runs: nothing of it is done
            return
        self.suppressed = set()
        try:
            if self.selected is not None and not isinstance(cmd, _NO_PRESYNC):
                for resp in self._sync(cmd):
                    yield resp
            condstore_before = self.condstore
            async for resp in handler(self, cmd):
                # nothing between `* BYE` and LOGOUT's OK (RFC 9051 §6.1.3): the client has stopped
                # counting sequence numbers
                if isinstance(resp, r.StatusResponse) and resp.tag == cmd.tag and not isinstance(cmd, c.Logout):
                    try:
                        updates = self._sync(cmd)
                    except SubscriptionOverflow:
                        # what the command did is done: its result first, then the end
                        yield resp
                        yield self._overflowed()
                        return
                    for update in updates:
                        yield update
                    for update in await self.live_updates():
                        yield update
                    if not condstore_before and self.condstore and not isinstance(cmd, c.Select):
                        for update in self._highestmodseq():
                            yield update
                yield resp
        except ImapError as e:
            try:
                updates = self._sync(cmd)
            except SubscriptionOverflow:
                yield self._overflowed()
                return
            for update in updates:
                yield update
            yield r.StatusResponse(e.status, e.text, cmd.tag, e.code)
        except MailboxGone:
            self.action = "close"
            yield r.bye("the selected mailbox was deleted")
        except SubscriptionOverflow:
            yield self._overflowed()
        except StoreFull:
            yield r.no(cmd.tag, "mail storage is full; try again later", r.ResponseCode("UNAVAILABLE"))
        except OverQuota as e:
            # RFC 9208 OVERQUOTA (APPEND, COPY, MOVE); nothing was added
            log.info("imap %s: %s refused: %s", self.conn, type(cmd).__name__, e)
            yield r.no(cmd.tag, "over quota", r.ResponseCode("OVERQUOTA"))
        except NotFound as e:
            yield r.no(cmd.tag, str(e), r.ResponseCode("NONEXISTENT"))
        except Conflict as e:
            yield r.no(cmd.tag, str(e), r.ResponseCode("ALREADYEXISTS"))
        except LimitExceeded as e:
            yield r.no(cmd.tag, str(e), r.ResponseCode("LIMIT"))  # RFC 5530 §3
        except (NotWriter, ReplicationTimeout) as e:
            # Expected on a backup node, or while a synchronous secondary does not answer: not a
            # bug, so no traceback; RFC 5530 §3 UNAVAILABLE says "try again later".
            log.warning("imap %s: %s refused: %s", self.conn, type(cmd).__name__, e)
            yield r.no(cmd.tag, "this server cannot write now (replication); try again later",
                       r.ResponseCode("UNAVAILABLE"))
        except StoreError as e:
            log.exception("imap %s: store error in %s", self.conn, type(cmd).__name__)
            yield r.no(cmd.tag, f"store error: {type(e).__name__}", r.ResponseCode("SERVERBUG"))
        except Exception:
            # a bug: this command fails, the connection and the server go on (STYLE §5)
            log.exception("imap %s: internal error in %s", self.conn, type(cmd).__name__)
            yield r.no(cmd.tag, "internal server error", r.ResponseCode("SERVERBUG"))
        finally:
            self.suppressed = set()

    def _state_refusal(self, cmd: c.Command) -> str | None:
        if isinstance(cmd, _ANY):
            return None
        if self.state is State.NOT_AUTHENTICATED:
            return None if isinstance(cmd, _NOT_AUTH) else "log in first"
        if isinstance(cmd, _NOT_AUTH):
            return "already authenticated"
        if isinstance(cmd, _SELECTED_ONLY) and self.selected is None:
            return "no mailbox selected"
        return None

    def _overflowed(self) -> r.Response:
        """More changes waited for this session than Limits.max_queued_changes: they are gone,
        so the session can no longer tell them; it ends (RFC 9051 §7.1.5 BYE) and the client
        resyncs on its next login."""
        log.warning("imap %s: more than %d changes waited for the session; closing it",
                    self.conn, self.opts.limits.max_queued_changes)
        self.action = "close"
        self._events.clear()
        return r.bye("too many changes waited for this session; log in again to resync")

    @property
    def vanished(self) -> bool:
        """Expunges are told as VANISHED: with QRESYNC (RFC 7162 §3.2.10) and with UIDONLY (RFC 9586 §3)."""
        return self.qresync or self.uidonly

    def _sync(self, cmd: c.Command | None, between: bool = False) -> list[r.Response]:
        """Changes committed since the last look, as untagged responses (selected.py), and what
        NOTIFY asks to be told of other mailboxes (notify.py). `between`: no command is running
        and the client is not idling (NOTIFY): expunges wait unless a "selected" filter asks
        for them at once (RFC 5465 §5.2)."""
        if self.sub is None:
            return []
        events = [*self._events, *self.sub.pending()]
        self._events.clear()
        if self.acct is None:
            return []
        out: list[r.Response] = []
        if self.notify is not None and sum(1 for e in events if e.seq > self.notify.told_seq) > notify.MAX_PENDING:
            # RFC 5465 §5.8: too much to tell; notifications stop as after NOTIFY NONE
            self.notify = None
            out.append(r.ok(None, "too many changes; notifications are off", r.ResponseCode("NOTIFICATIONOVERFLOW")))
        sel = self.selected
        if sel is not None and between and (self.notify is None or self.notify.selected_filter is None):
            # no filter names the selected mailbox: its changes wait for the next command, as
            # without NOTIFY (the other mailboxes' are told now, and not again then)
            self._events.extend(events)
            if len(self._events) > self.opts.limits.max_queued_changes:
                self._events.clear()
                raise SubscriptionOverflow(f"more than {self.opts.limits.max_queued_changes} changes held")
            sel = None
        if sel is not None:
            expunge_ok = cmd is None or not isinstance(cmd, _NO_EXPUNGE) or bool(getattr(cmd, "uid", False))
            if between:
                group = self.notify.selected_filter if self.notify is not None else None
                expunge_ok = group is not None and group.filter.kind == "SELECTED"
            if not events:
                # expunges held back during an earlier FETCH / STORE / SEARCH are told now
                return sel.flush_expunges(self.vanished) if expunge_ok else []
            how = Notify(expunge_ok, self.condstore, self.vanished, frozenset(self.suppressed))
            out.extend(sel.apply(events, self.acct.view, how))
            out.extend(notify.new_message_fetches(self, self.acct, sel, events))
        out.extend(notify.updates(self, self.acct, events))
        return out

    async def live_updates(self) -> list[r.Response]:
        """RFC 5267 §4.3: what entered or left each live result since the mailbox last changed
        (an expunged message left it already, before its EXPUNGE; selected.py)."""
        sel = self.selected
        if sel is None or not sel.live or not sel.live_dirty:
            return []
        sel.live_dirty = False
        out: list[r.Response] = []
        for live in list(sel.live.values()):
            try:
                found = await messages.matching(self, live.key)
            except Exception:
                # a bug must not turn the command that ran into a failure: the result stops
                # being live, and says so (RFC 5267 §4.2 NOUPDATE)
                log.exception("imap %s: live result %r could not be brought up to date", self.conn, live.tag)
                del sel.live[live.tag]
                out.append(r.StatusResponse("NO", "this result is no longer kept up to date", None,
                                            r.ResponseCode("NOUPDATE", (live.tag.encode("ascii", "replace"),))))
                continue
            if self.selected is not sel:
                return []
            if live.criteria is None:
                now = [sel.uids[seq - 1] for seq, _d in found]
            else:
                now = [sel.uids[seq - 1] for seq in sort.sorted_matches(live.criteria, found)]
            # a message expunged but not yet told stays until its EXPUNGE is (flush_expunges)
            held = [u for u in live.uids if u in sel.gone and u not in now]
            number = sel.numbering(live.uid)
            left = context.removal(live, set(live.uids) - set(now) - set(held), number)
            if live.criteria is None:
                new_order = sorted({*now, *held})
            else:
                new_order = list(now)
                for u in held:  # where it was: after the message it followed
                    i = live.uids.index(u)
                    before = next((p for p in reversed(live.uids[:i]) if p in new_order), None)
                    new_order.insert(0 if before is None else new_order.index(before) + 1, u)
            entered = context.addition(live, new_order, number)
            out.extend(x for x in (left, entered) if x is not None)
        return out

    async def _cancelupdate(self, cmd: c.CancelUpdate) -> AsyncIterator[r.Response]:
        sel = self.need_selected()
        unknown = [t for t in cmd.tags if t not in sel.live]
        if unknown:
            raise no(f"no live result with tag {unknown[0]!r}")
        for t in cmd.tags:
            del sel.live[t]
        yield r.ok(cmd.tag, "CANCELUPDATE completed")

    def _highestmodseq(self) -> list[r.Response]:
        """RFC 7162 §3.1: the first CONDSTORE-enabling command while a mailbox is selected is
        answered with its HIGHESTMODSEQ (the client had no reason to remember it before)."""
        if self.selected is None or self.acct is None:
            return []
        mb = self.acct.view.mailbox_by_id(self.selected.mailbox_id)
        if mb is None:
            return []
        return [r.ok(None, "highest", r.ResponseCode("HIGHESTMODSEQ", (mb.highest_modseq,)))]

    def unselect(self) -> None:
        self.selected = None
        self.state = State.AUTHENTICATED

    def need_selected(self) -> Selected:
        if self.selected is None:
            raise bad("no mailbox selected")
        return self.selected

    def need_acct(self) -> Account:
        if self.acct is None:
            raise bad("log in first")
        return self.acct

    # ------------------------------------------------------------------ any state

    async def _capability(self, cmd: c.Capability) -> AsyncIterator[r.Response]:
        yield r.capability(self.capabilities())
        yield r.ok(cmd.tag, "CAPABILITY completed")

    async def _noop(self, cmd: c.Noop | c.Check) -> AsyncIterator[r.Response]:
        yield r.ok(cmd.tag, f"{type(cmd).__name__.upper()} completed")

    async def _logout(self, cmd: c.Logout) -> AsyncIterator[r.Response]:
        self.state = State.LOGOUT
        self.action = "close"
        yield LOGOUT_BYE
        yield r.ok(cmd.tag, "LOGOUT completed")

    async def _id(self, cmd: c.Id) -> AsyncIterator[r.Response]:
        if cmd.params:
            log.info("imap %s: client id %s", self.conn, ", ".join(f"{k}={v}" for k, v in cmd.params[:10]))
        yield r.id_response(SERVER_ID)  # RFC 2971 §3.2
        yield r.ok(cmd.tag, "ID completed")

    # ------------------------------------------------------------------ not authenticated

    async def _starttls(self, cmd: c.StartTls) -> AsyncIterator[r.Response]:
        if self.tls:
            raise bad("TLS is already active")
        if not self.opts.starttls:
            raise bad("STARTTLS is not offered on this port")
        self.action = "starttls"  # RFC 9051 §6.2.1: the handshake starts after this OK
        yield r.ok(cmd.tag, "begin TLS negotiation now")

    async def _login(self, cmd: c.Login) -> AsyncIterator[r.Response]:
        auth = self.opts.auth
        if not auth.may_send_password(self.tls, self.peer):
            # RFC 9051 §6.2.3 LOGINDISABLED; RFC 5530 §3 PRIVACYREQUIRED
            raise no("use STARTTLS or port 993 to log in", "PRIVACYREQUIRED")
        exchange = auth.exchange("PLAIN", self.tls, self.peer, self.conn)
        assert exchange is not None
        result = await exchange.start(plain_response(cmd.username, cmd.password))
        if isinstance(result, Success):
            async for resp in self._logged_in(cmd.tag, result):
                yield resp
            return
        failure = result if isinstance(result, Failure) else Failure(FailureReason.SEQUENCE, cmd.username)
        if failure.authcid is None:
            failure = Failure(failure.reason, cmd.username, failure.detail)
        self._sasl_failed(failure)
        _, code = failure.reason.imap_reply
        yield r.no(cmd.tag, _failure_text(failure), r.ResponseCode(code or "AUTHENTICATIONFAILED"))
        if self._auth_failures >= MAX_AUTH_FAILURES:
            self.action = "close"
            yield r.bye("too many failed authentication attempts")

    async def _authenticate(self, cmd: c.Authenticate) -> AsyncIterator[r.Response]:
        auth = self.opts.auth
        if not auth.may_send_password(self.tls, self.peer):
            raise no("use STARTTLS or port 993 to authenticate", "PRIVACYREQUIRED")
        exchange = auth.exchange(cmd.mechanism, self.tls, self.peer, self.conn)
        if exchange is None:
            raise no(f"mechanism {cmd.mechanism} is not available", "CANNOT")
        result = await exchange.start(wire_form(cmd.initial_response, initial=True))
        async for resp in self._sasl_result(cmd.tag, exchange, result):
            yield resp

    async def _sasl_step(self, item: c.SaslResponse | c.SaslCancel) -> AsyncIterator[r.Response]:
        if self._sasl is None or self._sasl[0] != item.tag:
            yield r.bad(None, "no authentication in progress")
            return
        tag, exchange = self._sasl
        data = b"*" if isinstance(item, c.SaslCancel) else wire_form(item.data, initial=False)
        assert data is not None
        result = await exchange.step(data)
        async for resp in self._sasl_result(tag, exchange, result):
            yield resp

    async def _sasl_result(
        self, tag: str, exchange: GuardedExchange, result: Challenge | Success | Failure
    ) -> AsyncIterator[r.Response]:
        self._sasl = None
        if isinstance(result, Challenge):
            self._sasl = (tag, exchange)
            yield r.ContinuationRequest(challenge=result.data)  # RFC 9051 §6.2.2: `+ base64`
        elif isinstance(result, Success):
            async for resp in self._logged_in(tag, result):
                yield resp
        else:
            self._sasl_failed(result)
            status, code = result.reason.imap_reply
            text = _failure_text(result)
            yield r.StatusResponse("BAD" if status == "BAD" else "NO", text, tag,
                                   r.ResponseCode(code) if code else None)
            if self._auth_failures >= MAX_AUTH_FAILURES:
                self.action = "close"
                yield r.bye("too many failed authentication attempts")

    def _sasl_failed(self, failure: Failure) -> None:
        self._sasl = None
        self._auth_failures += 1
        self.opts.auth.failed(self.peer, failure, self.conn)

    async def _logged_in(self, tag: str, result: Success) -> AsyncIterator[r.Response]:
        self.opts.auth.succeeded(self.peer, result.username, self.conn)
        self.account = result.username
        self.acct = await self._stack.enter_async_context(self.opts.store.use_account(result.username))
        sub = self.acct.subscribe(self.opts.limits.max_queued_changes)
        self._stack.callback(sub.close)
        self.sub = sub
        self.state = State.AUTHENTICATED
        self.wire.authenticated()  # literals may now be as large as Limits allows
        # RFC 9051 §6.2.2: capabilities may change with authentication, so send them again
        yield r.ok(tag, "logged in", r.capability_code(self.capabilities()))

    # ------------------------------------------------------------------ authenticated

    async def _enable(self, cmd: c.Enable) -> AsyncIterator[r.Response]:
        done: list[str] = []
        for cap in cmd.capabilities:  # RFC 5161 §3.1: unknown ones are ignored
            if cap == "CONDSTORE" and not self.condstore:
                self.condstore = True
                done.append("CONDSTORE")
            elif cap == "QRESYNC" and not self.qresync:
                self.qresync = self.condstore = True  # RFC 7162 §3.2.3: QRESYNC implies CONDSTORE
                done.append("QRESYNC")
            elif cap == "UTF8=ACCEPT" and not self.utf8:
                self.utf8 = True
                self.wire.enable_utf8()
                done.append("UTF8=ACCEPT")
            elif cap == "UIDONLY" and not self.uidonly:
                self.uidonly = True
                self.wire.enable_uidonly()
                done.append("UIDONLY")
            elif cap == "IMAP4REV2" and not self.rev2:
                self.rev2 = True
                self.utf8 = True
                self.wire.enable_utf8()  # RFC 9051 §5.1: UTF-8 mailbox names
                done.append("IMAP4rev2")
        yield r.enabled(done)
        yield r.ok(cmd.tag, "ENABLE completed")

    async def _namespace(self, cmd: c.Namespace) -> AsyncIterator[r.Response]:
        yield r.namespace_response([("", mailboxes.SEP)])  # one personal namespace, no others
        yield r.ok(cmd.tag, "NAMESPACE completed")

    async def _idle(self, cmd: c.Idle) -> AsyncIterator[r.Response]:
        self.idle_tag = cmd.tag  # RFC 2177: updates flow until DONE
        yield r.ContinuationRequest("idling")
        for resp in self._sync(None):
            yield resp

    async def _compress(self, cmd: c.Compress) -> AsyncIterator[r.Response]:
        if cmd.mechanism != "DEFLATE":
            raise bad(f"unknown compression mechanism {cmd.mechanism}")
        if self.wire.compressing:
            raise no("compression is already active", "COMPRESSIONACTIVE")  # RFC 4978 §3
        self.action = "compress"
        yield r.ok(cmd.tag, "DEFLATE active")

    async def _select(self, cmd: c.Select) -> AsyncIterator[r.Response]:
        acct = self.need_acct()
        if self.selected is not None:
            # RFC 9051 §6.3.2: the old mailbox is closed first, even if this SELECT fails
            self.selected = None
            self.state = State.AUTHENTICATED
            yield r.ok(None, "previous mailbox closed", r.ResponseCode("CLOSED"))  # RFC 7162 §3.2.11
        if cmd.qresync is not None and not self.qresync:
            raise bad("QRESYNC is not enabled")  # RFC 7162 §3.2.5
        if cmd.condstore:
            self.condstore = True
        mb = mailboxes.existing_mailbox(acct.view, cmd.mailbox)
        if self.sub is not None:
            # the snapshot below already holds every event committed so far; NOTIFY still tells
            # the other mailboxes' (notify.py)
            for resp in notify.updates(self, acct, [*self._events, *self.sub.pending()]):
                yield resp
        self._events.clear()
        msgs = acct.view.messages(mb.id)
        sel = Selected(mb, cmd.readonly, msgs, recent_marks(self.opts.store, acct.name))
        sel.tell_recent = not self.rev2
        yield r.flags(sel.flag_names())
        yield sel.permanent_flags()
        yield r.exists(sel.exists)
        if not self.rev2:
            yield r.Untagged((len(sel.recent), r.Atom("RECENT")))  # RFC 3501 §7.3.2
            first_unseen = next((i for i, m in enumerate(msgs, 1) if "\\Seen" not in m.flags), None)
            if first_unseen is not None and not self.uidonly:  # a sequence number (RFC 9586 §3)
                yield r.ok(None, "first unseen", r.ResponseCode("UNSEEN", (first_unseen,)))
        yield r.ok(None, "UIDs valid", r.ResponseCode("UIDVALIDITY", (mb.uidvalidity,)))
        yield r.ok(None, "predicted next UID", r.ResponseCode("UIDNEXT", (mb.uidnext,)))
        yield r.ok(None, "highest", r.ResponseCode("HIGHESTMODSEQ", (mb.highest_modseq,)))  # RFC 7162 §3.1.2.1
        yield r.ok(None, "mailbox id", r.ResponseCode("MAILBOXID", ((r.Atom(mailboxes.mailbox_object_id(mb)),),)))
        if cmd.qresync is not None and cmd.qresync.uidvalidity == mb.uidvalidity:
            for resp in _qresync_responses(sel, cmd.qresync, acct, msgs):
                yield resp
        self.selected = sel
        self.state = State.SELECTED
        code = "READ-ONLY" if cmd.readonly else "READ-WRITE"
        yield r.ok(cmd.tag, f"{'EXAMINE' if cmd.readonly else 'SELECT'} completed", r.ResponseCode(code))

    async def _close(self, cmd: c.Close | c.Unselect) -> AsyncIterator[r.Response]:
        sel = self.need_selected()
        acct = self.need_acct()
        if isinstance(cmd, c.Close) and not sel.readonly:
            # RFC 9051 §6.4.1: expunge \Deleted messages, silently
            doomed = [m.uid for m in acct.view.messages(sel.mailbox_id)
                      if "\\Deleted" in m.flags and sel.seq(m.uid) is not None]
            if doomed:
                await moves.expunge(acct, sel.mailbox_id, doomed)
        self.selected = None
        self.state = State.AUTHENTICATED
        yield r.ok(cmd.tag, f"{type(cmd).__name__.upper()} completed")


def _failure_text(failure: Failure) -> str:
    if failure.reason is FailureReason.CANCELLED:
        return "authentication cancelled"
    if failure.reason is FailureReason.LIMITED:
        return "too many failed logins; try again later"
    return "authentication failed"


def _qresync_responses(sel: Selected, q: c.QresyncParams, acct: Account, msgs: list[Any]) -> list[r.Response]:
    """RFC 7162 §3.2.5.1: what changed since the client's mod-sequence: VANISHED (EARLIER) for
    expunged UIDs it knows, then FETCH of every message changed since."""
    out: list[r.Response] = []
    known: set[int] | None = None
    if q.known_uids is not None:
        known = set()
        largest = max((m.uid for m in msgs), default=0)
        for lo, hi in q.known_uids.iter_bounds(max(largest, sel.uids[-1] if sel.uids else 0)):
            if hi - lo > 1_000_000:
                known = None  # a huge range: treat as "everything", as with no list at all
                break
            known.update(range(lo, hi + 1))
    gone = [u for u in acct.view.expunged_since(sel.mailbox_id, q.modseq) if known is None or u in known]
    if gone:
        out.append(r.vanished(uid_set(gone), earlier=True))
    for seq, m in enumerate(msgs, 1):
        if m.modseq > q.modseq:
            out.append(sel.flags_fetch(seq, m, True))
    return out


Handler = Callable[[Session, Any], AsyncIterator[r.Response]]
_HANDLERS: dict[type, Handler] = {
    c.Capability: Session._capability,
    c.Noop: Session._noop,
    c.Check: Session._noop,
    c.Logout: Session._logout,
    c.Id: Session._id,
    c.StartTls: Session._starttls,
    c.Login: Session._login,
    c.Authenticate: Session._authenticate,
    c.Enable: Session._enable,
    c.Namespace: Session._namespace,
    c.Idle: Session._idle,
    c.Compress: Session._compress,
    c.Select: Session._select,
    c.Close: Session._close,
    c.Unselect: Session._close,
    c.List: mailboxes.list_,
    c.Lsub: mailboxes.lsub,
    c.Status: mailboxes.status,
    c.Create: mailboxes.create,
    c.Delete: mailboxes.delete,
    c.Rename: mailboxes.rename,
    c.Subscribe: mailboxes.subscribe,
    c.Unsubscribe: mailboxes.subscribe,
    c.Append: messages.append,
    c.Replace: messages.replace,
    c.Fetch: messages.fetch,
    c.Store: messages.store,
    c.Search: messages.search,
    c.Sort: sort.sort,
    c.CancelUpdate: Session._cancelupdate,
    c.Thread: thread.thread,
    c.Copy: messages.copy,
    c.Move: messages.copy,
    c.Expunge: messages.expunge,
    c.GetMetadata: metadata.getmetadata,
    c.SetMetadata: metadata.setmetadata,
    c.Notify: notify.notify,
    c.ESearch: multisearch.esearch,
    c.GetQuota: quota.getquota,
    c.GetQuotaRoot: quota.getquotaroot,
    c.SetQuota: quota.setquota,
}

__all__ = ["AUTOLOGOUT", "PREAUTH_TIMEOUT", "ServerOptions", "Session", "State"]
