"""A model name held by one front-end process at a time, while a LoadModel of it is decided.

Each engine refuses a second model of a name it holds, but with one engine per device, two loads
of one name that name two devices reach two engines, and neither knows of the other's. So a
front end holds the name from its check of the name through the engine's answer, which comes once
every front end has applied the table that shows the model: the next holder, in any front-end
process, then finds it. The lock is an flock on a file of the server's private run directory: the
kernel lets it go when its holder's file closes or its process dies, so a front end killed while
it holds one leaves nothing held.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = ["NameLocks"]

#: How often a waiting front end tries the lock again (a load takes seconds; a poll keeps the wait
#: cancellable, where a thread blocked in flock could not be called off).
POLL_S = 0.02


class NameLocks:
    """Locks by model name, shared by the processes that use the same directory."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    @contextlib.asynccontextmanager
    async def held(self, name: str) -> AsyncIterator[None]:
        # Hashed: a name may hold any character, and be longer than a file name may.
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        fd = os.open(self._directory / f"model-{digest}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(POLL_S)
            yield
        finally:
            os.close(fd)  # which lets the lock go
