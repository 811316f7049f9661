"""Validation errors as the configuration reports them: one line each, its path and the problem,
such as ``models[0].max_wait_ms: expected a number, got '5'``."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

from bertserve import validation

from .schema import AdminSettings, AuthSettings, FileSettings, ModelSettings, ServerSettings, TlsSettings

__all__ = ["describe"]


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


describe = functools.partial(validation.describe, schema_at=_schema_at)
