"""A checkpoint's files fetched to a local directory, and its config, tokenizer and model read from it."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download
from transformers import AutoConfig, AutoTokenizer

from bertserve.api import ModelSpec
from bertserve.errors import ConfigError
from bertserve.runtime.heads import CheckpointHead
from bertserve.runtime.lazy_torch import torch
from bertserve.runtime.sources import resolve_source

__all__ = ["checkpoint_config", "fast_tokenizer", "local_source", "pretrained_model"]

# from_pretrained switches torch's process-wide default dtype while it builds a model, so two
# models loading at once on different threads can get each other's dtype: load one at a time.
_LOAD_LOCK = threading.Lock()
# What a checkpoint needs from the hub: configs, tokenizer files, safetensors weights.
_CHECKPOINT_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]


def local_source(spec: ModelSpec, default_source: str) -> str:
    """The model's source as a local directory, downloading a hub checkpoint's files first."""
    source = resolve_source(spec.source or default_source)
    if not Path(source).is_dir():
        patterns = [*_CHECKPOINT_FILES, "*.bin"] if spec.allow_pickle else _CHECKPOINT_FILES
        source = snapshot_download(source, revision=spec.revision, allow_patterns=patterns)
    return source


def checkpoint_config(source: str, common: dict[str, Any], *, model_types: frozenset[str], variant: str) -> Any:
    """The checkpoint's config; ConfigError unless its model type is one the variant serves, or
    where its config.json is there but broken (transformers raises OSError for it, which reads as a
    file not there yet, and would be tried again for ever)."""
    written = Path(source) / "config.json"
    if written.is_file():
        try:
            json.loads(written.read_bytes())
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise ConfigError(f"checkpoint {source!r}: its config.json is not valid JSON ({e})") from None
    config = AutoConfig.from_pretrained(source, **common)
    if config.model_type not in model_types:
        raise ConfigError(
            f"checkpoint {source!r} is a {config.model_type!r} model; plugin {variant!r} serves {sorted(model_types)}"
        )
    return config


def fast_tokenizer(source: str, common: dict[str, Any]) -> Any:
    """The checkpoint's tokenizer; ConfigError unless it is a fast one (character offsets need it)."""
    tokenizer = AutoTokenizer.from_pretrained(source, **common)
    if not tokenizer.is_fast:
        raise ConfigError(f"checkpoint {source!r} has no fast tokenizer; character offsets need one")
    return tokenizer


def pretrained_model(
    head: CheckpointHead, source: str, config: Any, dtype: torch.dtype, *, allow_pickle: bool, common: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The model with its head, in dtype, and from_pretrained's loading info (its missing keys).

    Safetensors weights only, unless allow_pickle; one model at a time in the process."""
    try:
        with _LOAD_LOCK:
            model, loading = head.auto_class.from_pretrained(
                source,
                config=config,
                dtype=dtype,
                use_safetensors=None if allow_pickle else True,
                output_loading_info=True,
                **common,
            )
    except OSError as e:
        if allow_pickle or "safetensors" not in str(e):
            raise
        raise ConfigError(
            f"checkpoint {source!r} has no safetensors weights; pickle weights load only with allow_pickle: true"
        ) from e
    return model, loading
