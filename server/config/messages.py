"""Validation errors as the configuration reports them: one line each, its path and the problem,
such as ``models[0].max_wait_ms: expected a number, got '5'``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .schema import AdminSettings, AuthSettings, FileSettings, ModelSettings, ServerSettings, TlsSettings

__all__ = ["describe"]

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


def describe(error: Any, *, prefix: str = "", known: type[BaseModel] | None = None, secret: bool = False) -> str:
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
        return FileSettings
    nested: dict[tuple[Any, ...], type[BaseModel]] = {
        ("server", "tls"): TlsSettings,
        ("server", "auth"): AuthSettings,
        ("server", "admin"): AdminSettings,
    }
    if tuple(loc[:2]) in nested and len(loc) == 3:
        return nested[tuple(loc[:2])]
    schemas: dict[str, type[BaseModel]] = {"server": ServerSettings, "models": ModelSettings}
    return schemas.get(loc[0])
