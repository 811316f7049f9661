"""A model as a front-end process holds it: its tokenizer here, its passes in the engine.

The engine loads the model and says how it stands (its table, see bertserve.serving.engine_wire);
a front end follows: it loads the tokenizer alone once the engine reports the model ready, and
tokenizes, checks and post-processes its calls itself, so that only token ids and arrays cross.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor

from bertserve.api import EncoderPlugin, ModelInfo, ModelSpec
from bertserve.errors import ModelUnavailable
from bertserve.serving.engine_link import EnginePasses
from bertserve.serving.engine_wire import ModelEntry
from bertserve.serving.model_host import ModelHost, ModelState, _reason

__all__ = ["FrontEndHost"]

log = logging.getLogger(__name__)


class FrontEndHost(ModelHost):
    """One instance (generation) of a model of the engine named engine, which runs device."""

    def __init__(
        self,
        entry: ModelEntry,
        engine: str,
        device: str,
        plugin_factory: Callable[[ModelSpec], EncoderPlugin],
        passes: EnginePasses,
        tokenizer_pool: Executor,
        loader: Executor,
    ) -> None:
        super().__init__(entry.spec, plugin_factory, tokenizer_pool, loader, loader, published=False)
        self.engine = engine
        self.device = device
        self.generation = entry.generation
        self.batcher = self._passes = passes
        passes.health.on_change = lambda healthy: self.on_state_change(self)
        self._engine_info: ModelInfo | None = entry.info
        self._engine_gone = False
        self.follow(entry)

    def is_instance(self, engine: str, entry: ModelEntry) -> bool:
        """Whether entry (of the engine's table) is this host's instance."""
        return (self.engine, self.generation) == (engine, entry.generation)

    def follow(self, entry: ModelEntry) -> None:
        """Take the engine's word on the model: its load attempts, its failure, its health. Ready
        is this host's to say, once its tokenizer is loaded (see load)."""
        self._engine_gone = False
        self._engine_info = entry.info or self._engine_info
        self.load_attempts = entry.load_attempts
        self.next_attempt_at = entry.next_attempt_at
        self.failure_reason = entry.failure_reason
        self._passes.set_healthy(entry.healthy)
        if entry.state == ModelState.FAILED.value:
            self.state = ModelState.FAILED
        elif entry.state == ModelState.LOADING.value:
            self.state = ModelState.LOADING
        self.on_state_change(self)

    def engine_lost(self) -> None:
        """The engine went away: the model waits for it (NOT_SERVING) until its table says otherwise."""
        self._engine_gone = True
        if self.state is ModelState.READY:
            self.state = ModelState.LOADING
        self.on_state_change(self)

    def ready(self) -> ModelInfo:
        if self._engine_gone:
            raise ModelUnavailable(
                f"model {self.name!r} is not reachable: the engine that runs it stopped and is being restarted; "
                "retry the call"
            )
        return super().ready()

    def _gauge_state(self) -> None:
        """The engine's process reports the model's state; a front end's would count it twice."""

    async def _load_once(self) -> bool:
        """The tokenizer alone, on a loader thread; the model is the engine's."""
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        info = self._engine_info
        try:
            if info is None:
                raise RuntimeError("the engine reported the model ready without its info")
            self._plugin = self._factory(self.spec)  # type: ignore[misc]
            await loop.run_in_executor(self._loader, self._plugin.fetch)
            await loop.run_in_executor(self._loader, self._plugin.load_tokenizer, info)
        except Exception as e:
            self.state = ModelState.FAILED
            self.failure_reason = f"the front end could not load its tokenizer: {_reason(e)}"
            self._plugin = None
            self.on_state_change(self)
            return True
        if self._retired:
            await loop.run_in_executor(self._loader, self._plugin.unload)
            self._plugin = None
            return True
        self.info = info
        self.state = ModelState.READY
        log.info(
            "model %r: tokenizer ready in %.1fs; its passes run in the engine", self.name, time.monotonic() - started
        )
        self.on_state_change(self)
        return True

    async def stop(self) -> None:
        self.retire()
        if self._plugin is not None:
            plugin, self._plugin = self._plugin, None
            await asyncio.get_running_loop().run_in_executor(self._loader, plugin.unload)
