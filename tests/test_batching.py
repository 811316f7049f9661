"""Dynamic batching: same results alone or batched, bounded queues, dropped work, streams."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from bertserve.api import Pooling
from bertserve.app.config import load_config
from bertserve.app.server import BertServer
from bertserve.ops import EmbedOp
from bertserve.serving.batcher import Batcher, BatchLimits
from bertserve_client import AsyncClient, BertserveError, Client, EmbedResult

from conftest import EMBED_MODELS, NO_RETRIES, inline_tokenize_limit

MIXED = [("word " * n).strip() + f" {n}" for n in (1, 30, 3, 25, 7, 50, 2, 40, 12, 5, 45, 18)]
LONG = "a sentence long enough to keep the model busy for a while " * 20


@pytest.mark.parametrize("model", [*EMBED_MODELS, "minilm", "bert-workers"])
async def test_same_result_alone_or_batched_with_other_lengths(client: AsyncClient, model: str) -> None:
    alone = [(await client.embed(text, model=model)).embeddings[0] for text in MIXED]
    together = await asyncio.gather(*(client.embed(text, model=model) for text in MIXED))
    for a, t in zip(alone, together, strict=True):
        np.testing.assert_allclose(t.embeddings[0], a, atol=1e-4)


@pytest.mark.parametrize("model", ["minilm", "roberta", "albert"])
async def test_concurrent_calls_are_tokenized_together_exactly_as_alone(
    client: AsyncClient, server: BertServer, model: str
) -> None:
    inline = await inline_tokenize_limit(server, model)
    texts = [f"{'word ' * (i % 7)}text number {i}, café " * 9 for i in range(40)]
    assert all(len(t) > inline for t in texts)  # each past what the loop tokenizes itself
    alone = [(await client.tokenize(t, model=model, truncate=True, max_length=12))[0] for t in texts]
    shared = server.router.get(model).shared_tokenization
    jobs = shared.jobs
    together = await asyncio.gather(*(client.tokenize(t, model=model, truncate=True, max_length=12) for t in texts))
    assert [r[0] for r in together] == alone
    assert 0 < shared.jobs - jobs < len(texts)  # through shared jobs of the tokenizer pool, fewer than calls


@pytest.mark.parametrize("model", ["minilm", "roberta"])
async def test_a_call_of_a_sentence_is_tokenized_on_the_loop_as_the_pool_would(
    client: AsyncClient, server: BertServer, model: str
) -> None:
    host = server.router.get(model)
    texts = [f"{'word ' * (i % 7)}text number {i}, café" for i in range(12)]
    inline = await inline_tokenize_limit(server, model)
    assert all(len(t) <= inline for t in texts)
    jobs = host.shared_tokenization.jobs
    on_loop = await asyncio.gather(*(client.tokenize(t, model=model, truncate=True, max_length=12) for t in texts))
    assert host.shared_tokenization.jobs == jobs  # no job of the pool: no hop to a thread
    pooled = await host.off_loop(host.plugin.tokenize, texts, max_length=12)
    assert [r[0].ids for r in on_loop] == [e.ids for e in pooled]
    assert [r[0].offsets for r in on_loop] == [[tuple(o) for o in e.offsets] for e in pooled]


async def test_first_party_variants_run_packed_passes(server: BertServer) -> None:
    """CLS and MEAN batches run packed (checked against padded passes at load, else it falls back),
    so the conformance suite's batched calls exercise the packed path for every variant."""
    for name in [*EMBED_MODELS, "minilm", "bert-bf16"]:
        info = server.router.get(name).info
        assert info is not None
        assert [p.value for p in info.packed_poolings] == ["cls", "mean"], name


async def test_concurrent_single_sentence_calls_share_forward_passes(client: AsyncClient, server: BertServer) -> None:
    stats = server.router.get("minilm").batcher.stats
    passes, sequences = stats.forward_passes, stats.sequences
    texts = [f"sentence number {i} about batching" for i in range(48)]
    await asyncio.gather(*(client.embed(t, model="minilm") for t in texts))
    assert stats.sequences - sequences == 48
    assert stats.forward_passes - passes < 48


async def test_a_large_request_on_an_idle_model_runs_on_every_worker(client: AsyncClient, server: BertServer) -> None:
    stats = server.router.get("bert-workers").batcher.stats  # workers: 2
    passes, sequences = stats.forward_passes, stats.sequences
    split = await client.embed(MIXED, model="bert-workers")
    assert stats.sequences - sequences == len(MIXED)
    assert stats.forward_passes - passes == 2  # half each, at once, where one worker would take all 12
    whole = await client.embed(MIXED, model="bert")  # the same checkpoint with one worker: one pass
    np.testing.assert_allclose(split.embeddings, whole.embeddings, atol=1e-4)


async def test_usage_is_reported(client: AsyncClient) -> None:
    result = await client.embed(MIXED[:3], model="minilm")
    assert result.usage.tokens == sum(result.token_counts)
    assert result.usage.inference_time_ns > 0 and result.usage.tokenization_time_ns > 0
    assert result.usage.queue_time_ns >= 0


