"""OpenTelemetry traces, on when the standard ``OTEL_*`` environment variables ask for them.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``, or any
installed one) or an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and ``OTEL_SDK_DISABLED`` is not ``true``. The SDK reads
the rest as usual: ``OTEL_SERVICE_NAME`` (default ``bertserve``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_BSP_*``. Each call gets a server span
from the upstream gRPC instrumentation (continuing the caller's ``traceparent``); under it, each
forward pass that carried the call's sequences adds a ``queue wait`` and a ``forward pass`` span.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bertserve import __version__
from bertserve.errors import ConfigError

__all__ = [
    "attached",
    "capture",
    "carrier",
    "configure_tracing",
    "flush",
    "record_pass",
    "tracer_provider",
    "tracing_requested",
]

log = logging.getLogger(__name__)

_EXPORTER_GROUP = "opentelemetry_traces_exporter"
_FLUSH_TIMEOUT_MS = 5000

_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


def tracing_requested(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER")
    if exporters is not None:
        return exporters.strip().lower() not in ("", "none")
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure_tracing(env: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Set up this process's tracer provider when the environment asks for traces; None otherwise.
    ConfigError for an exporter that is not installed."""
    global _provider, _tracer
    env = os.environ if env is None else env
    if not tracing_requested(env):
        return None
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "bertserve"}))
    provider = TracerProvider(resource=resource)
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    _provider, _tracer = provider, provider.get_tracer("bertserve", __version__)
    log.info("OpenTelemetry traces on: %s, service %s", ", ".join(names), resource.attributes.get(SERVICE_NAME))
    return provider


def _exporter(name: str, env: Mapping[str, str]) -> Any:
    if name == "otlp":  # the spec's name; the protocol picks the package's exporter
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
        name = "otlp_proto_http" if protocol.startswith("http") else "otlp_proto_grpc"
    found = entry_points(group=_EXPORTER_GROUP, name=name)
    if not found:
        installed = sorted(e.name for e in entry_points(group=_EXPORTER_GROUP))
        raise ConfigError(f"OTEL_TRACES_EXPORTER: no trace exporter {name!r} is installed; installed: {installed}")
    return next(iter(found)).load()()


def tracer_provider() -> TracerProvider | None:
    """The provider configure_tracing set up, if it did."""
    return _provider


def flush() -> None:
    """Send the spans still buffered (the server is stopping)."""
    if _provider is not None:
        _provider.force_flush(_FLUSH_TIMEOUT_MS)


def capture() -> otel_context.Context | None:
    """The current call's trace context, to hang the spans of its forward passes on; None when off."""
    return otel_context.get_current() if _tracer is not None else None


def carrier() -> dict[str, str]:
    """The current call's trace context as W3C trace headers, for an engine process to continue;
    empty when tracing is off."""
    headers: dict[str, str] = {}
    if _tracer is not None:
        propagate.inject(headers)
    return headers


@contextlib.contextmanager
def attached(headers: Mapping[str, str]) -> Iterator[None]:
    """Within this block, the current trace context is the one headers carry (from carrier())."""
    if _tracer is None or not headers:
        yield
        return
    token = otel_context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        otel_context.detach(token)


def record_pass(
    model: str,
    pass_id: int,
    started_ns: int,
    ended_ns: int,
    *,
    sequences: int,
    tokens: int,
    calls: Iterable[tuple[otel_context.Context, int, int]],
    error: str | None = None,
) -> None:
    """Spans of one forward pass, for each call with sequences in it: (its trace context, its first
    sequence's enqueue time, its sequences in the pass). Times are time.monotonic_ns() values."""
    if _tracer is None:
        return
    to_epoch = time.time_ns() - time.monotonic_ns()
    shared: dict[str, str | int] = {
        "bertserve.model": model,
        "bertserve.pass_id": pass_id,
        "bertserve.pass_sequences": sequences,
        "bertserve.pass_tokens": tokens,
    }
    for parent, enqueued_ns, own in calls:
        wait = _tracer.start_span("queue wait", context=parent, start_time=enqueued_ns + to_epoch)
        wait.set_attribute("bertserve.model", model)
        wait.end(end_time=started_ns + to_epoch)
        forward = _tracer.start_span(
            "forward pass",
            context=parent,
            start_time=started_ns + to_epoch,
            attributes={**shared, "bertserve.call_sequences": own},
        )
        if error is not None:
            forward.set_status(trace.Status(trace.StatusCode.ERROR, error))
        forward.end(end_time=ended_ns + to_epoch)
