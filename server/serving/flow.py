"""What every flow does, written once: the model held for the call, its capability checked, the
texts checked, tokenization timed, the reply sized before the model runs, the passes' usage
counted. A flow module holds only what is particular to its head: its checks, the operation it
runs and how it turns raw outputs into results.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from bertserve.api import Capability, EncoderPlugin, Encoding, ModelInfo, ModelSpec
from bertserve.domain import CallLimits, Usage, UsageMeter
from bertserve.errors import InvalidRequest
from bertserve.ops import Completed, Op
from bertserve.serving.model_host import ModelHost
from bertserve.serving.replies import check_reply_size
from bertserve.serving.router import Router

__all__ = ["Call", "Flow", "Query", "Work", "check_pairs", "check_texts", "run_flow"]

Q = TypeVar("Q", bound="Query")
T = TypeVar("T")
R = TypeVar("R")


class Query(Protocol):
    """A request of the domain: each names its model ("" for the default)."""

    @property
    def model(self) -> str: ...


@dataclass(frozen=True)
class Call:
    """What a call brings besides its query: its deadline and the limit on its reply."""

    deadline: float | None = None  # a time.monotonic() value, or None
    max_reply_bytes: int = CallLimits.max_reply_bytes


class Work:
    """One call's work on the model that serves it."""

    def __init__(self, host: ModelHost, info: ModelInfo, call: Call) -> None:
        self.host, self.info, self.call = host, info, call
        self.meter = UsageMeter()

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def spec(self) -> ModelSpec:
        return self.host.spec

    @property
    def plugin(self) -> EncoderPlugin:
        return self.host.plugin

    async def off_loop(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work (postprocessing, span search) on the tokenizer pool."""
        return await self.host.off_loop(fn, *args, **kwargs)

    async def tokenize(
        self, texts: Sequence[str], *, pairs: Sequence[str] | None = None, truncate: bool
    ) -> list[Encoding]:
        """The texts as the model takes them (see ModelHost.tokenize_inputs), the time counted."""
        return await self.timed(self.host.tokenize_inputs(texts, pairs=pairs, truncate=truncate))

    async def timed(self, tokenizing: Awaitable[T]) -> T:
        """Await tokenizing work, its time counted as the call's tokenization."""
        started = time.monotonic_ns()
        try:
            return await tokenizing
        finally:
            self.meter.tokenization_ns += time.monotonic_ns() - started

    def check_reply(self, size: int, inputs: int, or_else: str = "") -> None:
        """Refuse the call now when its reply, of about size bytes, would not fit the send limit."""
        check_reply_size(size, self.call.max_reply_bytes, inputs, or_else)

    async def run(self, op: Op[R], encodings: Sequence[Encoding]) -> list[Completed[R]]:
        """The encodings through the model's batcher under the call's deadline; their passes counted."""
        results = await self.host.run(op, encodings, deadline=self.call.deadline)
        self.meter.add(results)
        return results

    def usage(self, tokens: int) -> Usage:
        return self.meter.usage(tokens=tokens)


@dataclass(frozen=True)
class Flow(Generic[Q, T]):
    """A flow: the capability it needs and its body, given the call's work on the model."""

    capability: Capability
    body: Callable[[Work, Q], Awaitable[T]]


async def run_flow(router: Router, flow: Flow[Q, T], query: Q, call: Call) -> T:
    """Run a flow on the model the query names, held for the whole call (drains wait for it)."""
    with router.use(query.model) as host:
        return await flow.body(Work(host, host.require(flow.capability), call), query)


def check_texts(texts: Sequence[str], what: str = "input", *, blank_allowed: bool = False) -> None:
    """At least one text, and (unless blank_allowed) none empty or only spaces."""
    if not texts:
        raise InvalidRequest(f"{what}s is empty: send at least one {_noun(what)}")
    if not blank_allowed:
        for i, text in enumerate(texts):
            if not text or text.isspace():  # (strip() would copy a megabyte input to learn this)
                raise InvalidRequest(f"{what} {i} is empty")


def check_pairs(inputs: Sequence[str], pairs: Sequence[str] | None, *, blank_allowed: bool = False) -> None:
    """Second segments, when sent: one per input and (unless blank_allowed) none empty."""
    if pairs is None:
        return
    if len(pairs) != len(inputs):
        raise InvalidRequest(f"pairs has {len(pairs)} entries for {len(inputs)} inputs: send none or one per input")
    if not blank_allowed:
        for i, text in enumerate(pairs):
            if not text or text.isspace():
                raise InvalidRequest(f"pair {i} is empty")


def _noun(what: str) -> str:
    return "text" if what == "input" else what
