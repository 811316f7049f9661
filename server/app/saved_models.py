"""The models an engine serves, kept on disk for the engine that replaces it.

An engine writes its models' specs here after every run-time change (LoadModel, UnloadModel,
ReloadModel) has ended, and an engine that the supervisor restarts after a crash or a wedge starts
from them instead of from the configuration's: the models loaded, unloaded or reloaded at run time
come back as they were. A change is written once it has ended, so that a load that kills the
engine is not tried again by every engine after it.

The file lives in the supervisor's run directory (mode 0700, this user's alone) and is pickled, as
the engine's model table is on its socket: both are specs that this server's own processes write
and read.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterable
from pathlib import Path

from bertserve.api import ModelSpec

__all__ = ["read_models", "write_models"]

log = logging.getLogger(__name__)


def write_models(path: Path, specs: Iterable[ModelSpec]) -> None:
    """Replace the file at path with specs, whole or not at all; a failure is logged, not raised
    (the engine serves on, and a restart would start from the last models written)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        temporary.write_bytes(pickle.dumps(list(specs), protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(temporary, path)
    except OSError as e:
        log.warning("could not keep the engine's models in %s for a restart: %s", path, e)
        temporary.unlink(missing_ok=True)


def read_models(path: Path) -> list[ModelSpec] | None:
    """The specs written at path, or None when none were (a first start) or they cannot be read."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("could not read the models kept in %s; starting from the configuration's: %s", path, e)
        return None
    try:
        specs = pickle.loads(data)
    except Exception as e:  # a file cut short: the configuration's models are the safe start
        log.warning("the models kept in %s are unreadable; starting from the configuration's: %s", path, e)
        return None
    if not isinstance(specs, list) or not all(isinstance(spec, ModelSpec) for spec in specs):
        log.warning("the models kept in %s are not a list of models; starting from the configuration's", path)
        return None
    return specs
