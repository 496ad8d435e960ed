"""The encrypted event-log store: the only way protocol, web and replication code reach account data."""

from .account import DEFAULT_MAILBOXES, QUOTA_SETTING, Account
from .backup import BackupReport, check_repository, create_backup, restore_backup
from .errors import (
    Conflict,
    DamagedBlob,
    DamagedLog,
    DirectoryLocked,
    KeyFileExposed,
    MissingKey,
    NotFound,
    NotWriter,
    OverQuota,
    ReplicationTimeout,
    StoreError,
    StoreFull,
    StreamShredded,
    WrongKey,
)
from .handle import StreamHandle
from .keys import MasterKeySource, init_directory, load_master_key, new_master_key
from .keywords import MAX_KEYWORDS_PER_MAILBOX, MAX_KEYWORDS_PER_MESSAGE, LimitExceeded, keywords_at_cap
from .log import Head
from .names import ACCOUNT_NAME, QUEUE, SYSTEM, account_stream, handoff_stream
from .projection import (
    Mailbox,
    MailboxChanged,
    MailboxView,
    Message,
    MessagesChanged,
    Projector,
    SettingChanged,
    SubscriptionChanged,
)
from .records import Record
from .registration import Change, CopyFlags, Delivery, MessageFacts, Projection, Registration, ThreadOf
from .replication_port import ReplicationPort
from .store import IDLE_SECONDS, Store, StreamReport
from .stream import Committed, Subscription
from .system import AccountInfo, SystemView, normalize_address

__all__ = [
    "ACCOUNT_NAME",
    "DEFAULT_MAILBOXES",
    "IDLE_SECONDS",
    "MAX_KEYWORDS_PER_MAILBOX",
    "MAX_KEYWORDS_PER_MESSAGE",
    "QUEUE",
    "QUOTA_SETTING",
    "SYSTEM",
    "Account",
    "AccountInfo",
    "BackupReport",
    "Change",
    "Committed",
    "Conflict",
    "CopyFlags",
    "DamagedBlob",
    "DamagedLog",
    "Delivery",
    "DirectoryLocked",
    "Head",
    "KeyFileExposed",
    "LimitExceeded",
    "Mailbox",
    "MailboxChanged",
    "MailboxView",
    "MasterKeySource",
    "Message",
    "MessageFacts",
    "MessagesChanged",
    "MissingKey",
    "NotFound",
    "NotWriter",
    "OverQuota",
    "Projection",
    "Projector",
    "Record",
    "Registration",
    "ReplicationPort",
    "ReplicationTimeout",
    "SettingChanged",
    "Store",
    "StoreError",
    "StoreFull",
    "StreamHandle",
    "StreamReport",
    "StreamShredded",
    "Subscription",
    "SubscriptionChanged",
    "SystemView",
    "ThreadOf",
    "WrongKey",
    "account_stream",
    "check_repository",
    "create_backup",
    "handoff_stream",
    "init_directory",
    "keywords_at_cap",
    "load_master_key",
    "new_master_key",
    "normalize_address",
    "restore_backup",
]
