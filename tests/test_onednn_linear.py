"""float32 and bfloat16 CPU models run their linear layers on oneDNN, with results equal to torch's kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertserve.app.server import BertServer
from bertserve.runtime import onednn_linear
from bertserve.transformers_plugin import TransformersPlugin
from bertserve_client import AsyncClient

from conftest import EMBED_MODELS, QA_MODELS

pytestmark = pytest.mark.skipif(not onednn_linear.available(), reason="this torch build has no oneDNN")
BFLOAT16 = pytest.mark.skipif(
    torch.bfloat16 not in onednn_linear.packable_dtypes(), reason="oneDNN runs no bfloat16 products on this CPU"
)


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
    model = torch.nn.Sequential(shared, torch.nn.ReLU(), shared, torch.nn.Linear(8, 4).to(torch.float16))
    swapped = onednn_linear.swap_linear_layers(model)
    # A layer used twice is one module: packed once, for both uses. float16 keeps torch's kernels.
    assert len(swapped) == 2
    assert isinstance(model[0], onednn_linear.PackedLinear) and model[0] is model[2]
    assert type(model[3]) is torch.nn.Linear
    swapped.undo()
    assert model[0] is shared and model[2] is shared


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_packed_linear_with_gelu_matches_linear_then_gelu(approximate: str) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 80)
    fused = onednn_linear.PackedLinear(linear, gelu=approximate)
    x = torch.randn(3, 5, 48)
    with torch.inference_mode():
        expected = torch.nn.functional.gelu(linear(x), approximate=approximate)
        torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)


def test_swap_folds_a_gelu_into_the_linear_layer_before_it() -> None:
    from transformers.activations import ACT2FN

    for hidden_act, linear_name, activation_name in [
        ("gelu", "dense", "intermediate_act_fn"),  # BERT, RoBERTa, ELECTRA: the exact GELU
        ("gelu_new", "ffn", "activation"),  # ALBERT: the tanh approximation
    ]:
        block = torch.nn.Module()
        block.add_module(linear_name, torch.nn.Linear(8, 16))
        block.add_module(activation_name, ACT2FN[hidden_act])
        linear, activation = getattr(block, linear_name), getattr(block, activation_name)
        x = torch.randn(4, 8)
        with torch.inference_mode():
            expected = activation(linear(x))
            swapped = onednn_linear.swap_linear_layers(block)
            assert (len(swapped), swapped.fused_activations) == (1, 1)
            assert isinstance(getattr(block, activation_name), torch.nn.Identity)
            got = getattr(block, activation_name)(getattr(block, linear_name)(x))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        swapped.undo()
        assert getattr(block, linear_name) is linear and getattr(block, activation_name) is activation


@BFLOAT16
def test_packed_bfloat16_linear_is_torch_linear_bit_for_bit() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 80).to(torch.bfloat16)
    packed = onednn_linear.PackedLinear(linear)
    for shape in [(1, 48), (7, 48), (3, 5, 48)]:
        x = torch.randn(*shape, dtype=torch.bfloat16)
        with torch.inference_mode():
            torch.testing.assert_close(packed(x), linear(x), rtol=0, atol=0)


@pytest.mark.parametrize("model", [*EMBED_MODELS, *QA_MODELS, "minilm"])
async def test_float32_cpu_models_run_linear_layers_on_onednn(server: BertServer, model: str) -> None:
    assert _plugin(server, model).onednn_linear_layers > 0


@BFLOAT16
async def test_bfloat16_cpu_models_run_linear_layers_on_onednn(server: BertServer) -> None:
    assert _plugin(server, "bert-bf16").onednn_linear_layers > 0


async def test_opted_out_models_keep_torch_kernels(server: BertServer) -> None:
    for model in ("minilm-torch-linear", "bert-bf16-torch-linear"):
        assert _plugin(server, model).onednn_linear_layers == 0, model


async def test_onednn_and_torch_kernels_give_the_same_embeddings(client: AsyncClient) -> None:
    texts = ["A man is playing a guitar.", "oneDNN packs weights once.", "word " * 120]
    onednn = await client.embed(texts, model="minilm")
    torch_kernels = await client.embed(texts, model="minilm-torch-linear")
    np.testing.assert_allclose(onednn.embeddings, torch_kernels.embeddings, atol=1e-5)


@BFLOAT16
async def test_onednn_bfloat16_is_as_close_to_float32_as_torch_kernels(client: AsyncClient) -> None:
    # The same products; the fused GELU rounds to bfloat16 once where torch's kernels round twice.
    texts = ["A man is playing a guitar.", "oneDNN packs weights once.", "word " * 50]
    full = (await client.embed(texts, model="bert", normalize=True)).embeddings
    onednn = (await client.embed(texts, model="bert-bf16", normalize=True)).embeddings
    torch_kernels = (await client.embed(texts, model="bert-bf16-torch-linear", normalize=True)).embeddings
    # Unit vectors: bfloat16 keeps 8 bits (4e-3 relative); both stray from float32 by about 7e-3.
    np.testing.assert_allclose(onednn, torch_kernels, atol=5e-3)
    assert np.abs(onednn - full).max() <= 1.25 * np.abs(torch_kernels - full).max()
    assert np.min(np.sum(onednn * full, axis=1)) > 0.9995


def _plugin(server: BertServer, model: str) -> TransformersPlugin:
    plugin = server.router.get(model).plugin
    assert isinstance(plugin, TransformersPlugin)
    return plugin
