"""What a process that holds models needs: the plugins, the pools their work runs on, and the
factory of their hosts (one server process's, or the engine's, or a front end's tokenizers)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from bertserve.api import ModelSpec
from bertserve.app.config import ServerConfig, parse_model_entry
from bertserve.app.discovery import PluginRegistry
from bertserve.errors import ConfigError, InvalidRequest, PermissionDenied, quoted
from bertserve.runtime.device_workers import DeviceWorkers
from bertserve.runtime.sources import source_allowed
from bertserve.runtime.threads import cpu_cores, model_workers
from bertserve.serving.engine_link import EngineLink, EnginePasses
from bertserve.serving.engine_wire import ModelEntry
from bertserve.serving.front_host import FrontEndHost
from bertserve.serving.model_host import ModelHost

__all__ = ["EngineAddress", "Hosting"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineAddress:
    """Where a front end finds one of its engines, and the name it connects under."""

    address: str  # a zmq endpoint: ipc://<a private directory>/engine-<device>
    identity: str  # front-end-<index>
    device: str = "cpu"  # the device the engine runs its models on: cpu, or cuda:N

    @property
    def run_directory(self) -> Path:
        """The server's private directory that holds the engine's socket."""
        return Path(self.address.removeprefix("ipc://")).parent


class Hosting:
    """The plugins and pools of one process's models, and their hosts."""

    def __init__(self, config: ServerConfig, registry: PluginRegistry) -> None:
        self.config = config
        self.registry = registry
        self.tokenizer_pool = ThreadPoolExecutor(config.tokenizer_threads, thread_name_prefix="tokenize")
        self.device_workers = DeviceWorkers(config.models, config.torch_threads)
        self.loaders = ThreadPoolExecutor(max(2, len(config.models)), thread_name_prefix="fetch")

    def host(self, spec: ModelSpec, published: bool = True) -> ModelHost:
        """An unstarted host of spec (failed at once when its plugin is missing), its workers
        made concrete for this process's cores when left automatic (a run-time entry's)."""
        if not spec.workers:
            spec = replace(spec, workers=model_workers(spec, self.config.torch_threads, cpu_cores()))
        pools = (self.tokenizer_pool, self.device_workers.for_model(spec), self.loaders)
        try:
            factory = self.registry.get(spec.plugin)
        except KeyError as e:
            log.error("model %r cannot load: %s", spec.name, e.args[0])
            host = ModelHost(spec, None, *pools, failure=str(e.args[0]), published=published)
        else:
            host = ModelHost(spec, factory, *pools, published=published)
        host.retry_max_s = self.config.load_retry_max_s
        return host

    def front_end_host(self, entry: ModelEntry, engine: str, device: str, link: EngineLink) -> FrontEndHost:
        """A front end's host of one instance of the models of the engine of device."""
        factory = self.registry.get(entry.spec.plugin)
        passes = EnginePasses(link, entry.spec.name, entry.generation, healthy=entry.healthy)
        return FrontEndHost(entry, engine, device, factory, passes, self.tokenizer_pool, self.loaders)

    def parse_entry(self, text: str) -> ModelSpec:
        """A model entry sent to LoadModel or ReloadModel; InvalidRequest naming what is wrong, and
        PermissionDenied for what the server's admin settings do not allow a run-time entry. Its
        workers stay as written: the process that runs its passes (see host) settles them."""
        admin = self.config.admin
        try:
            spec = parse_model_entry(text, self.registry.plugins, max_bytes=admin.max_entry_bytes)
            self.registry.get(spec.plugin)
        except ConfigError as e:
            raise InvalidRequest(_capped(str(e))) from None
        except KeyError as e:
            raise InvalidRequest(f"entry.plugin: {e.args[0]}") from None
        if spec.allow_pickle and not admin.allow_pickle:
            raise PermissionDenied(
                "entry.allow_pickle: this server does not let a run-time entry load pickle weights; the operator "
                "can allow it with server.admin.allow_pickle: true, or list the model in the configuration file"
            )
        if not source_allowed(spec.source, admin.allowed_sources):
            raise PermissionDenied(
                f"entry.source: {quoted(spec.source)} is not among the sources this server allows run-time entries "
                "to load (server.admin.allowed_sources)"
            )
        return spec

    def shutdown(self) -> None:
        self.tokenizer_pool.shutdown(wait=False, cancel_futures=True)
        self.device_workers.shutdown()
        self.loaders.shutdown(wait=False, cancel_futures=True)


def _capped(message: str, limit: int = 2000) -> str:
    """A status message stays well inside gRPC's metadata limit, whatever the entry held."""
    return message if len(message) <= limit else message[: limit - 3] + "..."
