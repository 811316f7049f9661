"""Answer: extractive question answering as the classic transformers pipeline computed it.

Each (question, context) pair is cut into overlapping windows; the windows of every pair in
the call go through the model's batcher together; then, per window, start and end logits are
turned into probabilities over the context tokens and the [CLS] token (softmax), the [CLS]
probability product is the "no answer" score, and spans are scored start_p x end_p subject to
0 <= end - start < max_answer_len. The best spans are taken across all windows (a span seen
in two overlapping windows keeps its best score), mapped to characters of the context, and
widened to whole words when align_to_words is set.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from bertserve.api import Capability, EncoderPlugin, Encoding, QAWindowLogits
from bertserve.domain import AnswerQuery, AnswerResult, AnswerSpan, usage_of
from bertserve.errors import InvalidRequest
from bertserve.router import Router

__all__ = ["answer", "best_spans"]


async def answer(router: Router, query: AnswerQuery, *, deadline: float | None) -> AnswerResult:
    host = router.get(query.model)
    info = host.require(Capability.ANSWER)
    _validate(query)
    max_seq_len = min(query.max_seq_len, info.max_input_tokens)
    plugin = host.plugin

    started = time.monotonic_ns()
    windows_per_pair = await host.off_loop(_windows, plugin, query, max_seq_len)
    tokenization_ns = time.monotonic_ns() - started

    windows = [w for pair in windows_per_pair for w in pair]
    results = await host.run(("answer",), windows, deadline=deadline)
    logits: list[QAWindowLogits] = [r.value for r in results]
    bounds = np.cumsum([0, *(len(pair) for pair in windows_per_pair)])
    answers = await host.off_loop(
        lambda: [
            best_spans(context, pair_windows, logits[bounds[i] : bounds[i + 1]], query)
            for i, ((_, context), pair_windows) in enumerate(zip(query.questions, windows_per_pair, strict=True))
        ]
    )
    return AnswerResult(
        model=host.name,
        answers=answers,
        usage=usage_of(results, tokens=sum(len(w) for w in windows), tokenization_ns=tokenization_ns),
    )


def _windows(plugin: EncoderPlugin, query: AnswerQuery, max_seq_len: int) -> list[list[Encoding]]:
    """The windows of every pair; an error names the pair it is about."""
    windows = []
    for i, (question, context) in enumerate(query.questions):
        try:
            windows.append(
                plugin.tokenize_windows(
                    question,
                    context,
                    max_seq_len=max_seq_len,
                    doc_stride=query.doc_stride,
                    max_question_len=query.max_question_len,
                )
            )
        except InvalidRequest as e:
            raise InvalidRequest(f"question {i}: {e}") from None
    return windows


def _validate(query: AnswerQuery) -> None:
    if not query.questions:
        raise InvalidRequest("questions is empty: send at least one (question, context) pair")
    for i, (question, context) in enumerate(query.questions):
        if not question.strip():
            raise InvalidRequest(f"question {i} is empty")
        if not context.strip():
            raise InvalidRequest(f"context {i} is empty")
    if query.top_k < 1:
        raise InvalidRequest(f"top_k must be at least 1, got {query.top_k}")
    if query.max_answer_len < 1:
        raise InvalidRequest(f"max_answer_len must be at least 1, got {query.max_answer_len}")
    if query.max_question_len < 1:
        raise InvalidRequest(f"max_question_len must be at least 1, got {query.max_question_len}")
    if query.doc_stride >= query.max_seq_len:
        raise InvalidRequest(f"doc_stride ({query.doc_stride}) must be smaller than max_seq_len ({query.max_seq_len})")


def best_spans(
    context: str, windows: Sequence[Encoding], logits: Sequence[QAWindowLogits], query: AnswerQuery
) -> list[AnswerSpan]:
    """The top_k answers of one pair over all its windows, best first, each character span once."""
    candidates: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = []  # scores, window, starts, ends
    null_score = 1.0
    for w, (window, window_logits) in enumerate(zip(windows, logits, strict=True)):
        context_tokens = np.flatnonzero(np.asarray(window.sequence_ids) == 1)
        if context_tokens.size == 0:
            continue
        # The softmax runs over the context tokens and the leading [CLS], as the classic p_mask does.
        has_cls = bool(window.special_tokens_mask[0])
        allowed = np.concatenate(([0], context_tokens)) if has_cls else context_tokens
        start_p = _softmax(window_logits.start[allowed])
        end_p = _softmax(window_logits.end[allowed])
        if has_cls:
            null_score = min(null_score, float(start_p[0] * end_p[0]))
            start_p, end_p = start_p[1:], end_p[1:]
        starts, ends = _legal_spans(context_tokens.size, query.max_answer_len)
        candidates.append((start_p[starts] * end_p[ends], w, context_tokens[starts], context_tokens[ends]))

    answers = _distinct_best(context, windows, candidates, query)
    if query.handle_impossible_answer:
        answers.append(AnswerSpan("", 0, 0, null_score))
        answers.sort(key=lambda a: -a.score)
    return answers[: query.top_k]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits.astype(np.float64) - logits.max())
    return shifted / shifted.sum()


def _legal_spans(n: int, max_answer_len: int) -> tuple[np.ndarray, np.ndarray]:
    """All (start, end) position pairs over n context tokens with 0 <= end - start < max_answer_len."""
    starts, ends = np.triu_indices(n)
    keep = ends - starts < max_answer_len
    return starts[keep], ends[keep]


def _distinct_best(
    context: str,
    windows: Sequence[Encoding],
    candidates: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]],
    query: AnswerQuery,
) -> list[AnswerSpan]:
    """Walk every window's spans from the best down until top_k distinct character spans are found."""
    if not candidates:
        return []
    scores = np.concatenate([c[0] for c in candidates])
    window_of = np.concatenate([np.full(c[0].size, c[1]) for c in candidates])
    starts = np.concatenate([c[2] for c in candidates])
    ends = np.concatenate([c[3] for c in candidates])
    seen: set[tuple[int, int]] = set()
    answers: list[AnswerSpan] = []
    for i in np.argsort(-scores, kind="stable"):
        span = _to_chars(windows[window_of[i]], int(starts[i]), int(ends[i]), context, query.align_to_words)
        if span is None or span in seen:
            continue
        seen.add(span)
        answers.append(AnswerSpan(context[span[0] : span[1]], span[0], span[1], float(scores[i])))
        if len(answers) == query.top_k:
            break
    return answers


def _to_chars(window: Encoding, start: int, end: int, context: str, align_to_words: bool) -> tuple[int, int] | None:
    """Character span of tokens start..end of a window, widened to whole words, trimmed of white space."""
    first, last = window.offsets[start][0], window.offsets[end][1]
    if align_to_words:
        first = min(first, *_word_starts(window, window.word_ids[start]))
        last = max(last, *_word_ends(window, window.word_ids[end]))
    while first < last and context[first].isspace():
        first += 1
    while last > first and context[last - 1].isspace():
        last -= 1
    return (first, last) if first < last else None


def _word_starts(window: Encoding, word: int) -> list[int]:
    return [
        o[0]
        for o, w, s in zip(window.offsets, window.word_ids, window.sequence_ids, strict=True)
        if s == 1 and w == word
    ]


def _word_ends(window: Encoding, word: int) -> list[int]:
    return [
        o[1]
        for o, w, s in zip(window.offsets, window.word_ids, window.sequence_ids, strict=True)
        if s == 1 and w == word
    ]
