"""Classify equals transformers' text-classification pipeline on the tiny sequence classifiers, each
through the real gRPC surface: labels, their order and their scores, for texts and text pairs,
every function_to_apply and several top_k."""

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
from bertserve.domain import ClassifyFunction
from bertserve.serving.classify import scores_of, top_labels
from bertserve_client import AsyncClient, BertserveError, Classifications, Client
from bertserve_client._client import ClassifyFunctionName

from test_cli import bertserve

TEXTS = [
    "Paris is a beautiful city.",
    "What is machine learning?",
    "Machine learning models learn patterns from data, and data makes machine learning work.",
    "The quick brown fox jumps over the lazy dog.",
    "Café naïve résumé",
    "yes",
]
PAIRS = [
    "Paris is the capital of France.",
    "Machine learning is a subset of artificial intelligence.",
    "Nothing is learned.",
    "A dog sleeps.",
    "🙂 emoji",
    "no",
]
# The client's functions, named as the pipeline's function_to_apply (None: the default rule).
FUNCTIONS: list[ClassifyFunctionName | None] = [None, "softmax", "sigmoid", "none"]
CLASSIFIERS = ["bert-nli", "roberta-multilabel", "bert-cross-encoder"]


@pytest.fixture(scope="module")
def pipelines(tiny_models: dict[str, Path]) -> dict[str, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    return {
        name: pipeline(
            "text-classification",
            model=AutoModelForSequenceClassification.from_pretrained(tiny_models[name]).eval(),
            tokenizer=AutoTokenizer.from_pretrained(tiny_models[name]),
        )
        for name in CLASSIFIERS
    }


def _pipeline_labels(pipe: Any, inputs: list[Any], top_k: int | None, function: str | None) -> list[list[Any]]:
    """The pipeline's answer as [(label, score)] per input: top_k None is the pipeline's own
    default (the best label alone), 0 its top_k=None (every label)."""
    kwargs: dict[str, Any] = {}
    if top_k is not None:
        kwargs["top_k"] = top_k or None
    if function is not None:
        kwargs["function_to_apply"] = function
    out = pipe(inputs, **kwargs)
    per_input = [[r] if isinstance(r, dict) else r for r in out]
    return [[(r["label"], r["score"]) for r in results] for results in per_input]


def _assert_same(served: Classifications, expected: list[list[Any]], labels: list[str]) -> None:
    assert len(served) == len(expected)
    for got, want in zip(served, expected, strict=True):
        assert [s.label for s in got] == [label for label, _ in want]
        assert [s.index for s in got] == [labels.index(label) for label, _ in want]
        np.testing.assert_allclose([s.score for s in got], [score for _, score in want], rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", CLASSIFIERS)
@pytest.mark.parametrize("paired", [False, True], ids=["texts", "pairs"])
async def test_parity_with_the_pipeline(
    client: AsyncClient, pipelines: dict[str, Any], model: str, paired: bool
) -> None:
    pipe = pipelines[model]
    labels = [pipe.model.config.id2label[i] for i in range(pipe.model.config.num_labels)]
    assert (await client.model(model)).labels == labels
    inputs: list[Any] = (
        [{"text": t, "text_pair": p} for t, p in zip(TEXTS, PAIRS, strict=True)] if paired else list(TEXTS)
    )
    for function in FUNCTIONS:
        for top_k in (None, 1, 2, 0):
            pairs = PAIRS if paired else None
            served = await client.classify(TEXTS, pairs=pairs, model=model, top_k=top_k, function=function)
            assert served.model == model
            _assert_same(served, _pipeline_labels(pipe, inputs, top_k, function), labels)


async def test_default_function_follows_the_checkpoint(client: AsyncClient) -> None:
    """bert-nli (three labels, no problem_type): softmax; roberta-multilabel (problem_type
    multi_label_classification): sigmoid; bert-cross-encoder (one label): sigmoid."""
    defaults: list[tuple[str, ClassifyFunctionName]] = [
        ("bert-nli", "softmax"),
        ("roberta-multilabel", "sigmoid"),
        ("bert-cross-encoder", "sigmoid"),
    ]
    for model, function in defaults:
        default = await client.classify(TEXTS, model=model, top_k=0)
        named = await client.classify(TEXTS, model=model, top_k=0, function=function)
        assert [[(s.label, s.score) for s in r] for r in default] == [[(s.label, s.score) for s in r] for r in named]
    sums = [sum(s.score for s in r) for r in await client.classify(TEXTS, model="roberta-multilabel", top_k=0)]
    assert not np.allclose(sums, 1.0, atol=1e-3)  # independent sigmoids, not a distribution
    [[only]] = await client.classify("Paris is a beautiful city.", model="bert-cross-encoder", top_k=0)
    assert only.label == "LABEL_0" and only.index == 0 and 0 < only.score < 1


def test_ties_are_ordered_as_the_pipeline_orders_them(pipelines: dict[str, Any]) -> None:
    """Equal scores keep label order, in the pipeline's postprocessing and in the server's, which
    runs after the forward pass for every variant (tied logits cannot be made through a model)."""
    pipe = pipelines["bert-nli"]
    labels = [pipe.model.config.id2label[i] for i in range(3)]
    for logits in ([1.0, 2.0, 2.0], [0.5, 0.5, 0.5], [3.0, -1.0, 3.0], [40.0, 30.0, 35.0]):
        for function in ("softmax", "sigmoid", "none"):
            outputs = {"logits": torch.tensor([logits])}
            want = pipe.postprocess(outputs, function_to_apply=function, top_k=None, _legacy=False)
            [best] = [pipe.postprocess(outputs, function_to_apply=function)]
            scores = scores_of(np.array(logits, dtype=np.float32), ClassifyFunction(function))
            got = top_labels(scores, labels, 0)
            assert [(s.label, s.score) for s in got] == [(w["label"], w["score"]) for w in want]
            assert (got[0].label, got[0].score) == (best["label"], best["score"])


async def test_results_do_not_depend_on_batching(client: AsyncClient, server: BertServer) -> None:
    texts = [("word " * n).strip() + f" {n}" for n in (1, 30, 3, 25, 7, 50, 2, 40, 12, 5, 45, 18)]
    pairs = [f"pair {n} " * (n % 4 + 1) for n in range(len(texts))]
    alone = [await client.classify(t, pairs=p, model="bert-nli", top_k=0) for t, p in zip(texts, pairs, strict=True)]
    stats = server.router.get("bert-nli").batcher.stats
    passes, sequences = stats.forward_passes, stats.sequences
    together = await asyncio.gather(
        *(client.classify(t, pairs=p, model="bert-nli", top_k=0) for t, p in zip(texts, pairs, strict=True))
    )
    assert stats.sequences - sequences == len(texts)
    assert stats.forward_passes - passes < len(texts)  # some calls shared a pass, padded to other lengths
    for a, t in zip(alone, together, strict=True):
        assert [s.label for s in t[0]] == [s.label for s in a[0]]
        np.testing.assert_allclose([s.score for s in t[0]], [s.score for s in a[0]], rtol=0, atol=1e-5)
    batch = await client.classify(texts, pairs=pairs, model="bert-nli", top_k=0)  # one call, one padded pass
    for a, b in zip(alone, batch, strict=True):
        np.testing.assert_allclose([s.score for s in b], [s.score for s in a[0]], rtol=0, atol=1e-5)


async def _error(call: Any) -> BertserveError:
    with pytest.raises(BertserveError) as info:
        await call
    return info.value


async def test_a_model_without_the_head_is_unimplemented(client: AsyncClient) -> None:
    err = await _error(client.classify("hello", model="bert"))
    assert err.code is grpc.StatusCode.UNIMPLEMENTED
    assert err.message == (
        "model 'bert' cannot serve Classify: that needs a sequence-classification head; "
        "it serves Tokenize, Embed, Similarity"
    )


async def test_bad_requests_are_invalid_arguments(client: AsyncClient) -> None:
    cases = [
        (
            client.classify(["a", "b"], pairs=["only one"], model="bert-nli"),
            "pairs has 1 entries for 2 inputs: send none or one per input",
        ),
        (client.classify([], model="bert-nli"), "inputs is empty: send at least one text"),
        (client.classify(["a", " "], model="bert-nli"), "input 1 is empty"),
        (client.classify(["a", "b"], pairs=["x", ""], model="bert-nli"), "pair 1 is empty"),
    ]
    for call, message in cases:
        err = await _error(call)
        assert err.code is grpc.StatusCode.INVALID_ARGUMENT
        assert err.message == message


async def test_an_over_long_input_is_refused_or_cut(client: AsyncClient, pipelines: dict[str, Any]) -> None:
    info = await client.model("bert-nli")
    long = "machine learning " * 200
    err = await _error(client.classify(["short", long], model="bert-nli"))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == (
        f"input 1 has more than {info.max_input_tokens} tokens, the limit of model 'bert-nli'; "
        "shorten it or set truncate"
    )
    err = await _error(client.classify(["short", "short"], pairs=["fine", long], model="bert-nli"))
    assert err.message.startswith("input 1 has more than")
    # Cut, a pair loses tokens as the pipeline's truncation=True ("longest_first") takes them.
    served = await client.classify(["short", long], pairs=["fine", long], model="bert-nli", top_k=0, truncate=True)
    pipe = pipelines["bert-nli"]
    inputs = [{"text": "short", "text_pair": "fine"}, {"text": long, "text_pair": long}]
    expected = [
        [(r["label"], r["score"]) for r in results]
        for results in pipe(inputs, top_k=None, truncation=True, max_length=info.max_input_tokens)
    ]
    _assert_same(served, expected, info.labels)


async def test_the_cli(client: AsyncClient, target: str) -> None:
    run = await bertserve(
        target,
        "classify",
        "--model",
        "bert-nli",
        TEXTS[0],
        TEXTS[1],
        "--pair",
        PAIRS[0],
        "--pair",
        PAIRS[1],
        "--top-k",
        "2",
        "--function",
        "sigmoid",
    )
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    expected = await client.classify(TEXTS[:2], pairs=PAIRS[:2], model="bert-nli", top_k=2, function="sigmoid")
    assert [[(p["label"], p["index"]) for p in r] for r in printed] == [
        [(s.label, s.index) for s in r] for r in expected
    ]
    np.testing.assert_allclose(
        [p["score"] for r in printed for p in r], [s.score for r in expected for s in r], rtol=0, atol=1e-6
    )
    run = await bertserve(target, "classify", "--model", "bert", "hello")
    assert run.returncode == 1
    assert run.stderr.startswith("bertserve: UNIMPLEMENTED: model 'bert' cannot serve Classify")


async def test_the_blocking_client(client: AsyncClient, target: str) -> None:
    def call() -> Classifications:
        with Client(target) as blocking:
            return blocking.classify(TEXTS, pairs=PAIRS, model="bert-nli", top_k=0, function="none")

    blocking = await asyncio.to_thread(call)  # the server shares this event loop
    expected = await client.classify(TEXTS, pairs=PAIRS, model="bert-nli", top_k=0, function="none")
    assert list(blocking) == list(expected) and blocking.model == expected.model == "bert-nli"
