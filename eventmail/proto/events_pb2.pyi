from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SpecialUse(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPECIAL_USE_NONE: _ClassVar[SpecialUse]
    SPECIAL_USE_SENT: _ClassVar[SpecialUse]
    SPECIAL_USE_ARCHIVE: _ClassVar[SpecialUse]
    SPECIAL_USE_TRASH: _ClassVar[SpecialUse]
    SPECIAL_USE_DRAFTS: _ClassVar[SpecialUse]
    SPECIAL_USE_JUNK: _ClassVar[SpecialUse]
    SPECIAL_USE_ALL: _ClassVar[SpecialUse]
    SPECIAL_USE_FLAGGED: _ClassVar[SpecialUse]
SPECIAL_USE_NONE: SpecialUse
SPECIAL_USE_SENT: SpecialUse
SPECIAL_USE_ARCHIVE: SpecialUse
SPECIAL_USE_TRASH: SpecialUse
SPECIAL_USE_DRAFTS: SpecialUse
SPECIAL_USE_JUNK: SpecialUse
SPECIAL_USE_ALL: SpecialUse
SPECIAL_USE_FLAGGED: SpecialUse

class Address(_message.Message):
    __slots__ = ("name", "adl", "mailbox", "host", "group_end")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADL_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    GROUP_END_FIELD_NUMBER: _ClassVar[int]
    name: bytes
    adl: bytes
    mailbox: bytes
    host: bytes
    group_end: bool
    def __init__(self, name: _Optional[bytes] = ..., adl: _Optional[bytes] = ..., mailbox: _Optional[bytes] = ..., host: _Optional[bytes] = ..., group_end: _Optional[bool] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("date", "subject", "sender", "reply_to", "to", "cc", "bcc", "in_reply_to", "message_id", "has_date", "has_subject", "has_in_reply_to", "has_message_id")
    DATE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    CC_FIELD_NUMBER: _ClassVar[int]
    BCC_FIELD_NUMBER: _ClassVar[int]
    IN_REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    HAS_DATE_FIELD_NUMBER: _ClassVar[int]
    HAS_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    HAS_IN_REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    HAS_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    date: bytes
    subject: bytes
    sender: _containers.RepeatedCompositeFieldContainer[Address]
    reply_to: _containers.RepeatedCompositeFieldContainer[Address]
    to: _containers.RepeatedCompositeFieldContainer[Address]
    cc: _containers.RepeatedCompositeFieldContainer[Address]
    bcc: _containers.RepeatedCompositeFieldContainer[Address]
    in_reply_to: bytes
    message_id: bytes
    has_date: bool
    has_subject: bool
    has_in_reply_to: bool
    has_message_id: bool
    def __init__(self, date: _Optional[bytes] = ..., subject: _Optional[bytes] = ..., sender: _Optional[_Iterable[_Union[Address, _Mapping]]] = ..., reply_to: _Optional[_Iterable[_Union[Address, _Mapping]]] = ..., to: _Optional[_Iterable[_Union[Address, _Mapping]]] = ..., cc: _Optional[_Iterable[_Union[Address, _Mapping]]] = ..., bcc: _Optional[_Iterable[_Union[Address, _Mapping]]] = ..., in_reply_to: _Optional[bytes] = ..., message_id: _Optional[bytes] = ..., has_date: _Optional[bool] = ..., has_subject: _Optional[bool] = ..., has_in_reply_to: _Optional[bool] = ..., has_message_id: _Optional[bool] = ..., **kwargs) -> None: ...

class Param(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: bytes
    value: bytes
    def __init__(self, name: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class MimePart(_message.Message):
    __slots__ = ("type", "subtype", "params", "id", "description", "encoding", "has_id", "has_description", "header_start", "body_start", "end", "lines", "md5", "has_md5", "disposition", "disposition_params", "language", "location", "has_location", "parts", "envelope", "message", "has_disposition", "has_language")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SUBTYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    HAS_ID_FIELD_NUMBER: _ClassVar[int]
    HAS_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    HEADER_START_FIELD_NUMBER: _ClassVar[int]
    BODY_START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    MD5_FIELD_NUMBER: _ClassVar[int]
    HAS_MD5_FIELD_NUMBER: _ClassVar[int]
    DISPOSITION_FIELD_NUMBER: _ClassVar[int]
    DISPOSITION_PARAMS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    HAS_LOCATION_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HAS_DISPOSITION_FIELD_NUMBER: _ClassVar[int]
    HAS_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    type: bytes
    subtype: bytes
    params: _containers.RepeatedCompositeFieldContainer[Param]
    id: bytes
    description: bytes
    encoding: bytes
    has_id: bool
    has_description: bool
    header_start: int
    body_start: int
    end: int
    lines: int
    md5: bytes
    has_md5: bool
    disposition: bytes
    disposition_params: _containers.RepeatedCompositeFieldContainer[Param]
    language: _containers.RepeatedScalarFieldContainer[bytes]
    location: bytes
    has_location: bool
    parts: _containers.RepeatedCompositeFieldContainer[MimePart]
    envelope: Envelope
    message: MimePart
    has_disposition: bool
    has_language: bool
    def __init__(self, type: _Optional[bytes] = ..., subtype: _Optional[bytes] = ..., params: _Optional[_Iterable[_Union[Param, _Mapping]]] = ..., id: _Optional[bytes] = ..., description: _Optional[bytes] = ..., encoding: _Optional[bytes] = ..., has_id: _Optional[bool] = ..., has_description: _Optional[bool] = ..., header_start: _Optional[int] = ..., body_start: _Optional[int] = ..., end: _Optional[int] = ..., lines: _Optional[int] = ..., md5: _Optional[bytes] = ..., has_md5: _Optional[bool] = ..., disposition: _Optional[bytes] = ..., disposition_params: _Optional[_Iterable[_Union[Param, _Mapping]]] = ..., language: _Optional[_Iterable[bytes]] = ..., location: _Optional[bytes] = ..., has_location: _Optional[bool] = ..., parts: _Optional[_Iterable[_Union[MimePart, _Mapping]]] = ..., envelope: _Optional[_Union[Envelope, _Mapping]] = ..., message: _Optional[_Union[MimePart, _Mapping]] = ..., has_disposition: _Optional[bool] = ..., has_language: _Optional[bool] = ...) -> None: ...

class MessageStructure(_message.Message):
    __slots__ = ("envelope", "body")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    body: MimePart
    def __init__(self, envelope: _Optional[_Union[Envelope, _Mapping]] = ..., body: _Optional[_Union[MimePart, _Mapping]] = ...) -> None: ...

class MailboxCreated(_message.Message):
    __slots__ = ("mailbox_id", "name", "uidvalidity", "special_use", "subscribed")
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UIDVALIDITY_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_USE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: int
    name: str
    uidvalidity: int
    special_use: SpecialUse
    subscribed: bool
    def __init__(self, mailbox_id: _Optional[int] = ..., name: _Optional[str] = ..., uidvalidity: _Optional[int] = ..., special_use: _Optional[_Union[SpecialUse, str]] = ..., subscribed: _Optional[bool] = ...) -> None: ...

class MailboxRenamed(_message.Message):
    __slots__ = ("mailbox_id", "name", "uidvalidity")
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UIDVALIDITY_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: int
    name: str
    uidvalidity: int
    def __init__(self, mailbox_id: _Optional[int] = ..., name: _Optional[str] = ..., uidvalidity: _Optional[int] = ...) -> None: ...

class MailboxDeleted(_message.Message):
    __slots__ = ("mailbox_id",)
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: int
    def __init__(self, mailbox_id: _Optional[int] = ...) -> None: ...

class MailboxSubscription(_message.Message):
    __slots__ = ("name", "subscribed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    name: str
    subscribed: bool
    def __init__(self, name: _Optional[str] = ..., subscribed: _Optional[bool] = ...) -> None: ...

class MailboxSpecialUse(_message.Message):
    __slots__ = ("mailbox_id", "special_use")
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_USE_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: int
    special_use: SpecialUse
    def __init__(self, mailbox_id: _Optional[int] = ..., special_use: _Optional[_Union[SpecialUse, str]] = ...) -> None: ...

class Origin(_message.Message):
    __slots__ = ("kind", "remote_ip", "helo", "mail_from", "rcpt_to", "authentication_results", "verdict", "source", "handoff_id", "source_lf", "junk")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REMOTE_IP_FIELD_NUMBER: _ClassVar[int]
    HELO_FIELD_NUMBER: _ClassVar[int]
    MAIL_FROM_FIELD_NUMBER: _ClassVar[int]
    RCPT_TO_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATION_RESULTS_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_LF_FIELD_NUMBER: _ClassVar[int]
    JUNK_FIELD_NUMBER: _ClassVar[int]
    kind: str
    remote_ip: str
    helo: str
    mail_from: str
    rcpt_to: _containers.RepeatedScalarFieldContainer[str]
    authentication_results: str
    verdict: str
    source: str
    handoff_id: str
    source_lf: bool
    junk: JunkVerdict
    def __init__(self, kind: _Optional[str] = ..., remote_ip: _Optional[str] = ..., helo: _Optional[str] = ..., mail_from: _Optional[str] = ..., rcpt_to: _Optional[_Iterable[str]] = ..., authentication_results: _Optional[str] = ..., verdict: _Optional[str] = ..., source: _Optional[str] = ..., handoff_id: _Optional[str] = ..., source_lf: _Optional[bool] = ..., junk: _Optional[_Union[JunkVerdict, _Mapping]] = ...) -> None: ...

class JunkVerdict(_message.Message):
    __slots__ = ("accept", "method", "score", "threshold", "jitter", "ham_words", "spam_words", "reasons", "mailbox")
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    HAM_WORDS_FIELD_NUMBER: _ClassVar[int]
    SPAM_WORDS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_FIELD_NUMBER: _ClassVar[int]
    accept: bool
    method: str
    score: float
    threshold: float
    jitter: float
    ham_words: _containers.RepeatedScalarFieldContainer[str]
    spam_words: _containers.RepeatedScalarFieldContainer[str]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    mailbox: str
    def __init__(self, accept: _Optional[bool] = ..., method: _Optional[str] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., jitter: _Optional[float] = ..., ham_words: _Optional[_Iterable[str]] = ..., spam_words: _Optional[_Iterable[str]] = ..., reasons: _Optional[_Iterable[str]] = ..., mailbox: _Optional[str] = ...) -> None: ...

class JunkFeatures(_message.Message):
    __slots__ = ("words", "from_address", "from_domain", "from_org_domain", "from_validated", "dkim_domains", "spf_domain", "ip_nets", "sent_to", "destined_mailbox_id", "reject_key", "list_id")
    WORDS_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FROM_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    FROM_ORG_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    FROM_VALIDATED_FIELD_NUMBER: _ClassVar[int]
    DKIM_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    SPF_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    IP_NETS_FIELD_NUMBER: _ClassVar[int]
    SENT_TO_FIELD_NUMBER: _ClassVar[int]
    DESTINED_MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    REJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    LIST_ID_FIELD_NUMBER: _ClassVar[int]
    words: _containers.RepeatedScalarFieldContainer[str]
    from_address: str
    from_domain: str
    from_org_domain: str
    from_validated: bool
    dkim_domains: _containers.RepeatedScalarFieldContainer[str]
    spf_domain: str
    ip_nets: _containers.RepeatedScalarFieldContainer[str]
    sent_to: _containers.RepeatedScalarFieldContainer[str]
    destined_mailbox_id: int
    reject_key: bytes
    list_id: str
    def __init__(self, words: _Optional[_Iterable[str]] = ..., from_address: _Optional[str] = ..., from_domain: _Optional[str] = ..., from_org_domain: _Optional[str] = ..., from_validated: _Optional[bool] = ..., dkim_domains: _Optional[_Iterable[str]] = ..., spf_domain: _Optional[str] = ..., ip_nets: _Optional[_Iterable[str]] = ..., sent_to: _Optional[_Iterable[str]] = ..., destined_mailbox_id: _Optional[int] = ..., reject_key: _Optional[bytes] = ..., list_id: _Optional[str] = ...) -> None: ...

class MessageAdded(_message.Message):
    __slots__ = ("mailbox_id", "uid", "blob_id", "size", "internal_date", "internal_date_tz", "flags", "structure", "origin", "message_id_hash", "junk", "thread_id", "email_id", "thread_message_id", "thread_subject")
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_DATE_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_DATE_TZ_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    STRUCTURE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_HASH_FIELD_NUMBER: _ClassVar[int]
    JUNK_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: int
    uid: int
    blob_id: bytes
    size: int
    internal_date: int
    internal_date_tz: int
    flags: _containers.RepeatedScalarFieldContainer[str]
    structure: MessageStructure
    origin: Origin
    message_id_hash: bytes
    junk: JunkFeatures
    thread_id: int
    email_id: int
    thread_message_id: bytes
    thread_subject: str
    def __init__(self, mailbox_id: _Optional[int] = ..., uid: _Optional[int] = ..., blob_id: _Optional[bytes] = ..., size: _Optional[int] = ..., internal_date: _Optional[int] = ..., internal_date_tz: _Optional[int] = ..., flags: _Optional[_Iterable[str]] = ..., structure: _Optional[_Union[MessageStructure, _Mapping]] = ..., origin: _Optional[_Union[Origin, _Mapping]] = ..., message_id_hash: _Optional[bytes] = ..., junk: _Optional[_Union[JunkFeatures, _Mapping]] = ..., thread_id: _Optional[int] = ..., email_id: _Optional[int] = ..., thread_message_id: _Optional[bytes] = ..., thread_subject: _Optional[str] = ...) -> None: ...

class FlagsChanged(_message.Message):
    __slots__ = ("mailbox_id", "uids", "add", "remove", "replace")
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    UIDS_FIELD_NUMBER: _ClassVar[int]
    ADD_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: int
    uids: _containers.RepeatedScalarFieldContainer[int]
    add: _containers.RepeatedScalarFieldContainer[str]
    remove: _containers.RepeatedScalarFieldContainer[str]
    replace: bool
    def __init__(self, mailbox_id: _Optional[int] = ..., uids: _Optional[_Iterable[int]] = ..., add: _Optional[_Iterable[str]] = ..., remove: _Optional[_Iterable[str]] = ..., replace: _Optional[bool] = ...) -> None: ...

class RestoreRecorded(_message.Message):
    __slots__ = ("restore_id", "at_us", "mailbox", "flags_before", "created_mailbox_ids", "messages_back", "undoes")
    RESTORE_ID_FIELD_NUMBER: _ClassVar[int]
    AT_US_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_FIELD_NUMBER: _ClassVar[int]
    FLAGS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    CREATED_MAILBOX_IDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_BACK_FIELD_NUMBER: _ClassVar[int]
    UNDOES_FIELD_NUMBER: _ClassVar[int]
    restore_id: str
    at_us: int
    mailbox: str
    flags_before: _containers.RepeatedCompositeFieldContainer[RestoredFlags]
    created_mailbox_ids: _containers.RepeatedScalarFieldContainer[int]
    messages_back: int
    undoes: str
    def __init__(self, restore_id: _Optional[str] = ..., at_us: _Optional[int] = ..., mailbox: _Optional[str] = ..., flags_before: _Optional[_Iterable[_Union[RestoredFlags, _Mapping]]] = ..., created_mailbox_ids: _Optional[_Iterable[int]] = ..., messages_back: _Optional[int] = ..., undoes: _Optional[str] = ...) -> None: ...

class BlobsCollected(_message.Message):
    __slots__ = ("before_us", "blob_ids")
    BEFORE_US_FIELD_NUMBER: _ClassVar[int]
    BLOB_IDS_FIELD_NUMBER: _ClassVar[int]
    before_us: int
    blob_ids: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, before_us: _Optional[int] = ..., blob_ids: _Optional[_Iterable[bytes]] = ...) -> None: ...

class RestoredFlags(_message.Message):
    __slots__ = ("mailbox_id", "uid", "flags")
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: int
    uid: int
    flags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, mailbox_id: _Optional[int] = ..., uid: _Optional[int] = ..., flags: _Optional[_Iterable[str]] = ...) -> None: ...

class MessagesExpunged(_message.Message):
    __slots__ = ("mailbox_id", "uids")
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    UIDS_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: int
    uids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, mailbox_id: _Optional[int] = ..., uids: _Optional[_Iterable[int]] = ...) -> None: ...

class MessagesCopied(_message.Message):
    __slots__ = ("source_mailbox_id", "source_uids", "dest_mailbox_id", "dest_uids", "move", "add_flags", "remove_flags")
    SOURCE_MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_UIDS_FIELD_NUMBER: _ClassVar[int]
    DEST_MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    DEST_UIDS_FIELD_NUMBER: _ClassVar[int]
    MOVE_FIELD_NUMBER: _ClassVar[int]
    ADD_FLAGS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FLAGS_FIELD_NUMBER: _ClassVar[int]
    source_mailbox_id: int
    source_uids: _containers.RepeatedScalarFieldContainer[int]
    dest_mailbox_id: int
    dest_uids: _containers.RepeatedScalarFieldContainer[int]
    move: bool
    add_flags: _containers.RepeatedScalarFieldContainer[str]
    remove_flags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, source_mailbox_id: _Optional[int] = ..., source_uids: _Optional[_Iterable[int]] = ..., dest_mailbox_id: _Optional[int] = ..., dest_uids: _Optional[_Iterable[int]] = ..., move: _Optional[bool] = ..., add_flags: _Optional[_Iterable[str]] = ..., remove_flags: _Optional[_Iterable[str]] = ...) -> None: ...

class AccountSetting(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ScramCredentials(_message.Message):
    __slots__ = ("salt", "iterations", "stored_key", "server_key")
    SALT_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    STORED_KEY_FIELD_NUMBER: _ClassVar[int]
    SERVER_KEY_FIELD_NUMBER: _ClassVar[int]
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes
    def __init__(self, salt: _Optional[bytes] = ..., iterations: _Optional[int] = ..., stored_key: _Optional[bytes] = ..., server_key: _Optional[bytes] = ...) -> None: ...

class AccountCreated(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class AccountDeleted(_message.Message):
    __slots__ = ("name", "shred_after_us")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHRED_AFTER_US_FIELD_NUMBER: _ClassVar[int]
    name: str
    shred_after_us: int
    def __init__(self, name: _Optional[str] = ..., shred_after_us: _Optional[int] = ...) -> None: ...

class AccountUndeleted(_message.Message):
    __slots__ = ("name", "addresses")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    name: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ...) -> None: ...

class AccountShredded(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PasswordSet(_message.Message):
    __slots__ = ("account", "argon2id", "scram_sha256")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ARGON2ID_FIELD_NUMBER: _ClassVar[int]
    SCRAM_SHA256_FIELD_NUMBER: _ClassVar[int]
    account: str
    argon2id: str
    scram_sha256: ScramCredentials
    def __init__(self, account: _Optional[str] = ..., argon2id: _Optional[str] = ..., scram_sha256: _Optional[_Union[ScramCredentials, _Mapping]] = ...) -> None: ...

class AddressAdded(_message.Message):
    __slots__ = ("account", "address")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    account: str
    address: str
    def __init__(self, account: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class AddressRemoved(_message.Message):
    __slots__ = ("account", "address")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    account: str
    address: str
    def __init__(self, account: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class DomainAdded(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    def __init__(self, domain: _Optional[str] = ...) -> None: ...

class DomainRemoved(_message.Message):
    __slots__ = ("domain",)
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    domain: str
    def __init__(self, domain: _Optional[str] = ...) -> None: ...

class DkimSelector(_message.Message):
    __slots__ = ("domain", "selector", "algorithm", "private_key", "active")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_KEY_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    domain: str
    selector: str
    algorithm: str
    private_key: bytes
    active: bool
    def __init__(self, domain: _Optional[str] = ..., selector: _Optional[str] = ..., algorithm: _Optional[str] = ..., private_key: _Optional[bytes] = ..., active: _Optional[bool] = ...) -> None: ...

class OutboundQueued(_message.Message):
    __slots__ = ("id", "account", "mail_from", "rcpt_to", "blob_id", "size", "requiretls")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    MAIL_FROM_FIELD_NUMBER: _ClassVar[int]
    RCPT_TO_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REQUIRETLS_FIELD_NUMBER: _ClassVar[int]
    id: str
    account: str
    mail_from: str
    rcpt_to: _containers.RepeatedScalarFieldContainer[str]
    blob_id: bytes
    size: int
    requiretls: bool
    def __init__(self, id: _Optional[str] = ..., account: _Optional[str] = ..., mail_from: _Optional[str] = ..., rcpt_to: _Optional[_Iterable[str]] = ..., blob_id: _Optional[bytes] = ..., size: _Optional[int] = ..., requiretls: _Optional[bool] = ...) -> None: ...

class OutboundAttempt(_message.Message):
    __slots__ = ("id", "rcpt_to", "delivered", "permanent", "relay", "reply", "mx_host", "ip", "tls_policy", "tls", "attempt", "next_attempt", "delay_notice")
    ID_FIELD_NUMBER: _ClassVar[int]
    RCPT_TO_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    PERMANENT_FIELD_NUMBER: _ClassVar[int]
    RELAY_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    MX_HOST_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    TLS_POLICY_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DELAY_NOTICE_FIELD_NUMBER: _ClassVar[int]
    id: str
    rcpt_to: str
    delivered: bool
    permanent: bool
    relay: str
    reply: str
    mx_host: str
    ip: str
    tls_policy: str
    tls: str
    attempt: int
    next_attempt: float
    delay_notice: bool
    def __init__(self, id: _Optional[str] = ..., rcpt_to: _Optional[str] = ..., delivered: _Optional[bool] = ..., permanent: _Optional[bool] = ..., relay: _Optional[str] = ..., reply: _Optional[str] = ..., mx_host: _Optional[str] = ..., ip: _Optional[str] = ..., tls_policy: _Optional[str] = ..., tls: _Optional[str] = ..., attempt: _Optional[int] = ..., next_attempt: _Optional[float] = ..., delay_notice: _Optional[bool] = ...) -> None: ...

class OutboundHeld(_message.Message):
    __slots__ = ("id", "held")
    ID_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    id: str
    held: bool
    def __init__(self, id: _Optional[str] = ..., held: _Optional[bool] = ...) -> None: ...

class OutboundRetry(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class OutboundDropped(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class Suppressed(_message.Message):
    __slots__ = ("account", "address", "reason", "manual")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MANUAL_FIELD_NUMBER: _ClassVar[int]
    account: str
    address: str
    reason: str
    manual: bool
    def __init__(self, account: _Optional[str] = ..., address: _Optional[str] = ..., reason: _Optional[str] = ..., manual: _Optional[bool] = ...) -> None: ...

class Unsuppressed(_message.Message):
    __slots__ = ("account", "address")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    account: str
    address: str
    def __init__(self, account: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class MtaStsPolicy(_message.Message):
    __slots__ = ("domain", "policy_id", "mode", "max_age", "mx", "fetched_at")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_FIELD_NUMBER: _ClassVar[int]
    MX_FIELD_NUMBER: _ClassVar[int]
    FETCHED_AT_FIELD_NUMBER: _ClassVar[int]
    domain: str
    policy_id: str
    mode: str
    max_age: int
    mx: _containers.RepeatedScalarFieldContainer[str]
    fetched_at: float
    def __init__(self, domain: _Optional[str] = ..., policy_id: _Optional[str] = ..., mode: _Optional[str] = ..., max_age: _Optional[int] = ..., mx: _Optional[_Iterable[str]] = ..., fetched_at: _Optional[float] = ...) -> None: ...

class HandoffQueued(_message.Message):
    __slots__ = ("id", "account", "mailbox", "blob_id", "size", "origin", "delivery_key", "internal_date", "flags")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_KEY_FIELD_NUMBER: _ClassVar[int]
    INTERNAL_DATE_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    id: str
    account: str
    mailbox: str
    blob_id: bytes
    size: int
    origin: Origin
    delivery_key: bytes
    internal_date: int
    flags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., account: _Optional[str] = ..., mailbox: _Optional[str] = ..., blob_id: _Optional[bytes] = ..., size: _Optional[int] = ..., origin: _Optional[_Union[Origin, _Mapping]] = ..., delivery_key: _Optional[bytes] = ..., internal_date: _Optional[int] = ..., flags: _Optional[_Iterable[str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("mailbox_created", "mailbox_renamed", "mailbox_deleted", "mailbox_subscription", "message_added", "flags_changed", "messages_expunged", "messages_copied", "account_setting", "mailbox_special_use", "account_created", "account_deleted", "password_set", "address_added", "address_removed", "domain_added", "domain_removed", "dkim_selector", "outbound_queued", "outbound_attempt", "outbound_held", "outbound_retry", "outbound_dropped", "suppressed", "unsuppressed", "mta_sts_policy", "restore_recorded", "account_undeleted", "account_shredded", "blobs_collected", "admin_audit", "acme_account", "certificate_issued", "certificate_renewal", "handoff_queued", "webhook_queued", "webhook_attempt", "metadata_changed")
    MAILBOX_CREATED_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_RENAMED_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_DELETED_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ADDED_FIELD_NUMBER: _ClassVar[int]
    FLAGS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_EXPUNGED_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_COPIED_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_SETTING_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_SPECIAL_USE_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_CREATED_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_DELETED_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_SET_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_ADDED_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_ADDED_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_REMOVED_FIELD_NUMBER: _ClassVar[int]
    DKIM_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    OUTBOUND_QUEUED_FIELD_NUMBER: _ClassVar[int]
    OUTBOUND_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OUTBOUND_HELD_FIELD_NUMBER: _ClassVar[int]
    OUTBOUND_RETRY_FIELD_NUMBER: _ClassVar[int]
    OUTBOUND_DROPPED_FIELD_NUMBER: _ClassVar[int]
    SUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    UNSUPPRESSED_FIELD_NUMBER: _ClassVar[int]
    MTA_STS_POLICY_FIELD_NUMBER: _ClassVar[int]
    RESTORE_RECORDED_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_UNDELETED_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_SHREDDED_FIELD_NUMBER: _ClassVar[int]
    BLOBS_COLLECTED_FIELD_NUMBER: _ClassVar[int]
    ADMIN_AUDIT_FIELD_NUMBER: _ClassVar[int]
    ACME_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_ISSUED_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_RENEWAL_FIELD_NUMBER: _ClassVar[int]
    HANDOFF_QUEUED_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_QUEUED_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    METADATA_CHANGED_FIELD_NUMBER: _ClassVar[int]
    mailbox_created: MailboxCreated
    mailbox_renamed: MailboxRenamed
    mailbox_deleted: MailboxDeleted
    mailbox_subscription: MailboxSubscription
    message_added: MessageAdded
    flags_changed: FlagsChanged
    messages_expunged: MessagesExpunged
    messages_copied: MessagesCopied
    account_setting: AccountSetting
    mailbox_special_use: MailboxSpecialUse
    account_created: AccountCreated
    account_deleted: AccountDeleted
    password_set: PasswordSet
    address_added: AddressAdded
    address_removed: AddressRemoved
    domain_added: DomainAdded
    domain_removed: DomainRemoved
    dkim_selector: DkimSelector
    outbound_queued: OutboundQueued
    outbound_attempt: OutboundAttempt
    outbound_held: OutboundHeld
    outbound_retry: OutboundRetry
    outbound_dropped: OutboundDropped
    suppressed: Suppressed
    unsuppressed: Unsuppressed
    mta_sts_policy: MtaStsPolicy
    restore_recorded: RestoreRecorded
    account_undeleted: AccountUndeleted
    account_shredded: AccountShredded
    blobs_collected: BlobsCollected
    admin_audit: AdminAudit
    acme_account: AcmeAccount
    certificate_issued: CertificateIssued
    certificate_renewal: CertificateRenewal
    handoff_queued: HandoffQueued
    webhook_queued: WebhookQueued
    webhook_attempt: WebhookAttempt
    metadata_changed: MetadataChanged
    def __init__(self, mailbox_created: _Optional[_Union[MailboxCreated, _Mapping]] = ..., mailbox_renamed: _Optional[_Union[MailboxRenamed, _Mapping]] = ..., mailbox_deleted: _Optional[_Union[MailboxDeleted, _Mapping]] = ..., mailbox_subscription: _Optional[_Union[MailboxSubscription, _Mapping]] = ..., message_added: _Optional[_Union[MessageAdded, _Mapping]] = ..., flags_changed: _Optional[_Union[FlagsChanged, _Mapping]] = ..., messages_expunged: _Optional[_Union[MessagesExpunged, _Mapping]] = ..., messages_copied: _Optional[_Union[MessagesCopied, _Mapping]] = ..., account_setting: _Optional[_Union[AccountSetting, _Mapping]] = ..., mailbox_special_use: _Optional[_Union[MailboxSpecialUse, _Mapping]] = ..., account_created: _Optional[_Union[AccountCreated, _Mapping]] = ..., account_deleted: _Optional[_Union[AccountDeleted, _Mapping]] = ..., password_set: _Optional[_Union[PasswordSet, _Mapping]] = ..., address_added: _Optional[_Union[AddressAdded, _Mapping]] = ..., address_removed: _Optional[_Union[AddressRemoved, _Mapping]] = ..., domain_added: _Optional[_Union[DomainAdded, _Mapping]] = ..., domain_removed: _Optional[_Union[DomainRemoved, _Mapping]] = ..., dkim_selector: _Optional[_Union[DkimSelector, _Mapping]] = ..., outbound_queued: _Optional[_Union[OutboundQueued, _Mapping]] = ..., outbound_attempt: _Optional[_Union[OutboundAttempt, _Mapping]] = ..., outbound_held: _Optional[_Union[OutboundHeld, _Mapping]] = ..., outbound_retry: _Optional[_Union[OutboundRetry, _Mapping]] = ..., outbound_dropped: _Optional[_Union[OutboundDropped, _Mapping]] = ..., suppressed: _Optional[_Union[Suppressed, _Mapping]] = ..., unsuppressed: _Optional[_Union[Unsuppressed, _Mapping]] = ..., mta_sts_policy: _Optional[_Union[MtaStsPolicy, _Mapping]] = ..., restore_recorded: _Optional[_Union[RestoreRecorded, _Mapping]] = ..., account_undeleted: _Optional[_Union[AccountUndeleted, _Mapping]] = ..., account_shredded: _Optional[_Union[AccountShredded, _Mapping]] = ..., blobs_collected: _Optional[_Union[BlobsCollected, _Mapping]] = ..., admin_audit: _Optional[_Union[AdminAudit, _Mapping]] = ..., acme_account: _Optional[_Union[AcmeAccount, _Mapping]] = ..., certificate_issued: _Optional[_Union[CertificateIssued, _Mapping]] = ..., certificate_renewal: _Optional[_Union[CertificateRenewal, _Mapping]] = ..., handoff_queued: _Optional[_Union[HandoffQueued, _Mapping]] = ..., webhook_queued: _Optional[_Union[WebhookQueued, _Mapping]] = ..., webhook_attempt: _Optional[_Union[WebhookAttempt, _Mapping]] = ..., metadata_changed: _Optional[_Union[MetadataChanged, _Mapping]] = ...) -> None: ...

class MetadataChanged(_message.Message):
    __slots__ = ("mailbox_id", "entries")
    MAILBOX_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    mailbox_id: int
    entries: _containers.RepeatedCompositeFieldContainer[MetadataEntry]
    def __init__(self, mailbox_id: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[MetadataEntry, _Mapping]]] = ...) -> None: ...

class MetadataEntry(_message.Message):
    __slots__ = ("name", "value", "remove")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: bytes
    remove: bool
    def __init__(self, name: _Optional[str] = ..., value: _Optional[bytes] = ..., remove: _Optional[bool] = ...) -> None: ...

class AcmeAccount(_message.Message):
    __slots__ = ("directory", "key_pem", "uri")
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    directory: str
    key_pem: bytes
    uri: str
    def __init__(self, directory: _Optional[str] = ..., key_pem: _Optional[bytes] = ..., uri: _Optional[str] = ...) -> None: ...

class CertificateIssued(_message.Message):
    __slots__ = ("names", "fullchain_pem", "key_pem", "not_after_us", "renew_after_us", "directory", "serial")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    FULLCHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_US_FIELD_NUMBER: _ClassVar[int]
    RENEW_AFTER_US_FIELD_NUMBER: _ClassVar[int]
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    fullchain_pem: bytes
    key_pem: bytes
    not_after_us: int
    renew_after_us: int
    directory: str
    serial: str
    def __init__(self, names: _Optional[_Iterable[str]] = ..., fullchain_pem: _Optional[bytes] = ..., key_pem: _Optional[bytes] = ..., not_after_us: _Optional[int] = ..., renew_after_us: _Optional[int] = ..., directory: _Optional[str] = ..., serial: _Optional[str] = ...) -> None: ...

class CertificateRenewal(_message.Message):
    __slots__ = ("names", "serial", "renew_after_us")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    RENEW_AFTER_US_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    serial: str
    renew_after_us: int
    def __init__(self, names: _Optional[_Iterable[str]] = ..., serial: _Optional[str] = ..., renew_after_us: _Optional[int] = ...) -> None: ...

class AdminAudit(_message.Message):
    __slots__ = ("actor", "remote_ip", "command", "args_json", "result")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REMOTE_IP_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    actor: str
    remote_ip: str
    command: str
    args_json: str
    result: str
    def __init__(self, actor: _Optional[str] = ..., remote_ip: _Optional[str] = ..., command: _Optional[str] = ..., args_json: _Optional[str] = ..., result: _Optional[str] = ...) -> None: ...

class WebhookQueued(_message.Message):
    __slots__ = ("account", "url", "authorization", "event", "payload", "source_seq", "queue_id", "rcpt_to", "supersedes")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SEQ_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ID_FIELD_NUMBER: _ClassVar[int]
    RCPT_TO_FIELD_NUMBER: _ClassVar[int]
    SUPERSEDES_FIELD_NUMBER: _ClassVar[int]
    account: str
    url: str
    authorization: str
    event: str
    payload: str
    source_seq: int
    queue_id: str
    rcpt_to: str
    supersedes: int
    def __init__(self, account: _Optional[str] = ..., url: _Optional[str] = ..., authorization: _Optional[str] = ..., event: _Optional[str] = ..., payload: _Optional[str] = ..., source_seq: _Optional[int] = ..., queue_id: _Optional[str] = ..., rcpt_to: _Optional[str] = ..., supersedes: _Optional[int] = ...) -> None: ...

class WebhookAttempt(_message.Message):
    __slots__ = ("hook", "attempt", "status", "error", "response", "duration_ms", "delivered", "next_attempt")
    HOOK_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    hook: int
    attempt: int
    status: int
    error: str
    response: str
    duration_ms: int
    delivered: bool
    next_attempt: float
    def __init__(self, hook: _Optional[int] = ..., attempt: _Optional[int] = ..., status: _Optional[int] = ..., error: _Optional[str] = ..., response: _Optional[str] = ..., duration_ms: _Optional[int] = ..., delivered: _Optional[bool] = ..., next_attempt: _Optional[float] = ...) -> None: ...
