"""The model option `compile`: the encoder under torch.compile, checked against eager at load."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from bertserve.app.config import load_config
from bertserve.app.server import BertServer
from bertserve.transformers_plugin import TransformersPlugin
from bertserve_client import AsyncClient, Client

from served import Served

TEXTS = ["Paris is a beautiful city", "short", "What is machine learning? " * 6, "A man is playing a guitar."]


def two_berts(tiny_models: dict[str, Path], path: Path) -> Path:
    """The tiny BERT twice: eager, and under torch.compile."""
    bert = f"plugin: bert, source: '{tiny_models['bert']}', device: cpu"
    path.write_text(
        "server: {address: 127.0.0.1, port: 0}\nmodels:\n"
        f"  - {{name: eager, {bert}}}\n"
        f"  - {{name: compiled, {bert}, options: {{compile: true}}}}\n"
    )
    return path


@pytest.fixture(scope="module")
async def compiled(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BertServer]:
    server = BertServer(load_config(two_berts(tiny_models, tmp_path_factory.mktemp("compile") / "c.yaml")))
    await server.start()
    await server.wait_until_loaded()
    yield server
    await server.stop(grace=1)


async def test_compiled_embeddings_match_eager_ones(compiled: BertServer) -> None:
    plugin = compiled.router.get("compiled").plugin
    assert isinstance(plugin, TransformersPlugin) and plugin.compiled
    assert plugin.onednn_linear_layers == 0  # inductor packs the weights itself
    async with AsyncClient(f"127.0.0.1:{compiled.port}") as client:
        for pooling in ("mean", "cls"):
            for texts in (TEXTS, TEXTS[:1], TEXTS[1:3]):  # packed rows of mixed lengths; a lone sentence
                got = await client.embed(texts, model="compiled", pooling=pooling, return_token_embeddings=True)
                want = await client.embed(texts, model="eager", pooling=pooling, return_token_embeddings=True)
                np.testing.assert_allclose(got.embeddings, want.embeddings, atol=1e-4)
                assert got.token_embeddings is not None and want.token_embeddings is not None
                for g, w in zip(got.token_embeddings, want.token_embeddings, strict=True):
                    np.testing.assert_allclose(g, w, atol=1e-4)


def test_without_a_compiler_the_model_runs_eager(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    # A fresh process and cache: nothing compiled earlier can stand in for the missing compiler.
    env = {"CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    served = Served(two_berts(tiny_models, tmp_path / "c.yaml"), env=env)
    try:
        [warning] = served.wait_for(r"model 'compiled' runs eager: compiling failed")
        assert "No working C++ compiler" in warning
        served.wait_for(r"model 'compiled' runs \d+ linear layers on oneDNN")
        served.wait_for(r"model '(eager|compiled)' ready", count=2)
        with Client(f"127.0.0.1:{served.port}") as client:
            got, want = (client.embed(TEXTS, model=m).embeddings for m in ("compiled", "eager"))
        np.testing.assert_allclose(got, want, atol=1e-6)
    finally:
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(30)
