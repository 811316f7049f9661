"""The asyncio event loop a server process runs on: uvloop where it is installed, or asyncio's own.

A call's cost on the server is mostly the event loop's: gRPC's completions, the handler's task
steps, the futures between the loop and the worker threads and the engine's link. uvloop (libuv,
in Cython) runs that machinery in compiled code where asyncio's loop runs it in Python. Measured
with `bench/frontend.py` on 2 cores (docs/performance.md): a front end with its engine took 11-15%
less CPU per call on uvloop; one process, whose loop shares the interpreter lock with its device
workers, measured no different.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from bertserve.errors import ConfigError

__all__ = ["resolve", "run", "uvloop_installed"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(choice: str) -> str:
    """The loop that server.event_loop names: auto is uvloop where installed, else asyncio."""
    if choice == "auto":
        return "uvloop" if uvloop_installed() else "asyncio"
    if choice == "uvloop" and not uvloop_installed():
        raise ConfigError("server.event_loop: uvloop is not installed (pip install uvloop); set auto or asyncio")
    return choice


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """Run main to its end on the loop that choice names (see resolve)."""
    loop = resolve(choice)
    if loop == "uvloop":
        import uvloop

        log.info("event loop: uvloop %s", uvloop.__version__)
        return uvloop.run(main)
    log.info("event loop: asyncio")
    return asyncio.run(main)