async def test_full_queue_refuses_at_once_then_recovers(client: AsyncClient, server: BertServer, target: str) -> None:
    stats = server.router.get("minilm-tight").batcher.stats
    sequences = stats.sequences
    texts = [f"{i} {LONG}" for i in range(40)]
    async with AsyncClient(target, options=NO_RETRIES) as once:
        outcomes = await asyncio.gather(*(once.embed(t, model="minilm-tight") for t in texts), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, BertserveError)]
    served = [(t, o) for t, o in zip(texts, outcomes, strict=True) if isinstance(o, EmbedResult)]
    assert refused and served
    for err in refused:
        assert err.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.message.startswith("model 'minilm-tight' is at capacity: ")
        assert err.retry_after_s is not None and err.retry_after_s > 0
    assert stats.sequences - sequences == len(served)  # the model saw each accepted call once, the refused never
    for text, result in served:  # each caller got its own answer
        expected = (await client.embed(text, model="minilm")).embeddings[0]
        np.testing.assert_allclose(result.embeddings[0], expected, atol=1e-4)
    after = await client.embed("serving normally again", model="minilm-tight")
    assert after.embeddings.shape == (1, 384)


async def test_a_request_larger_than_the_queue_is_invalid(client: AsyncClient) -> None:
    with pytest.raises(BertserveError) as info:
        await client.embed([f"text {i}" for i in range(5)], model="minilm-tight")
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == (
        "the request needs 5 sequences, more than model 'minilm-tight' ever queues (limits 4 / 262144); split it"
    )


async def test_cancelled_and_expired_calls_never_reach_the_model(client: AsyncClient, server: BertServer) -> None:
    stats = server.router.get("minilm-serial").batcher.stats
    sequences, dropped = stats.sequences, stats.dropped
    # One pass per sequence, and calls take turns: a call that comes after 32 others waits for a pass
    # of each, a second or more.
    blocker = asyncio.gather(*(client.embed(f"{i} {LONG}", model="minilm-serial") for i in range(32)))
    batcher = server.router.get("minilm-serial").batcher
    deadline = time.monotonic() + 30
    while stats.sequences - sequences + batcher.queued[0] < 32:  # every blocker call is in (tokenized) first
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    with pytest.raises(BertserveError) as info:
        await client.embed("expires in the queue", model="minilm-serial", timeout=0.3)
    assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    cancelled = asyncio.create_task(client.embed("cancelled in the queue", model="minilm-serial"))
    await asyncio.sleep(0.1)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not blocker.done()  # both waited behind the blocker the whole time
    await blocker
    await client.embed("after", model="minilm-serial")  # one more pass: the loop has swept the queue
    assert stats.sequences - sequences == 32 + 1
    assert stats.dropped - dropped == 2


async def test_stream_keeps_order_across_a_thousand_mixed_items(client: AsyncClient) -> None:
    texts = [f"item {i} " + "word " * (i % 37) for i in range(1000)]
    expected = (await client.embed(texts, model="bert")).embeddings
    results = [r async for r in client.embed_stream(texts, model="bert")]
    assert len(results) == 1000
    for i, result in enumerate(results):
        assert isinstance(result, EmbedResult), result
        np.testing.assert_allclose(result.embeddings[0], expected[i], atol=1e-4, err_msg=f"item {i}")


async def test_stream_item_error_does_not_end_the_stream(client: AsyncClient) -> None:
    results = [r async for r in client.embed_stream(["fine", "", ["a", "b"]], model="bert")]
    assert isinstance(results[0], EmbedResult) and isinstance(results[2], EmbedResult)
    assert isinstance(results[1], BertserveError)
    assert results[1].code is grpc.StatusCode.INVALID_ARGUMENT
    assert results[1].message == "input 0 is empty"
    assert results[2].embeddings.shape[0] == 2


async def test_stream_survives_a_client_that_cancels_midway(client: AsyncClient, server: BertServer) -> None:
    stats = server.router.get("minilm").batcher.stats
    sequences = stats.sequences
    seen = 0
    async for _ in client.embed_stream((f"item {i} {LONG}" for i in range(1000)), model="minilm"):
        seen += 1
        if seen == 20:
            break  # the client walks away with most of the stream unsent or unanswered
    await asyncio.sleep(0.2)
    assert stats.sequences - sequences < 1000
    result = await client.embed("still serving", model="minilm")
    assert result.embeddings.shape == (1, 384)
    again = [r async for r in client.embed_stream(["a", "b"], model="minilm")]
    assert all(isinstance(r, EmbedResult) for r in again)


