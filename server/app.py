"""Assemble and run the server: models, servicers, health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from bertserve.config import ServerConfig
from bertserve.device_workers import DeviceWorkers
from bertserve.discovery import PluginRegistry, discover_plugins
from bertserve.domain import CallLimits
from bertserve.errors import ModelUnavailable
from bertserve.model_host import ModelHost
from bertserve.parsing import add_servicer
from bertserve.router import Router
from bertserve.runtime import freeze_loaded_heap
from bertserve.servicers import EncoderServicer, ModelServicer
from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc

__all__ = ["BertServer"]

log = logging.getLogger(__name__)

_ANSWER_LEFTOVERS_S = 0.5  # after the grace period: time to send the calls still waiting their error
_NO_LIMIT = 2**31 - 1  # the largest value a grpc integer channel argument takes

_SERVICES = (
    encoder_service_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name,
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
)


class BertServer:
    """One bertserve process: start() binds and begins loading models in the background."""

    def __init__(
        self, config: ServerConfig, registry: PluginRegistry | None = None, *, share_port: bool = False
    ) -> None:
        """share_port: bind alongside the other processes of one server (see bertserve.supervisor).

        Otherwise the port is this process's alone, and a port already taken fails to bind
        rather than silently splitting traffic with whatever holds it.
        """
        self.config = config
        self._share_port = share_port
        registry = registry or discover_plugins()
        self._tokenizer_pool = ThreadPoolExecutor(config.tokenizer_threads, thread_name_prefix="tokenize")
        self._device_workers = DeviceWorkers(config.models)
        self._loaders = ThreadPoolExecutor(max(1, len(config.models)), thread_name_prefix="fetch")
        hosts = []
        for spec in config.models:
            pools = (self._tokenizer_pool, self._device_workers.for_model(spec), self._loaders)
            try:
                factory = registry.get(spec.plugin)
            except KeyError as e:
                log.error("model %r cannot load: %s", spec.name, e.args[0])
                hosts.append(ModelHost(spec, None, *pools, failure=str(e.args[0])))
            else:
                hosts.append(ModelHost(spec, factory, *pools))
        self.router = Router(hosts, config.default_model)
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._loading: asyncio.Task[None] | None = None
        self._health_tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> int:
        """Bind, serve, and load every model concurrently; returns the bound port."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.config.max_receive_message_bytes),
                ("grpc.max_send_message_length", self.config.max_send_message_bytes),
                ("grpc.so_reuseport", int(self._share_port)),
                # grpc core cancels (status CANCELLED, no message) calls that arrive faster than the
                # event loop picks them up once 1,000 wait; every call must reach bertserve, whose
                # own limit (max_concurrent_calls) refuses with RESOURCE_EXHAUSTED and a retry hint.
                ("grpc.server.max_pending_requests", _NO_LIMIT),
                ("grpc.server.max_pending_requests_hard_limit", _NO_LIMIT),
            ]
        )
        add_servicer(
            encoder_service_pb2_grpc.add_EncoderServiceServicer_to_server,
            EncoderServicer(
                self.router,
                stream_max_in_flight=self.config.stream_max_in_flight,
                limits=CallLimits(self.config.max_send_message_bytes, self.config.max_concurrent_calls),
            ),
            server,
            max_request_bytes=self.config.max_input_bytes,
        )
        add_servicer(
            model_service_pb2_grpc.add_ModelServiceServicer_to_server,
            ModelServicer(self.router),
            server,
            max_request_bytes=self.config.max_input_bytes,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((*_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        try:
            self.port = server.add_insecure_port(self.config.bind)
        except RuntimeError:  # grpc's word for a failed bind
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot bind {self.config.bind}: the address is in use or not this machine's")
        await server.start()
        self._server = server
        for host in self.router:
            host.on_state_change = self._publish_health
            await self._refresh_health(host)
        self._loading = asyncio.create_task(self._load_all(), name="load-models")
        log.info("bertserve listening on %s (port %d)", self.config.bind, self.port)
        return self.port

    async def _load_all(self) -> None:
        await asyncio.gather(*(host.load() for host in self.router))
        freeze_loaded_heap()

    async def wait_until_loaded(self) -> None:
        if self._loading is not None:
            await asyncio.shield(self._loading)

    def _publish_health(self, host: ModelHost) -> None:
        self._health_tasks.add(task := asyncio.get_running_loop().create_task(self._refresh_health(host)))
        task.add_done_callback(self._health_tasks.discard)

    async def _refresh_health(self, host: ModelHost) -> None:
        """Each model has its own entry (NOT_SERVING while loading, failed, or its passes keep failing);
        the server and its services are SERVING while any model is."""
        await self.health.set(host.name, _health_status(host.serving))
        overall = _health_status(any(h.serving for h in self.router))
        for service in ("", *_SERVICES):
            await self.health.set(service, overall)

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight calls finish within grace seconds, then free the models."""
        grace = self.config.grace_period_s if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            # gRPC would cut the calls left at the end of the grace period with a bare CANCELLED;
            # bertserve answers them first, with UNAVAILABLE (a retry elsewhere succeeds) and why.
            stopping = asyncio.create_task(self._server.stop(grace + _ANSWER_LEFTOVERS_S))
            done, _ = await asyncio.wait([stopping], timeout=grace)
            if not done:
                late = ModelUnavailable(
                    f"the server is shutting down and the call did not finish within its grace period "
                    f"of {grace:g}s (grace_period_s); retry it"
                )
                for host in self.router:
                    host.batcher.abandon(late)
            await stopping
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        await asyncio.gather(*(host.stop() for host in self.router), return_exceptions=True)
        self._tokenizer_pool.shutdown(wait=False, cancel_futures=True)
        self._device_workers.shutdown()
        self._loaders.shutdown(wait=False, cancel_futures=True)

    async def serve_forever(self, on_listening: Callable[[], None] = lambda: None) -> None:
        """Run until SIGTERM or SIGINT, then drain in-flight calls and exit."""
        await self.start()
        on_listening()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if stop.is_set():  # a second signal: the caller will not wait for the drain
                log.warning("second %s: exiting now", signal.Signals(signum).name)
                logging.shutdown()
                os._exit(128 + signum)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        await stop.wait()
        log.info("shutting down: draining in-flight calls for up to %.0fs", self.config.grace_period_s)
        await self.stop()
        log.info("bertserve stopped")


def _health_status(serving: bool) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    return health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
