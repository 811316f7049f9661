"""Server configuration: one typed schema for the YAML file, the environment and the flags.

Precedence, highest first: command-line flags, ``BERTSERVE_*`` environment variables, the
YAML file, built-in defaults. Every value is checked against the schema below at start (types
are strict: ``"5"`` is no number), and an error names its path and the problem, such as
``models[0].max_wait_ms: expected a number, got '5'``. The README's configuration reference
lists the same fields (a test holds them together). A plugin's ``options`` are checked against
that plugin's own schema (``EncoderPlugin.options_schema``) by :func:`check_options`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from bertserve.api import ModelSpec, Pooling
from bertserve.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG",
    "AdminConfig",
    "AdminSettings",
    "ModelSettings",
    "ServerConfig",
    "ServerSettings",
    "check_options",
    "load_config",
    "parse_model_entry",
    "parse_options",
]

DEFAULT_CONFIG = "default_config.yaml"
#: The environment variable that may hold tokens, as a YAML list like a tokens file's.
TOKENS_ENV = "BERTSERVE_TOKENS"


@dataclass(frozen=True)
class TlsConfig:
    """PEM files of the gRPC port's certificate; a client CA turns on mutual TLS."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None


@dataclass(frozen=True)
class TokenGrant:
    """One bearer token, as the server keeps it: its name, the sha256 of the token, what it may do."""

    name: str
    digest: bytes
    scopes: tuple[str, ...]
    models: tuple[str, ...]


@dataclass(frozen=True)
class AuthConfig:
    """Token auth: on when tokens_file or the BERTSERVE_TOKENS variable lists tokens."""

    tokens_file: str | None = None
    protect_reflection: bool = False  # reflection needs a token too (health always stays open)
    tokens: tuple[TokenGrant, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)


@dataclass(frozen=True)
class AdminConfig:
    """Who may call the admin RPCs (LoadModel, UnloadModel, ReloadModel) and what their entries may ask."""

    allow_remote_without_auth: bool = False  # without tokens: admin calls from any peer, not only loopback
    allow_pickle: bool = False  # a run-time entry may set allow_pickle: true
    allowed_sources: tuple[str, ...] = ()  # local roots and hub ids (globs) a run-time source must match; (): any
    max_entry_bytes: int = 16 * 1024  # the largest run-time entry accepted


