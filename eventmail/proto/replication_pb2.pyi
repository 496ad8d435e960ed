from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RawRecord(_message.Message):
    __slots__ = ("seq", "time_us", "key_id", "nonce", "ciphertext", "chain")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_US_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time_us: int
    key_id: int
    nonce: bytes
    ciphertext: bytes
    chain: bytes
    def __init__(self, seq: _Optional[int] = ..., time_us: _Optional[int] = ..., key_id: _Optional[int] = ..., nonce: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ..., chain: _Optional[bytes] = ...) -> None: ...

class Epoch(_message.Message):
    __slots__ = ("number", "primary")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    number: int
    primary: str
    def __init__(self, number: _Optional[int] = ..., primary: _Optional[str] = ...) -> None: ...

class StreamPoints(_message.Message):
    __slots__ = ("stream", "seqs", "chains")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    SEQS_FIELD_NUMBER: _ClassVar[int]
    CHAINS_FIELD_NUMBER: _ClassVar[int]
    stream: str
    seqs: _containers.RepeatedScalarFieldContainer[int]
    chains: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, stream: _Optional[str] = ..., seqs: _Optional[_Iterable[int]] = ..., chains: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node", "epoch", "points")
    NODE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    node: str
    epoch: Epoch
    points: _containers.RepeatedCompositeFieldContainer[StreamPoints]
    def __init__(self, node: _Optional[str] = ..., epoch: _Optional[_Union[Epoch, _Mapping]] = ..., points: _Optional[_Iterable[_Union[StreamPoints, _Mapping]]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("stream", "seq")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    stream: str
    seq: int
    def __init__(self, stream: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class FollowRequest(_message.Message):
    __slots__ = ("hello", "ack")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ack: Ack
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class RecordBatch(_message.Message):
    __slots__ = ("stream", "records", "blobs")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    stream: str
    records: _containers.RepeatedCompositeFieldContainer[RawRecord]
    blobs: _containers.RepeatedCompositeFieldContainer[BlobFile]
    def __init__(self, stream: _Optional[str] = ..., records: _Optional[_Iterable[_Union[RawRecord, _Mapping]]] = ..., blobs: _Optional[_Iterable[_Union[BlobFile, _Mapping]]] = ...) -> None: ...

class BlobFile(_message.Message):
    __slots__ = ("stream", "blob_id", "data")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    BLOB_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stream: str
    blob_id: bytes
    data: bytes
    def __init__(self, stream: _Optional[str] = ..., blob_id: _Optional[bytes] = ..., data: _Optional[bytes] = ...) -> None: ...

class KeyringFile(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class StreamHead(_message.Message):
    __slots__ = ("stream", "seq", "chain", "time_us")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    TIME_US_FIELD_NUMBER: _ClassVar[int]
    stream: str
    seq: int
    chain: bytes
    time_us: int
    def __init__(self, stream: _Optional[str] = ..., seq: _Optional[int] = ..., chain: _Optional[bytes] = ..., time_us: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("epoch", "time_us", "heads")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    TIME_US_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    epoch: Epoch
    time_us: int
    heads: _containers.RepeatedCompositeFieldContainer[StreamHead]
    def __init__(self, epoch: _Optional[_Union[Epoch, _Mapping]] = ..., time_us: _Optional[int] = ..., heads: _Optional[_Iterable[_Union[StreamHead, _Mapping]]] = ...) -> None: ...

class Refused(_message.Message):
    __slots__ = ("reason", "epoch")
    REASON_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    reason: str
    epoch: Epoch
    def __init__(self, reason: _Optional[str] = ..., epoch: _Optional[_Union[Epoch, _Mapping]] = ...) -> None: ...

class FollowMessage(_message.Message):
    __slots__ = ("records", "blob", "keyring", "heartbeat", "refused")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    KEYRING_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    records: RecordBatch
    blob: BlobFile
    keyring: KeyringFile
    heartbeat: Heartbeat
    refused: Refused
    def __init__(self, records: _Optional[_Union[RecordBatch, _Mapping]] = ..., blob: _Optional[_Union[BlobFile, _Mapping]] = ..., keyring: _Optional[_Union[KeyringFile, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., refused: _Optional[_Union[Refused, _Mapping]] = ...) -> None: ...

class KeyringRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...
