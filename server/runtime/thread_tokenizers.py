"""One copy of a tokenizer per thread.

A transformers fast tokenizer sets truncation and padding on its Rust tokenizer before every call,
and the Rust call then runs without the interpreter lock. Two threads sharing one tokenizer can
therefore tokenize with each other's settings (one Answer window's stride, another call's
truncation). Each thread gets its own copy instead, made on its first use.
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
        self._local = threading.local()
        self._local.tokenizer = tokenizer

    def get(self) -> T:
        """This thread's tokenizer."""
        tokenizer: T | None = getattr(self._local, "tokenizer", None)
        if tokenizer is None:
            tokenizer = self._local.tokenizer = copy.deepcopy(self.shared)
        return tokenizer
