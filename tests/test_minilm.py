"""The real pretrained all-MiniLM-L6-v2 served by the bert plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertserve_client import AsyncClient


async def test_semantic_similarity(client: AsyncClient) -> None:
    result = await client.embed(
        ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply."],
        normalize=True,
    )
    assert result.model == "minilm"
    anchor, close, far = result.embeddings
    assert float(anchor @ close) > float(anchor @ far) + 0.2


async def test_matches_sentence_transformers_recipe(client: AsyncClient, minilm_dir: Path, hf: Any) -> None:
    texts = ["A man is playing a guitar.", "bertserve serves encoders over gRPC."]
    tokenizer, model = hf.tokenizer(minilm_dir), hf.model(minilm_dir)
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    result = await client.embed(texts, model="minilm", normalize=True)
    np.testing.assert_allclose(result.embeddings, expected, atol=1e-5)
