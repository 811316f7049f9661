"""Answer equals an independent brute-force search over the raw logits of every window."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from bertserve_client import AsyncClient, BertserveError

from conftest import QA_MODELS, TINY

SEED_QUESTION = "What is machine learning?"
SEED_CONTEXT = (
    "Machine learning is a subset of artificial intelligence. It is widely for creating a variety of applications "
    "such as email filtering and computer vision"
)
PLAIN = "Paris is a beautiful city. The Seine flows through it, and many bridges cross the river at night."
ODD = "Café   naïve résumé 🙂🚀 déjà-vu\tand  «quotes»  under   repeated   white space, 東京 too.  "
LONG = " ".join(f"Sentence number {i} talks about topic {i % 7} and the river Seine." for i in range(160))


def reference(
    tokenizer: Any,
    qa_model: Any,
    question: str,
    context: str,
    *,
    top_k: int = 1,
    max_seq_len: int = 128,
    doc_stride: int = 32,
    max_answer_len: int = 15,
    handle_impossible_answer: bool = False,
    align_to_words: bool = True,
) -> list[tuple[str, int, int, float]]:
    """Enumerate every legal (start, end) in every window, scored as the classic pipeline scores them."""
    enc = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=max_seq_len,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    best: dict[tuple[int, int], float] = {}
    null = 1.0
    for w in range(len(enc["input_ids"])):
        inputs = {"input_ids": torch.tensor([enc["input_ids"][w]])}
        if "token_type_ids" in tokenizer.model_input_names:
            inputs["token_type_ids"] = torch.tensor([enc["token_type_ids"][w]])
        with torch.no_grad():
            out = qa_model(**inputs)
        start = out.start_logits[0].double().numpy()
        end = out.end_logits[0].double().numpy()
        sequence_ids = enc.sequence_ids(w)
        allowed = [0] + [j for j, s in enumerate(sequence_ids) if s == 1]
        p_start = np.exp(start[allowed] - start[allowed].max())
        p_start /= p_start.sum()
        p_end = np.exp(end[allowed] - end[allowed].max())
        p_end /= p_end.sum()
        null = min(null, p_start[0] * p_end[0])
        for a, s in enumerate(allowed[1:], start=1):
            for b, e in enumerate(allowed[1:], start=1):
                if not 0 <= e - s < max_answer_len:
                    continue
                first, last = enc["offset_mapping"][w][s][0], enc["offset_mapping"][w][e][1]
                if align_to_words:
                    first = enc.word_to_chars(w, enc.token_to_word(w, s), sequence_index=1).start
                    last = enc.word_to_chars(w, enc.token_to_word(w, e), sequence_index=1).end
                while first < last and context[first].isspace():
                    first += 1
                while last > first and context[last - 1].isspace():
                    last -= 1
                if first < last:
                    best[(first, last)] = max(best.get((first, last), 0.0), p_start[a] * p_end[b])
    answers = [(context[s:e], s, e, score) for (s, e), score in best.items()]
    if handle_impossible_answer:
        answers.append(("", 0, 0, null))
    answers.sort(key=lambda a: -a[3])
    return answers[:top_k]


def _check(got: list, expected: list) -> None:
    assert [(a.text, a.start, a.end) for a in got] == [e[:3] for e in expected]
    np.testing.assert_allclose([a.score for a in got], [e[3] for e in expected], atol=1e-5)


def _qa(hf: Any, tiny_models: dict[str, Path], model: str) -> tuple[Any, Any]:
    path = tiny_models[TINY[model][1]]
    return hf.tokenizer(path), hf.model(path, qa=True)


@pytest.mark.parametrize("model", QA_MODELS)
@pytest.mark.parametrize("top_k", [1, 5])
@pytest.mark.parametrize("impossible", [False, True])
async def test_answer_equals_brute_force(
    client: AsyncClient, tiny_models: dict, hf: Any, model: str, top_k: int, impossible: bool
) -> None:
    tokenizer, qa_model = _qa(hf, tiny_models, model)
    cases = [
        (SEED_QUESTION, SEED_CONTEXT, 128, 32),  # one window
        ("Where does the Seine flow?", PLAIN * 6, 48, 16),  # several windows
    ]
    for question, context, seq_len, stride in cases:
        options = {"top_k": top_k, "handle_impossible_answer": impossible, "max_seq_len": seq_len, "doc_stride": stride}
        got = await client.answer((question, context), model=model, **options)  # type: ignore[arg-type]
        expected = reference(tokenizer, qa_model, question, context, **options)  # type: ignore[arg-type]
        _check(got[0], expected)


@pytest.mark.parametrize("model", QA_MODELS)
async def test_align_to_words_off_equals_brute_force(
    client: AsyncClient, tiny_models: dict, hf: Any, model: str
) -> None:
    tokenizer, qa_model = _qa(hf, tiny_models, model)
    got = await client.answer((SEED_QUESTION, ODD), model=model, top_k=5, align_to_words=False, max_answer_len=4)
    expected = reference(tokenizer, qa_model, SEED_QUESTION, ODD, top_k=5, align_to_words=False, max_answer_len=4)
    _check(got[0], expected)


@pytest.mark.parametrize("model", QA_MODELS)
async def test_default_window_lowers_the_stride_to_fit(
    client: AsyncClient, tiny_models: dict, hf: Any, model: str
) -> None:
    """Unset options: max_seq_len 384 capped at the model's 128 tokens; doc_stride 128 lowered to half the room."""
    tokenizer, qa_model = _qa(hf, tiny_models, model)
    question = "Where does the Seine flow?"
    room = (
        128
        - len(tokenizer(question, add_special_tokens=False)["input_ids"])
        - tokenizer.num_special_tokens_to_add(True)
    )
    got = await client.answer((question, PLAIN * 8), model=model)
    expected = reference(tokenizer, qa_model, question, PLAIN * 8, max_seq_len=128, doc_stride=room // 2)
    _check(got[0], expected)


@pytest.mark.parametrize("model", QA_MODELS)
async def test_answers_slice_the_context_exactly(client: AsyncClient, model: str) -> None:
    contexts = [ODD, SEED_CONTEXT, "  leading spaces, trailing spaces  ", "🙂 " * 30 + "end"]
    for align in (True, False):
        result = await client.answer(
            [(SEED_QUESTION, c) for c in contexts],
            model=model,
            top_k=10,
            align_to_words=align,
            max_seq_len=40,
            doc_stride=10,
        )
        for context, answers in zip(contexts, result, strict=True):
            assert answers, context
            for a in answers:
                assert a.text == context[a.start : a.end]
                assert a.text == a.text.strip() and a.text
                assert 0 < a.score <= 1


@pytest.mark.parametrize("model", ["roberta-qa", "spanbert-qa"])
async def test_long_context_and_batched_pairs(client: AsyncClient, tiny_models: dict, hf: Any, model: str) -> None:
    tokenizer, qa_model = _qa(hf, tiny_models, model)
    windows = tokenizer(
        "Which topic?", LONG, truncation="only_second", max_length=64, stride=16, return_overflowing_tokens=True
    )["input_ids"]
    assert len(windows) > 20
    got = await client.answer(("Which topic?", LONG), model=model, top_k=3, max_seq_len=64, doc_stride=16)
    _check(got[0], reference(tokenizer, qa_model, "Which topic?", LONG, top_k=3, max_seq_len=64, doc_stride=16))

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
        ({"max_answer_len": 0}, None, "max_answer_len must be at least 1, got 0"),
        ({"top_k": 0}, None, "top_k must be at least 1, got 0"),
        (
            {"max_seq_len": 16, "doc_stride": 4, "max_question_len": 64},
            ("why " * 30, SEED_CONTEXT),
            "question 0: the question takes ",
        ),
    ],
)
async def test_bad_input_is_invalid_argument(
    client: AsyncClient, options: dict, pair: tuple[str, str] | None, message: str
) -> None:
    with pytest.raises(BertserveError) as info:
        await client.answer(pair or (SEED_QUESTION, SEED_CONTEXT), model="spanbert-qa", **options)
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.message
    if "question takes" in message:
        assert "leaving no room for context in a 16-token window of model 'spanbert-qa'" in info.value.message


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
    _check(got[0], reference(tokenizer, qa_model, kept, PLAIN * 3, top_k=3, doc_stride=32))