@dataclass(frozen=True)
class ServerConfig:
    """The server's settings, checked, with its models as plugins receive them."""

    address: str = "0.0.0.0"
    port: int = 50051
    log_level: str = "info"
    log_format: str = "text"  # text | json (one object per line)
    access_log: bool = True  # one line per call on the bertserve.access logger
    metrics_port: int | None = None  # Prometheus /metrics over HTTP on this port (0: any free one); None: off
    default_model: str = ""
    grace_period_s: float = 10.0
    drain_delay_s: float = 0.0  # on SIGTERM: NOT_SERVING first, still serving this long, then stop accepting
    load_retry_max_s: float = 60.0  # a load that could not reach its files is retried, the pause doubling up to this
    processes: int = 1  # server processes sharing the port; the kernel spreads connections over them
    torch_threads: int = 0  # torch intra-op threads per worker; 0: the process's cores split between its CPU workers
    tokenizer_threads: int = 2  # the pool that tokenizes and decodes answers off the event loop
    stream_max_in_flight: int = 64  # items of one EmbedStream being worked on at once
    max_concurrent_calls: int = 1024  # EncoderService calls in flight; more are refused with a retry hint
    max_input_bytes: int = 8 * 1024 * 1024  # one call's (or stream item's) request, checked before any work
    max_receive_message_bytes: int = 64 * 1024 * 1024  # gRPC's limit on a request message
    max_send_message_bytes: int = 64 * 1024 * 1024  # gRPC's limit on a reply; larger replies are refused up front
    tls: TlsConfig | None = None  # None: plaintext
    auth: AuthConfig = field(default_factory=AuthConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    models: tuple[ModelSpec, ...] = field(default_factory=tuple)

    @property
    def bind(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


# Defaults live once, on the run-time dataclasses.
_SERVER: dict[str, Any] = {f.name: f.default for f in fields(ServerConfig)}
_MODEL: dict[str, Any] = {f.name: f.default for f in fields(ModelSpec) if f.default is not dataclasses.MISSING}
_ADMIN: dict[str, Any] = {f.name: f.default for f in fields(AdminConfig)}

Whole = StrictInt
AtLeastOne = Annotated[StrictInt, Field(ge=1)]
NonNegative = Annotated[StrictFloat, Field(ge=0)]


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
    metrics_port: Annotated[Whole, Field(ge=0, le=65535)] | None = _SERVER["metrics_port"]
    default_model: StrictStr = _SERVER["default_model"]
    grace_period_s: NonNegative = _SERVER["grace_period_s"]
    drain_delay_s: NonNegative = _SERVER["drain_delay_s"]
    load_retry_max_s: NonNegative = _SERVER["load_retry_max_s"]
    processes: AtLeastOne = _SERVER["processes"]
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

    name: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
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
    max_wait_ms: NonNegative = _MODEL["max_wait_ms"]
    pass_overhead_tokens: NonNegative = _MODEL["pass_overhead_tokens"]
    workers: Annotated[Whole, Field(ge=0)] = _MODEL["workers"]
    max_pass_ms: NonNegative = _MODEL["max_pass_ms"]
    max_context_bytes: AtLeastOne = _MODEL["max_context_bytes"]
    options: dict[StrictStr, Any] = Field(default_factory=dict)

    def spec(self) -> ModelSpec:
        values = self.model_dump(exclude={"pooling"})
        return ModelSpec(**values, default_pooling=Pooling(self.pooling) if self.pooling else None)


_Tokens = pydantic.TypeAdapter(list[TokenSettings])


class _File(_Schema):
    server: ServerSettings = Field(default_factory=ServerSettings)
    models: list[ModelSettings] = Field(default_factory=list)


# Environment variables of the settings that also have flags; their text is read as YAML reads a
# scalar, so that BERTSERVE_PORT=50053 is a number and the schema checks it like the file's.
_ENV = {
    "address": "BERTSERVE_ADDRESS",
    "port": "BERTSERVE_PORT",
    "log_level": "BERTSERVE_LOG_LEVEL",
    "processes": "BERTSERVE_PROCESSES",
}


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> ServerConfig:
    """Read the YAML at path (``BERTSERVE_CONFIG``, else the packaged default), then apply env and overrides."""
    env = os.environ if environ is None else environ
    path = path or env.get("BERTSERVE_CONFIG")
    if path:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config {str(path)!r}: {e.strerror}") from None
    else:
        text = resources.files("bertserve").joinpath(DEFAULT_CONFIG).read_text()
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError("config must be a mapping with 'server' and 'models'")

    server = raw.get("server")
    basics = {key: _scalar(env[var]) for key, var in _ENV.items() if env.get(var)}
    basics.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if basics:
        raw = {**raw, "server": {**(server if isinstance(server, dict) else {}), **basics}}
    try:
        settings = _File.model_validate(raw)
    except pydantic.ValidationError as e:
        raise ConfigError("\n".join(_describe(error) for error in e.errors())) from None
    return _checked(settings, env)


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _checked(settings: _File, env: Mapping[str, str]) -> ServerConfig:
    names = [m.name for m in settings.models]
    if not names:
        raise ConfigError("models: the config lists no models")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"models: names must be unique; repeated: {repeated}")
    default = settings.server.default_model
    if default and default not in names:
        raise ConfigError(f"server.default_model: {default!r} is not among the models {names}")
    server = settings.server.model_dump(exclude={"tls", "auth", "admin"})
    admin = settings.server.admin
    tls = settings.server.tls
    if tls is not None:
        for key, path in tls.model_dump().items():
            if path is not None:
                _readable(f"server.tls.{key}", path)
    return ServerConfig(
        **{**server, "default_model": default or names[0]},
        tls=TlsConfig(**tls.model_dump()) if tls else None,
        auth=_auth(settings.server.auth, env),
        admin=AdminConfig(**{**admin.model_dump(), "allowed_sources": tuple(admin.allowed_sources)}),
        models=tuple(m.spec() for m in settings.models),
    )


def _readable(where: str, path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read {path!r}: {getattr(e, 'strerror', None) or e}") from None


def _auth(settings: AuthSettings, env: Mapping[str, str]) -> AuthConfig:
    """The tokens of the tokens file and of BERTSERVE_TOKENS (both YAML lists of TokenSettings)."""
    sources = []
    if settings.tokens_file:
        sources.append((f"{settings.tokens_file}", _readable("server.auth.tokens_file", settings.tokens_file)))
    if env.get(TOKENS_ENV):
        sources.append((TOKENS_ENV, env[TOKENS_ENV]))
    grants: list[TokenGrant] = []
    for where, text in sources:
        try:
            raw = yaml.safe_load(text) or []
        except yaml.YAMLError:
            raise ConfigError(f"{where}: not valid YAML (the tokens are not shown)") from None
        try:
            entries = _Tokens.validate_python(raw)
        except pydantic.ValidationError as e:  # never the token's value in the message
            raise ConfigError(
                "\n".join(_describe(error, prefix=where, known=TokenSettings, secret=True) for error in e.errors())
            ) from None
        grants += [
            TokenGrant(
                e.name,
                hashlib.sha256(e.token.get_secret_value().encode()).digest(),
                tuple(dict.fromkeys(e.scopes)),
                tuple(e.models),
            )
            for e in entries
        ]
    names = [g.name for g in grants]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"tokens: names must be unique; repeated: {repeated}")
    digests = [g.digest for g in grants]
    if len(set(digests)) != len(digests):
        raise ConfigError("tokens: two entries hold the same token")
    return AuthConfig(settings.tokens_file, settings.protect_reflection, tuple(grants))


def check_options(config: ServerConfig, plugins: dict[str, Any]) -> None:
    """Check each model's options against its plugin's schema (plugin name -> plugin class);
    a model whose plugin is missing is left to fail on its own, with the reason."""
    for i, spec in enumerate(config.models):
        schema = getattr(plugins.get(spec.plugin), "options_schema", None)
        if schema is not None:
            parse_options(schema, spec.options, where=f"models[{i}].options")


def parse_model_entry(text: str, plugins: dict[str, Any], *, max_bytes: int = _ADMIN["max_entry_bytes"]) -> ModelSpec:
    """One entry of ``models:`` given as YAML or JSON text (a model loaded at run time), checked as
    the file's entries are, its options by its plugin's schema; ConfigError naming each wrong field.

    The text comes from a caller, so it is held to max_bytes, and read without YAML's aliases and
    anchors (a few hundred bytes of nested aliases expand to millions of nodes) or deep nesting.
    """
    size = len(text.encode())
    if size > max_bytes:
        raise ConfigError(
            f"entry: {size} bytes, over the limit of {max_bytes} bytes for a model entry (server.admin.max_entry_bytes)"
        )
    try:
        raw = yaml.load(text, Loader=_EntryLoader)  # a SafeLoader, without aliases
    except yaml.YAMLError as e:
        raise ConfigError(f"entry: not valid YAML or JSON: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError("entry: expected a mapping such as {name: my-model, plugin: bert, source: ./my-model}")
    try:
        settings = ModelSettings.model_validate(raw)
    except pydantic.ValidationError as e:
        problems = (_describe(error, prefix="entry", known=ModelSettings) for error in e.errors())
        raise ConfigError("\n".join(problems)) from None
    spec = settings.spec()
    schema = getattr(plugins.get(spec.plugin), "options_schema", None)
    if schema is not None:
        parse_options(schema, spec.options, where="entry.options")
    return spec


_ENTRY_MAX_DEPTH = 16  # an entry is two levels deep (options); far more is an attack on the parser


class _EntryLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing aliases and anchors and nesting deeper than _ENTRY_MAX_DEPTH."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(f"entry: YAML aliases are not accepted in a model entry (*{event.anchor})")
        if getattr(event, "anchor", None):
            raise ConfigError(f"entry: YAML anchors are not accepted in a model entry (&{event.anchor})")
        if self._depth >= _ENTRY_MAX_DEPTH:
            raise ConfigError(f"entry: nested deeper than {_ENTRY_MAX_DEPTH} levels")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


OptionsT = TypeVar("OptionsT", bound=BaseModel)


def parse_options(schema: type[OptionsT], options: dict[str, Any], *, where: str) -> OptionsT:
    """A plugin's options as its schema types them; ConfigError naming each wrong one."""
    try:
        return schema.model_validate(options)
    except pydantic.ValidationError as e:
        raise ConfigError("\n".join(_describe(error, prefix=where, known=schema) for error in e.errors())) from None


_PHRASES = {
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "string_pattern_mismatch": "not a valid value",
    "missing": "missing",
}


def _describe(error: Any, *, prefix: str = "", known: type[BaseModel] | None = None, secret: bool = False) -> str:
    """One validation error as 'path: problem, got value' (without the value where it may be a secret)."""
    loc = list(error["loc"])
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        schema = known or _schema_at(loc)
        what = "option" if prefix.endswith("options") else "setting"
        return f"{path}: unknown {what}; known: {', '.join(schema.model_fields) if schema else ''}"
    if kind == "missing":
        return f"{path}: missing"
    if kind == "greater_than_equal":
        problem = f"must be at least {ctx['ge']}"
    elif kind == "less_than_equal":
        problem = f"must be at most {ctx['le']}"
    elif kind == "literal_error":
        problem = f"expected {ctx['expected']}"
    elif kind == "string_pattern_mismatch" and path.endswith(".name"):
        problem = "use letters, digits, '.', '_' and '-', starting with a letter or digit"
    elif kind == "string_pattern_mismatch" and path.endswith(".device"):
        problem = "expected auto, cpu, cuda or cuda:N"
    elif kind in ("string_too_short", "too_short") and path.endswith(".token"):
        problem = f"must be at least {ctx['min_length']} characters"
    else:
        problem = _PHRASES.get(kind, error["msg"])
    if secret:
        return f"{path}: {problem}"
    return f"{path}: {problem}, got {got!r}"


def _schema_at(loc: list[Any]) -> type[BaseModel] | None:
    if not loc[:-1]:
        return _File
    nested: dict[tuple[Any, ...], type[BaseModel]] = {
        ("server", "tls"): TlsSettings,
        ("server", "auth"): AuthSettings,
        ("server", "admin"): AdminSettings,
    }
    if tuple(loc[:2]) in nested and len(loc) == 3:
        return nested[tuple(loc[:2])]
    schemas: dict[str, type[BaseModel]] = {"server": ServerSettings, "models": ModelSettings}
    return schemas.get(loc[0])
