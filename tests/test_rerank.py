"""Rerank on the tiny cross-encoder equals scoring each (query, document) pair alone with
transformers, through the real gRPC surface; truncation, ranking, batching and refusals."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from bertserve.app.server import BertServer
from bertserve_client import AsyncClient, BertserveError, Client

from test_cli import bertserve

MODEL = "bert-cross-encoder"
QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Paris is the capital of France.",
    "Machine learning models learn patterns from data.",
    "The quick brown fox jumps over the lazy dog.",
    "Paris is a beautiful city, and the capital of France is Paris.",
    "yes",
    "Who wrote the Zen of Python? Tim Peters wrote the Zen of Python.",
    "Café naïve résumé façade 🙂",
    "What is machine learning? Machine learning is a subset of artificial intelligence.",
]
LONG = "the capital of france is a city with many bridges and a river " * 30


@pytest.fixture(scope="module")
def cross_encoder(tiny_models: dict[str, Path]) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = tiny_models[MODEL]
    return AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path).eval()


def _logit(cross_encoder: tuple[Any, Any], query: str, document: str, max_length: int | None = None) -> float:
    """The model's logit of one (query, document) pair, run alone; cut as truncation=True cuts it."""
    tokenizer, model = cross_encoder
    truncation = {"truncation": True, "max_length": max_length} if max_length else {}
    inputs = tokenizer(query, document, return_tensors="pt", **truncation)
    with torch.inference_mode():
        return float(model(**inputs).logits[0, 0])


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + float(np.exp(-x)))


async def test_scores_equal_each_pair_scored_alone(client: AsyncClient, cross_encoder: tuple[Any, Any]) -> None:
    result = await client.rerank(QUERY, DOCUMENTS, model=MODEL)
    assert result.model == MODEL
    assert [d.index for d in result.documents] == list(range(len(DOCUMENTS)))
    assert not any(d.truncated for d in result.documents)
    assert all(d.text is None for d in result.documents)
    logits = [_logit(cross_encoder, QUERY, d) for d in DOCUMENTS]
    scores = [d.score for d in result.documents]
    np.testing.assert_allclose(scores, [_sigmoid(x) for x in logits], rtol=0, atol=1e-5)
    assert result.ranking == [int(i) for i in np.argsort(-np.array(scores), kind="stable")]
    assert result.ranking == [int(i) for i in np.argsort(-np.array(logits), kind="stable")]
    assert result.usage.tokens > 0 and result.usage.inference_time_ns > 0
    raw = await client.rerank(QUERY, DOCUMENTS, model=MODEL, raw_scores=True)
    np.testing.assert_allclose([d.score for d in raw.documents], logits, rtol=0, atol=1e-5)
    assert raw.ranking == result.ranking


async def test_ties_keep_request_order(client: AsyncClient, server: BertServer) -> None:
    """A document sent twice is scored once, so its copies tie exactly, and keep request order."""
    same = ["Paris is the capital of France.", "yes", "Paris is the capital of France.", "yes"]
    stats = server.router.get(MODEL).batcher.stats
    sequences = stats.sequences
    result = await client.rerank(QUERY, same, model=MODEL)
    assert stats.sequences - sequences == 2
    assert result.documents[0].score == result.documents[2].score
    assert result.documents[1].score == result.documents[3].score
    first, second = (0, 1) if result.documents[0].score > result.documents[1].score else (1, 0)
    assert result.ranking == [first, first + 2, second, second + 2]


async def test_return_documents(client: AsyncClient) -> None:
    result = await client.rerank(QUERY, DOCUMENTS[:3], model=MODEL, return_documents=True)
    assert [d.text for d in result.documents] == DOCUMENTS[:3]


async def test_a_long_document_is_refused_or_cut_and_flagged(
    client: AsyncClient, cross_encoder: tuple[Any, Any]
) -> None:
    limit = (await client.model(MODEL)).max_input_tokens
    tokenizer, _ = cross_encoder
    tokens = len(tokenizer(QUERY, LONG)["input_ids"])
    assert tokens > limit
    with pytest.raises(BertserveError) as info:
        await client.rerank(QUERY, [DOCUMENTS[0], LONG, DOCUMENTS[1]], model=MODEL)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == (
        f"document 1 and the query make {tokens} tokens, over the limit of {limit} of model '{MODEL}'; "
        "shorten it or set truncate"
    )
    result = await client.rerank(QUERY, [DOCUMENTS[0], LONG, DOCUMENTS[1]], model=MODEL, truncate=True)
    assert [d.truncated for d in result.documents] == [False, True, False]
    # Cut as truncation=True ("longest_first") cuts the pair: here the document alone loses tokens.
    expected = [_logit(cross_encoder, QUERY, d, max_length=limit) for d in (DOCUMENTS[0], LONG, DOCUMENTS[1])]
    np.testing.assert_allclose([d.score for d in result.documents], [_sigmoid(x) for x in expected], atol=1e-5)
    cut = tokenizer(QUERY, LONG, truncation=True, max_length=limit)
    assert len(cut["input_ids"]) == limit
    assert tokenizer.decode(cut["input_ids"]).startswith(f"[CLS] {QUERY.lower()} [SEP]")


