"""Request ids: one per call, taken from the caller's ``x-request-id`` metadata or made up.

The id of the call being served is in :data:`current` (a context variable: each call runs in
its own task), so that the access log, error messages and fault logs all name the same one.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable
from contextvars import ContextVar

__all__ = ["HEADER", "current", "from_metadata", "new"]

HEADER = "x-request-id"

#: The request id of the call being served ("" outside a call).
current: ContextVar[str] = ContextVar("bertserve_request_id", default="")

# What a caller's id may look like: short, printable, no spaces (it is logged and echoed back).
_ACCEPTABLE = re.compile(r"^[\x21-\x7e]{1,128}$")


#: The ids' own generator, seeded from the OS once per process (and again in a forked child), not
#: per id: os.urandom lets go of the interpreter lock, and on a loaded server a device worker takes
#: it, so the event loop waited for it back once a call. An id is unique, not secret (it is logged
#: and echoed back), and no other code's seed touches this generator.
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)


def new() -> str:
    """16 random hex digits (what a UUID4's first half held, without making the UUID)."""
    return f"{_random.getrandbits(64):016x}"


def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The caller's id when it sent an acceptable one, else a new one."""
    for key, value in metadata or ():
        if key == HEADER and isinstance(value, str) and _ACCEPTABLE.match(value):
            return value
    return new()
