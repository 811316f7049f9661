"""Placement on a CUDA device: run where one is present, skipped elsewhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bertserve.app.config import load_config
from bertserve.app.server import BertServer
from bertserve_client import AsyncClient

from qa_reference import pipeline_answers

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
async def gpu_client(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    config = tmp_path_factory.mktemp("gpu") / "gpu.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0}\nmodels:\n"
        f"  - {{name: auto, plugin: bert, source: '{tiny_models['bert']}', device: auto}}\n"
        f"  - {{name: fp32, plugin: bert, source: '{tiny_models['bert']}', device: cuda, dtype: float32}}\n"
        f"  - {{name: qa, plugin: spanbert, source: '{tiny_models['spanbert-qa']}', device: 'cuda:0'}}\n"
        f"  - {{name: albert-qa, plugin: albert, source: '{tiny_models['albert-qa']}', device: cuda, dtype: float32}}\n"
    )
    server = BertServer(load_config(config))
    await server.start()
    await server.wait_until_loaded()
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        yield client
    await server.stop(grace=1)


async def test_auto_takes_the_gpu_in_a_half_precision(gpu_client: AsyncClient) -> None:
    model = await gpu_client.model("auto")
    assert model.state == "ready" and model.devices == ["cuda:0"]
    assert model.dtype == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")


async def test_gpu_embeddings_match_the_cpu(gpu_client: AsyncClient, tiny_models: dict[str, Path], hf: Any) -> None:
    texts = ["Paris is a beautiful city", "What is machine learning? " * 5]
    result = await gpu_client.embed(texts, model="fp32", pooling="cls")
    tokenizer, model = hf.tokenizer(tiny_models["bert"]), hf.model(tiny_models["bert"])
    for i, text in enumerate(texts):
        with torch.no_grad():
            expected = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0, 0].numpy()
        np.testing.assert_allclose(result.embeddings[i], expected, atol=1e-4)


async def test_answer_runs_on_the_gpu(gpu_client: AsyncClient) -> None:
    [answers] = await gpu_client.answer(("What is it?", "It is a small test context."), model="qa", top_k=3)
    assert len(answers) == 3 and all(0 < a.score <= 1 for a in answers)


async def test_cuda_attention_stays_off_cudnn(gpu_client: AsyncClient) -> None:
    # cuDNN builds a plan per new input shape (tens of ms each); serving traffic keeps bringing new shapes.
    assert (await gpu_client.model("fp32")).state == "ready"
    assert not torch.backends.cuda.cudnn_sdp_enabled()


async def test_gpu_answers_equal_the_pipeline(gpu_client: AsyncClient, tiny_models: dict[str, Path], hf: Any) -> None:
    """float32 on the GPU, segment ids and several windows in parts: the 4.57 pipeline's answers on the CPU."""
    path = tiny_models["albert-qa"]
    context = "Paris is the capital of France, and Paris is a beautiful city. " * 30
    options: dict[str, Any] = {"top_k": 5, "max_seq_len": 48, "doc_stride": 16, "handle_impossible_answer": True}
    [got] = await gpu_client.answer(("What is the capital of France?", context), model="albert-qa", **options)
    expected = pipeline_answers(
        hf.tokenizer(path), hf.model(path, qa=True), "What is the capital of France?", context, **options
    )
    assert expected.windows > 1
    assert [(a.text, a.start, a.end) for a in got] == [(e["answer"], e["start"], e["end"]) for e in expected.answers]
    np.testing.assert_allclose([a.score for a in got], [e["score"] for e in expected.answers], rtol=1e-3)
