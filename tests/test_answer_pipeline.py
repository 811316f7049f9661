"""Answer equals transformers' question-answering pipeline (4.57.6) on generated cases, and with
merge_same_text off, the per-span rule; each through the real gRPC surface."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bertserve_client import AsyncClient

from conftest import QA_MODELS, TINY
from qa_reference import Trace, per_span_answers, pipeline_answers, window_logits

# Sentences whose words recur, within one sentence and across them, so that same-text answers
# meet in one window and in overlapping windows.
SENTENCES = [
    "Paris is a beautiful city.",
    "Paris is the capital of France.",
    "The capital of France is Paris, and Paris is a city.",
    "Machine learning is a subset of artificial intelligence.",
    "Machine learning models learn patterns from data, and data makes machine learning work.",
    "The quick brown fox jumps over the lazy dog.",
    "Tim Peters wrote the Zen of Python.",
    "The Seine flows through Paris at night, and the city sleeps.",
    "A city has many bridges; the bridges cross the river.",
]
QUESTIONS = [
    "What is the capital of France?",
    "What is machine learning?",
    "Who wrote the Zen of Python?",
    "Where does the Seine flow?",
    "What is Paris?",
]
# Tiny contexts: with a couple of context tokens, "no answer" can outscore every span.
SHORT_CONTEXTS = ["Paris.", "yes", "data", "the city", "Python", "fox", "France", "night", "it is", "capital"]
CASES_PER_MODEL = 16


@dataclass(frozen=True)
class Case:
    question: str
    context: str
    options: dict[str, Any]


def _cases(seed: int) -> list[Case]:
    """Options cycle so that every model meets each of them; contexts are drawn from SENTENCES."""
    rng = random.Random(seed)
    top_ks = [1, 3, 20]
    windows = [{}, {"max_seq_len": 48, "doc_stride": 16}, {"max_seq_len": 32, "doc_stride": 8}, {"max_seq_len": 40}]
    answer_lens = [15, 3, 30, 1]
    cases = []
    for i in range(CASES_PER_MODEL):
        context = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 9)))
        options = {
            "top_k": top_ks[i % 3],
            "max_answer_len": answer_lens[i % 4],
            "handle_impossible_answer": i % 2 == 1,
            "align_to_words": i % 5 != 4,
            **windows[(i // 2) % 4],
        }
        cases.append(Case(rng.choice(QUESTIONS), context, options))
    return cases


def _null_cases(tokenizer: Any, model: Any) -> list[Case]:
    """Cases where "no answer" wins, and where it is in the list without winning, found by search."""
    wins: Case | None = None
    listed: Case | None = None
    for question in QUESTIONS:
        for context in SHORT_CONTEXTS:
            options: dict[str, Any] = {"top_k": 3, "handle_impossible_answer": True}
            answers = pipeline_answers(tokenizer, model, question, context, **options).answers
            texts = [a["answer"] for a in answers]
            if texts and texts[0] == "" and wins is None:
                wins = Case(question, context, {**options, "top_k": 1})
            elif "" in texts[1:] and listed is None:
                listed = Case(question, context, options)
            if wins and listed:
                return [wins, listed]
    raise AssertionError("no short context makes 'no answer' win and another list it: widen SHORT_CONTEXTS")


def _agrees(got: list[Any], expected: list[dict[str, Any]]) -> bool:
    return [(a.text, a.start, a.end) for a in got] == [(e["answer"], e["start"], e["end"]) for e in expected] and (
        np.allclose([a.score for a in got], [e["score"] for e in expected], rtol=1e-4, atol=1e-6)
    )


def _qa(hf: Any, tiny_models: dict[str, Path], model: str) -> tuple[Any, Any]:
    path = tiny_models[TINY[model][1]]
    return hf.tokenizer(path), hf.model(path, qa=True)


async def _run(client: AsyncClient, tokenizer: Any, qa_model: Any, model: str, cases: list[Case]) -> dict[str, Any]:
    """Every case through Answer with the merge on and off, against both references."""
    report: dict[str, Any] = {"merged": [], "per_span": [], "traces": []}
    for case in cases:
        max_seq_len = case.options.get("max_seq_len", min(tokenizer.model_max_length, 384))
        doc_stride = case.options.get("doc_stride", min(max_seq_len // 2, 128))
        logits = window_logits(
            tokenizer, qa_model, case.question, case.context, max_seq_len=max_seq_len, doc_stride=doc_stride
        )
        merged = pipeline_answers(tokenizer, qa_model, case.question, case.context, logits=logits, **case.options)
        per_span = per_span_answers(tokenizer, qa_model, case.question, case.context, logits=logits, **case.options)
        [got_merged] = await client.answer((case.question, case.context), model=model, **case.options)
        [got_per_span] = await client.answer(
            (case.question, case.context), model=model, merge_same_text=False, **case.options
        )
        report["merged"].append((case, _agrees(got_merged, merged.answers), got_merged, merged.answers))
        report["per_span"].append((case, _agrees(got_per_span, per_span.answers), got_per_span, per_span.answers))
        report["traces"].append(merged)
    return report


def _disagreements(rows: list[tuple[Case, bool, Any, Any]]) -> str:
    return "\n".join(f"{case}\n  got      {got}\n  expected {want}" for case, ok, got, want in rows if not ok)


@pytest.mark.parametrize("model", QA_MODELS)
async def test_answer_equals_the_4_57_pipeline(client: AsyncClient, tiny_models: dict, hf: Any, model: str) -> None:
    tokenizer, qa_model = _qa(hf, tiny_models, model)
    cases = _cases(seed=QA_MODELS.index(model)) + _null_cases(tokenizer, qa_model)
    report = await _run(client, tokenizer, qa_model, model, cases)

    # What the cases cover, so that a change to the generator cannot quietly hollow them out.
    traces: list[Trace] = report["traces"]
    assert {c.options["top_k"] for c in cases} == {1, 3, 20}
    assert any(t.windows > 2 for t in traces), "no case has several windows"
    assert any(t.merged_within_window for t in traces), "no same-text merge within a window"
    assert any(t.merged_across_windows for t in traces), "no same-text merge across windows"
    assert any(t.answers and t.answers[0]["answer"] == "" for t in traces), "'no answer' never wins"
    assert any("" in [a["answer"] for a in t.answers[1:]] for t in traces), "'no answer' never only listed"
    assert any(c.options.get("max_answer_len") == 1 for c in cases)

    assert all(ok for _, ok, _, _ in report["merged"]), _disagreements(report["merged"])
    assert all(ok for _, ok, _, _ in report["per_span"]), _disagreements(report["per_span"])
    assert len(report["merged"]) >= CASES_PER_MODEL + 2
