"""Per-model dynamic batching: many small calls become few well-packed forward passes.

Work arrives as sequences (one Embed input, one Answer window), each with its own future.
One loop per model gives the requests that wait turns, in the order they came: it looks ahead
over the pending sequences of the operation of the request whose turn it is, taken in turns from
every request, splits them by length into the passes that cost least (bertserve.serving.packing: a fixed
cost per pass against padding, within the token budget of longest x count and the size cap), runs
the group holding that request's sequence on the model's worker thread, and resolves each future.
So a small call never waits for all of a large one: it goes in one of the next passes.
A lone request on an idle model goes straight through; requests that arrive while the device
is busy wait for the pass in flight, then share the next one. Under load (the oldest pending work
had to wait for a pass, or another worker is still busy), max_wait_ms lets the loop linger that
much longer for a fuller batch; it never delays a request that found the model idle.
The queue is bounded in sequences and tokens; a request that would overflow it is refused at
once. Sequences whose caller went away (cancelled, deadline passed) are dropped before they
reach the model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bertserve.errors import (
    BertserveError,
    DeadlineExceeded,
    InternalFailure,
    InvalidRequest,
    ModelUnavailable,
    Overloaded,
)
from bertserve.observability import metrics, request_ids, telemetry
from bertserve.ops import Completed, DevicePass, Op
from bertserve.serving.pass_reports import FAILURES_BEFORE_UNHEALTHY, PassHealth, observe_pass, trace_pass
from bertserve.serving.scheduling import choose_batch, computed_tokens, pass_ms

__all__ = ["FAILURES_BEFORE_UNHEALTHY", "MAX_RETRY_AFTER_S", "BatchLimits", "BatchStats", "Batcher", "Completed"]

log = logging.getLogger(__name__)

T = TypeVar("T")  # one sequence of work
R = TypeVar("R")  # an operation's result for one sequence

#: The longest retry hint a refused call gets, in seconds.
MAX_RETRY_AFTER_S = 10.0

#: How long passes stay within max_pass_ms after calls last contended, though one request waits
#: alone: traffic that came lately comes again, and should not wait behind a pass of a whole batch.
CONTENTION_MEMORY_NS = 1_000_000_000


#: Runs one batch on the worker thread: (operation, sequences) -> one result per sequence, each of
#: the operation's result type.
RunBatch = Callable[[Op[Any], Sequence[Any]], Sequence[Any]]


@dataclass(frozen=True)
class BatchLimits:
    max_batch_tokens: int = 16384  # longest sequence x count, the padded cost of a pass
    max_batch_size: int = 64
    max_queue_tokens: int = 262144
    max_queue_requests: int = 1024
    max_wait_ms: float = 0.0
    pass_overhead_tokens: float = 32.0  # a pass's fixed cost, in padded tokens (see bertserve.serving.packing)
    concurrent_passes: int = 1  # passes in flight at once: one per worker thread
    max_pass_ms: float = 100.0  # while calls contend: a pass's compute time at the measured rate; 0: none


@dataclass
class BatchStats:
    """Counters of what the batcher did, for usage reports, logs and tests."""

    forward_passes: int = 0
    sequences: int = 0
    dropped: int = 0
    refused: int = 0
    largest_pass: int = 0  # the most sequences one pass carried
    #: (start, end) in time.monotonic_ns() of the latest passes, for tests and diagnostics.
    recent_passes: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=256))
    #: For the latest passes planned at a measured rate: when each should end, and when the passes
    #: then in flight should, in time.monotonic_ns() (what the staggering of workers decides).
    recent_plans: deque[tuple[int, tuple[int, ...]]] = field(default_factory=lambda: deque(maxlen=256))


@dataclass(eq=False)
class _Pending(Generic[T]):
    op: Op[Any]
    item: T
    cost: int
    future: asyncio.Future[Completed[Any]]
    deadline: float | None
    request: int  # which submit() it came with: passes take turns between requests
    request_id: str  # the call's, for its error message and the log
    trace_context: Any  # the call's OpenTelemetry context, where tracing is on
    found_idle: bool  # whether its request came to a model with nothing queued or running: it never lingers
    enqueued_ns: int = field(default_factory=time.monotonic_ns)


class Batcher:
    """The batching loop of one model; start() on the serving event loop, stop() to drain."""

    def __init__(
        self,
        name: str,
        run_batch: RunBatch,
        executor: Executor,
        limits: BatchLimits,
        packed: Callable[[Op[Any]], bool] | None = None,
    ) -> None:
        self.name = name
        # Whether an operation's passes are packed: they cost their tokens and pay no padding.
        self._packed = packed or (lambda op: False)
        self.limits = limits
        self.stats = BatchStats()
        self._run_batch = run_batch
        self._executor = executor
        self._pending: list[_Pending[Any]] = []
        self._queued_tokens = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._abandoned: BertserveError | None = None  # set when the drain ran out of time
        self._running: dict[int, list[_Pending[Any]]] = {}  # the batches of the passes in flight, by id
        self._started_ns: dict[int, int] = {}  # when each pass in flight started, by id
        self._ends_ns: dict[int, int] = {}  # when each pass in flight should end, at the measured rate
        self._tokens_per_s = 0.0  # smoothed throughput, for retry hints
        self.health = PassHealth(name)
        self._requests = 0  # submit() calls so far: each one's number
        self._last_turn = 0  # the request whose turn it last was
        self._last_pass_end_ns = 0  # when the latest forward pass finished
        # When calls last contended: one came while others were queued or running, or a pass was
        # planned over several.
        self._contended_ns = -CONTENTION_MEMORY_NS
        self._first_come = False  # the server drains: requests go in the order they came, not in turns

    @property
    def tokens_per_s(self) -> float:
        """The tokens a pass computes per second (padding included, where passes pad), smoothed over
        recent passes; 0 before the first pass."""
        return self._tokens_per_s

    def running_since_ns(self) -> list[int]:
        """When each pass in flight started on its worker, in time.monotonic_ns() (what finds a pass that
        never ends); a pass still waiting for its worker has not started."""
        return list(self._started_ns.values())

    @property
    def queued(self) -> tuple[int, int]:
        """Sequences and tokens waiting for a pass (or for a deadline check that drops them)."""
        return len(self._pending), self._queued_tokens

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher:{self.name}")

    async def stop(self) -> None:
        """Refuse new work, let queued work finish, then end the loop."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    def _gauge_queue(self) -> None:
        metrics.child(metrics.QUEUE_SEQUENCES, self.name).set(len(self._pending))
        metrics.child(metrics.QUEUE_TOKENS, self.name).set(self._queued_tokens)

    def serve_first_come(self) -> None:
        """The server drains: from now on the oldest request's sequences go first, so that as many
        calls as may be end within the grace period (in turns, calls that shared the passes would
        all end together, at its end or after it)."""
        self._first_come = True

    def abandon(self, error: BertserveError) -> None:
        """Stop waiting for the work queued or in flight: each of its calls fails with error now, and
        so does any later submit. A pass still running finishes on its worker, unheard."""
        self._abandoned = error
        self._closed = True
        pending, self._pending, self._queued_tokens = self._pending, [], 0
        for batch in (pending, *self._running.values()):
            self._fail(batch, error)
        self._gauge_queue()
        self._wakeup.set()

    async def submit(
        self, op: Op[R], items: Sequence[T], costs: Sequence[int], *, deadline: float | None = None
    ) -> list[Completed[R]]:
        """Queue the sequences of one request; return the result of each, in order.

        deadline is a time.monotonic() value after which the work is dropped unrun.
        """
        if self._abandoned is not None:
            raise self._abandoned
        if self._closed:
            raise ModelUnavailable(f"model {self.name!r} is shutting down")
        total = sum(costs)
        limits = self.limits
        if len(items) > limits.max_queue_requests or total > limits.max_queue_tokens:
            raise InvalidRequest(
                f"the request needs {len(items)} sequences / {total} tokens, more than model {self.name!r} ever "
                f"queues (limits {limits.max_queue_requests} / {limits.max_queue_tokens}); split it"
            )
        if (
            len(self._pending) + len(items) > limits.max_queue_requests
            or self._queued_tokens + total > limits.max_queue_tokens
        ):
            self.stats.refused += 1
            metrics.REFUSED.labels(self.name, "queue_full").inc()
            retry = self.retry_after_s()
            raise Overloaded(
                f"model {self.name!r} is at capacity: {len(self._pending)} sequences / {self._queued_tokens} tokens "
                f"queued (limits {limits.max_queue_requests} / {limits.max_queue_tokens}); retry in {retry:.2f}s",
                retry_after_s=retry,
            )
        loop = asyncio.get_running_loop()
        request = self._requests = self._requests + 1
        found_idle = not (self._pending or self._running)
        if not found_idle:
            self._contended_ns = time.monotonic_ns()
        call_id, trace_context = request_ids.current.get(), telemetry.capture()
        pending = [
            _Pending(op, item, cost, loop.create_future(), deadline, request, call_id, trace_context, found_idle)
            for item, cost in zip(items, costs, strict=True)
        ]
        self._pending.extend(pending)
        self._queued_tokens += total
        self._gauge_queue()
        self._wakeup.set()
        try:
            if len(pending) == 1:  # most calls: one sequence, and no gathering future to make
                return [await pending[0].future]
            return list(await asyncio.gather(*(p.future for p in pending)))
        except BaseException:
            for p in pending:  # the caller went away or one part failed: drop what has not run
                p.future.cancel()
            raise

    def retry_after_s(self) -> float:
        """How long the queued work takes to drain at the measured rate: a hint, capped, never minutes."""
        rate = self._tokens_per_s or 1000.0
        return min(MAX_RETRY_AFTER_S, max(0.05, self._queued_tokens / rate))

    async def _loop(self) -> None:
        """Serve until stopped. A fault of the loop itself fails the calls it holds, is logged once,
        and the loop starts over: no exception leaves a call waiting or the model without a loop."""
        while True:
            try:
                await self._serve()
                return
            except Exception as e:
                pending, self._pending, self._queued_tokens = self._pending, [], 0
                self._gauge_queue()
                self._fault("the batching loop", e, pending)

    async def _serve(self) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(self.limits.concurrent_passes)
        while True:
            if not self._pending:
                if self._closed:
                    break
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await slots.acquire()  # a worker is free
            try:
                if self.limits.max_wait_ms > 0 and self._under_load(in_flight):
                    await self._linger()
                batch = self._take_batch(idle_workers=self.limits.concurrent_passes - len(in_flight))
            except BaseException:
                slots.release()
                raise
            if not batch:
                slots.release()
                continue
            if self._tokens_per_s > 0:
                end = time.monotonic_ns() + int(self._computed(batch) / self._tokens_per_s * 1e9)
                self.stats.recent_plans.append((end, tuple(self._ends_ns.values())))
                self._ends_ns[id(batch)] = end
            task = asyncio.create_task(self._run(batch))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            task.add_done_callback(lambda _: slots.release())
        if in_flight:
            await asyncio.wait(in_flight)

    async def _run(self, batch: list[_Pending[Any]]) -> None:
        """Run one batch on a worker thread and resolve its futures, whatever happens."""
        pass_id = self.stats.forward_passes
        key, submitted = id(batch), time.monotonic_ns()
        self._running[key] = batch
        op, items = batch[0].op, [p.item for p in batch]

        def on_worker() -> Sequence[Any]:
            # The pass starts when its worker takes it up: a wait behind the worker's other work (a
            # model loading on the same device) is queueing, not a pass that hangs.
            self._started_ns[key] = time.monotonic_ns()
            return self._run_batch(op, items)

        # A lone caller's pass holding all the work there is (no part of it left for another worker)
        # may take the cores the device's other workers leave idle.
        uncontended = not self._pending and time.monotonic_ns() - self._contended_ns >= CONTENTION_MEMORY_NS
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, DevicePass(on_worker, uncontended)
            )
            if len(results) != len(batch):
                raise RuntimeError(f"the model returned {len(results)} results for a batch of {len(batch)}")
        except BertserveError as e:  # the callers' to hear as it is (a device out of memory, say)
            self._fail(batch, e)
            self.health.passed(ok=False)
            trace_pass(self.name, pass_id, batch, self._started_ns.get(key, submitted), error=str(e))
            return
        except Exception as e:  # a fault: logged once here, with its traceback; each caller gets its id
            self._fault(f"a forward pass over {len(batch)} sequences", e, batch)
            self.health.passed(ok=False)
            trace_pass(self.name, pass_id, batch, self._started_ns.get(key, submitted), error=type(e).__name__)
            return
        finally:
            self._last_pass_end_ns = time.monotonic_ns()
            started = self._started_ns.pop(key, submitted)
            del self._running[key]
            self._ends_ns.pop(key, None)
        self.health.passed(ok=True)
        self.stats.recent_passes.append((started, self._last_pass_end_ns))
        trace_pass(self.name, pass_id, batch, started)
        elapsed = self._last_pass_end_ns - started
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s pass %d: %d sequences x %d tokens (%.0f%% padding) in %.1f ms, %d queued",
                self.name,
                pass_id,
                len(batch),
                batch[-1].cost,
                100 - 100 * sum(p.cost for p in batch) / (len(batch) * batch[-1].cost),
                elapsed / 1e6,
                len(self._pending),
            )
        self._observe(self._computed(batch), elapsed)
        observe_pass(self.name, batch, started, elapsed)
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(Completed(result, started - p.enqueued_ns, pass_id, elapsed))

    def _fault(self, what: str, error: Exception, batch: list[_Pending[Any]]) -> None:
        """Log a fault once, with its traceback and the request ids of its calls; fail each call
        with INTERNAL and its own request id."""
        fallback = request_ids.new()  # work submitted outside any call
        ids = sorted({p.request_id or fallback for p in batch}) or [fallback]
        log.error("%s of model %r failed (request id %s)", what, self.name, ", ".join(ids), exc_info=error)
        for p in batch:
            if not p.future.done():
                message = f"internal error in {what} of model {self.name!r} (request id {p.request_id or fallback})"
                p.future.set_exception(InternalFailure(message))

    @staticmethod
    def _fail(batch: list[_Pending[Any]], error: Exception) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(error)

    @property
    def healthy(self) -> bool:
        """False while the last FAILURES_BEFORE_UNHEALTHY passes (or more) all failed."""
        return self.health.healthy

    def _under_load(self, in_flight: set[asyncio.Task[None]]) -> bool:
        """Whether the device is busy, or the oldest pending work had to wait for it to finish a pass;
        never for work whose request found the model idle (its own first pass keeps a worker busy)."""
        oldest = self._pending[0]
        return not oldest.found_idle and (bool(in_flight) or oldest.enqueued_ns < self._last_pass_end_ns)

    async def _linger(self) -> None:
        """Wait up to max_wait_ms for a full batch's worth of pending sequences."""
        until = time.monotonic() + self.limits.max_wait_ms / 1000
        while len(self._pending) < self.limits.max_batch_size and not self._closed:
            left = until - time.monotonic()
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                return

    def _take_batch(self, idle_workers: int) -> list[_Pending[Any]]:
        """Remove and return the next batch: one sequence of the request whose turn it is, and the
        sequences that plan well with it, taken in turns from every request of its operation.

        Requests take turns in the order they came: a small call queued behind a large one goes in
        one of the next passes, and a large call is spread over passes between other work. With
        several workers idle, the batch takes only its share of the pending work, so that a large
        request (20 Answer windows, 32 sentences) runs on all of them rather than on one.
        """
        now = time.monotonic()
        live = []
        for p in self._pending:
            if p.future.done() or (p.deadline is not None and now >= p.deadline):
                self._queued_tokens -= p.cost
                self.stats.dropped += 1
                if not p.future.done():  # its caller may still be there to hear why
                    message = f"the call's deadline passed before model {self.name!r} ran it"
                    p.future.set_exception(DeadlineExceeded(message))
            else:
                live.append(p)
        self._pending = live
        if not live:
            self._gauge_queue()
            return []
        choice = choose_batch(
            live,
            last_turn=self._last_turn,
            idle_workers=idle_workers,
            max_batch_size=self.limits.max_batch_size,
            max_batch_tokens=self.limits.max_batch_tokens,
            pass_overhead_tokens=self.limits.pass_overhead_tokens,
            packed=self._packed,
            lately_contended=time.monotonic_ns() - self._contended_ns < CONTENTION_MEMORY_NS,
            budget=self._budget(),
            first_come=self._first_come,
        )
        if choice.contended:
            self._contended_ns = time.monotonic_ns()
        batch, turn = [live[i] for i in choice.taken], choice.turn
        self._last_turn = turn
        taken = set(map(id, batch))
        self._pending = [p for p in live if id(p) not in taken]
        self._queued_tokens -= sum(p.cost for p in batch)
        self._gauge_queue()
        self.stats.forward_passes += 1
        self.stats.sequences += len(batch)
        self.stats.largest_pass = max(self.stats.largest_pass, len(batch))
        return batch

    def _budget(self) -> int:
        """The tokens a pass may compute while calls contend: max_pass_ms at the measured rate."""
        limit = self.limits.max_batch_tokens
        if self.limits.max_pass_ms <= 0 or self._tokens_per_s <= 0:
            return limit
        ends_ms = [end / 1e6 for end in self._ends_ns.values()]  # of the passes in flight
        ms = pass_ms(self.limits.max_pass_ms, self.limits.concurrent_passes, ends_ms, time.monotonic_ns() / 1e6)
        return min(limit, int(self._tokens_per_s * ms / 1000))

    def _computed(self, batch: list[_Pending[Any]]) -> int:
        return computed_tokens([p.cost for p in batch], packed=self._packed(batch[0].op))

    def _observe(self, tokens: int, elapsed_ns: int) -> None:
        rate = tokens / max(elapsed_ns, 1) * 1e9
        self._tokens_per_s = rate if not self._tokens_per_s else 0.8 * self._tokens_per_s + 0.2 * rate
