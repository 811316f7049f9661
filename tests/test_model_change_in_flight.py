"""A reload or an unload while a long call is in flight, in one process and with front ends and an
engine alike: the call runs to its end on the instance it started on, or, past the grace period,
fails with UNAVAILABLE (retryable); never half on one instance and half on another."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bertserve_client.v1 import encoder_service_pb2 as enc
from bertserve_client.v1 import encoder_service_pb2_grpc as enc_rpc
from bertserve_client.v1 import model_service_pb2 as mod
from bertserve_client.v1 import model_service_pb2_grpc as mod_rpc

from conftest import NO_RETRIES
from served import Served

GRACE_S = 4
#: Words of a context within the models' limit on its bytes (max_context_bytes, 4 MiB).
MOST_WORDS = 500_000


def _entry(name: str, plugin: str, source: Path) -> str:
    return f"{{name: {name}, plugin: {plugin}, source: '{source}', device: cpu}}"


@pytest.fixture(scope="module", params=["one process", "front ends and an engine"])
def served(
    request: pytest.FixtureRequest, tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    processes = 1 if request.param == "one process" else 2
    before, after = tiny_models["spanbert-qa"], tiny_models["roberta-qa"]
    config = tmp_path_factory.mktemp("change") / "c.yaml"
    config.write_text(
        f"server: {{address: 127.0.0.1, port: 0, processes: {processes}, grace_period_s: {GRACE_S}}}\n"
        "models:\n"
        f"  - {_entry('qa', 'spanbert', before)}\n"
        f"  - {_entry('qa-before', 'spanbert', before)}\n"
        f"  - {_entry('qa-after', 'roberta', after)}\n"
    )
    served = Served(config)
    # Each model on each front end (their tokenizers), or in the one process.
    ready = r"model '[\w-]+': tokenizer ready" if processes > 1 else r"model '[\w-]+' ready in"
    served.wait_for(ready, count=3 * processes, timeout=180)
    yield served
    served.process.send_signal(signal.SIGTERM)
    served.process.wait(60)


def _context(words: int) -> str:
    vocabulary: tuple[str, ...] = (
        "the",
        "of",
        "and",
        "a",
        "to",
        "in",
        "is",
        "was",
        "for",
        "on",
        "that",
        "by",
        "with",
        "as",
    )
    vocabulary += ("at", "from", "his", "her", "it", "an", "were", "are", "which")
    draw = random.Random(words)
    return " ".join(draw.choice(vocabulary) for _ in range(words))


async def _answer(channel: grpc.aio.Channel, model: str, context: str, copies: int = 1) -> list[enc.Answers]:
    """The answers (each with its text, span and score), without the reply's model name and timings."""
    question = enc.Question(question="who was it?", context=context)
    request = enc.AnswerRequest(model=model, top_k=5, questions=[question] * copies)
    reply: enc.AnswerResponse = await enc_rpc.EncoderServiceStub(channel).Answer(request, timeout=120)
    return list(reply.results)


