"""Capabilities follow the checkpoint: each tiny model offers Tokenize, Embed and the head its
architecture names and its weights hold; Embed on a model with a head comes from the same encoder
weights as a plain encoder's; a head named but missing from the weights is not offered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from bertserve.app.server import BertServer
from bertserve_client import AsyncClient, BertserveError

from conftest import TINY, start_server

HEADS = {
    "albert-mlm": ["fill_mask"],
    "roberta-mlm": ["fill_mask"],
    "bert-mlm": ["fill_mask"],
    "electra-generator": ["fill_mask"],
    "electra-discriminator": ["detect_replaced_tokens"],
    "bert-nli": ["classify"],
    "roberta-multilabel": ["classify"],
    "bert-cross-encoder": ["classify", "rerank"],
    "bert-ner": ["classify_tokens"],
    "roberta-ner": ["classify_tokens"],
    "bert": [],
    "spanbert-qa": ["answer"],
}


async def test_each_model_offers_the_head_its_checkpoint_carries(client: AsyncClient) -> None:
    models = {m.name: m for m in await client.models()}
    for name, heads in HEADS.items():
        assert sorted(models[name].capabilities) == sorted(["tokenize", "embed", "similarity", *heads]), name
    assert models["bert-nli"].labels == ["entailment", "neutral", "contradiction"]
    assert models["bert-ner"].labels[:3] == ["O", "B-PER", "I-PER"]
    assert models["bert-mlm"].labels == []


@pytest.mark.parametrize("model", ["roberta-mlm", "electra-discriminator", "bert-nli", "bert-ner"])
async def test_embed_on_a_model_with_a_head_uses_its_encoder(
    client: AsyncClient, tiny_models: dict[str, Path], model: str
) -> None:
    """One set of weights: the head's model serves Embed from the encoder inside it, equal to the
    checkpoint loaded as a plain encoder."""
    texts = ["Paris is the capital of France.", "A short one."]
    served = (await client.embed(texts, model=model, pooling="mean")).embeddings
    path = tiny_models[TINY[model][1]]
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path).eval()
    with torch.inference_mode():
        for text, vector in zip(texts, served, strict=True):
            hidden = encoder(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
            np.testing.assert_allclose(vector, hidden.mean(dim=0).numpy(), atol=1e-5)


async def test_a_head_missing_from_the_weights_is_not_offered(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """A plain encoder's weights under a config that names a masked-language-model head: the head
    would be random, so FillMask is not offered, and the call says what the model serves."""
    claimed = tmp_path / "claims-a-head"
    shutil.copytree(tiny_models["bert"], claimed)
    config = json.loads((claimed / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (claimed / "config.json").write_text(json.dumps(config))
    path = tmp_path / "c.yaml"
    path.write_text(
        f"server: {{address: 127.0.0.1, port: 0}}\nmodels:\n  - {{name: claims, plugin: bert, source: '{claimed}'}}\n"
    )
    server: BertServer = await start_server(path)
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            assert sorted((await client.model("claims")).capabilities) == ["embed", "similarity", "tokenize"]
            with pytest.raises(BertserveError) as info:
                await client.fill_mask("Paris is the [MASK] of France.", model="claims")
        assert info.value.code is grpc.StatusCode.UNIMPLEMENTED
        assert info.value.message == (
            "model 'claims' cannot serve FillMask: that needs a masked-language-model head; "
            "it serves Tokenize, Embed, Similarity"
        )
    finally:
        await server.stop(grace=1)
