"""One copy of a tokenizer per thread.

A transformers fast tokenizer sets truncation and padding on its Rust tokenizer before every call,
and the Rust call then runs without the interpreter lock. Two threads sharing one tokenizer can
therefore tokenize with each other's settings (one Answer window's stride, another call's
truncation). Each thread gets its own copy instead, made on its first use, or made ahead on a
thread of its own for a thread that must not wait for it (the event loop: a copy takes tens of
milliseconds).
"""

from __future__ import annotations

import copy
import threading
from typing import Generic, TypeVar

__all__ = ["ThreadTokenizers"]

T = TypeVar("T")


class ThreadTokenizers(Generic[T]):
    """Hands each thread its own copy of a tokenizer; the thread that made it keeps the original."""

    def __init__(self, tokenizer: T) -> None:
        #: The original: any thread may read what never changes (special tokens, limits); only the
        #: thread that made it calls it.
        self.shared = tokenizer
        self._copies: dict[int, T] = {threading.get_ident(): tokenizer}  # by thread
        self._making: set[int] = set()  # threads whose copy is being made ahead
        self._lock = threading.Lock()

    def get(self) -> T:
        """This thread's tokenizer."""
        ident = threading.get_ident()
        tokenizer = self._copies.get(ident)
        if tokenizer is None:
            tokenizer = self._copies[ident] = copy.deepcopy(self.shared)
        return tokenizer

    def ready_here(self) -> bool:
        """Whether this thread has its copy. If not, it is made on a thread of its own, and this
        thread may ask again later: get() would make it here, and keep this thread waiting."""
        ident = threading.get_ident()
        if ident in self._copies:
            return True
        with self._lock:
            if ident not in self._making:
                self._making.add(ident)
                threading.Thread(target=self._make_for, args=(ident,), name="tokenizer-copy", daemon=True).start()
        return False

    def _make_for(self, ident: int) -> None:
        made = copy.deepcopy(self.shared)
        self._copies.setdefault(ident, made)
