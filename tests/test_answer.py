"""Answer's windows, options and errors, against references written from transformers' own pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from bertserve_client import AsyncClient, BertserveError

from conftest import QA_MODELS, TINY
from qa_reference import per_span_answers, pipeline_answers

SEED_QUESTION = "What is machine learning?"
SEED_CONTEXT = (
    "Machine learning is a subset of artificial intelligence. It is widely for creating a variety of applications "
    "such as email filtering and computer vision"
)
PLAIN = "Paris is a beautiful city. The Seine flows through it, and many bridges cross the river at night."
ODD = "Café   naïve résumé 🙂🚀 déjà-vu\tand  «quotes»  under   repeated   white space, 東京 too.  "
LONG = " ".join(f"Sentence number {i} talks about topic {i % 7} and the river Seine." for i in range(160))


def _check(got: list, expected: list[dict[str, Any]]) -> None:
    assert [(a.text, a.start, a.end) for a in got] == [(e["answer"], e["start"], e["end"]) for e in expected]
    np.testing.assert_allclose([a.score for a in got], [e["score"] for e in expected], rtol=1e-4, atol=1e-6)


def _qa(hf: Any, tiny_models: dict[str, Path], model: str) -> tuple[Any, Any]:
    path = tiny_models[TINY[model][1]]
    return hf.tokenizer(path), hf.model(path, qa=True)


@pytest.mark.parametrize("model", QA_MODELS)
async def test_odd_white_space_and_token_offsets(client: AsyncClient, tiny_models: dict, hf: Any, model: str) -> None:
    """Accents, emoji, tabs and runs of spaces: RoBERTa's tokens hold white space, which answers never do."""
    tokenizer, qa_model = _qa(hf, tiny_models, model)
    for align in (True, False):
        options = {"top_k": 5, "align_to_words": align, "max_answer_len": 4}
        got = await client.answer((SEED_QUESTION, ODD), model=model, **options)  # type: ignore[arg-type]
        _check(got[0], pipeline_answers(tokenizer, qa_model, SEED_QUESTION, ODD, **options).answers)  # type: ignore[arg-type]
        got = await client.answer((SEED_QUESTION, ODD), model=model, merge_same_text=False, **options)  # type: ignore[arg-type]
        _check(got[0], per_span_answers(tokenizer, qa_model, SEED_QUESTION, ODD, **options).answers)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", QA_MODELS)
async def test_default_window_is_the_pipelines(client: AsyncClient, tiny_models: dict, hf: Any, model: str) -> None:
    """Unset options: max_seq_len 384 capped at the model's 128 tokens, doc_stride half of that (64)."""
    tokenizer, qa_model = _qa(hf, tiny_models, model)
    question = "Where does the Seine flow?"
    got = await client.answer((question, PLAIN * 8), model=model, top_k=3)
    expected = pipeline_answers(tokenizer, qa_model, question, PLAIN * 8, top_k=3)
    assert expected.windows > 1
    _check(got[0], expected.answers)
    _check(got[0], pipeline_answers(tokenizer, qa_model, question, PLAIN * 8, top_k=3, doc_stride=64).answers)


@pytest.mark.parametrize("model", ["albert-qa", "roberta-qa"])
async def test_max_seq_len_alone_takes_the_default_stride(
    client: AsyncClient, tiny_models: dict, hf: Any, model: str
) -> None:
    """max_seq_len 100 without doc_stride: the stride is 50, not a 128 that would not fit."""
    tokenizer, qa_model = _qa(hf, tiny_models, model)
    question = "Where does the Seine flow?"
    got = await client.answer((question, PLAIN * 8), model=model, top_k=3, max_seq_len=100)
    expected = pipeline_answers(tokenizer, qa_model, question, PLAIN * 8, top_k=3, max_seq_len=100, doc_stride=50)
    assert expected.windows > 1
    _check(got[0], expected.answers)


