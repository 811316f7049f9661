"""server.event_loop: every process of the server runs on the loop it names (uvloop by default
where installed), and serves the same results on either."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from bertserve.app.config import load_config
from bertserve.errors import ConfigError
from bertserve_client import AsyncClient

from served import Served

_TEXTS = ["The event loop runs every call.", "Zwei Sätze, ein Modell.", "同じ結果"]


async def _embeddings(served: Served) -> np.ndarray:
    async with AsyncClient(f"127.0.0.1:{served.port}", timeout=60) as client:
        return (await client.embed(_TEXTS, model="bert")).embeddings


def _serve(tmp_path: Path, tiny: Path, loop: str, processes: int) -> Served:
    config = tmp_path / f"{loop}-{processes}.yaml"
    config.write_text(
        f"server: {{address: 127.0.0.1, port: 0, processes: {processes}, event_loop: {loop}, grace_period_s: 2}}\n"
        f"models:\n  - {{name: bert, plugin: bert, source: '{tiny}', device: cpu}}\n"
    )
    return Served(config)


def _stop(served: Served) -> None:
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(30) == 0


async def test_each_process_runs_on_the_loop_named_and_the_results_are_the_same(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    results = {}
    # One process, and a front end with its engine: each process says which loop it runs.
    for loop, processes, named in [("asyncio", 1, 1), ("uvloop", 1, 1), ("uvloop", 2, 3), ("auto", 1, 1)]:
        served = _serve(tmp_path, tiny_models["bert"], loop, processes)
        try:
            served.wait_for(r"model 'bert' ready")  # in the engine, where there is one
            served.wait_for(r"model 'bert': tokenizer ready", count=processes if processes > 1 else 0)
            expected = "asyncio" if loop == "asyncio" else "uvloop"
            lines = served.wait_for(r"event loop: ", count=named)
            assert all(f"event loop: {expected}" in line for line in lines), lines
            results[(loop, processes)] = await _embeddings(served)
        finally:
            _stop(served)
    first = results[("asyncio", 1)]
    for key, embeddings in results.items():
        np.testing.assert_array_equal(embeddings, first, err_msg=str(key))


def test_uvloop_named_where_it_is_not_installed_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it is not installed: its import fails
    path = tmp_path / "c.yaml"
    path.write_text("server: {event_loop: uvloop}\nmodels: [{name: a, plugin: bert, source: x}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value) == "server.event_loop: uvloop is not installed (pip install uvloop); set auto or asyncio"
    path.write_text("server: {event_loop: auto}\nmodels: [{name: a, plugin: bert, source: x}]\n")
    assert load_config(path, environ={}).event_loop == "auto"  # which runs asyncio's own loop there
