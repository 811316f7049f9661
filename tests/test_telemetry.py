"""OpenTelemetry traces: `bertserve serve` with the standard OTEL_* variables exports each call's
server span (continuing the caller's trace) and its queue-wait and forward-pass spans over OTLP
to a collector; here a real OTLP/gRPC receiver on loopback."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from bertserve.errors import ConfigError
from bertserve.observability.telemetry import configure_tracing, tracing_requested
from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc

from otlp import Collector, collecting, tracing_env
from served import Served

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, int]]:
    async with collecting() as received:
        yield received


@pytest.mark.parametrize("processes", ["processes: 1", "processes: 2"])
async def test_each_call_is_traced_with_its_queue_wait_and_forward_pass(
    collector: tuple[Collector, int], tiny_models: dict[str, Path], tmp_path: Path, processes: str
) -> None:
    """In one process, and with two front ends whose engine runs the passes: the engine's spans
    join the trace of the call that the front end serves."""
    received, port = collector
    config = tmp_path / "c.yaml"
    config.write_text(
        f"server: {{address: 127.0.0.1, port: 0, {processes}}}\n"
        f"models:\n  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}', workers: 1}}\n"
    )
    served = Served(
        config,
        env=tracing_env(port, "embedder"),
    )
    try:
        if processes == "processes: 1":
            served.wait_for(r"model 'bert' ready")
        else:
            served.wait_for(r"'bert': tokenizer ready", count=2)
        assert served.wait_for("OpenTelemetry traces on: otlp, service embedder")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            traceparent = (("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"),)
            request = encoder_service_pb2.EmbedRequest(model="bert", inputs=["one", "two texts"])
            reply = await encoder_service_pb2_grpc.EncoderServiceStub(channel).Embed(request, metadata=traceparent)
            assert reply.model == "bert"
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="bert"))

        deadline = time.monotonic() + 20
        while len(received.of_trace(TRACE_ID)) < 3:
            assert time.monotonic() < deadline, f"spans of the call: {received.of_trace(TRACE_ID)}"
            await asyncio.sleep(0.1)
        spans = {span.name: span for span in received.of_trace(TRACE_ID)}
        call = spans["/bertserve.v1.EncoderService/Embed"]
        assert call.parent_span_id.hex() == CALLER_SPAN_ID, "the caller's trace continues"
        assert call.kind == trace_pb2.Span.SPAN_KIND_SERVER
        attributes = {a.key: a.value for a in call.attributes}
        assert attributes["rpc.service"].string_value == "bertserve.v1.EncoderService"
        assert attributes["rpc.grpc.status_code"].int_value == 0
        wait, forward = spans["queue wait"], spans["forward pass"]
        assert wait.parent_span_id == call.span_id and forward.parent_span_id == call.span_id
        assert call.start_time_unix_nano <= wait.start_time_unix_nano <= wait.end_time_unix_nano
        assert wait.end_time_unix_nano == forward.start_time_unix_nano <= forward.end_time_unix_nano
        assert forward.end_time_unix_nano <= call.end_time_unix_nano
        facts = {a.key: a.value.int_value for a in forward.attributes if a.key != "bertserve.model"}
        assert facts["bertserve.call_sequences"] == 2 and facts["bertserve.pass_sequences"] >= 2
        assert {service for service, _ in received.spans} == {"embedder"}
        assert not [s for _, s in received.spans if "Health" in s.name], "health checks are not traced"
    finally:
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(30)


def test_tracing_is_on_only_when_the_environment_asks() -> None:
    assert not tracing_requested({})
    assert not tracing_requested({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"})
    assert not tracing_requested({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317"})
    assert tracing_requested({"OTEL_TRACES_EXPORTER": "console"})
    assert configure_tracing({}) is None
    with pytest.raises(ConfigError) as info:
        configure_tracing({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert str(info.value) == (
        "OTEL_TRACES_EXPORTER: no trace exporter 'zipkin' is installed; installed: ['console', 'otlp_proto_grpc']"
    )
