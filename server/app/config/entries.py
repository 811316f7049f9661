"""One entry of ``models:`` sent as text by a caller, for a model loaded at run time."""

from __future__ import annotations

from typing import Any

import pydantic
import yaml

from bertserve.api import ModelSpec
from bertserve.errors import ConfigError

from .messages import describe
from .options import parse_options
from .schema import ModelSettings
from .values import AdminConfig

__all__ = ["parse_model_entry"]

_ENTRY_MAX_DEPTH = 16  # an entry is two levels deep (options); far more is an attack on the parser


def parse_model_entry(text: str, plugins: dict[str, Any], *, max_bytes: int = AdminConfig.max_entry_bytes) -> ModelSpec:
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
        problems = (describe(error, prefix="entry", known=ModelSettings) for error in e.errors())
        raise ConfigError("\n".join(problems)) from None
    spec = settings.spec()
    schema = getattr(plugins.get(spec.plugin), "options_schema", None)
    if schema is not None:
        parse_options(schema, spec.options, where="entry.options")
    return spec


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
