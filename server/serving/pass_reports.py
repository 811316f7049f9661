"""What the end of a forward pass tells: the model's health, the metrics of the pass and its
spans under the traced calls it carried. The batcher reports each pass here (see
bertserve.serving.batcher)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from bertserve.observability import metrics, telemetry

__all__ = ["FAILURES_BEFORE_UNHEALTHY", "PassHealth", "Reported", "observe_pass", "trace_pass"]

log = logging.getLogger(__name__)

#: Forward passes in a row that must fail before the model reports itself unhealthy (NOT_SERVING).
FAILURES_BEFORE_UNHEALTHY = 3


class Reported(Protocol):
    """A sequence of a pass, as reports see it."""

    @property
    def request(self) -> int: ...  # its call's number
    @property
    def cost(self) -> int: ...  # its tokens
    @property
    def enqueued_ns(self) -> int: ...  # when it was queued, in time.monotonic_ns()
    @property
    def trace_context(self) -> Any: ...  # its call's trace context, or None


class PassHealth:
    """Failing passes in a row: past FAILURES_BEFORE_UNHEALTHY the model is unhealthy until a pass
    succeeds; on_change hears each change."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures_in_a_row = 0
        self.on_change: Callable[[bool], None] = lambda healthy: None

    @property
    def healthy(self) -> bool:
        return self.failures_in_a_row < FAILURES_BEFORE_UNHEALTHY

    def passed(self, *, ok: bool) -> None:
        was_healthy = self.healthy
        self.failures_in_a_row = 0 if ok else self.failures_in_a_row + 1
        if self.healthy != was_healthy:
            if not self.healthy:
                log.error("model %r is unhealthy: its last %d passes failed", self.name, self.failures_in_a_row)
            else:
                log.info("model %r is healthy again: a pass succeeded", self.name)
            self.on_change(self.healthy)


def observe_pass(name: str, sequences: Sequence[Reported], started_ns: int, elapsed_ns: int) -> None:
    """A pass that succeeded, in the metrics: its time, size, tokens and each sequence's wait."""
    tokens = sum(s.cost for s in sequences)
    metrics.child(metrics.INFERENCE_SECONDS, name).observe(elapsed_ns / 1e9)
    metrics.child(metrics.PASS_SEQUENCES, name).observe(len(sequences))
    metrics.child(metrics.PASS_TOKENS, name).observe(tokens)
    metrics.child(metrics.TOKENS, name).inc(tokens)
    queue_seconds = metrics.child(metrics.QUEUE_SECONDS, name)
    for s in sequences:
        queue_seconds.observe((started_ns - s.enqueued_ns) / 1e9)


def trace_pass(
    name: str, pass_id: int, sequences: Sequence[Reported], started_ns: int, *, error: str | None = None
) -> None:
    """The pass's spans under each traced call with sequences in it (nothing when tracing is off)."""
    calls: dict[int, list[Reported]] = {}
    for s in sequences:
        if s.trace_context is not None:
            calls.setdefault(s.request, []).append(s)
    if not calls:
        return
    telemetry.record_pass(
        name,
        pass_id,
        started_ns,
        time.monotonic_ns(),
        sequences=len(sequences),
        tokens=sum(s.cost for s in sequences),
        calls=[(own[0].trace_context, min(s.enqueued_ns for s in own), len(own)) for own in calls.values()],
        error=error,
    )
