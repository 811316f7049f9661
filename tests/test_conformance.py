"""Every variant served through gRPC equals transformers used directly on the same checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bertserve.app.discovery import discover_plugins
from bertserve_client import AsyncClient

from conftest import EMBED_MODELS, TINY

TEXTS = [
    "Paris is a beautiful city",
    "What is machine learning? Machine learning is a subset of artificial intelligence.",
    "Café naïve résumé 🙂 with   repeated   whitespace",
    "short",
    "The quick brown fox jumps over the lazy dog " * 4,
]
PAIRS = ["Where is it?", "A second segment.", "ü", "x y z", "end"]


def test_every_first_party_variant_is_discovered() -> None:
    registry = discover_plugins()
    assert {"albert", "roberta", "electra", "spanbert", "bert"} <= set(registry.plugins)
    assert registry.broken == {}


def _encoder(hf: Any, path: Path) -> Any:
    """The base encoder as transformers loads it: the QA model's own encoder for QA checkpoints."""
    if "qa" in path.name:
        return hf.model(path, qa=True).base_model
    return hf.model(path)


def _direct(hf: Any, path: Path, texts: list[str], pooling: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pooled vectors and token states from one forward pass per text, no padding involved, with the
    tokenizer's full encoding (token_type_ids included, whatever its model_input_names lists)."""
    tokenizer, encoder = hf.tokenizer(path), _encoder(hf, path)
    pooled, states = [], []
    for text in texts:
        inputs = tokenizer(text, return_tensors="pt", return_token_type_ids=True)
        with torch.no_grad():
            out = encoder(**inputs)
        hidden = out.last_hidden_state[0]
        states.append(hidden.numpy())
        if pooling == "cls":
            pooled.append(hidden[0].numpy())
        elif pooling == "mean":
            pooled.append(hidden.mean(dim=0).numpy())
        else:
            pooled.append(out.pooler_output[0].numpy())
    return np.stack(pooled), states


@pytest.mark.parametrize("model", EMBED_MODELS)
async def test_tokenize_equals_transformers(client: AsyncClient, tiny_models: dict, hf: Any, model: str) -> None:
    tokenizer = hf.tokenizer(tiny_models[TINY[model][1]])
    for pairs in (None, PAIRS):
        got = await client.tokenize(TEXTS, pairs=pairs, model=model)
        expected = tokenizer(
            TEXTS,
            pairs,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_token_type_ids=True,
        )
        assert len(got) == len(TEXTS)
        for i, t in enumerate(got):
            assert t.ids == expected["input_ids"][i]
            assert t.tokens == tokenizer.convert_ids_to_tokens(expected["input_ids"][i])
            assert t.token_type_ids == expected["token_type_ids"][i]
            assert t.attention_mask == expected["attention_mask"][i]
            assert t.special_tokens_mask == expected["special_tokens_mask"][i]
            assert t.offsets == [tuple(o) for o in expected["offset_mapping"][i]]
            assert t.sequence_ids == [-1 if s is None else s for s in expected.sequence_ids(i)]


@pytest.mark.parametrize("model", EMBED_MODELS)
async def test_tokenize_without_special_tokens(client: AsyncClient, tiny_models: dict, hf: Any, model: str) -> None:
    tokenizer = hf.tokenizer(tiny_models[TINY[model][1]])
    [got] = await client.tokenize(TEXTS[0], model=model, add_special_tokens=False)
    assert got.ids == tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    assert set(got.special_tokens_mask) == {0}


async def test_token_spelling_follows_each_tokenizer(client: AsyncClient) -> None:
    [roberta] = await client.tokenize("Paris was a city", model="roberta")
    assert roberta.tokens[0] == "<s>" and roberta.tokens[-1] == "</s>"
    assert any(t.startswith("Ġ") for t in roberta.tokens)
    [albert] = await client.tokenize("Paris is a beautiful city", model="albert")
    assert albert.tokens[0] == "[CLS]" and albert.tokens[-1] == "[SEP]"
    assert albert.tokens[1].startswith("▁") and all(t == t.lower() for t in albert.tokens[1:-1])


@pytest.mark.parametrize("model", EMBED_MODELS)
async def test_embed_equals_direct_forward_pass(client: AsyncClient, tiny_models: dict, hf: Any, model: str) -> None:
    info = await client.model(model)
    path = tiny_models[TINY[model][1]]
    for pooling in info.poolings:
        expected, states = _direct(hf, path, TEXTS, pooling)
        batched = await client.embed(TEXTS, model=model, pooling=pooling, return_token_embeddings=True)
        assert batched.embeddings.shape == (len(TEXTS), info.hidden_size)
        np.testing.assert_allclose(batched.embeddings, expected, atol=1e-5, err_msg=f"{model} {pooling} batched")
        assert batched.token_embeddings is not None
        for got, want in zip(batched.token_embeddings, states, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5)
        assert batched.token_counts == [s.shape[0] for s in states]
        for i, text in enumerate(TEXTS[:2]):
            single = await client.embed(text, model=model, pooling=pooling)
            np.testing.assert_allclose(
                single.embeddings[0], expected[i], atol=1e-5, err_msg=f"{model} {pooling} single"
            )


@pytest.mark.parametrize("model", ["bert", "roberta"])
async def test_normalize_gives_unit_vectors(client: AsyncClient, model: str) -> None:
    raw = await client.embed(TEXTS, model=model)
    unit = await client.embed(TEXTS, model=model, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit.embeddings, axis=1), 1.0, atol=1e-5)
    expected = raw.embeddings / np.linalg.norm(raw.embeddings, axis=1, keepdims=True)
    np.testing.assert_allclose(unit.embeddings, expected, atol=1e-6)


@pytest.mark.parametrize("model", EMBED_MODELS)
async def test_truncate_cuts_to_the_limit_and_says_which(
    client: AsyncClient, tiny_models: dict, hf: Any, model: str
) -> None:
    info = await client.model(model)
    long_text = "many words here " * 200
    result = await client.embed(["fine", long_text], model=model, truncate=True)
    assert result.truncated_indices == [1]
    assert result.token_counts[1] == info.max_input_tokens
    tokenizer = hf.tokenizer(tiny_models[TINY[model][1]])
    inputs = tokenizer(long_text, truncation=True, max_length=info.max_input_tokens, return_tensors="pt")
    with torch.no_grad():
        hidden = _encoder(hf, tiny_models[TINY[model][1]])(**inputs).last_hidden_state[0]
    pooled = hidden.mean(dim=0).numpy() if info.default_pooling == "mean" else hidden[0].numpy()
    np.testing.assert_allclose(result.embeddings[1], pooled, atol=1e-5)
