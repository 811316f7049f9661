"""Assemble and run the server: models, servicers, health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.instrumentation.grpc.filters import negate, service_name

from bertserve.app import event_loop
from bertserve.app.config import ServerConfig, TlsConfig
from bertserve.app.discovery import PluginRegistry, discover_plugins
from bertserve.app.hosting import EngineAddress, Hosting
from bertserve.app.process_plan import engine_device, gpu_present
from bertserve.domain import CallLimits
from bertserve.edge.access_log import AccessLog
from bertserve.edge.auth import ADMIN, ANY_SCOPE, INFERENCE, AuthInterceptor, LocalAdminOnly, Principal, TokenTable
from bertserve.edge.drain import CallGate
from bertserve.edge.grpc_logs import quiet_grpc_logs
from bertserve.edge.health import HealthServicer
from bertserve.edge.parsing import add_generic_only, add_servicer
from bertserve.edge.reflection import METHODS as REFLECTION_METHODS
from bertserve.edge.reflection import enable_reflection
from bertserve.edge.servicers import EncoderServicer, ModelServicer
from bertserve.edge.tls import CertificateFiles, RotatingCredentials
from bertserve.errors import ModelUnavailable
from bertserve.observability import telemetry
from bertserve.observability.metrics import serve_metrics
from bertserve.runtime.threads import configure_runtime, cpu_cores, freeze_loaded_heap, share_cores
from bertserve.serving.engine_link import EngineLink
from bertserve.serving.engine_models import EngineModels
from bertserve.serving.model_host import ModelHost
from bertserve.serving.model_manager import ModelChanges, ModelManager
from bertserve.serving.name_locks import NameLocks
from bertserve.serving.router import Router
from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc

__all__ = ["BertServer"]

log = logging.getLogger(__name__)

#: After the grace period: time to send the calls still waiting their error; then what gRPC
#: itself still serves (health watches, reflection) has as long before it is cut.
_ANSWER_LEFTOVERS_S = 0.5
_NO_LIMIT = 2**31 - 1  # the largest value a grpc integer channel argument takes
_MIN_CLIENT_PING_MS = 10_000

_SERVICE_DESCRIPTORS = (
    encoder_service_pb2.DESCRIPTOR.services_by_name["EncoderService"],
    model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
)
_SERVICES = tuple(service.full_name for service in _SERVICE_DESCRIPTORS)
_ADMIN_METHODS = tuple(f"/bertserve.v1.ModelService/{name}" for name in ("LoadModel", "UnloadModel", "ReloadModel"))


class BertServer:
    """One bertserve process: start() binds and begins loading models in the background."""

    def __init__(
        self,
        config: ServerConfig,
        registry: PluginRegistry | None = None,
        *,
        share_port: bool = False,
        engines: Sequence[EngineAddress] = (),
    ) -> None:
        """share_port: bind alongside the other processes of one server (see bertserve.app.supervisor).
        Otherwise the port is this process's alone, and a port already taken fails to bind
        rather than silently splitting traffic with whatever holds it.

        engines: this process is a front end of those engines (one per device), which load and
        run the models; this process tokenizes and post-processes (see bertserve.app.engine).
        """
        # Workers left automatic become concrete here when the caller did not (tests, embedders); a
        # front end runs no passes (and may run without torch, which placing a model asks).
        if not engines and any(not spec.workers for spec in config.models):
            config = share_cores(config, cpu_cores())
        self.config = config
        self._share_port = share_port
        self._hosting = Hosting(config, registry or discover_plugins())
        self.models: ModelChanges
        self._links: dict[str, EngineLink] = {}
        if not engines:
            self.router = Router([self._hosting.host(spec) for spec in config.models], config.default_model)
            self.models = ModelManager(
                self.router,
                new_host=self._hosting.host,
                parse_entry=self._hosting.parse_entry,
                published=lambda host: host.publish(self._publish_health),
                removed=self._forget,
                grace_period_s=config.grace_period_s,
            )
        else:
            self.router = Router([], config.default_model)
            models = EngineModels(
                self.router,
                new_host=lambda entry, token, device: self._hosting.front_end_host(
                    entry, token, device, self._links[device]
                ),
                parse_entry=self._hosting.parse_entry,
                published=lambda host: host.publish(self._publish_health),
                removed=self._forget,
                device_of=lambda spec: engine_device(spec.device, gpu_present()),
                grace_period_s=config.grace_period_s,
                names=NameLocks(engines[0].run_directory),
            )
            for engine in engines:
                self._links[engine.device] = EngineLink(
                    engine.address,
                    engine.identity,
                    on_table=functools.partial(models.apply, engine.device),
                    on_lost=functools.partial(models.lost, engine.device),
                )
            models.links = self._links
            self.models = models
        self.health = HealthServicer()
        self._gate = CallGate()  # the encoder service's calls in flight, which a drain waits for
        self._access_log = AccessLog(
            _methods(_SERVICE_DESCRIPTORS), self.router, self.router.default_model, lines=config.access_log
        )
        self._server: grpc.aio.Server | None = None
        self._loading: asyncio.Task[None] | None = None
        self._health_tasks: set[asyncio.Task[None]] = set()
        self._tls = RotatingCredentials(_files_of(config.tls)) if config.tls else None
        self.port = 0
        self.metrics_port = 0  # bound once started, when config.metrics_port is set
        self._metrics: WSGIServer | None = None

    def _forget(self, name: str) -> None:
        """A model is gone: its health entry says so (SERVICE_UNKNOWN), and the server's is recomputed."""
        unknown = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

        async def refresh() -> None:
            await self.health.set(name, unknown)
            await self._refresh_overall()

        self._update_health(refresh())

    async def start(self) -> int:
        """Bind, serve, and load every model concurrently; returns the bound port."""
        config = self.config
        quiet_grpc_logs()
        server = grpc.aio.server(
            interceptors=self._interceptors(),
            options=[
                ("grpc.max_receive_message_length", config.max_receive_message_bytes),
                ("grpc.max_send_message_length", config.max_send_message_bytes),
                ("grpc.so_reuseport", int(self._share_port)),
                # grpc core cancels (status CANCELLED, no message) calls that arrive faster than the
                # event loop picks them up once 1,000 wait; every call must reach bertserve, whose
                # own limit (max_concurrent_calls) refuses with RESOURCE_EXHAUSTED and a retry hint.
                ("grpc.server.max_pending_requests", _NO_LIMIT),
                ("grpc.server.max_pending_requests_hard_limit", _NO_LIMIT),
                # Clients in a fleet ping idle connections to notice a dead replica: let them,
                # down to every 10 s, instead of answering "too many pings" with GOAWAY.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", _MIN_CLIENT_PING_MS),
                ("grpc.http2.max_ping_strikes", 0),
            ],
        )
        add_servicer(
            encoder_service_pb2_grpc.add_EncoderServiceServicer_to_server,
            EncoderServicer(
                self.router,
                stream_max_in_flight=config.stream_max_in_flight,
                limits=CallLimits(config.max_send_message_bytes, config.max_concurrent_calls),
                gate=self._gate,
            ),
            server,
            max_request_bytes=config.max_input_bytes,
        )
        add_servicer(
            model_service_pb2_grpc.add_ModelServiceServicer_to_server,
            # Whole servers side by side cannot change each other's models; front ends ask their engine.
            ModelServicer(self.router, None if self._share_port and not self._links else self.models),
            server,
            max_request_bytes=config.max_input_bytes,
        )
        add_generic_only(health_pb2_grpc.add_HealthServicer_to_server, self.health, server)
        enable_reflection((*_SERVICES, health.SERVICE_NAME), server)
        try:
            if self._tls is not None:
                self.port = server.add_secure_port(config.bind, self._tls.server_credentials())
            else:
                self.port = server.add_insecure_port(config.bind)
        except RuntimeError:  # grpc's word for a failed bind
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot bind {config.bind}: the address is in use or not this machine's")
        self._log_security()
        if config.metrics_port is not None and not self._share_port:  # several processes: the supervisor serves them
            self._metrics = serve_metrics(config.address, config.metrics_port)
            self.metrics_port = int(self._metrics.server_port)
        await server.start()
        self._server = server
        for host in self.router:
            host.on_state_change = self._publish_health
            await self._refresh_health(host)
        if self._links:
            for link in self._links.values():
                await link.start()
        else:
            self._loading = asyncio.create_task(self._load_all(), name="load-models")
        log.info("bertserve listening on %s (port %d)", self.config.bind, self.port)
        return self.port

    def _interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The access log and call metrics outermost (refused calls count too): it reads each call's
        facts as the call starts and closes a stream's handlers before the call ends. Then the trace
        span where tracing is on, then token auth, or without tokens the admin RPCs' loopback rule."""
        interceptors: list[grpc.aio.ServerInterceptor] = [self._access_log]
        provider = telemetry.tracer_provider()
        if provider is not None:
            # Probes call health every few seconds: their spans would drown the calls' own.
            interceptors.append(aio_server_interceptor(provider, filter_=negate(service_name(health.SERVICE_NAME))))
        auth = self.config.auth
        if not auth.enabled:
            if not self.config.admin.allow_remote_without_auth:
                interceptors.append(LocalAdminOnly(_ADMIN_METHODS))
            return interceptors
        scopes = {method: INFERENCE for method in _methods(_SERVICE_DESCRIPTORS)}
        scopes.update(dict.fromkeys(_ADMIN_METHODS, ADMIN))
        if auth.protect_reflection:
            scopes.update(dict.fromkeys(REFLECTION_METHODS, ANY_SCOPE))
        principals = [Principal(g.name, g.digest, frozenset(g.scopes), frozenset(g.models)) for g in auth.tokens]
        interceptors.append(AuthInterceptor(TokenTable(principals), scopes, default_model=self.router.default_model))
        return interceptors

    def _log_security(self) -> None:
        config = self.config
        if self._tls is not None:
            log.info("TLS on%s", " with client certificates required (mTLS)" if self._tls.mutual else "")
        elif not _is_loopback(config.address):
            log.warning(
                "serving plaintext on %s, which is not a loopback address: set server.tls for other machines' calls",
                config.address,
            )
        if config.auth.enabled:
            log.info("token auth on: %d tokens", len(config.auth.tokens))
        elif config.auth.protect_reflection:
            log.warning(
                "server.auth.protect_reflection is set, but no tokens are: reflection stays open, as every "
                "call is (set server.auth.tokens_file or BERTSERVE_TOKENS)"
            )
        if not config.auth.enabled and config.admin.allow_remote_without_auth:
            log.warning(
                "admin calls (LoadModel, UnloadModel, ReloadModel) are open to every peer without auth "
                "(server.admin.allow_remote_without_auth): anyone who reaches %s can change the models",
                config.bind,
            )

    def reload_certificates(self) -> None:
        """Re-read the TLS files at the next handshake (SIGHUP)."""
        if self._tls is not None:
            self._tls.request_reload()

    async def _load_all(self) -> None:
        await asyncio.gather(*(host.load() for host in self.router))
        freeze_loaded_heap()

    async def wait_until_loaded(self) -> None:
        if self._loading is not None:
            await asyncio.shield(self._loading)

    def _publish_health(self, host: ModelHost) -> None:
        self._update_health(self._refresh_health(host))

    def _update_health(self, update: Coroutine[Any, Any, None]) -> None:
        """Run a health update from sync code; the task is kept until it ends."""
        self._health_tasks.add(task := asyncio.get_running_loop().create_task(update))
        task.add_done_callback(self._health_tasks.discard)

    async def _refresh_health(self, host: ModelHost) -> None:
        """Each model has its own entry (NOT_SERVING while loading, failed, or its passes keep failing);
        the server and its services are SERVING while any model is."""
        await self.health.set(host.name, _health_status(host.serving))
        await self._refresh_overall()

    async def _refresh_overall(self) -> None:
        overall = _health_status(any(h.serving for h in self.router))
        for service in ("", *_SERVICES):
            await self.health.set(service, overall)

    async def stop(self, grace: float | None = None, *, drain_delay: float | None = None) -> None:
        """Report NOT_SERVING everywhere, keep serving for drain_delay seconds (so that endpoint
        lists and client balancers notice), refuse new calls, let in-flight calls finish within
        grace seconds, then free the models."""
        grace = self.config.grace_period_s if grace is None else grace
        drain_delay = self.config.drain_delay_s if drain_delay is None else drain_delay
        await self.health.enter_graceful_shutdown()
        await self.models.stop()
        if drain_delay > 0 and self._server is not None:
            log.info("health NOT_SERVING; still serving new calls for %gs (drain_delay_s)", drain_delay)
            await asyncio.sleep(drain_delay)
        if self._server is not None:
            # The calls in flight end before gRPC stops, which would lose the replies still on
            # their way (see bertserve.edge.drain); calls that come meanwhile are refused.
            self._gate.close()
            log.info("refusing new calls; %d in flight", self._gate.in_flight)
            for host in self.router:
                host.batcher.serve_first_come()
            if not await self._gate.wait_idle(grace):
                # gRPC would cut the calls left with a bare CANCELLED; bertserve answers them
                # first, with UNAVAILABLE (a retry elsewhere succeeds) and why.
                late = ModelUnavailable(
                    f"the server is shutting down and the call did not finish within its grace period "
                    f"of {grace:g}s (grace_period_s); retry it"
                )
                for host in self.router:
                    host.batcher.abandon(late)
                self._gate.expire(late)
                await self._gate.wait_idle(_ANSWER_LEFTOVERS_S)
            await self._server.stop(_ANSWER_LEFTOVERS_S)  # what is left: health watches, reflection
            self._access_log.write_lines()  # the last calls' lines, before anything below can fail
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        await asyncio.gather(*(host.stop() for host in self.router), return_exceptions=True)
        for link in self._links.values():
            await link.stop()
        if self._metrics is not None:
            await asyncio.to_thread(self._metrics.shutdown)
            self._metrics.server_close()
        await asyncio.to_thread(telemetry.flush)
        self._hosting.shutdown()

    async def serve_forever(self, on_listening: Callable[[], None] = lambda: None) -> None:
        """Run until SIGTERM or SIGINT, then drain in-flight calls and exit."""
        await self.start()
        on_listening()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if stop.is_set():  # a second signal: the caller will not wait for the drain
                log.warning("second %s: exiting now", signal.Signals(signum).name)
                self._access_log.write_lines()
                logging.shutdown()
                os._exit(128 + signum)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload_certificates)
        await stop.wait()
        log.info("shutting down: draining in-flight calls for up to %.0fs", self.config.grace_period_s)
        await self.stop()
        log.info("bertserve stopped")


def _methods(services: Sequence[ServiceDescriptor]) -> list[str]:
    return [f"/{service.full_name}/{method.name}" for service in services for method in service.methods]


def _files_of(tls: TlsConfig) -> CertificateFiles:
    ca = Path(tls.client_ca_file) if tls.client_ca_file else None
    return CertificateFiles(Path(tls.cert_file), Path(tls.key_file), ca)


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _health_status(serving: bool) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    return health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING


def serve_one_process(
    config: ServerConfig,
    cores: int,
    registry: PluginRegistry | None = None,
    *,
    share_port: bool = False,
    engines: Sequence[EngineAddress] = (),
    on_listening: Callable[[], None] = lambda: None,
) -> None:
    """Run one server process until it is stopped: its threads shared out over cores, the runtime
    set up, then the server (the command's one process, or one of the supervisor's)."""
    if not engines:
        config = share_cores(config, cores)
    configure_runtime(config, runs_passes=not engines)
    server = BertServer(config, registry, share_port=share_port, engines=engines)
    event_loop.run(server.serve_forever(on_listening=on_listening), config.event_loop)
