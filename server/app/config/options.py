"""A plugin's ``options:``, checked against that plugin's own schema (``EncoderPlugin.options_schema``)."""

from __future__ import annotations

from typing import Any

from bertserve.validation import OptionsT, parse_options

from .values import ServerConfig

__all__ = ["OptionsT", "check_options", "parse_options"]


def check_options(config: ServerConfig, plugins: dict[str, Any]) -> None:
    """Check each model's options against its plugin's schema (plugin name -> plugin class);
    a model whose plugin is missing is left to fail on its own, with the reason."""
    for i, spec in enumerate(config.models):
        schema = getattr(plugins.get(spec.plugin), "options_schema", None)
        if schema is not None:
            parse_options(schema, spec.options, where=f"models[{i}].options")
