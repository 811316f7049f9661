"""One engine per device: a model placed on a GPU gets an engine of its own, apart from the CPU's.

This machine has no GPU, so the model on cuda:0 fails to load, in its own engine, with the reason;
the CPU's engine serves on through that engine's failure and through its death, and model changes
go to the engine of the entry's device."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bertserve_client.v1 import encoder_service_pb2 as enc
from bertserve_client.v1 import encoder_service_pb2_grpc as enc_rpc
from bertserve_client.v1 import model_service_pb2 as mod
from bertserve_client.v1 import model_service_pb2_grpc as mod_rpc

from conftest import NO_RETRIES
from served import Served

pytestmark = pytest.mark.skipif(
    any(Path("/proc/driver/nvidia/gpus").glob("*")), reason="needs a machine without a GPU: cuda:0 must fail"
)

NO_GPU = "ConfigError: device 'cuda:0' asked for, but no CUDA device is present"  # as one process says it


@pytest.fixture(scope="module")
def served(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = tmp_path_factory.mktemp("devices") / "devices.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, processes: 2, grace_period_s: 2, load_retry_max_s: 0}\nmodels:\n"
        f"  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}', device: cpu}}\n"
        f"  - {{name: on-gpu, plugin: bert, source: '{tiny_models['bert']}', device: 'cuda:0'}}\n"
    )
    served = Served(config)
    served.wait_for(r"model 'bert': tokenizer ready", count=2, timeout=180)
    yield served
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(60)


def _engine_pid(served: Served, device: str) -> int:
    line = served.wait_for(rf"\[engine {re.escape(device)}\] .*engine serving on .* \(pid \d+\)")[-1]
    return int(re.findall(r"\(pid (\d+)\)", line)[0])


async def _status(channel: grpc.aio.Channel, service: str) -> str:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def test_each_device_has_its_engine_and_a_failed_one_harms_no_other(served: Served) -> None:
    assert served.wait_for(r"2 front ends of one engine .*; engines: cpu, cuda:0")
    assert _engine_pid(served, "cpu") != _engine_pid(served, "cuda:0")
    [failed] = served.wait_for(r"\[engine cuda:0\] .*model 'on-gpu' failed to load")
    assert NO_GPU in failed
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}", options=NO_RETRIES) as channel:
        models = mod_rpc.ModelServiceStub(channel)
        listed = {m.name: m for m in (await models.ListModels(mod.ListModelsRequest(), timeout=10)).models}
        assert listed.keys() == {"bert", "on-gpu"}
        assert (await models.GetModel(mod.GetModelRequest(name="on-gpu"), timeout=10)).model.failure_reason == NO_GPU
        assert await _status(channel, "bert") == "SERVING"
        assert await _status(channel, "on-gpu") == "NOT_SERVING"
        stub = enc_rpc.EncoderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Embed(enc.EmbedRequest(model="on-gpu", inputs=["x"]), timeout=10)
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert info.value.details() == f"model 'on-gpu' failed to load: {NO_GPU}"
        assert (await stub.Embed(enc.EmbedRequest(model="bert", inputs=["x"]), timeout=10)).model == "bert"


async def test_the_cpu_engine_serves_on_while_the_gpu_engine_is_killed(served: Served) -> None:
    failures: list[str] = []
    calls = 0
    stop = asyncio.Event()

    async def caller(channel: grpc.aio.Channel) -> None:
        nonlocal calls
        stub = enc_rpc.EncoderServiceStub(channel)
        while not stop.is_set():
            try:
                await stub.Embed(enc.EmbedRequest(model="bert", inputs=["steady"]), timeout=30)
                calls += 1
            except grpc.aio.AioRpcError as e:
                failures.append(f"{e.code().name}: {e.details()}")

    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{served.port}", options=NO_RETRIES) for _ in range(4)]
    callers = [asyncio.create_task(caller(c)) for c in channels]
    await asyncio.sleep(0.5)
    before = calls
    os.kill(_engine_pid(served, "cuda:0"), signal.SIGKILL)
    await asyncio.to_thread(served.wait_for, r"the engine cuda:0 exited \(exit status -9\); restarting it")
    await asyncio.to_thread(served.wait_for, r"\[engine cuda:0\] .*engine serving on", 2)
    # Both front ends have it back (zmq retries the connection at up to 1 s apart): the tests after
    # this one change its models.
    await asyncio.to_thread(served.wait_for, r"the engine at \S+engine-cuda-0 is reachable again", 2)
    stop.set()
    await asyncio.gather(*callers)
    for channel in channels:
        await channel.close()
    assert failures == [] and calls > before


async def test_model_changes_go_to_the_engine_of_the_entrys_device(
    served: Served, tiny_models: dict[str, Path]
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}", options=NO_RETRIES) as channel:
        models = mod_rpc.ModelServiceStub(channel)
        entry = f"{{name: extra, plugin: bert, source: '{tiny_models['bert']}', device: cpu}}"
        assert (await models.LoadModel(mod.LoadModelRequest(entry=entry), timeout=120)).model.name == "extra"
        assert served.wait_for(r"\[engine cpu\] .*model 'extra' ready in")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await models.LoadModel(mod.LoadModelRequest(entry=entry.replace("cpu", "'cuda:1'")), timeout=60)
        assert info.value.code() is grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await models.LoadModel(
                mod.LoadModelRequest(entry=entry.replace("extra", "far").replace("cpu", "'cuda:1'")), timeout=60
            )
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert info.value.details() == (
            "model 'far' would run on cuda:1, and no engine of this server runs that device (they run: cpu, "
            "cuda:0); list a model on it in the configuration and restart, or choose one of those devices"
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await models.ReloadModel(
                mod.ReloadModelRequest(name="extra", entry=entry.replace("cpu", "'cuda:0'")), timeout=60
            )
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert info.value.details() == (
            "model 'extra' runs on cpu, and the new entry puts it on cuda:0: a reload keeps a model on its device; "
            "unload it, then load the new entry"
        )
        await models.UnloadModel(mod.UnloadModelRequest(name="extra"), timeout=60)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await models.UnloadModel(mod.UnloadModelRequest(name="extra"), timeout=60)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND


async def test_two_loads_of_one_name_on_two_engines_let_one_win(served: Served, tiny_models: dict[str, Path]) -> None:
    """Loads of one name that race for two devices: one loads it, the other is told it exists (as
    in one process), and the name stays on one engine, which an unload then frees for good."""
    entry = f"{{name: twin, plugin: bert, source: '{tiny_models['bert']}', device: DEVICE}}"
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{served.port}", options=NO_RETRIES) for _ in range(4)]
    try:
        for _ in range(3):
            loads = [
                mod_rpc.ModelServiceStub(channel).LoadModel(
                    mod.LoadModelRequest(entry=entry.replace("DEVICE", device)), timeout=120
                )
                for channel, device in zip(channels, ["cpu", "'cuda:0'", "cpu", "'cuda:0'"], strict=True)
            ]
            outcomes = await asyncio.gather(*loads, return_exceptions=True)
            models = mod_rpc.ModelServiceStub(channels[0])
            listed = (await models.ListModels(mod.ListModelsRequest(), timeout=10)).models
            [twin] = [m for m in listed if m.name == "twin"]
            won = [o for o in outcomes if isinstance(o, mod.LoadModelResponse)]
            refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
            exists = "a model named 'twin' is already loaded; ReloadModel replaces it"
            if twin.failure_reason:  # the cuda:0 load came first: it failed, and holds the name
                assert twin.failure_reason == NO_GPU and won == []
                failed = [e for e in refused if e.code() is grpc.StatusCode.FAILED_PRECONDITION]
                assert [e.details() for e in failed] == [f"model 'twin' failed to load: {NO_GPU}"]
            else:  # a cpu load came first
                assert [w.model.name for w in won] == ["twin"]
                failed = []
            others = [(e.code(), e.details()) for e in refused if e not in failed]
            assert others == [(grpc.StatusCode.ALREADY_EXISTS, exists)] * 3, [
                line for line in served.log if "ERROR" in line or "engine" in line
            ]
            await models.UnloadModel(mod.UnloadModelRequest(name="twin"), timeout=60)
            await asyncio.sleep(0.5)  # any other engine's table would have come by now
            for channel in channels:
                listed = await mod_rpc.ModelServiceStub(channel).ListModels(mod.ListModelsRequest(), timeout=10)
                assert "twin" not in {m.name for m in listed.models}
    finally:
        for channel in channels:
            await channel.close()
