"""Request ids: one per call, taken from the caller's ``x-request-id`` metadata or made up.

The id of the call being served is in :data:`current` (a context variable: each call runs in
its own task), so that the access log, error messages and fault logs all name the same one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from contextvars import ContextVar

__all__ = ["HEADER", "current", "from_metadata", "new"]

HEADER = "x-request-id"

#: The request id of the call being served ("" outside a call).
current: ContextVar[str] = ContextVar("bertserve_request_id", default="")

# What a caller's id may look like: short, printable, no spaces (it is logged and echoed back).
_ACCEPTABLE = re.compile(r"^[\x21-\x7e]{1,128}$")


def new() -> str:
    """16 random hex digits (what a UUID4's first half held, without making the UUID)."""
    return os.urandom(8).hex()


def from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The caller's id when it sent an acceptable one, else a new one."""
    for key, value in metadata or ():
        if key == HEADER and isinstance(value, str) and _ACCEPTABLE.match(value):
            return value
    return new()