@pytest.mark.parametrize("model", ["electra-qa", "spanbert-qa"])
async def test_the_stride_is_lowered_when_the_question_leaves_less_room(
    client: AsyncClient, tiny_models: dict, hf: Any, model: str
) -> None:
    tokenizer, qa_model = _qa(hf, tiny_models, model)
    question = "Where does the river Seine flow through the city?"
    question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    room = 28 - question_tokens - tokenizer.num_special_tokens_to_add(pair=True)
    assert 0 < room <= 14  # the default stride, 14, leaves no room to advance
    got = await client.answer((question, PLAIN * 2), model=model, top_k=3, max_seq_len=28)
    expected = pipeline_answers(tokenizer, qa_model, question, PLAIN * 2, top_k=3, max_seq_len=28, doc_stride=room // 2)
    _check(got[0], expected.answers)


@pytest.mark.parametrize("model", QA_MODELS)
@pytest.mark.parametrize("merge", [True, False])
async def test_answers_slice_the_context_exactly(client: AsyncClient, model: str, merge: bool) -> None:
    contexts = [ODD, SEED_CONTEXT, "  leading spaces, trailing spaces  ", "🙂 " * 30 + "end"]
    for align in (True, False):
        result = await client.answer(
            [(SEED_QUESTION, c) for c in contexts],
            model=model,
            top_k=10,
            align_to_words=align,
            max_seq_len=40,
            doc_stride=10,
            merge_same_text=merge,
        )
        for context, answers in zip(contexts, result, strict=True):
            assert answers, context
            for a in answers:
                assert a.text == context[a.start : a.end]
                assert a.text == a.text.strip() and a.text
                assert 0 < a.score <= (len(answers) if merge else 1)
            spans = [(a.start, a.end) for a in answers]
            assert len(set(spans)) == len(spans)
            if merge:
                assert len({a.text.lower() for a in answers}) == len(answers)


@pytest.mark.parametrize("model", ["roberta-qa", "spanbert-qa"])
async def test_long_context_and_batched_pairs(client: AsyncClient, tiny_models: dict, hf: Any, model: str) -> None:
    tokenizer, qa_model = _qa(hf, tiny_models, model)
    windows = tokenizer(
        "Which topic?", LONG, truncation="only_second", max_length=64, stride=16, return_overflowing_tokens=True
    )["input_ids"]
    assert len(windows) > 20
    got = await client.answer(("Which topic?", LONG), model=model, top_k=3, max_seq_len=64, doc_stride=16)
    expected = pipeline_answers(tokenizer, qa_model, "Which topic?", LONG, top_k=3, max_seq_len=64, doc_stride=16)
    _check(got[0], expected.answers)

    pairs = [("Which topic?", LONG), (SEED_QUESTION, SEED_CONTEXT), ("Where?", PLAIN), ("Odd?", ODD)]
    together = await client.answer(pairs, model=model, top_k=2, max_seq_len=64, doc_stride=16)
    for pair, answers in zip(pairs, together, strict=True):
        [alone] = await client.answer(pair, model=model, top_k=2, max_seq_len=64, doc_stride=16)
        assert [(a.text, a.start, a.end) for a in answers] == [(a.text, a.start, a.end) for a in alone]
        np.testing.assert_allclose([a.score for a in answers], [a.score for a in alone], atol=1e-5)


async def test_usage_reports_window_tokens(client: AsyncClient) -> None:
    result = await client.answer((SEED_QUESTION, SEED_CONTEXT), model="spanbert-qa")
    assert result.model == "spanbert-qa"
    assert result.usage.tokens > len(SEED_CONTEXT.split())
    assert result.usage.inference_time_ns > 0


@pytest.mark.parametrize(
    ("options", "pair", "message"),
    [
        ({}, ("", SEED_CONTEXT), "question 0 is empty"),
        ({}, (SEED_QUESTION, "   "), "context 0 is empty"),
        ({"doc_stride": 64, "max_seq_len": 64}, None, "doc_stride (64) must be smaller than max_seq_len (64)"),
        (
            {"doc_stride": 200},  # under the requested 384, over the model's window
            None,
            "doc_stride (200) must be smaller than max_seq_len (128, the most model 'spanbert-qa' takes)",
        ),
        ({"max_answer_len": 0}, None, "max_answer_len must be at least 1, got 0"),
        ({"top_k": 0}, None, "top_k must be at least 1, got 0"),
        (
            {"max_seq_len": 16, "max_question_len": 64},
            ("why " * 30, SEED_CONTEXT),
            "question 0: the question takes 60 tokens (max_question_len 64) and model 'spanbert-qa' adds 3 special "
            "tokens, leaving no room for context within max_seq_len 16; shorten the question or raise max_seq_len",
        ),
        ({"max_seq_len": 0}, None, "max_seq_len must be at least 1, got 0"),
        (
            {},
            ("why?", "é" * 1000),
            "context 0 has 2000 bytes, over the limit of 1000 bytes (max_context_bytes) of model "
            "'spanbert-qa-short-context'",
        ),
    ],
)
async def test_bad_input_is_invalid_argument(
    client: AsyncClient, options: dict, pair: tuple[str, str] | None, message: str
) -> None:
    model = "spanbert-qa-short-context" if "max_context_bytes" in message else "spanbert-qa"
    with pytest.raises(BertserveError) as info:
        await client.answer(pair or (SEED_QUESTION, SEED_CONTEXT), model=model, **options)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.message


async def test_empty_batch_is_invalid(client: AsyncClient) -> None:
    with pytest.raises(BertserveError) as info:
        await client.answer([], model="spanbert-qa")
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.message == "questions is empty: send at least one (question, context) pair"


@pytest.mark.parametrize("model", ["roberta-qa", "spanbert-qa"])
async def test_long_question_is_cut_to_max_question_len(
    client: AsyncClient, tiny_models: dict, hf: Any, model: str
) -> None:
    tokenizer, qa_model = _qa(hf, tiny_models, model)
    question = "Where does the river Seine flow through the city of Paris at night? " * 3
    offsets = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert len(offsets) > 10
    kept = question[: offsets[9][1]]  # its first 10 tokens
    got = await client.answer((question, PLAIN * 3), model=model, top_k=3, max_question_len=10, doc_stride=32)
    _check(got[0], pipeline_answers(tokenizer, qa_model, kept, PLAIN * 3, top_k=3, doc_stride=32).answers)