async def test_results_do_not_depend_on_batching(client: AsyncClient, server: BertServer) -> None:
    calls = [(QUERY, DOCUMENTS), ("Who wrote it?", DOCUMENTS[2:5]), ("city " * 20, DOCUMENTS[:1])]
    calls += [(f"question number {n}", [("word " * n).strip()] * 2) for n in (1, 30, 7, 50)]
    alone = [await client.rerank(q, docs, model=MODEL) for q, docs in calls]
    stats = server.router.get(MODEL).batcher.stats
    passes, sequences = stats.forward_passes, stats.sequences
    together = await asyncio.gather(*(client.rerank(q, docs, model=MODEL) for q, docs in calls))
    assert stats.sequences - sequences == sum(len(set(docs)) for _, docs in calls)  # a repeated document runs once
    assert stats.forward_passes - passes < len(calls)  # calls shared passes, padded to other lengths
    for a, t in zip(alone, together, strict=True):
        np.testing.assert_allclose([d.score for d in t.documents], [d.score for d in a.documents], rtol=0, atol=1e-5)
        assert t.ranking == a.ranking


async def _error(call: Any) -> BertserveError:
    with pytest.raises(BertserveError) as info:
        await call
    return info.value


async def test_models_without_a_cross_encoder_are_unimplemented(client: AsyncClient) -> None:
    err = await _error(client.rerank(QUERY, DOCUMENTS, model="bert-nli"))
    assert err.code is grpc.StatusCode.UNIMPLEMENTED
    assert err.message == (
        "model 'bert-nli' cannot serve Rerank: that needs a cross-encoder head (sequence classification with one "
        "label); it serves Tokenize, Embed, Similarity, Classify"
    )
    err = await _error(client.rerank(QUERY, DOCUMENTS, model="bert"))
    assert err.code is grpc.StatusCode.UNIMPLEMENTED
    assert err.message == (
        "model 'bert' cannot serve Rerank: that needs a cross-encoder head (sequence classification with one "
        "label); it serves Tokenize, Embed, Similarity"
    )


async def test_bad_requests_are_invalid_arguments(client: AsyncClient) -> None:
    cases = [
        (client.rerank("", DOCUMENTS, model=MODEL), "query is empty"),
        (client.rerank(QUERY, [], model=MODEL), "documents is empty: send at least one document"),
        (client.rerank(QUERY, ["fine", "  "], model=MODEL), "document 1 is empty"),
    ]
    for call, message in cases:
        err = await _error(call)
        assert err.code is grpc.StatusCode.INVALID_ARGUMENT
        assert err.message == message


async def test_the_blocking_client(client: AsyncClient, target: str) -> None:
    def call() -> Any:
        with Client(target) as blocking:
            return blocking.rerank(QUERY, DOCUMENTS, model=MODEL, return_documents=True)

    blocking = await asyncio.to_thread(call)  # the server shares this event loop
    expected = await client.rerank(QUERY, DOCUMENTS, model=MODEL, return_documents=True)
    assert blocking.documents == expected.documents and blocking.ranking == expected.ranking


async def test_the_cli(client: AsyncClient, target: str) -> None:
    run = await bertserve(target, "rerank", "--model", MODEL, "--query", QUERY, *DOCUMENTS[:4])
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    expected = await client.rerank(QUERY, DOCUMENTS[:4], model=MODEL)
    assert [p["index"] for p in printed] == expected.ranking
    assert [p["text"] for p in printed] == [DOCUMENTS[i] for i in expected.ranking]
    np.testing.assert_allclose(
        [p["score"] for p in printed], [expected.documents[i].score for i in expected.ranking], atol=1e-6
    )
    run = await bertserve(target, "rerank", "--model", MODEL, "--query", QUERY, LONG)
    assert run.returncode == 1
    assert run.stderr.startswith("bertserve: INVALID_ARGUMENT: document 0 and the query make ")
