"""One configured model at run time: its plugin, its state, its worker thread and its batcher."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from bertserve.api import Capability, EncoderPlugin, Encoding, ModelInfo, ModelSpec, tokenized_inline
from bertserve.capabilities import check_plugin, missing_message
from bertserve.errors import (
    BertserveError,
    CapabilityNotSupported,
    InputTooLong,
    InvalidRequest,
    ModelFailed,
    ModelUnavailable,
    Overloaded,
    PluginContractError,
    SourceUnavailable,
)
from bertserve.observability import metrics
from bertserve.ops import Embedded, EmbedOp, HeadOp, Op
from bertserve.serving.batcher import Batcher, BatchLimits, Completed
from bertserve.serving.pass_reports import PassHealth
from bertserve.serving.shared_tokenization import SLICE_TEXTS, SharedTokenization

__all__ = ["Drained", "ModelHost", "ModelState", "Passes"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class ModelState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class Passes(Protocol):
    """What a host needs of what runs its passes: its own batcher, or the engine's (see
    bertserve.serving.engine_link.EnginePasses)."""

    health: PassHealth

    @property
    def healthy(self) -> bool: ...
    @property
    def tokens_per_s(self) -> float: ...
    def retry_after_s(self) -> float: ...
    def start(self) -> None: ...
    async def stop(self) -> None: ...
    def abandon(self, error: BertserveError) -> None: ...
    def serve_first_come(self) -> None: ...
    async def submit(
        self, op: Op[Any], items: Sequence[Any], costs: Sequence[int], *, deadline: float | None = None
    ) -> list[Completed[Any]]: ...


class ModelHost:
    """Owns a plugin instance; every call into it runs off the event loop.

    Loading and forward passes run on the worker of the model's device, which every model on that
    device shares (see bertserve.runtime.device_workers); tokenization runs on the shared tokenizer pool,
    so the next batch is tokenized while the current one computes.
    """

    def __init__(
        self,
        spec: ModelSpec,
        plugin_factory: Callable[[ModelSpec], EncoderPlugin] | None,
        tokenizer_pool: Executor,
        device_worker: Executor,
        loader: Executor,
        *,
        failure: str | None = None,
        published: bool = True,
    ) -> None:
        """published: whether its state shows in the metrics and health from the start (a reload's
        new instance is published only once it takes over; see publish)."""
        self.spec = spec
        self.generation = 0  # which instance of its name this is, where an engine tells them apart
        self._published = published
        self._state = ModelState.LOADING
        self._calls = 0  # calls holding this host (see held)
        self._idle = asyncio.Event()
        self._idle.set()
        self._retired = False
        self.state = ModelState.FAILED if failure else ModelState.LOADING
        self.failure_reason = failure or ""
        self.load_attempts = 0
        self.next_attempt_at: float | None = None  # time.time() of the next attempt, while one is due
        self.retry_max_s = RETRY_MAX_S
        self._retrying: asyncio.Task[None] | None = None
        self.info: ModelInfo | None = None
        self._factory = plugin_factory
        self._plugin: EncoderPlugin | None = None
        self._tokenizer_pool = tokenizer_pool
        self.device_worker = device_worker  # the device's pool: this model's loads and passes
        self._loader = loader  # downloads: slow, and never on the device worker
        #: Calls' texts, tokenized together (see bertserve.serving.shared_tokenization).
        self.shared_tokenization = SharedTokenization(
            lambda texts, pairs, add_special_tokens, max_length: self.off_loop(
                self.plugin.tokenize, texts, pairs=pairs, add_special_tokens=add_special_tokens, max_length=max_length
            )
        )
        self.batcher: Passes = Batcher(
            spec.name,
            self._run_batch,
            self.device_worker,
            BatchLimits(
                max_batch_tokens=spec.max_batch_tokens,
                max_batch_size=spec.max_batch_size,
                max_queue_tokens=spec.max_queue_tokens,
                max_queue_requests=spec.max_queue_requests,
                max_wait_ms=spec.max_wait_ms,
                pass_overhead_tokens=spec.pass_overhead_tokens,
                concurrent_passes=spec.workers,
                max_pass_ms=spec.max_pass_ms,
            ),
            packed=self._packed,
        )
        self.on_state_change: Callable[[ModelHost], None] = lambda host: None
        self.batcher.health.on_change = lambda healthy: self.on_state_change(self)

    @property
    def state(self) -> ModelState:
        return self._state

    @state.setter
    def state(self, state: ModelState) -> None:
        self._state = state
        if self._published:
            self._gauge_state()

    def _gauge_state(self) -> None:
        for each in ModelState:
            metrics.MODEL_STATE.labels(self.spec.name, each.value).set(int(each is self._state))

    def publish(self, on_state_change: Callable[[ModelHost], None]) -> None:
        """From now on this host is the one its name reaches: its state shows in metrics and health."""
        self._published = True
        self.on_state_change = on_state_change
        self._gauge_state()
        on_state_change(self)

    def unpublish(self) -> None:
        """This host no longer answers for its name; what it does from now on is shown nowhere."""
        self._published = False
        self.on_state_change = lambda host: None
        for each in ModelState:
            metrics.MODEL_STATE.labels(self.spec.name, each.value).set(0)

    @property
    def tokens_per_s(self) -> float:
        """The tokens a pass computes per second, as measured lately (0 before the first pass)."""
        return self.batcher.tokens_per_s

    def retry_after_s(self) -> float:
        """How long a refused call should wait: the time the queued work takes at the measured rate."""
        return self.batcher.retry_after_s()

    @property
    def calls(self) -> int:
        """Calls holding this host now."""
        return self._calls

    @contextlib.contextmanager
    def held(self) -> Iterator[ModelHost]:
        """Hold this host for one call: drain waits for the calls that hold it."""
        self._calls += 1
        self._idle.clear()
        try:
            yield self
        finally:
            self._calls -= 1
            if self._calls == 0:
                self._idle.set()

    async def idle(self) -> None:
        """Return once no call holds this host."""
        await self._idle.wait()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def serving(self) -> bool:
        """Ready, and its passes are not all failing (what health reports)."""
        return self.state is ModelState.READY and self.batcher.healthy

    async def load(self, *, retry: bool = True) -> None:
        """Fetch the model's files on a loader thread, then load it on its device's worker.

        A failure marks this model failed, and nothing else. With retry, a failure to reach its
        files (a directory not there yet, a hub that does not answer) is tried again in the
        background, after a pause that doubles each time up to retry_max_s (0: never); other
        failures are final.
        """
        if self.state is ModelState.FAILED or self._factory is None:
            self.on_state_change(self)
            return
        self.load_attempts += 1
        ended = await self._load_once()
        if not ended and retry and not self._retired and _retry_delay(1, self.retry_max_s) is not None:
            self._retrying = asyncio.create_task(self._retry(), name=f"retry-load:{self.name}")

    async def _retry(self) -> None:
        while (delay := _retry_delay(self.load_attempts, self.retry_max_s)) is not None:
            self.next_attempt_at = time.time() + delay
            log.warning("model %r: attempt %d failed; trying again in %.0fs", self.name, self.load_attempts, delay)
            self.on_state_change(self)
            await asyncio.sleep(delay)
            self.load_attempts += 1
            self.next_attempt_at = None
            self.state = ModelState.LOADING
            self.on_state_change(self)
            if await self._load_once():
                return

    async def _load_once(self) -> bool:
        """One attempt; True when it ended for good (loaded, or failed for a reason no retry cures)."""
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            self._plugin = self._factory(self.spec)  # type: ignore[misc]
            await loop.run_in_executor(self._loader, self._plugin.fetch)
            info: ModelInfo = await loop.run_in_executor(self.device_worker, self._plugin.load)
            try:
                check_plugin(self._plugin, info.capabilities)
            except PluginContractError:
                await loop.run_in_executor(self.device_worker, self._plugin.unload)
                raise
        except Exception as e:
            self.state = ModelState.FAILED
            self.failure_reason = _reason(e)
            self._plugin = None
            log.error("model %r failed to load from %r: %s", self.name, self.spec.source, self.failure_reason)
            self.on_state_change(self)
            return not _is_transient(e)
        else:
            if self._retired:  # unloaded or replaced while it loaded: free it at once
                await loop.run_in_executor(self.device_worker, self._plugin.unload)
                self._plugin = None
                return True
            self.info = info
            self.failure_reason = ""
            self.batcher.start()
            self.state = ModelState.READY
            took = time.monotonic() - started
            log.info("model %r ready in %.1fs on %s (%s)", self.name, took, ",".join(info.devices), info.dtype)
        self.on_state_change(self)
        return True

    def require(self, capability: Capability) -> ModelInfo:
        """The model's info when it is ready and offers capability; raise the matching error otherwise."""
        info = self.ready()
        if capability not in info.capabilities:
            raise CapabilityNotSupported(missing_message(self.name, capability, info.capabilities))
        return info

    def ready(self) -> ModelInfo:
        """The model's info when it is ready; ModelUnavailable while it loads, ModelFailed once it failed."""
        if self.state is ModelState.LOADING:
            raise ModelUnavailable(f"model {self.name!r} is still loading")
        if self.state is ModelState.FAILED or self.info is None:
            later = ""
            if self.next_attempt_at is not None:
                later = (
                    f" (attempt {self.load_attempts}; the next in {max(0.0, self.next_attempt_at - time.time()):.0f}s)"
                )
            raise ModelFailed(f"model {self.name!r} failed to load: {self.failure_reason}{later}")
        return self.info

    @property
    def plugin(self) -> EncoderPlugin:
        if self._plugin is None:
            raise ModelUnavailable(f"model {self.name!r} is not loaded")
        return self._plugin

    async def off_loop(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (tokenization, span search) on the tokenizer pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_pool, lambda: fn(*args, **kwargs))

    async def tokenize(
        self,
        texts: Sequence[str],
        *,
        pairs: Sequence[str] | None = None,
        add_special_tokens: bool = True,
        max_length: int | None = None,
    ) -> list[Encoding]:
        """The plugin's tokenize off the loop, in slices of a few texts: each slice goes in the next
        job of the tokenizer pool with the slices of the other calls waiting (see
        bertserve.serving.shared_tokenization), so that a call with many inputs takes turns with
        the others and a small call crosses to the pool in company. A call within the plugin's
        inline_tokenize_chars, of at most INLINE_TOKENIZE_TEXTS texts, is tokenized here on the
        loop: less work than the hop to the pool."""
        plugin = self.plugin
        inline = plugin.inline_tokenize_chars()
        if inline and tokenized_inline(texts, pairs, inline):
            return plugin.tokenize(texts, pairs=pairs, add_special_tokens=add_special_tokens, max_length=max_length)
        encodings: list[Encoding] = []
        for start in range(0, len(texts), SLICE_TEXTS):
            part = slice(start, start + SLICE_TEXTS)
            encodings += await self.shared_tokenization.tokenize(
                texts[part],
                pairs[part] if pairs is not None else None,
                add_special_tokens=add_special_tokens,
                max_length=max_length,
            )
        return encodings

    async def tokenize_inputs(
        self, texts: Sequence[str], *, pairs: Sequence[str] | None = None, truncate: bool
    ) -> list[Encoding]:
        """Inputs as the model takes them, cut at its token limit either way: a longer input is
        told, never tokenized whole. Without truncate, one over the limit is InputTooLong."""
        limit = self.ready().max_input_tokens
        queue = self.spec.max_queue_requests
        if len(texts) > queue:  # each text is a sequence at least: refused before any is tokenized
            raise InvalidRequest(
                f"the request needs {len(texts)} sequences, more than model {self.name!r} ever queues "
                f"(limits {queue} / {self.spec.max_queue_tokens}); split it"
            )
        encodings = await self.tokenize(texts, pairs=pairs, max_length=limit)
        if not truncate:
            for i, encoding in enumerate(encodings):
                if encoding.truncated:
                    raise InputTooLong(self.name, i, encoding.full_length, limit)
        return encodings

    async def run(self, op: Op[R], encodings: Sequence[Encoding], *, deadline: float | None) -> list[Completed[R]]:
        """Send encodings through the batcher; one result per encoding, in order."""
        return await self.batcher.submit(op, encodings, [len(e) for e in encodings], deadline=deadline)

    def _packed(self, op: Op[object]) -> bool:
        """Whether the plugin packs the passes of op: their cost is their tokens, with no padding."""
        return self.info is not None and isinstance(op, EmbedOp) and op.pooling in self.info.packed_poolings

    def _run_batch(self, op: Op[object], batch: Sequence[Encoding]) -> Sequence[object]:
        """On the worker thread: one forward pass of the operation op over the batch."""
        try:
            if isinstance(op, EmbedOp):
                out = self.plugin.embed(batch, pooling=op.pooling, with_token_states=op.with_token_states)
                states = out.token_states or [None] * len(batch)
                return [Embedded(pooled, tokens) for pooled, tokens in zip(out.pooled, states, strict=True)]
            if isinstance(op, HeadOp):
                return self.plugin.head_logits(op.head, batch)
        except BertserveError:
            raise
        except Exception as e:
            if _is_out_of_memory(e):
                raise Overloaded(f"model {self.name!r} ran out of device memory on a batch of {len(batch)}") from e
            raise
        raise TypeError(f"unknown operation {op!r}")

    async def drain(self, grace_s: float, late: Callable[[], BertserveError]) -> Drained:
        """Wait for the calls holding this host to end, up to grace_s; then fail those still
        waiting on its batcher with late() (calls still being tokenized fail as they submit).

        Call once no new call can reach the host (it is out of the router).
        """
        in_flight = self._calls
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            cut = self._calls
            self.batcher.abandon(late())
            with contextlib.suppress(TimeoutError):  # calls past the batcher (span search) end on their own
                await asyncio.wait_for(self._idle.wait(), _AFTER_ABANDON_S)
            return Drained(in_flight - cut, cut)
        return Drained(in_flight, 0)

    def retire(self) -> None:
        """No more attempts to load: a retry is called off, and a load in progress frees what it loaded."""
        self._retired = True
        if self._retrying is not None:
            self._retrying.cancel()

    async def stop(self) -> None:
        self.retire()
        if self.state is ModelState.READY:
            await self.batcher.stop()
            plugin = self.plugin
            await asyncio.get_running_loop().run_in_executor(self.device_worker, plugin.unload)


@dataclass(frozen=True)
class Drained:
    """How the calls in flight on a host that was taken out of service ended."""

    finished: int  # ended on their own within the grace period
    abandoned: int  # still running at its end: answered with an error


# After the grace period of a drain, the time the abandoned calls get to answer their error.
_AFTER_ABANDON_S = 1.0


#: The pause before the second attempt at a load that could not reach its files; it doubles.
RETRY_FIRST_S = 1.0
#: The default cap on that pause (ModelHost.retry_max_s).
RETRY_MAX_S = 60.0


def _retry_delay(attempts: int, cap: float) -> float | None:
    return None if cap <= 0 else min(cap, RETRY_FIRST_S * 2 ** (attempts - 1))


def _is_transient(e: BaseException) -> bool:
    """Whether a load failed for want of its files: a missing directory, or the network (OSError
    covers sockets, timeouts and the hub's offline errors; httpx's do not derive from it)."""
    return isinstance(e, (SourceUnavailable, OSError)) or type(e).__module__.startswith(("httpx", "httpcore"))


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if len(text) > 500:
        text = text[:497] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _is_out_of_memory(e: Exception) -> bool:
    return type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()
