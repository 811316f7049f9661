"""A plugin's ``options:``, checked against that plugin's own schema (``EncoderPlugin.options_schema``)."""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel

from bertserve.errors import ConfigError

from .messages import describe
from .values import ServerConfig

__all__ = ["OptionsT", "check_options", "parse_options"]

OptionsT = TypeVar("OptionsT", bound=BaseModel)


def check_options(config: ServerConfig, plugins: dict[str, Any]) -> None:
    """Check each model's options against its plugin's schema (plugin name -> plugin class);
    a model whose plugin is missing is left to fail on its own, with the reason."""
    for i, spec in enumerate(config.models):
        schema = getattr(plugins.get(spec.plugin), "options_schema", None)
        if schema is not None:
            parse_options(schema, spec.options, where=f"models[{i}].options")


def parse_options(schema: type[OptionsT], options: dict[str, Any], *, where: str) -> OptionsT:
    """A plugin's options as its schema types them; ConfigError naming each wrong one."""
    try:
        return schema.model_validate(options)
    except pydantic.ValidationError as e:
        raise ConfigError("\n".join(describe(error, prefix=where, known=schema) for error in e.errors())) from None
