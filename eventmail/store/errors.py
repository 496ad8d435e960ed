"""The store's typed errors: what callers catch and turn into protocol replies."""


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class KeyProblem(StoreError):
    """The master key is missing or wrong, or a stream's key is gone (shredded)."""


class WrongKey(KeyProblem):
    """The master key does not open the keyring."""


class MissingKey(KeyProblem):
    """No master key was given or the key file does not exist."""


class KeyFileExposed(KeyProblem):
    """The key file may be read by group or others (as ssh refuses such a private key)."""


class StreamShredded(KeyProblem):
    """The stream's data keys were deleted: its records can never be read again."""


class DamagedLog(StoreError):
    """A record or segment is damaged somewhere other than a torn tail."""

    def __init__(self, stream: str, seq: int, reason: str) -> None:
        super().__init__(f"stream {stream}: record seq {seq}: {reason}")
        self.stream = stream
        self.seq = seq
        self.reason = reason


class DamagedBlob(StoreError):
    """A blob file is missing, unreadable or does not match its name."""


class StoreFull(StoreError):
    """The disk is full: the append was not made and the log is unchanged (a temporary failure)."""


class DirectoryLocked(StoreError):
    """Another process is the writer of this data directory."""


class OverQuota(StoreError):
    """The account's quota (setting `quota_bytes`) has no room for the message(s): nothing was
    added (RFC 9208 OVERQUOTA response code; a temporary failure at SMTP, RFC 3463 4.2.2)."""

    def __init__(self, used: int, adding: int, limit: int) -> None:
        super().__init__(f"over quota: {used} bytes used, {adding} more, limit {limit}")
        self.used = used
        self.adding = adding
        self.limit = limit


class NotFound(StoreError):
    """A named account, mailbox or message does not exist."""


class Conflict(StoreError):
    """The request contradicts the current state (a name exists, a mailbox is not empty, ...)."""


class NotWriter(StoreError):
    """This node is not the writer of the stream (it follows, or a newer epoch fenced it off)."""


class ReplicationTimeout(StoreError):
    """Synchronous replication: the secondary did not acknowledge in time (a temporary failure)."""