async def _work_lasting(channel: grpc.aio.Channel, seconds: float) -> tuple[str, int]:
    """A context, and how many questions on it, whose Answer takes about seconds on this machine
    now: a long call of many parts, each question's context within the model's limit."""
    await _answer(channel, "qa-before", _context(2_000))  # warm
    started = time.perf_counter()
    await _answer(channel, "qa-before", _context(20_000))
    words = round(seconds / ((time.perf_counter() - started) / 20_000))
    copies = -(-words // MOST_WORDS)
    return _context(-(-words // copies)), copies


async def _in_flight(
    channel: grpc.aio.Channel, model: str, context: str, copies: int = 1
) -> asyncio.Task[tuple[object, float]]:
    """An Answer on model, started and half a second in."""

    async def call() -> tuple[object, float]:
        try:
            outcome: object = await _answer(channel, model, context, copies)
        except grpc.aio.AioRpcError as e:
            outcome = e
        return outcome, time.monotonic()

    task = asyncio.create_task(call())
    await asyncio.sleep(0.5)
    assert not task.done(), f"the call ended before the change: {task.result()}"
    return task


async def test_a_call_in_flight_across_a_reload_is_answered_by_the_instance_it_started_on(
    served: Served, tiny_models: dict[str, Path]
) -> None:
    """Reloaded to another model, a long Answer's later parts still run on the old instance: its
    answer is the old model's, and the reload answers once the call has ended."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}", options=NO_RETRIES) as channel:
        context, copies = await _work_lasting(channel, 2.0)
        before = await _answer(channel, "qa-before", context, copies)
        after = await _answer(channel, "qa-after", context, copies)
        assert before != after, "the two models must answer differently for the test to see a mix"
        call = await _in_flight(channel, "qa", context, copies)
        entry = _entry("qa", "roberta", tiny_models["roberta-qa"])
        await mod_rpc.ModelServiceStub(channel).ReloadModel(mod.ReloadModelRequest(name="qa", entry=entry), timeout=60)
        reloaded = time.monotonic()
        answer, ended = await call
        assert answer == before
        assert ended <= reloaded, "the reload waited for the call in flight on the old instance"
        assert await _answer(channel, "qa", context, copies) == after


@pytest.mark.parametrize("change", ["unloaded", "reloaded"])
async def test_a_call_past_the_grace_period_of_a_change_fails_as_unavailable(
    served: Served, tiny_models: dict[str, Path], change: str
) -> None:
    """Past the grace period, the call still running fails with UNAVAILABLE and the grace-period
    message, not NOT_FOUND or a result of the new instance; the change counts it as abandoned."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}", options=NO_RETRIES) as channel:
        models = mod_rpc.ModelServiceStub(channel)
        entry = _entry("leaving", "spanbert", tiny_models["spanbert-qa"])
        await models.LoadModel(mod.LoadModelRequest(entry=entry), timeout=60)
        call = await _in_flight(channel, "leaving", *await _work_lasting(channel, 4 * GRACE_S))
        changed = time.monotonic()
        if change == "unloaded":
            reply = await models.UnloadModel(mod.UnloadModelRequest(name="leaving"), timeout=60)
            assert (reply.drained_calls, reply.abandoned_calls) == (0, 1)
        else:
            await models.ReloadModel(mod.ReloadModelRequest(name="leaving"), timeout=60)
        error, ended = await call
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert error.details() == (
            f"model 'leaving' was {change} and the call did not finish within the grace period of {GRACE_S}s "
            "(grace_period_s); retry it"
        )
        assert GRACE_S <= ended - changed < GRACE_S + 3  # type: ignore[operator]
        if change == "reloaded":
            await models.UnloadModel(mod.UnloadModelRequest(name="leaving"), timeout=60)


async def test_a_reload_answers_with_the_instance_it_made_though_an_unload_came_while_it_drained(
    served: Served, tiny_models: dict[str, Path]
) -> None:
    """An unload sent while a reload waits for a call on the old instance runs after it; the
    reload still answers with the instance it made, not NOT_FOUND."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}", options=NO_RETRIES) as channel:
        models = mod_rpc.ModelServiceStub(channel)
        entry = _entry("racing", "spanbert", tiny_models["spanbert-qa"])
        await models.LoadModel(mod.LoadModelRequest(entry=entry), timeout=60)
        call = await _in_flight(channel, "racing", *await _work_lasting(channel, 2.5))
        reload = asyncio.ensure_future(models.ReloadModel(mod.ReloadModelRequest(name="racing"), timeout=60))
        await asyncio.sleep(0.6)
        assert not reload.done(), "the reload waits for the call in flight"
        unload = await models.UnloadModel(mod.UnloadModelRequest(name="racing"), timeout=60)
        reloaded = await reload
        assert (reloaded.model.name, reloaded.model.state) == ("racing", mod.MODEL_STATE_READY)
        assert (unload.drained_calls, unload.abandoned_calls) == (0, 0)
        answer, _ = await call
        assert isinstance(answer, list)
        listed = await models.ListModels(mod.ListModelsRequest(), timeout=10)
        assert "racing" not in {m.name for m in listed.models}
