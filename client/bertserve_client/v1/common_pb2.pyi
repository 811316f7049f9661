from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Pooling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POOLING_UNSPECIFIED: _ClassVar[Pooling]
    POOLING_CLS: _ClassVar[Pooling]
    POOLING_MEAN: _ClassVar[Pooling]
    POOLING_POOLER: _ClassVar[Pooling]

class OffsetUnit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OFFSET_UNIT_UNSPECIFIED: _ClassVar[OffsetUnit]
    OFFSET_UNIT_CODE_POINT: _ClassVar[OffsetUnit]
    OFFSET_UNIT_UTF16_CODE_UNIT: _ClassVar[OffsetUnit]
    OFFSET_UNIT_UTF8_BYTE: _ClassVar[OffsetUnit]
POOLING_UNSPECIFIED: Pooling
POOLING_CLS: Pooling
POOLING_MEAN: Pooling
POOLING_POOLER: Pooling
OFFSET_UNIT_UNSPECIFIED: OffsetUnit
OFFSET_UNIT_CODE_POINT: OffsetUnit
OFFSET_UNIT_UTF16_CODE_UNIT: OffsetUnit
OFFSET_UNIT_UTF8_BYTE: OffsetUnit

class Tensor(_message.Message):
    __slots__ = ("data", "shape")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, data: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("tokens", "queue_time_ns", "inference_time_ns", "tokenization_time_ns")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    TOKENIZATION_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    tokens: int
    queue_time_ns: int
    inference_time_ns: int
    tokenization_time_ns: int
    def __init__(self, tokens: _Optional[int] = ..., queue_time_ns: _Optional[int] = ..., inference_time_ns: _Optional[int] = ..., tokenization_time_ns: _Optional[int] = ...) -> None: ...
