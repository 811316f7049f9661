"""Tokenize with truncate cuts as the model's tokenizer does, through gRPC and the CLI."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from bertserve_client import AsyncClient, BertserveError

from conftest import EMBED_MODELS, TINY
from test_cli import bertserve

TEXTS = [
    "Paris is a beautiful city",
    "What is machine learning? Machine learning is a subset of artificial intelligence.",
    "Café naïve résumé 🙂 with   repeated   whitespace",
    "short",
]
PAIRS = ["Where is it?", "A second segment, somewhat longer than the first one was.", "ü", "x y z"]


@pytest.mark.parametrize("model", EMBED_MODELS)
async def test_truncate_equals_the_tokenizers_truncation(
    client: AsyncClient, tiny_models: dict, hf: Any, model: str
) -> None:
    tokenizer = hf.tokenizer(tiny_models[TINY[model][1]])
    for pairs in (None, PAIRS):
        full = tokenizer(TEXTS, pairs)["input_ids"]
        for max_length in (7, 12):
            got = await client.tokenize(TEXTS, pairs=pairs, model=model, truncate=True, max_length=max_length)
            expected = tokenizer(
                TEXTS,
                pairs,
                truncation=True,
                max_length=max_length,
                return_offsets_mapping=True,
                return_special_tokens_mask=True,
                return_token_type_ids=True,
            )
            for i, t in enumerate(got):
                assert t.ids == expected["input_ids"][i]
                assert t.tokens == expected.tokens(i)
                assert t.token_type_ids == expected["token_type_ids"][i]
                assert t.special_tokens_mask == expected["special_tokens_mask"][i]
                assert t.offsets == [tuple(o) for o in expected["offset_mapping"][i]]
                assert t.sequence_ids == [-1 if s is None else s for s in expected.sequence_ids(i)]
                assert t.truncated == (len(full[i]) > max_length)
            assert any(t.truncated for t in got)
            assert pairs is not None or not got[3].truncated  # "short" fits


@pytest.mark.parametrize("model", ["albert", "roberta"])
async def test_truncate_without_max_length_cuts_to_the_models_limit(
    client: AsyncClient, tiny_models: dict, hf: Any, model: str
) -> None:
    tokenizer = hf.tokenizer(tiny_models[TINY[model][1]])
    limit = (await client.model(model)).max_input_tokens
    text = "the city of Paris " * 100
    [cut] = await client.tokenize(text, model=model, truncate=True)
    assert cut.ids == tokenizer(text, truncation=True, max_length=limit)["input_ids"] and len(cut.ids) == limit
    assert cut.truncated
    [whole] = await client.tokenize(text, model=model)
    assert len(whole.ids) > limit and not whole.truncated


@pytest.mark.parametrize(
    ("options", "pairs", "message"),
    [
        ({"max_length": 8}, None, "max_length applies only with truncate: set truncate too"),
        ({"truncate": True, "max_length": 129}, None, "max_length 129 is over the limit of 128 tokens of model 'bert'"),
        (
            {"truncate": True, "max_length": 3},
            ["a pair"],
            "max_length 3 leaves no room for text: model 'bert' adds 3 special tokens to each pair",
        ),
        (
            {"truncate": True, "max_length": 0},
            None,
            "max_length 0 leaves no room for text: model 'bert' adds 2 special tokens to each text",
        ),
    ],
)
async def test_bad_truncation_is_invalid_argument(
    client: AsyncClient, options: dict, pairs: list[str] | None, message: str
) -> None:
    with pytest.raises(BertserveError) as info:
        await client.tokenize("Paris is a beautiful city", pairs=pairs, model="bert", **options)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == message


async def test_the_cli_truncates(client: AsyncClient, target: str) -> None:
    run = await bertserve(target, "tokenize", "--model", "bert", "--truncate", "--max-length", "5", TEXTS[1])
    assert run.returncode == 0, run.stderr
    [printed] = json.loads(run.stdout)
    [expected] = await client.tokenize(TEXTS[1], model="bert", truncate=True, max_length=5)
    assert printed["ids"] == expected.ids and len(expected.ids) == 5
    assert printed["truncated"] is True
