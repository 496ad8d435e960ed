"""The encrypted event-log store: the only way protocol, web and replication code reach account data."""

from .account import DEFAULT_MAILBOXES, JUNK, NOT_JUNK, REJECTS, Account, junk_training_flags
from .errors import (
    Conflict,
    DamagedBlob,
    DamagedLog,
    DirectoryLocked,
    KeyFileExposed,
    MissingKey,
    NotFound,
    NotWriter,
    ReplicationTimeout,
    StoreError,
    StoreFull,
    StreamShredded,
    WrongKey,
)
from .keys import MasterKeySource, init_directory, load_master_key
from .keywords import MAX_KEYWORDS_PER_MAILBOX, MAX_KEYWORDS_PER_MESSAGE, LimitExceeded, keywords_at_cap
from .log import Head
from .projection import Mailbox, MailboxView, Message
from .records import Record
from .store import QUEUE, SYSTEM, Store, StreamReport, account_stream, handoff_stream
from .stream import Committed, Subscription
from .system import AccountInfo, SystemView, normalize_address

__all__ = [
    "DEFAULT_MAILBOXES",
    "JUNK",
    "MAX_KEYWORDS_PER_MAILBOX",
    "MAX_KEYWORDS_PER_MESSAGE",
    "NOT_JUNK",
    "QUEUE",
    "REJECTS",
    "SYSTEM",
    "Account",
    "AccountInfo",
    "Committed",
    "Conflict",
    "DamagedBlob",
    "DamagedLog",
    "DirectoryLocked",
    "Head",
    "KeyFileExposed",
    "LimitExceeded",
    "Mailbox",
    "MailboxView",
    "MasterKeySource",
    "Message",
    "MissingKey",
    "NotFound",
    "NotWriter",
    "Record",
    "ReplicationTimeout",
    "Store",
    "StoreError",
    "StoreFull",
    "StreamReport",
    "StreamShredded",
    "Subscription",
    "SystemView",
    "WrongKey",
    "account_stream",
    "handoff_stream",
    "init_directory",
    "junk_training_flags",
    "keywords_at_cap",
    "load_master_key",
    "normalize_address",
]
