"""Server configuration: a YAML file of models, with the basics overridable by env vars and flags.

Precedence, highest first: command-line flags, ``BERTSERVE_*`` environment variables, the
YAML file, built-in defaults. The file format::

    server:
      address: 0.0.0.0
      port: 50051
      log_level: info
      default_model: minilm          # empty model names in requests reach this one
      grace_period_s: 10             # how long SIGTERM waits for in-flight calls
      processes: 1                   # server processes sharing the port (see bertserve.supervisor)
      torch_threads: 0               # torch intra-op threads per process; 0: cores / processes
      tokenizer_threads: 2           # threads that tokenize off the event loop
      stream_max_in_flight: 64       # items of one EmbedStream in flight at once
    models:
      - name: minilm
        plugin: bert                 # an entry point of group bertserve.plugins
        source: sentence-transformers/all-MiniLM-L6-v2   # hub id, local dir, or pkg:<package>/<dir>
        device: auto                 # auto | cpu | cuda | cuda:N
        dtype: auto                  # auto | float32 | float16 | bfloat16
        pooling: mean                # default pooling: cls | mean | pooler
        max_input_tokens: 256        # optional cap under the model's own limit
        max_batch_tokens: 16384      # padded tokens (longest x count) in one forward pass
        max_batch_size: 64           # sequences in one forward pass
        max_queue_tokens: 262144     # queued tokens before calls are refused (RESOURCE_EXHAUSTED)
        max_queue_requests: 1024     # queued sequences before calls are refused
        max_wait_ms: 0               # under load, wait up to this long for a fuller batch; never when idle
        workers: 1                   # passes in flight at once
        max_context_bytes: 4194304   # UTF-8 bytes of one Answer context (4 MiB); longer ones are refused
        pass_overhead_tokens: 32     # a pass's fixed cost in padded tokens: raise on GPUs for bigger batches
        allow_pickle: false          # true also loads pickle (.bin) weights; safetensors only otherwise
        options:                     # plugin extras; the transformers-backed plugins take these:
          onednn_linear: true        # float32, bfloat16 on CPU: linear layers on oneDNN, checked at load
          pack_row_tokens: 64        # tokens per row when short sequences share rows of a pass
          compile: false             # torch.compile the encoder, checked against eager at load (bertserve.compiling)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from bertserve.api import ModelSpec, Pooling
from bertserve.errors import ConfigError

__all__ = ["DEFAULT_CONFIG", "ServerConfig", "load_config"]

DEFAULT_CONFIG = "default_config.yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class ServerConfig:
    address: str = "0.0.0.0"
    port: int = 50051
    log_level: str = "info"
    default_model: str = ""
    grace_period_s: float = 10.0
    processes: int = 1  # server processes sharing the port; the kernel spreads connections over them
    torch_threads: int = 0  # torch intra-op threads per process; 0: the cores split between the processes
    tokenizer_threads: int = 2  # the pool that tokenizes and decodes answers off the event loop
    stream_max_in_flight: int = 64  # items of one EmbedStream being worked on at once
    models: tuple[ModelSpec, ...] = field(default_factory=tuple)

    @property
    def bind(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


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
    config = _parse(raw)

    basics: dict[str, Any] = {k: env[v] for k, v in _ENV.items() if env.get(v)}
    basics.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for number in ("port", "processes"):
        if number in basics:
            try:
                basics[number] = int(basics[number])
            except ValueError:
                raise ConfigError(f"{number} {basics[number]!r} is not a number") from None
    return _check(replace(config, **basics))


def _parse(raw: dict[str, Any]) -> ServerConfig:
    server = raw.get("server") or {}
    known = {f.name for f in fields(ServerConfig)} - {"models"}
    unknown = set(server) - known
    if unknown:
        raise ConfigError(f"unknown server setting(s) {sorted(unknown)}; known: {sorted(known)}")
    models = raw.get("models") or []
    if not isinstance(models, list):
        raise ConfigError("'models' must be a list")
    return ServerConfig(**server, models=tuple(_model_spec(i, m) for i, m in enumerate(models)))


_SPEC_FIELDS = {f.name for f in fields(ModelSpec)} - {"default_pooling"}


def _model_spec(index: int, raw: Any) -> ModelSpec:
    if not isinstance(raw, dict) or "name" not in raw or "plugin" not in raw:
        raise ConfigError(f"models[{index}] needs at least 'name' and 'plugin'")
    raw = dict(raw)
    pooling = raw.pop("pooling", None)
    unknown = set(raw) - _SPEC_FIELDS
    if unknown:
        raise ConfigError(f"models[{index}] ({raw['name']}): unknown setting(s) {sorted(unknown)}")
    try:
        default_pooling = Pooling(pooling) if pooling else None
    except ValueError:
        raise ConfigError(f"models[{index}] ({raw['name']}): pooling {pooling!r} is not cls, mean or pooler") from None
    raw.setdefault("source", "")
    spec = ModelSpec(**raw, default_pooling=default_pooling)
    for limit in (
        "max_batch_tokens",
        "max_batch_size",
        "max_queue_tokens",
        "max_queue_requests",
        "workers",
        "max_context_bytes",
    ):
        if not isinstance(getattr(spec, limit), int) or getattr(spec, limit) < 1:
            raise ConfigError(f"models[{index}] ({spec.name}): {limit} must be a whole number of at least 1")
    return spec


def _check(config: ServerConfig) -> ServerConfig:
    if config.log_level.lower() not in _LOG_LEVELS:
        raise ConfigError(f"log_level {config.log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
    if config.tokenizer_threads < 1 or config.stream_max_in_flight < 1 or config.torch_threads < 0:
        raise ConfigError("tokenizer_threads and stream_max_in_flight must be at least 1, torch_threads at least 0")
    if not isinstance(config.processes, int) or config.processes < 1:
        raise ConfigError(f"processes {config.processes!r} must be a whole number of at least 1")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port {config.port} is out of range")
    names = [m.name for m in config.models]
    for name in names:
        if not _NAME.match(name):
            raise ConfigError(f"model name {name!r}: use letters, digits, '.', '_' and '-'")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"model names must be unique; repeated: {duplicates}")
    if not names:
        raise ConfigError("config lists no models")
    if config.default_model and config.default_model not in names:
        raise ConfigError(f"default_model {config.default_model!r} is not among the models {names}")
    return replace(config, log_level=config.log_level.lower(), default_model=config.default_model or names[0])