async def test_a_stream_whose_items_fail_raises_their_exception_in_either_client(
    client: AsyncClient, server: BertServer
) -> None:
    """grpc ends a stream whose request iterator raised as a cancellation (asyncio) or as UNKNOWN
    (threads): the caller gets its own exception, not a cancellation it never asked for."""

    class BrokenSource(Exception):
        pass

    async def failing() -> AsyncIterator[str]:
        yield "first"
        raise BrokenSource("the items ran out of road")

    seen: list[object] = []
    with pytest.raises(BrokenSource, match="the items ran out of road"):
        async for result in client.embed_stream(failing(), model="bert"):
            seen.append(result)
    assert all(isinstance(r, EmbedResult) for r in seen)

    def failing_sync() -> Iterator[str]:
        yield "first"
        raise BrokenSource("the items ran out of road")

    def in_a_thread() -> None:
        with Client(f"127.0.0.1:{server.port}") as sync, pytest.raises(BrokenSource, match="ran out of road"):
            list(sync.embed_stream(failing_sync(), model="bert"))

    await asyncio.to_thread(in_a_thread)
    assert isinstance(await client.embed("still serving", model="bert"), EmbedResult)


async def test_stream_keeps_at_most_its_bound_in_flight(tiny_models: dict, tmp_path: Path) -> None:
    """With stream_max_in_flight 3, the model never holds more than 3 items of the stream at once.
    One worker: with one idle per core, each item would go through alone and nothing would batch."""
    config = tmp_path / "stream.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, stream_max_in_flight: 3}\n"
        f"models: [{{name: bert, plugin: bert, source: '{tiny_models['bert']}', workers: 1}}]\n"
    )
    server = BertServer(load_config(config))
    await server.start()
    await server.wait_until_loaded()
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            results = [r async for r in client.embed_stream([f"item {i}" for i in range(60)], model="bert")]
        stats = server.router.get("bert").batcher.stats
        assert len(results) == 60 and stats.sequences == 60
        assert 1 < stats.largest_pass <= 3  # batched, within the bound
    finally:
        await server.stop(grace=1)


async def test_work_that_waited_for_a_pass_lingers_for_company(client: AsyncClient, server: BertServer) -> None:
    """With one worker, max_wait_ms holds work that queued behind a pass until a batch-mate comes
    (or the wait ends); a request that finds the model idle goes straight through."""
    host = server.router.get("minilm-linger")  # max_batch_size 2, max_wait_ms 1000
    stats = host.batcher.stats
    alone = await client.embed("an idle model answers at once", model="minilm-linger")
    assert alone.usage.queue_time_ns < 1_000_000_000
    passes = stats.forward_passes
    first = asyncio.ensure_future(client.embed([LONG, LONG], model="minilm-linger"))
    await _until(lambda: stats.forward_passes > passes)  # the first request's pass has started
    queued = asyncio.ensure_future(client.embed("queued behind the first pass", model="minilm-linger"))
    await first
    await asyncio.sleep(0.2)
    assert not queued.done()  # lingering for a batch-mate, not run alone
    await client.embed("the batch-mate", model="minilm-linger")
    await queued
    assert stats.forward_passes - passes == 2


async def test_a_request_that_found_the_model_idle_never_lingers(client: AsyncClient, server: BertServer) -> None:
    """Three inputs on an idle model whose passes take two: the third waits for the first pass, not
    for a batch-mate besides (the lingering is for work that came while others' passes ran)."""
    stats = server.router.get("minilm-linger").batcher.stats  # max_batch_size 2, max_wait_ms 1000
    passes = stats.forward_passes
    reply = await client.embed(["one", "two", "three"], model="minilm-linger")
    assert len(reply.embeddings) == 3 and stats.forward_passes - passes == 2
    assert reply.usage.queue_time_ns < 500_000_000  # a linger would be 1,000 ms


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll condition on the server's own loop (it runs in this process) until it holds."""

    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 (the state lives in the server, which sets no event)
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


async def test_a_pass_counts_as_running_from_when_its_worker_takes_it_up() -> None:
    """What finds a wedged engine reads how long each pass has run: a pass queued behind other work
    of its worker (a model loading on the same device) has not started, and is no pass that hangs."""
    worker = ThreadPoolExecutor(1)
    loading, loaded = threading.Event(), threading.Event()

    def load() -> None:
        loading.set()
        loaded.wait(30)

    worker.submit(load)
    running, finish = threading.Event(), threading.Event()

    def run_batch(op: Any, batch: Sequence[Any]) -> list[Any]:
        running.set()
        finish.wait(30)
        return [None] * len(batch)

    batcher = Batcher("m", run_batch, worker, BatchLimits())
    batcher.start()
    try:
        assert await asyncio.to_thread(loading.wait, 10)
        call = asyncio.create_task(batcher.submit(EmbedOp(Pooling.CLS, False), ["a"], [3]))
        await asyncio.sleep(0.3)
        assert batcher.running_since_ns() == []  # waiting for the worker: not started
        before = time.monotonic_ns()
        loaded.set()
        assert await asyncio.to_thread(running.wait, 10)
        [started] = batcher.running_since_ns()
        assert started >= before
        finish.set()
        [done] = await asyncio.wait_for(call, 10)
        assert batcher.running_since_ns() == []
        assert done.queue_ns >= 0.3e9  # the wait for the worker is the call's queueing
    finally:
        loaded.set()
        finish.set()
        await batcher.stop()
        worker.shutdown()
