"""A context of a megabyte is answered: its windows go through the batcher in parts, with the queue
bounded, while other calls to the same model keep being answered; the answer equals the one found
by running its windows one by one."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bertserve.app.server import BertServer
from bertserve_client import AsyncClient

from conftest import TINY
from qa_reference import pipeline_answers
from tiny_models import build_corpus

MODEL = "spanbert-qa"
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def megabyte() -> str:
    text = " ".join(build_corpus())
    context = (text * (1 + 1_000_000 // len(text)))[:1_000_000]
    assert len(context.encode()) >= 1_000_000
    return context


async def test_a_megabyte_context_is_answered_while_others_are_served(
    server: BertServer, client: AsyncClient, tiny_models: dict, hf: Any, megabyte: str
) -> None:
    batcher = server.router.get(MODEL).batcher
    passes_before = batcher.stats.forward_passes
    answering = asyncio.create_task(client.answer((QUESTION, megabyte), model=MODEL, timeout=300))
    started = time.monotonic()
    embeds_meanwhile = 0
    most_queued = (0, 0)
    while not answering.done():
        # A one-sentence call to the same model: its deadline would fail the test if the long call starved it.
        embedded = await client.embed("Paris is a beautiful city.", model=MODEL, timeout=10)
        assert embedded.embeddings.shape[0] == 1
        embeds_meanwhile += not answering.done()
        most_queued = max(most_queued, batcher.queued)
        await asyncio.sleep(0.05)
    [answers] = await answering
    took = time.monotonic() - started
    print(f"\n1 MB context answered in {took:.1f}s; {embeds_meanwhile} embeds meanwhile; most queued {most_queued}")
    assert embeds_meanwhile >= 3
    # At most two parts of one pass each wait at a time, plus the embeds of this test.
    spec = server.router.get(MODEL).spec
    assert most_queued[0] <= 2 * spec.max_batch_size + 1
    assert batcher.stats.forward_passes - passes_before > 50

    path = tiny_models[TINY[MODEL][1]]
    expected = pipeline_answers(hf.tokenizer(path), hf.model(path, qa=True), QUESTION, megabyte)
    assert expected.windows > 1000
    assert [(a.text, a.start, a.end) for a in answers] == [
        (e["answer"], e["start"], e["end"]) for e in expected.answers
    ]
    assert answers[0].score == pytest.approx(expected.answers[0]["score"], rel=1e-4)
