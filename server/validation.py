"""Validation errors as bertserve reports them, one line each with its path and the problem (such as
``models[0].max_wait_ms: expected a number, got '5'``), and a plugin's options checked so. Shared
by the configuration and the plugins, which check their ``options:`` as they load.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel

from bertserve.errors import ConfigError

__all__ = ["OptionsT", "describe", "parse_options"]

OptionsT = TypeVar("OptionsT", bound=BaseModel)

_PHRASES = {
    "int_type": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a mapping",
    "list_type": "expected a list",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "string_pattern_mismatch": "not a valid value",
    "missing": "missing",
}


def describe(
    error: Any,
    *,
    prefix: str = "",
    known: type[BaseModel] | None = None,
    secret: bool = False,
    schema_at: Callable[[list[Any]], type[BaseModel] | None] = lambda loc: None,
) -> str:
    """One validation error as 'path: problem, got value' (without the value where it may be a
    secret). An unknown key lists the known ones: known's, or those of schema_at(the error's path)."""
    loc = list(error["loc"])
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    kind, ctx, got = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        schema = known or schema_at(loc)
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


def parse_options(schema: type[OptionsT], options: dict[str, Any], *, where: str) -> OptionsT:
    """A plugin's options as its schema types them; ConfigError naming each wrong one."""
    try:
        return schema.model_validate(options)
    except pydantic.ValidationError as e:
        raise ConfigError("\n".join(describe(error, prefix=where, known=schema) for error in e.errors())) from None
