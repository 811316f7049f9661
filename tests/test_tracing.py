"""The model option `trace`: packed passes as a TorchScript trace of the encoder, checked
against eager passes at load, and eager wherever the trace would be wrong."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from itertools import chain
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from bertserve.app.config import load_config
from bertserve.app.discovery import PluginRegistry, discover_plugins
from bertserve.app.server import BertServer
from bertserve.plugins.bert import BertPlugin
from bertserve.transformers_plugin import TransformersPlugin
from bertserve_client import AsyncClient, BertserveError

from conftest import EMBED_MODELS, TINY

TEXTS = ["Paris is a beautiful city", "short", "What is machine learning? " * 6, "A man is playing a guitar."]


class _ContentDependent(torch.nn.Module):
    """An encoder that takes a number from its inputs' values into Python: a trace freezes it at
    the traced sample's, so inputs of other content come out wrong. Packed and padded passes of
    the same sequences still agree, so the model packs (and only packed passes are traced)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> Any:
        out = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids
        )
        out.last_hidden_state = out.last_hidden_state * (1 + int(input_ids.max()) % 7 / 10)
        return out


class ContentDependentBert(BertPlugin):
    """A third-party variant whose encoder a trace cannot capture."""

    variant = "content-dependent-bert"

    # load() sets _encoder to the checkpoint's base model; the wrapper goes in at that moment, so
    # every check that load() runs afterwards (packing, tracing) sees the wrapped encoder.
    @property  # type: ignore[override]
    def _encoder(self) -> Any:
        return self.__dict__["_content_dependent"]

    @_encoder.setter
    def _encoder(self, encoder: Any) -> None:
        self.__dict__["_content_dependent"] = None if encoder is None else _ContentDependent(encoder)


def _config(tiny_models: dict[str, Path], path: Path) -> Path:
    lines = ["server: {address: 127.0.0.1, port: 0}", "models:"]
    for name in EMBED_MODELS:
        plugin, directory = TINY[name]
        model = f"plugin: {plugin}, source: '{tiny_models[directory]}', device: cpu"
        lines.append(f"  - {{name: {name}, {model}}}")
        lines.append(f"  - {{name: {name}-eager, {model}, options: {{trace: false}}}}")
    lines.append(f"  - {{name: bf16, plugin: bert, source: '{tiny_models['bert']}', device: cpu, dtype: bfloat16}}")
    bert = f"source: '{tiny_models['bert']}', device: cpu"
    lines.append(f"  - {{name: bf16-eager, plugin: bert, {bert}, dtype: bfloat16, options: {{trace: false}}}}")
    lines.append(f"  - {{name: content-dependent, plugin: content-dependent-bert, {bert}}}")
    lines.append(
        f"  - {{name: content-dependent-eager, plugin: content-dependent-bert, {bert}, options: {{trace: false}}}}"
    )
    lines.append(f"  - {{name: trace-word, plugin: bert, {bert}, options: {{trace: 'yes'}}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


LOAD_LOG = _Messages()  # what the models of this module's server logged while loading


@pytest.fixture(scope="module")
async def served(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BertServer]:
    installed = discover_plugins()
    registry = PluginRegistry({**installed.plugins, "content-dependent-bert": ContentDependentBert}, installed.broken)
    config = load_config(_config(tiny_models, tmp_path_factory.mktemp("trace") / "c.yaml"))
    server = BertServer(config, registry)
    logging.getLogger("bertserve").addHandler(LOAD_LOG)
    try:
        await server.start()
        await server.wait_until_loaded()
    finally:
        logging.getLogger("bertserve").removeHandler(LOAD_LOG)
    yield server
    await server.stop(grace=1)


def _plugin(server: BertServer, name: str) -> TransformersPlugin:
    plugin = server.router.get(name).plugin
    assert isinstance(plugin, TransformersPlugin)
    return plugin


async def _assert_same_embeddings(client: AsyncClient, model: str, reference: str, atol: float) -> None:
    for pooling in ("mean", "cls"):
        for texts in (TEXTS, TEXTS[:1], TEXTS[2:3], TEXTS[1:3]):  # mixed lengths; lone short and long ones
            got = await client.embed(texts, model=model, pooling=pooling, return_token_embeddings=True)
            want = await client.embed(texts, model=reference, pooling=pooling, return_token_embeddings=True)
            np.testing.assert_allclose(got.embeddings, want.embeddings, atol=atol)
            assert got.token_embeddings is not None and want.token_embeddings is not None
            for g, w in zip(got.token_embeddings, want.token_embeddings, strict=True):
                np.testing.assert_allclose(g, w, atol=atol)


@pytest.mark.parametrize("model", EMBED_MODELS)
async def test_traced_embeddings_match_eager_ones(served: BertServer, model: str) -> None:
    assert _plugin(served, model).traced, "tracing is on by default on CPUs"
    assert not _plugin(served, f"{model}-eager").traced
    async with AsyncClient(f"127.0.0.1:{served.port}") as client:
        await _assert_same_embeddings(client, model, f"{model}-eager", atol=1e-4)


async def test_traced_bfloat16_matches_eager_bfloat16(served: BertServer) -> None:
    assert _plugin(served, "bf16").traced
    async with AsyncClient(f"127.0.0.1:{served.port}") as client:  # bfloat16 keeps 8 bits: 4e-3 relative
        await _assert_same_embeddings(client, "bf16", "bf16-eager", atol=5e-2)


async def test_an_encoder_the_trace_gets_wrong_runs_eager(served: BertServer) -> None:
    assert not _plugin(served, "content-dependent").traced
    assert "model 'content-dependent' runs eager: traced outputs differ from eager ones" in LOAD_LOG.messages
    async with AsyncClient(f"127.0.0.1:{served.port}") as client:
        await _assert_same_embeddings(client, "content-dependent", "content-dependent-eager", atol=1e-6)


async def test_a_trace_option_that_is_not_a_boolean_fails_that_model_alone(served: BertServer) -> None:
    async with AsyncClient(f"127.0.0.1:{served.port}") as client:
        with pytest.raises(BertserveError) as e:
            await client.embed(["x"], model="trace-word")
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert e.value.message == (
            "model 'trace-word' failed to load: ConfigError: model 'trace-word' options.trace: expected true or "
            "false, got 'yes'"
        )
        assert (await client.embed(["x"], model="bert")).embeddings.shape[0] == 1


async def test_a_reloaded_traced_model_holds_its_own_weights_and_leaves_no_graph_behind(served: BertServer) -> None:
    """A trace registers its graphs in torch's global compilation unit, where they would outlive the
    model; a traced model's graph is its own, and runs on the eager model's own tensors (no copy)."""
    global_unit = torch.jit._state._python_cu
    functions_of: Any = global_unit.get_functions  # (typed as returning None in torch's stubs)
    functions = len(functions_of())
    async with AsyncClient(f"127.0.0.1:{served.port}") as client:
        for _ in range(3):
            await client.reload_model("bert")
            plugin = _plugin(served, "bert")
            assert plugin.traced
            graph = plugin._traced._graph  # type: ignore[union-attr]
            assert global_unit.get_class(graph._c._type().qualified_name()) is None
            eager = dict(chain(plugin._encoder.named_parameters(), plugin._encoder.named_buffers()))
            traced = dict(chain(graph.encoder.named_parameters(), graph.encoder.named_buffers()))
            assert traced.keys() == eager.keys()
            assert all(traced[name] is eager[name] for name in eager)
        assert len(functions_of()) == functions
        await _assert_same_embeddings(client, "bert", "bert-eager", atol=1e-4)
