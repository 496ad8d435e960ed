"""The encrypted event-log store: the only way protocol, web and replication code reach account data.

Its names are imported from their modules when first used (PEP 562), not all at once: a process
that needs a few of them (the replay's reading child, `python -m eventmail.store.reader`) does not
pay for asyncio, the backup code and the rest at its start."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as mypy and readers see them; at run time, __getattr__ below
    from .account import (
        DEFAULT_MAILBOXES as DEFAULT_MAILBOXES,
    )
    from .account import (
        QUOTA_SETTING as QUOTA_SETTING,
    )
    from .account import (
        Account as Account,
    )
    from .backup import (
        BackupReport as BackupReport,
    )
    from .backup import (
        check_repository as check_repository,
    )
    from .backup import (
        create_backup as create_backup,
    )
    from .backup import (
        restore_backup as restore_backup,
    )
    from .errors import (
        Conflict as Conflict,
    )
    from .errors import (
        DamagedBlob as DamagedBlob,
    )
    from .errors import (
        DamagedLog as DamagedLog,
    )
    from .errors import (
        DirectoryLocked as DirectoryLocked,
    )
    from .errors import (
        KeyFileExposed as KeyFileExposed,
    )
    from .errors import (
        MissingKey as MissingKey,
    )
    from .errors import (
        NotFound as NotFound,
    )
    from .errors import (
        NotWriter as NotWriter,
    )
    from .errors import (
        OverQuota as OverQuota,
    )
    from .errors import (
        ReplicationTimeout as ReplicationTimeout,
    )
    from .errors import (
        StoreError as StoreError,
    )
    from .errors import (
        StoreFull as StoreFull,
    )
    from .errors import (
        StreamShredded as StreamShredded,
    )
    from .errors import (
        WrongKey as WrongKey,
    )
    from .handle import StreamHandle as StreamHandle
    from .keys import (
        MasterKeySource as MasterKeySource,
    )
    from .keys import (
        init_directory as init_directory,
    )
    from .keys import (
        load_master_key as load_master_key,
    )
    from .keys import (
        new_master_key as new_master_key,
    )
    from .keywords import (
        MAX_KEYWORDS_PER_MAILBOX as MAX_KEYWORDS_PER_MAILBOX,
    )
    from .keywords import (
        MAX_KEYWORDS_PER_MESSAGE as MAX_KEYWORDS_PER_MESSAGE,
    )
    from .keywords import (
        LimitExceeded as LimitExceeded,
    )
    from .keywords import (
        keywords_at_cap as keywords_at_cap,
    )
    from .log import Head as Head
    from .names import (
        ACCOUNT_NAME as ACCOUNT_NAME,
    )
    from .names import (
        QUEUE as QUEUE,
    )
    from .names import (
        SYSTEM as SYSTEM,
    )
    from .names import (
        account_stream as account_stream,
    )
    from .names import (
        handoff_stream as handoff_stream,
    )
    from .projection import (
        Mailbox as Mailbox,
    )
    from .projection import (
        MailboxChanged as MailboxChanged,
    )
    from .projection import (
        MailboxView as MailboxView,
    )
    from .projection import (
        Message as Message,
    )
    from .projection import (
        MessagesChanged as MessagesChanged,
    )
    from .projection import (
        Projector as Projector,
    )
    from .projection import (
        SettingChanged as SettingChanged,
    )
    from .projection import (
        SubscriptionChanged as SubscriptionChanged,
    )
    from .records import Record as Record
    from .registration import (
        Change as Change,
    )
    from .registration import (
        CopyFlags as CopyFlags,
    )
    from .registration import (
        Delivery as Delivery,
    )
    from .registration import (
        MessageFacts as MessageFacts,
    )
    from .registration import (
        Projection as Projection,
    )
    from .registration import (
        Registration as Registration,
    )
    from .registration import (
        ThreadOf as ThreadOf,
    )
    from .replication_port import ReplicationPort as ReplicationPort
    from .store import IDLE_SECONDS as IDLE_SECONDS
    from .store import Store as Store
    from .store import StreamReport as StreamReport
    from .stream import Committed as Committed
    from .stream import Subscription as Subscription
    from .stream import SubscriptionOverflow as SubscriptionOverflow
    from .system import (
        AccountInfo as AccountInfo,
    )
    from .system import (
        SystemView as SystemView,
    )
    from .system import (
        normalize_address as normalize_address,
    )

# Each public name, and the module of this package that defines it.
_WHERE = {
    "ACCOUNT_NAME": "names",
    "DEFAULT_MAILBOXES": "account",
    "IDLE_SECONDS": "store",
    "MAX_KEYWORDS_PER_MAILBOX": "keywords",
    "MAX_KEYWORDS_PER_MESSAGE": "keywords",
    "QUEUE": "names",
    "QUOTA_SETTING": "account",
    "SYSTEM": "names",
    "Account": "account",
    "AccountInfo": "system",
    "BackupReport": "backup",
    "Change": "registration",
    "Committed": "stream",
    "Conflict": "errors",
    "CopyFlags": "registration",
    "DamagedBlob": "errors",
    "DamagedLog": "errors",
    "Delivery": "registration",
    "DirectoryLocked": "errors",
    "Head": "log",
    "KeyFileExposed": "errors",
    "LimitExceeded": "keywords",
    "Mailbox": "projection",
    "MailboxChanged": "projection",
    "MailboxView": "projection",
    "MasterKeySource": "keys",
    "Message": "projection",
    "MessageFacts": "registration",
    "MessagesChanged": "projection",
    "MissingKey": "errors",
    "NotFound": "errors",
    "NotWriter": "errors",
    "OverQuota": "errors",
    "Projection": "registration",
    "Projector": "projection",
    "Record": "records",
    "Registration": "registration",
    "ReplicationPort": "replication_port",
    "ReplicationTimeout": "errors",
    "SettingChanged": "projection",
    "Store": "store",
    "StoreError": "errors",
    "StoreFull": "errors",
    "StreamHandle": "handle",
    "StreamReport": "store",
    "StreamShredded": "errors",
    "Subscription": "stream",
    "SubscriptionOverflow": "stream",
    "SubscriptionChanged": "projection",
    "SystemView": "system",
    "ThreadOf": "registration",
    "WrongKey": "errors",
    "account_stream": "names",
    "check_repository": "backup",
    "create_backup": "backup",
    "handoff_stream": "names",
    "init_directory": "keys",
    "keywords_at_cap": "keywords",
    "load_master_key": "keys",
    "new_master_key": "keys",
    "normalize_address": "system",
    "restore_backup": "backup",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_WHERE))


__all__ = list(_WHERE)
