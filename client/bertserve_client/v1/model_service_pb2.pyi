import datetime

from bertserve_client.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_LOADING: _ClassVar[ModelState]
    MODEL_STATE_READY: _ClassVar[ModelState]
    MODEL_STATE_FAILED: _ClassVar[ModelState]

class Capability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAPABILITY_UNSPECIFIED: _ClassVar[Capability]
    CAPABILITY_TOKENIZE: _ClassVar[Capability]
    CAPABILITY_EMBED: _ClassVar[Capability]
    CAPABILITY_ANSWER: _ClassVar[Capability]
    CAPABILITY_FILL_MASK: _ClassVar[Capability]
    CAPABILITY_DETECT_REPLACED_TOKENS: _ClassVar[Capability]
    CAPABILITY_CLASSIFY: _ClassVar[Capability]
    CAPABILITY_RERANK: _ClassVar[Capability]
    CAPABILITY_CLASSIFY_TOKENS: _ClassVar[Capability]
    CAPABILITY_SIMILARITY: _ClassVar[Capability]
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_LOADING: ModelState
MODEL_STATE_READY: ModelState
MODEL_STATE_FAILED: ModelState
CAPABILITY_UNSPECIFIED: Capability
CAPABILITY_TOKENIZE: Capability
CAPABILITY_EMBED: Capability
CAPABILITY_ANSWER: Capability
CAPABILITY_FILL_MASK: Capability
CAPABILITY_DETECT_REPLACED_TOKENS: Capability
CAPABILITY_CLASSIFY: Capability
CAPABILITY_RERANK: Capability
CAPABILITY_CLASSIFY_TOKENS: Capability
CAPABILITY_SIMILARITY: Capability

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "server_version")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    server_version: str
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., server_version: _Optional[str] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: str
    def __init__(self, entry: _Optional[str] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ("drained_calls", "abandoned_calls")
    DRAINED_CALLS_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_CALLS_FIELD_NUMBER: _ClassVar[int]
    drained_calls: int
    abandoned_calls: int
    def __init__(self, drained_calls: _Optional[int] = ..., abandoned_calls: _Optional[int] = ...) -> None: ...

class ReloadModelRequest(_message.Message):
    __slots__ = ("name", "entry")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    name: str
    entry: str
    def __init__(self, name: _Optional[str] = ..., entry: _Optional[str] = ...) -> None: ...

class ReloadModelResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: Model
    def __init__(self, model: _Optional[_Union[Model, _Mapping]] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "plugin", "source", "devices", "dtype", "capabilities", "hidden_size", "max_input_tokens", "state", "failure_reason", "poolings", "default_pooling", "is_default", "load_attempts", "next_attempt_time", "labels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLUGIN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    POOLINGS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_POOLING_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    LOAD_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_TIME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    plugin: str
    source: str
    devices: _containers.RepeatedScalarFieldContainer[str]
    dtype: str
    capabilities: _containers.RepeatedScalarFieldContainer[Capability]
    hidden_size: int
    max_input_tokens: int
    state: ModelState
    failure_reason: str
    poolings: _containers.RepeatedScalarFieldContainer[_common_pb2.Pooling]
    default_pooling: _common_pb2.Pooling
    is_default: bool
    load_attempts: int
    next_attempt_time: _timestamp_pb2.Timestamp
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., plugin: _Optional[str] = ..., source: _Optional[str] = ..., devices: _Optional[_Iterable[str]] = ..., dtype: _Optional[str] = ..., capabilities: _Optional[_Iterable[_Union[Capability, str]]] = ..., hidden_size: _Optional[int] = ..., max_input_tokens: _Optional[int] = ..., state: _Optional[_Union[ModelState, str]] = ..., failure_reason: _Optional[str] = ..., poolings: _Optional[_Iterable[_Union[_common_pb2.Pooling, str]]] = ..., default_pooling: _Optional[_Union[_common_pb2.Pooling, str]] = ..., is_default: _Optional[bool] = ..., load_attempts: _Optional[int] = ..., next_attempt_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ...) -> None: ...
