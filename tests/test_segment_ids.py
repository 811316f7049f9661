"""Segment ids: every model gets token_type_ids when its architecture takes them and its config has
more than one segment type, whatever the tokenizer's model_input_names says; Tokenize reports
exactly what the model gets; and the served logits equal transformers' own model called with the
tokenizer's full encoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bertserve.app.server import BertServer
from bertserve_client import AsyncClient

from conftest import TINY

QUESTION = "What is the capital of France?"
CONTEXT = "Paris is the capital of France, and Paris is a beautiful city."
#: One QA checkpoint per first-party plugin (bert-qa serves the SpanBERT checkpoint through plugin bert).
QA_PER_PLUGIN = ["albert-qa", "roberta-qa", "electra-qa", "spanbert-qa", "bert-qa"]
TAKES_SEGMENT_IDS = {"albert-qa", "electra-qa", "spanbert-qa", "bert-qa"}  # RoBERTa's config has one type


def _reference(hf: Any, tiny_models: dict[str, Path], model: str) -> tuple[Any, Any]:
    path = tiny_models[TINY[model][1]]
    return hf.tokenizer(path), hf.model(path, qa=True)


def test_albert_answers_depend_on_its_segment_ids(tiny_models: dict, hf: Any) -> None:
    """transformers 5 leaves token_type_ids out of ALBERT's tokenizer inputs, yet the model reads them."""
    tokenizer, model = _reference(hf, tiny_models, "albert-qa")
    assert "token_type_ids" not in tokenizer.model_input_names
    full = tokenizer(QUESTION, CONTEXT, return_tensors="pt", return_token_type_ids=True)
    with torch.no_grad():
        with_types = model(**full).start_logits
        without = model(input_ids=full["input_ids"], attention_mask=full["attention_mask"]).start_logits
    assert not torch.allclose(with_types, without, atol=1e-3)


@pytest.mark.parametrize("model", QA_PER_PLUGIN)
async def test_the_model_gets_the_segment_ids_that_tokenize_reports(
    server: BertServer, client: AsyncClient, tiny_models: dict, hf: Any, model: str
) -> None:
    served = server.router.get(model).plugin._model  # type: ignore[attr-defined]
    calls: list[tuple[dict[str, torch.Tensor], Any]] = []
    hook = served.register_forward_hook(lambda _m, _a, kwargs, out: calls.append((kwargs, out)), with_kwargs=True)
    try:
        await client.answer((QUESTION, CONTEXT), model=model)
    finally:
        hook.remove()
    [(received, out)] = calls  # one window, one pass
    [tokenization] = await client.tokenize(QUESTION, pairs=CONTEXT, model=model)
    n = len(tokenization.ids)
    assert received["input_ids"][0, :n].tolist() == tokenization.ids

    tokenizer, reference = _reference(hf, tiny_models, model)
    full = tokenizer(QUESTION, CONTEXT, return_tensors="pt", return_token_type_ids=True)
    if model in TAKES_SEGMENT_IDS:
        assert received["token_type_ids"][0, :n].tolist() == tokenization.token_type_ids
        assert tokenization.token_type_ids == full["token_type_ids"][0].tolist()
        assert set(tokenization.token_type_ids) == {0, 1}
    else:
        assert "token_type_ids" not in received
        assert set(tokenization.token_type_ids) == {0}

    with torch.no_grad():
        expected = reference(**full)
    np.testing.assert_allclose(out.start_logits[0, :n].float().numpy(), expected.start_logits[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(out.end_logits[0, :n].float().numpy(), expected.end_logits[0].numpy(), atol=1e-5)
