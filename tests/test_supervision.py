"""Supervision: no exception on a model's path leaves a call waiting. A failed pass fails its calls
with INTERNAL and a request id, is logged once with its traceback, the model goes on serving, and a
model whose passes keep failing reports NOT_SERVING until one succeeds. The faults come from a real
plugin that fails on a marked input, not from a mock."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bertserve.api import EmbedOutput, Encoding, Head, Pooling
from bertserve.app.config import load_config
from bertserve.app.discovery import PluginRegistry, discover_plugins
from bertserve.app.server import BertServer
from bertserve.plugins.spanbert import SpanBertPlugin
from bertserve.serving.batcher import FAILURES_BEFORE_UNHEALTHY
from bertserve_client import AsyncClient, BertserveError

MARK = "[MASK]"  # the tiny vocabulary's mask token: a text holding it is "marked"


def _marked(batch: Sequence[Encoding]) -> bool:
    return any(MARK in e.tokens for e in batch)


class FaultyPlugin(SpanBertPlugin):
    """SpanBERT, except that a marked input makes its forward pass raise, or return a result short."""

    variant = "faulty"

    def embed(self, batch: Sequence[Encoding], *, pooling: Pooling, with_token_states: bool) -> EmbedOutput:
        if _marked(batch):
            raise RuntimeError("a marked input reached the model")
        return super().embed(batch, pooling=pooling, with_token_states=with_token_states)

    def head_logits(self, head: Head, batch: Sequence[Encoding]) -> list[np.ndarray]:
        logits = super().head_logits(head, batch)
        return logits[:-1] if _marked(batch) else logits


@pytest.fixture(scope="module")
async def faulty(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BertServer]:
    config = tmp_path_factory.mktemp("faulty") / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0}\nmodels:\n"
        f"  - {{name: faulty, plugin: faulty, source: '{tiny_models['spanbert-qa']}', workers: 1}}\n"
        f"  - {{name: fine, plugin: bert, source: '{tiny_models['bert']}'}}\n"
    )
    registry = PluginRegistry({**discover_plugins().plugins, "faulty": FaultyPlugin}, {})
    server = BertServer(load_config(config), registry)
    await server.start()
    await server.wait_until_loaded()
    yield server
    await server.stop(grace=1)


@pytest.fixture
async def client(faulty: BertServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(f"127.0.0.1:{faulty.port}", timeout=20) as c:
        yield c


_INTERNAL = re.compile(r"internal error in (.+) of model 'faulty' \(request id ([0-9a-f]{16})\)")


async def _internal(call: Any) -> tuple[str, str]:
    with pytest.raises(BertserveError) as info:
        await call
    assert info.value.code is grpc.StatusCode.INTERNAL
    match = _INTERNAL.fullmatch(info.value.message)
    assert match, info.value.message
    return match.group(1), match.group(2)


async def test_a_failed_pass_fails_its_calls_is_logged_once_and_serving_goes_on(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        where, request_id = await _internal(client.embed([f"{MARK} marked", "an innocent text"], model="faulty"))
    assert where == "a forward pass over 2 sequences"
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert request_id in record.getMessage() and record.exc_info is not None
    assert "a marked input reached the model" in str(record.exc_info[1])
    result = await client.embed(["an innocent text"], model="faulty")
    assert result.embeddings.shape[0] == 1


async def test_an_internal_error_carries_the_callers_request_id(
    faulty: BertServer, caplog: pytest.LogCaptureFixture
) -> None:
    from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{faulty.port}") as channel:
        stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
        request = encoder_service_pb2.EmbedRequest(model="faulty", inputs=[f"{MARK} marked"])
        with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Embed(request, metadata=(("x-request-id", "trace-me-42"),))
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert info.value.details() == (
        "internal error in a forward pass over 1 sequences of model 'faulty' (request id trace-me-42)"
    )
    assert ("x-request-id", "trace-me-42") in tuple(info.value.trailing_metadata() or ())
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "a forward pass over 1 sequences of model 'faulty' failed (request id trace-me-42)"


async def test_a_plugin_that_returns_too_few_results_fails_the_call_not_hangs(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        await _internal(client.answer((f"What is {MARK}?", "Paris is a city."), model="faulty"))
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "the model returned 0 results for a batch of 1" in str(record.exc_info[1])  # type: ignore[index]
    [answers] = await client.answer(("What is Paris?", "Paris is a city."), model="faulty")
    assert answers


async def _health(faulty: BertServer, service: str) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{faulty.port}") as channel:
        return (await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))).status


async def _until(faulty: BertServer, service: str, status: Any) -> None:
    for _ in range(100):
        if await _health(faulty, service) == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{service} never became {status}")


async def test_a_model_whose_passes_keep_failing_is_not_serving_until_one_succeeds(
    faulty: BertServer, client: AsyncClient
) -> None:
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    await client.embed("fine", model="faulty")
    await _until(faulty, "faulty", serving)
    for _ in range(FAILURES_BEFORE_UNHEALTHY):
        await _internal(client.embed(f"{MARK} again", model="faulty"))
    await _until(faulty, "faulty", not_serving)
    assert await _health(faulty, "fine") == serving
    assert await _health(faulty, "") == serving  # the server as a whole still serves
    await client.embed("a pass that succeeds", model="faulty")
    await _until(faulty, "faulty", serving)
