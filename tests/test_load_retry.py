"""A model whose files cannot be reached at start is tried again, with a growing pause, until it
loads; one that failed for another reason is not. ListModels shows the attempts."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import grpc
import pytest

from bertserve_client import AsyncClient, BertserveError
from bertserve_client.v1 import model_service_pb2, model_service_pb2_grpc

from conftest import start_server


async def _models(address: str) -> dict[str, model_service_pb2.Model]:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await model_service_pb2_grpc.ModelServiceStub(channel).ListModels(model_service_pb2.ListModelsRequest())
    return {m.name: m for m in reply.models}


async def test_a_source_that_appears_later_loads_on_its_own(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    later = tmp_path / "later"
    config = tmp_path / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, load_retry_max_s: 2}\nmodels:\n"
        f"  - {{name: here, plugin: bert, source: '{tiny_models['bert']}'}}\n"
        f"  - {{name: later, plugin: bert, source: '{later}'}}\n"
        "  - {name: never, plugin: bert, source: 'pkg:no_such_package_anywhere/model'}\n"
    )
    server = await start_server(config)
    address = f"127.0.0.1:{server.port}"
    try:
        models = await _models(address)
        waiting = models["later"]
        assert waiting.state == model_service_pb2.MODEL_STATE_FAILED
        assert (
            waiting.failure_reason
            == f"SourceUnavailable: source '{later}' is not a directory (a path, so not a hub id)"
        )
        assert waiting.load_attempts >= 1 and waiting.HasField("next_attempt_time")
        assert 0 <= waiting.next_attempt_time.ToNanoseconds() / 1e9 - time.time() <= 2.5
        final = models["never"]
        assert (final.state, final.load_attempts, final.HasField("next_attempt_time")) == (
            model_service_pb2.MODEL_STATE_FAILED,
            1,
            False,
        )
        async with AsyncClient(address) as client:
            with pytest.raises(BertserveError) as info:
                await client.embed("too early", model="later")
            assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION
            assert info.value.message.startswith(
                f"model 'later' failed to load: SourceUnavailable: source '{later}' is not a directory"
            )
            assert "; the next in " in info.value.message

            shutil.copytree(tiny_models["bert"], later)
            deadline = time.monotonic() + 30
            while (await _models(address))["later"].state != model_service_pb2.MODEL_STATE_READY:
                assert time.monotonic() < deadline, "the model was not tried again"
                await asyncio.sleep(0.2)
            assert (await client.embed("it came", model="later")).embeddings.shape[0] == 1
            later_info = await client.model("later")
            assert later_info.state == "ready" and later_info.load_attempts >= 2 and later_info.next_attempt_at is None
        loaded = (await _models(address))["later"]
        assert loaded.load_attempts >= 2 and not loaded.HasField("next_attempt_time") and not loaded.failure_reason
        assert (await _models(address))["never"].load_attempts == 1
    finally:
        await server.stop(grace=1)


async def test_a_checkpoint_whose_config_is_broken_fails_once_for_good(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """transformers raises OSError for a config.json that is not JSON, as for files not there yet:
    that one is a broken checkpoint, final, not retried for ever."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_models["bert"], broken)
    (broken / "config.json").write_text("{not json\n")
    config = tmp_path / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, load_retry_max_s: 1}\nmodels:\n"
        f"  - {{name: broken, plugin: bert, source: '{broken}'}}\n"
    )
    server = await start_server(config)
    try:
        await asyncio.sleep(2.5)  # retries would be due after 1 s and 2 s
        model = (await _models(f"127.0.0.1:{server.port}"))["broken"]
        assert (model.state, model.load_attempts, model.HasField("next_attempt_time")) == (
            model_service_pb2.MODEL_STATE_FAILED,
            1,
            False,
        )
        assert model.failure_reason == (
            f"ConfigError: checkpoint '{broken}': its config.json is not valid JSON (Expecting property name "
            "enclosed in double quotes: line 1 column 2 (char 1))"
        )
    finally:
        await server.stop(grace=1)
