"""The engine process: every model loaded once, one batcher per model, for all the front ends.

It is one server process without the gRPC edge: the same hosts, batchers and model changes, with
the front ends' calls coming in over the link (bertserve.serving.engine_service) instead of from
servicers. The supervisor starts it before the front ends, pings it, and restarts it when it dies
or stops answering; it stops it last, once the front ends have drained.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bertserve.api import ModelSpec
from bertserve.app import event_loop
from bertserve.app.config import ServerConfig
from bertserve.app.discovery import PluginRegistry, discover_plugins
from bertserve.app.hosting import Hosting
from bertserve.app.saved_models import read_models, write_models
from bertserve.observability import telemetry
from bertserve.runtime.threads import configure_runtime, freeze_loaded_heap, share_cores
from bertserve.serving.engine_service import EngineService
from bertserve.serving.model_host import ModelHost
from bertserve.serving.model_manager import ModelManager
from bertserve.serving.router import Router

__all__ = ["Engine", "serve_engine"]

log = logging.getLogger(__name__)


class Engine:
    """The models of one server, served to its front ends at address."""

    def __init__(
        self,
        config: ServerConfig,
        address: str,
        registry: PluginRegistry | None = None,
        supervisor: int | None = None,
        models_file: Path | None = None,
    ) -> None:
        """supervisor: the pid of the process that started this one and stops it once the front
        ends have drained; while it lives, SIGTERM and SIGINT sent to the whole process group (a
        terminal's Ctrl-C) leave the engine serving the front ends' drain.

        models_file: where the engine keeps its models after each run-time change, and where an
        engine started again after one that died finds them (see bertserve.app.saved_models)."""
        self._models_file = models_file
        if models_file is not None and (saved := read_models(models_file)) is not None:
            log.info("starting with the %d models the engine before this one served", len(saved))
            config = replace(config, models=saved)
        self.config = config
        self._supervisor = supervisor
        self._stop = asyncio.Event()
        self._hosting = Hosting(config, registry or discover_plugins())
        self._generations = itertools.count(1)
        self.service: EngineService
        self.router = Router([self._host(spec) for spec in config.models], config.default_model)
        self.models = ModelManager(
            self.router,
            new_host=self._host,
            parse_entry=self._hosting.parse_entry,
            published=lambda host: host.publish(self.service.models_changed),
            removed=lambda name: self.service.models_changed(),
            grace_period_s=config.grace_period_s,
            ended=self._keep_models,
        )
        self.service = EngineService(address, self.router, self.models, on_stop=self._stop.set)

    def _host(self, spec: ModelSpec, published: bool = True) -> ModelHost:
        host = self._hosting.host(spec, published)
        host.generation = next(self._generations)
        return host

    def _keep_models(self) -> None:
        """Write the models served now for an engine that may have to replace this one."""
        if self._models_file is not None:
            write_models(self._models_file, (host.spec for host in self.router))

    async def serve_forever(self, on_ready: Callable[[], None] = lambda: None) -> None:
        """Bind, load every model, and serve until SIGTERM or SIGINT."""
        stop = self._stop
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            name = signal.Signals(signum).name
            if self._supervisor is not None and os.getppid() == self._supervisor:
                log.info("%s: the engine serves on until its front ends have drained", name)
                return
            if stop.is_set():
                log.warning("second %s: the engine exits now", name)
                logging.shutdown()
                os._exit(128 + signum)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        self.service.bind()
        for host in self.router:
            host.on_state_change = self.service.models_changed
        on_ready()
        log.info(
            "engine serving on %s (pid %d); loading %d models",
            self.service.address,
            os.getpid(),
            len(self.config.models),
        )
        loading = asyncio.create_task(self._load_all(), name="load-models")
        await stop.wait()
        # The front ends are gone (the supervisor says stop once they have drained): work still
        # queued has no one to answer, and is dropped rather than computed.
        self.service.drop_calls("the front ends have stopped")
        loading.cancel()
        await self.models.stop()
        await asyncio.gather(*(host.stop() for host in self.router), return_exceptions=True)
        await self.service.stop()
        await asyncio.to_thread(telemetry.flush)
        self._hosting.shutdown()
        log.info("engine stopped")

    async def _load_all(self) -> None:
        await asyncio.gather(*(host.load() for host in self.router))
        freeze_loaded_heap()


def serve_engine(
    config: ServerConfig,
    cores: int,
    address: str,
    on_ready: Callable[[], None] = lambda: None,
    supervisor: int | None = None,
    models_file: Path | None = None,
) -> None:
    """Run the engine process until it is stopped: its threads shared out over cores."""
    config = share_cores(config, cores)
    configure_runtime(config)

    async def run() -> None:
        await Engine(config, address, supervisor=supervisor, models_file=models_file).serve_forever(on_ready)

    event_loop.run(run(), config.event_loop)
