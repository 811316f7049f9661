"""Similarity: sentences scored against a source sentence, as sentence-transformers scores them
(SentenceTransformer.similarity, cosine by default) with the real all-MiniLM-L6-v2; served by any
embedding model, of every variant; bad input refused with INVALID_ARGUMENT."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from bertserve_client import AsyncClient, BertserveError, Similarities

SOURCE = "A man is playing a guitar."
SENTENCES = [
    "Someone plays an instrument.",
    "A man is playing a guitar.",
    "The stock market fell sharply today, and analysts expect a slow recovery.",
    "Ein Mann spielt Gitarre.",
]


async def test_scores_equal_sentence_transformers(client: AsyncClient, minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir), device="cpu")
    expected = model.similarity(model.encode([SOURCE]), model.encode(SENTENCES)).numpy()[0]

    result = await client.similarity(SOURCE, SENTENCES, model="minilm")
    assert isinstance(result, Similarities) and result.model == "minilm"
    np.testing.assert_allclose(result, expected, atol=2e-6)
    assert result[1] == pytest.approx(1.0, abs=1e-6)
    assert result.index(max(result)) == 1 and result.index(min(result)) == 2
    assert result.usage.tokens > 0 and result.usage.inference_time_ns > 0


@pytest.mark.parametrize("model", ["albert", "roberta", "electra", "bert"])
async def test_every_variant_serves_it_from_its_embeddings(client: AsyncClient, model: str) -> None:
    texts = [SOURCE, *SENTENCES]
    vectors = (await client.embed(texts, model=model, normalize=True)).embeddings
    scores = await client.similarity(SOURCE, SENTENCES, model=model)
    np.testing.assert_allclose(scores, vectors[1:] @ vectors[0], atol=1e-5)


@pytest.mark.parametrize(
    ("source", "sentences", "message"),
    [
        ("", ["a sentence"], "source_sentence is empty"),
        ("  ", ["a sentence"], "source_sentence is empty"),
        ("a source", [], "sentences is empty: send at least one sentence"),
        ("a source", ["fine", " "], "sentence 1 is empty"),
    ],
)
async def test_bad_input_is_refused(client: AsyncClient, source: str, sentences: list[str], message: str) -> None:
    with pytest.raises(BertserveError) as caught:
        await client.similarity(source, sentences, model="minilm")
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == message


async def test_a_sentence_over_the_limit_is_named_or_cut(client: AsyncClient) -> None:
    long = "word " * 2000
    with pytest.raises(BertserveError) as caught:
        await client.similarity(SOURCE, ["short", long], model="minilm")
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    over = r"has \d+ tokens, over the limit of 256 of model 'minilm'; shorten it or set truncate"
    assert re.fullmatch("sentence 1 " + over, caught.value.message), caught.value.message
    with pytest.raises(BertserveError) as caught:
        await client.similarity(long, ["short"], model="minilm")
    assert re.fullmatch("source_sentence " + over, caught.value.message), caught.value.message
    cut = await client.similarity(SOURCE, ["short", long], model="minilm", truncate=True)
    assert len(cut) == 2 and all(-1.0 <= s <= 1.0 for s in cut)


async def test_the_command_prints_each_sentence_with_its_score(client: AsyncClient, target: str) -> None:
    command = [sys.executable, "-m", "bertserve.app.cli", "similarity", "--model", "minilm", "--source", SOURCE]
    command += [*SENTENCES[:2], "--target", target]
    run = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    expected = await client.similarity(SOURCE, SENTENCES[:2], model="minilm")
    printed = json.loads(run.stdout)
    assert [p["sentence"] for p in printed] == SENTENCES[:2]
    assert [p["score"] for p in printed] == pytest.approx(list(expected), abs=1e-6)
