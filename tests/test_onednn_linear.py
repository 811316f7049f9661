"""float32 CPU models run their linear layers on oneDNN, with results equal to torch's kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertserve import onednn_linear
from bertserve.app import BertServer
from bertserve.transformers_plugin import TransformersPlugin
from bertserve_client import AsyncClient

from conftest import EMBED_MODELS, QA_MODELS

pytestmark = pytest.mark.skipif(not onednn_linear.available(), reason="this torch build has no oneDNN")


def test_packed_linear_matches_torch_linear() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 80)
    packed = onednn_linear.PackedLinear(linear)
    for shape in [(1, 48), (7, 48), (3, 5, 48)]:  # any batch shape, as the encoder's [rows, tokens, hidden]
        x = torch.randn(*shape)
        with torch.inference_mode():
            torch.testing.assert_close(packed(x), linear(x), rtol=1e-5, atol=1e-5)


def test_swap_replaces_each_layer_once_and_undoes() -> None:
    shared = torch.nn.Linear(8, 8)
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared, torch.nn.Linear(8, 4).to(torch.bfloat16))
    swapped = onednn_linear.swap_linear_layers(model)
    # A layer used twice is one module: packed once, for both uses. bfloat16 already runs on oneDNN.
    assert len(swapped) == 2
    assert isinstance(model[0], onednn_linear.PackedLinear) and model[0] is model[2]
    assert type(model[3]) is torch.nn.Linear
    swapped.undo()
    assert model[0] is shared and model[2] is shared


@pytest.mark.parametrize("model", [*EMBED_MODELS, *QA_MODELS, "minilm"])
async def test_float32_cpu_models_run_linear_layers_on_onednn(server: BertServer, model: str) -> None:
    plugin = server.router.get(model).plugin
    assert isinstance(plugin, TransformersPlugin)
    assert plugin.onednn_linear_layers > 0


async def test_bfloat16_and_opted_out_models_keep_torch_kernels(server: BertServer) -> None:
    for model in ("bert-bf16", "minilm-torch-linear"):
        plugin = server.router.get(model).plugin
        assert isinstance(plugin, TransformersPlugin)
        assert plugin.onednn_linear_layers == 0, model


async def test_onednn_and_torch_kernels_give_the_same_embeddings(client: AsyncClient) -> None:
    texts = ["A man is playing a guitar.", "oneDNN packs weights once.", "word " * 120]
    onednn = await client.embed(texts, model="minilm")
    torch_kernels = await client.embed(texts, model="minilm-torch-linear")
    np.testing.assert_allclose(onednn.embeddings, torch_kernels.embeddings, atol=1e-5)
