"""The operations a model runs in its forward passes: frozen, typed, plain data.

An operation is what the batcher groups calls by (calls of equal operations share passes) and
what a model host runs; it holds enums and flags only, so it could cross a process boundary as
it is. Each operation names the type of its result per sequence, so the batcher's results are
typed from the call that submits to the flow that reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from bertserve.api import Head, Pooling

__all__ = ["Completed", "DevicePass", "EmbedOp", "Embedded", "HeadOp", "Op"]

R = TypeVar("R")


class Op(Generic[R]):
    """An operation whose result per sequence is an R."""

    __slots__ = ()


@dataclass(frozen=True)
class Embedded:
    """One sequence's embedding: its pooled vector and, when asked for, every token's."""

    pooled: np.ndarray  # [hidden] float32
    token_states: np.ndarray | None  # [tokens, hidden] float32


@dataclass(frozen=True)
class EmbedOp(Op[Embedded]):
    """Encode and pool."""

    pooling: Pooling
    with_token_states: bool


@dataclass(frozen=True)
class HeadOp(Op[np.ndarray]):
    """Run a head: its raw outputs per sequence (see EncoderPlugin.head_logits)."""

    head: Head


@dataclass(frozen=True)
class Completed(Generic[R]):
    """The result of one sequence and what it cost."""

    value: R
    queue_ns: int  # from submit to the start of its forward pass
    pass_id: int  # which forward pass carried it (passes are shared between requests)
    pass_ns: int  # how long that whole pass took


@dataclass(frozen=True)
class DevicePass(Generic[R]):
    """A forward pass as a batcher hands it to its device's workers: called on a worker thread.

    uncontended: no other call has wanted the model lately (a lone caller) and the pass holds all
    the work there is, so it may take the cores that the device's other workers leave idle (see
    bertserve.runtime.device_workers).
    """

    run: Callable[[], R]
    uncontended: bool

    def __call__(self) -> R:
        return self.run()
