"""The typed schema of the YAML file: ``server:`` with its tls, auth and admin parts, each entry
of ``models:``, and the entries of a tokens file. Types are strict: ``"5"`` is no number."""

from __future__ import annotations

import dataclasses
from dataclasses import fields
from typing import Annotated, Any, Literal, cast

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic_core import PydanticCustomError

from bertserve.api import ModelSpec, Pooling

from .values import AdminConfig, ServerConfig

__all__ = [
    "AdminSettings",
    "AtLeastOne",
    "AuthSettings",
    "CountOrAuto",
    "FileSettings",
    "ModelSettings",
    "NonNegative",
    "Scope",
    "ServerSettings",
    "SwitchOrAuto",
    "TlsSettings",
    "TokenSettings",
    "Whole",
]

# Defaults live once, on the run-time dataclasses.
_SERVER: dict[str, Any] = {f.name: f.default for f in fields(ServerConfig)}
_MODEL: dict[str, Any] = {f.name: f.default for f in fields(ModelSpec) if f.default is not dataclasses.MISSING}
_ADMIN: dict[str, Any] = {f.name: f.default for f in fields(AdminConfig)}

Whole = StrictInt
AtLeastOne = Annotated[StrictInt, Field(ge=1)]
#: The longest a model's batcher lingers for a fuller pass under load: a linger is for a few
#: milliseconds, and a longer one would hold the calls that come seldom.
MAX_WAIT_MS = 1000.0

# Finite: an infinite wait or grace period is a call or a shutdown that never ends.
NonNegative = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]


def _count_or_auto(value: Any) -> int | str:
    if value == "auto" or (type(value) is int and value >= 1):
        return cast(int | str, value)
    raise PydanticCustomError("count_or_auto", "expected auto or a whole number of at least 1")


def _switch_or_auto(value: Any) -> bool | str:
    if value == "auto" or type(value) is bool:
        return cast(bool | str, value)
    raise PydanticCustomError("switch_or_auto", "expected auto, true or false")


#: A count the server may choose itself: ``auto``, or a whole number from 1.
CountOrAuto = Annotated[int | Literal["auto"], PlainValidator(_count_or_auto)]
#: A switch the server may set itself: ``auto``, true or false.
SwitchOrAuto = Annotated[bool | Literal["auto"], PlainValidator(_switch_or_auto)]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Schema):
    """``server.tls:``: PEM files, re-read on SIGHUP or when they change."""

    cert_file: StrictStr
    key_file: StrictStr
    client_ca_file: StrictStr | None = None


class AuthSettings(_Schema):
    """``server.auth:``. The tokens themselves are never in this file."""

    tokens_file: StrictStr | None = None
    protect_reflection: StrictBool = False


class AdminSettings(_Schema):
    """``server.admin:``: the model-management RPCs, closed to other machines unless tokens or this say so."""

    allow_remote_without_auth: StrictBool = _ADMIN["allow_remote_without_auth"]
    allow_pickle: StrictBool = _ADMIN["allow_pickle"]
    allowed_sources: list[Annotated[StrictStr, Field(min_length=1)]] = Field(default_factory=list)
    max_entry_bytes: AtLeastOne = _ADMIN["max_entry_bytes"]


Scope = Literal["inference", "admin"]


class TokenSettings(_Schema):
    """One entry of a tokens file (or of ``BERTSERVE_TOKENS``)."""

    name: Annotated[StrictStr, Field(min_length=1)]
    token: Annotated[pydantic.SecretStr, Field(min_length=16)]
    scopes: list[Scope] = Field(default_factory=lambda: [cast(Scope, "inference")], min_length=1)
    models: list[StrictStr] = Field(default_factory=lambda: ["*"], min_length=1)


class ServerSettings(_Schema):
    """``server:`` of the file."""

    address: StrictStr = _SERVER["address"]
    port: Annotated[Whole, Field(ge=0, le=65535)] = _SERVER["port"]
    log_level: Literal["debug", "info", "warning", "error"] = _SERVER["log_level"]
    log_format: Literal["text", "json"] = _SERVER["log_format"]
    access_log: StrictBool = _SERVER["access_log"]
    event_loop: Literal["auto", "uvloop", "asyncio"] = _SERVER["event_loop"]
    metrics_port: Annotated[Whole, Field(ge=0, le=65535)] | None = _SERVER["metrics_port"]
    default_model: StrictStr = _SERVER["default_model"]
    grace_period_s: NonNegative = _SERVER["grace_period_s"]
    drain_delay_s: NonNegative = _SERVER["drain_delay_s"]
    load_retry_max_s: NonNegative = _SERVER["load_retry_max_s"]
    processes: CountOrAuto = _SERVER["processes"]
    engine: SwitchOrAuto = _SERVER["engine"]
    engine_stall_timeout_s: Annotated[float, Field(gt=0)] = _SERVER["engine_stall_timeout_s"]
    torch_threads: Annotated[Whole, Field(ge=0)] = _SERVER["torch_threads"]
    tokenizer_threads: AtLeastOne = _SERVER["tokenizer_threads"]
    stream_max_in_flight: AtLeastOne = _SERVER["stream_max_in_flight"]
    max_concurrent_calls: AtLeastOne = _SERVER["max_concurrent_calls"]
    max_input_bytes: AtLeastOne = _SERVER["max_input_bytes"]
    max_receive_message_bytes: Annotated[StrictInt, Field(ge=1024)] = _SERVER["max_receive_message_bytes"]
    max_send_message_bytes: Annotated[StrictInt, Field(ge=1024)] = _SERVER["max_send_message_bytes"]
    tls: TlsSettings | None = None
    auth: AuthSettings = Field(default_factory=AuthSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)

    @pydantic.field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ModelSettings(_Schema):
    """One entry of ``models:``; what it becomes is a :class:`bertserve.api.ModelSpec`."""

    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=128)]
    plugin: StrictStr
    source: StrictStr = ""
    device: Annotated[StrictStr, Field(pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")] = _MODEL["device"]
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = _MODEL["dtype"]
    revision: StrictStr | None = _MODEL["revision"]
    pooling: Literal["cls", "mean", "pooler"] | None = None
    max_input_tokens: AtLeastOne | None = _MODEL["max_input_tokens"]
    allow_pickle: StrictBool = _MODEL["allow_pickle"]
    max_batch_tokens: AtLeastOne = _MODEL["max_batch_tokens"]
    max_batch_size: AtLeastOne = _MODEL["max_batch_size"]
    max_queue_tokens: AtLeastOne = _MODEL["max_queue_tokens"]
    max_queue_requests: AtLeastOne = _MODEL["max_queue_requests"]
    max_wait_ms: Annotated[NonNegative, Field(le=MAX_WAIT_MS)] = _MODEL["max_wait_ms"]
    pass_overhead_tokens: NonNegative = _MODEL["pass_overhead_tokens"]
    workers: Annotated[Whole, Field(ge=0)] = _MODEL["workers"]
    max_pass_ms: NonNegative = _MODEL["max_pass_ms"]
    max_context_bytes: AtLeastOne = _MODEL["max_context_bytes"]
    options: dict[StrictStr, Any] = Field(default_factory=dict)

    def spec(self) -> ModelSpec:
        values = self.model_dump(exclude={"pooling"})
        return ModelSpec(**values, default_pooling=Pooling(self.pooling) if self.pooling else None)


class FileSettings(_Schema):
    """The whole file: ``server:`` and ``models:``."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    models: list[ModelSettings] = Field(default_factory=list)
