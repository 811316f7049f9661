"""Prometheus metrics, scraped over HTTP before and after real traffic: counters and histograms
move by what the traffic did, in one process and summed over two."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bertserve.app.server import BertServer
from bertserve_client import AsyncClient, BertserveError, Client

from conftest import NO_RETRIES, start_server
from served import Served

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
async def metered(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BertServer]:
    config = tmp_path_factory.mktemp("metered") / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, metrics_port: 0}\n"
        f"models:\n  - {{name: metered, plugin: bert, source: '{tiny_models['bert']}'}}\n"
    )
    server = await start_server(config)
    yield server
    await server.stop(grace=1)


async def test_counters_and_histograms_move_by_what_the_calls_did(metered: BertServer) -> None:
    stats = metered.router.get("metered").batcher.stats
    before, passes = await asyncio.to_thread(scrape, metered.metrics_port), stats.forward_passes
    async with AsyncClient(f"127.0.0.1:{metered.port}") as client:
        results = await asyncio.gather(
            *(client.embed([f"text {i}", f"another text {i}"], model="metered") for i in range(3))
        )
        await client.tokenize(["one", "two"], model="metered")
        with pytest.raises(BertserveError) as info:
            await client.embed("to nowhere", model="no-such-model")
    assert info.value.code is grpc.StatusCode.NOT_FOUND
    after = await asyncio.to_thread(scrape, metered.metrics_port)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("bertserve_calls_total", rpc="Embed", model="metered", code="OK") == 3
    assert moved("bertserve_calls_total", rpc="Tokenize", model="metered", code="OK") == 1
    assert moved("bertserve_calls_total", rpc="Embed", model="-", code="NOT_FOUND") == 1
    assert moved("bertserve_call_duration_seconds_count", rpc="Embed", model="metered") == 3
    assert moved("bertserve_call_duration_seconds_sum", rpc="Embed", model="metered") > 0
    tokens = sum(r.usage.tokens for r in results)
    assert moved("bertserve_tokens_total", model="metered") == tokens
    assert moved("bertserve_pass_tokens_sum", model="metered") == tokens
    assert moved("bertserve_pass_sequences_sum", model="metered") == 6
    assert moved("bertserve_queue_duration_seconds_count", model="metered") == 6
    assert moved("bertserve_inference_duration_seconds_count", model="metered") == stats.forward_passes - passes
    assert value(after, "bertserve_queue_sequences", model="metered") == 0
    assert value(after, "bertserve_queue_tokens", model="metered") == 0
    assert value(after, "bertserve_model_state", model="metered", state="ready") == 1
    assert value(after, "bertserve_model_state", model="metered", state="loading") == 0


async def test_refusals_are_counted(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, metrics_port: 0, max_concurrent_calls: 2}\n"
        f"models:\n  - {{name: refusing, plugin: bert, source: '{tiny_models['bert']}'}}\n"
    )
    server = await start_server(config)
    try:
        before = await asyncio.to_thread(scrape, server.metrics_port)
        async with AsyncClient(f"127.0.0.1:{server.port}", options=NO_RETRIES) as client:
            outcomes = await asyncio.gather(
                *(client.embed([f"call {i}"] * 8, model="refusing") for i in range(40)), return_exceptions=True
            )
        refused = [o for o in outcomes if isinstance(o, BertserveError)]
        assert refused and all(e.code is grpc.StatusCode.RESOURCE_EXHAUSTED for e in refused)
        after = await asyncio.to_thread(scrape, server.metrics_port)
        labels = {"model": "refusing", "reason": "max_concurrent_calls"}
        assert value(after, "bertserve_refused_calls_total", **labels) - value(
            before, "bertserve_refused_calls_total", **labels
        ) == len(refused)
        code = {"rpc": "Embed", "model": "refusing", "code": "RESOURCE_EXHAUSTED"}
        assert value(after, "bertserve_calls_total", **code) - value(before, "bertserve_calls_total", **code) == len(
            refused
        )
    finally:
        await server.stop(grace=1)


def test_one_scrape_shows_every_process(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, processes: 2, metrics_port: 0}\n"
        f"models:\n  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}'}}\n"
    )
    served = Served(config)
    try:
        served.wait_for("'bert': tokenizer ready", count=2)  # both front ends of the engine
        [line] = served.wait_for(r"Prometheus metrics on http://127\.0\.0\.1:\d+/metrics")
        metrics_port = int(re.findall(r":(\d+)/metrics", line)[0])
        before = scrape(metrics_port)
        calls = 48
        # Connections, not calls, are spread over the processes (by the kernel, at random): sixteen
        # of them all landing on one process would take odds of 1 in 32,768.
        with Client(f"127.0.0.1:{served.port}", channels=16) as client:
            for i in range(calls):
                client.embed(f"call {i}", model="bert")
        after = scrape(metrics_port)
        labels = {"rpc": "Embed", "model": "bert", "code": "OK"}
        assert (
            value(after, "bertserve_calls_total", **labels) - value(before, "bertserve_calls_total", **labels) == calls
        )
        # One model loaded once, in the engine: its state counts once, not once per front end.
        assert value(after, "bertserve_model_state", model="bert", state="ready") == 1
        passes = value(after, "bertserve_pass_sequences_count", model="bert")
        assert passes - value(before, "bertserve_pass_sequences_count", model="bert") >= 1
        served_by = {int(p) for p in re.findall(r"\[(\d)/2\] bertserve\.access", "".join(served.log))}
        assert served_by == {1, 2}, "both processes answered some of the calls"
    finally:
        served.process.terminate()
        served.process.wait(30)


async def test_admin_calls_are_counted_under_the_model_they_name_or_dash(
    metered: BertServer, tiny_models: dict[str, Path]
) -> None:
    before = await asyncio.to_thread(scrape, metered.metrics_port)
    entry = f"{{name: later, plugin: bert, source: '{tiny_models['bert']}'}}"
    async with AsyncClient(f"127.0.0.1:{metered.port}") as client:
        await client.models()
        await client.load_model(entry)
        await client.unload_model("later")
        with pytest.raises(BertserveError) as info:
            await client.load_model("{name: [not, a, name]}")
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    after = await asyncio.to_thread(scrape, metered.metrics_port)

    def moved(rpc: str, model: str, code: str) -> float:
        labels = {"rpc": rpc, "model": model, "code": code}
        return value(after, "bertserve_calls_total", **labels) - value(before, "bertserve_calls_total", **labels)

    assert moved("ListModels", "-", "OK") == 1, "a call that names no model is not the default model's"
    assert moved("ListModels", "metered", "OK") == 0
    assert moved("LoadModel", "later", "OK") == 1
    assert moved("UnloadModel", "later", "OK") == 1, "the model it named, served when the call began"
    assert moved("LoadModel", "-", "INVALID_ARGUMENT") == 1
    assert moved("LoadModel", "metered", "INVALID_ARGUMENT") == 0
