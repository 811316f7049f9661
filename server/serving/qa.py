"""Answer: extractive question answering as transformers' question-answering pipeline computes it.

Each (question, context) pair is cut into overlapping windows. The windows of every pair in
the call go through the model's batcher a pass's worth at a time, two parts in flight, so a
context of any length (up to the model's max_context_bytes) keeps memory and queue use bounded
while other callers' work shares the passes in between. Each part's logits are folded into the
running answers of their pairs as soon as they come back (bertserve.serving.qa_spans), then dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from bertserve.api import Capability, EncoderPlugin, Encoding, Head
from bertserve.domain import AnswerQuery, AnswerResult, AnswerSpan, OffsetUnit
from bertserve.errors import InvalidRequest, Overloaded
from bertserve.ops import Completed, HeadOp
from bertserve.serving.flow import Flow, Work
from bertserve.serving.model_host import ModelHost
from bertserve.serving.offsets import OffsetMap
from bertserve.serving.qa_spans import DistinctSpans, MergedAnswers

__all__ = ["ANSWER"]

# Parts of a call's windows in the batcher at once: one computing while the next waits, so the
# device never idles while the last part's answers are folded in.
_PARTS_IN_FLIGHT = 2
# A part's compute time at most (where a window takes longer, one window): what a call of another
# caller may wait behind one part.
_PART_SECONDS = 0.25
# The longest wait between tries when the queue is full partway through a call (see _submit).
_MAX_REQUEUE_WAIT_S = 0.5

_Window = tuple[int, Encoding]  # (pair index, window)


async def _answer(work: Work, query: AnswerQuery) -> AnswerResult:
    _validate(query, work.name, work.spec.max_context_bytes)
    max_seq_len = min(query.max_seq_len, work.info.max_input_tokens)
    if query.doc_stride is not None and query.doc_stride >= max_seq_len:  # the window as it really is
        capped = f", the most model {work.name!r} takes" if max_seq_len < query.max_seq_len else ""
        raise InvalidRequest(
            f"doc_stride ({query.doc_stride}) must be smaller than max_seq_len ({max_seq_len}{capped})"
        )
    # The pipeline's default overlap, from the window as it really is (capped at the model's limit).
    doc_stride = query.doc_stride if query.doc_stride is not None else min(128, max_seq_len // 2)
    windows = await work.timed(work.off_loop(_windows, work.plugin, query, max_seq_len, doc_stride))

    accumulator = MergedAnswers if query.merge_same_text else DistinctSpans
    answers = [
        accumulator(
            context, top_k=query.top_k, max_answer_len=query.max_answer_len, align_to_words=query.align_to_words
        )
        for _, context in query.questions
    ]
    cls_token_id = work.info.cls_token_id

    def fold(part: list[_Window], logits: list[np.ndarray]) -> None:
        for (pair, window), window_logits in zip(part, logits, strict=True):
            answers[pair].add(window, window_logits, cls_token_id)

    tokens = await _run_parts(work, windows, fold, part_size=_part_size(work.host, max_seq_len))
    results = await work.off_loop(lambda: [a.answers(query.handle_impossible_answer) for a in answers])
    if query.offset_unit is not OffsetUnit.CODE_POINT:
        results = await work.off_loop(_in_unit, results, [context for _, context in query.questions], query.offset_unit)
    return AnswerResult(model=work.name, answers=results, usage=work.usage(tokens))


ANSWER = Flow(Capability.ANSWER, _answer)


def _in_unit(results: list[list[AnswerSpan]], contexts: list[str], unit: OffsetUnit) -> list[list[AnswerSpan]]:
    """Each answer's start and end counted in unit."""
    converted = []
    for answers, context in zip(results, contexts, strict=True):
        spans = OffsetMap(context, unit).spans([(a.start, a.end) for a in answers])
        converted.append([replace(a, start=s, end=e) for a, (s, e) in zip(answers, spans, strict=True)])
    return converted


def _windows(plugin: EncoderPlugin, query: AnswerQuery, max_seq_len: int, doc_stride: int) -> Iterator[_Window]:
    """Every pair's windows in order, made as they are taken; each question is checked here, at once."""
    per_pair = []
    for i, (question, context) in enumerate(query.questions):
        try:
            windows = plugin.tokenize_windows(
                question,
                context,
                max_seq_len=max_seq_len,
                doc_stride=doc_stride,
                max_question_len=query.max_question_len,
            )
        except InvalidRequest as e:
            raise InvalidRequest(f"question {i}: {e}") from None
        per_pair.append(windows)
    return ((i, window) for i, windows in enumerate(per_pair) for window in windows)


def _part_size(host: ModelHost, max_seq_len: int) -> int:
    """Windows per part: what one forward pass takes, within what the queue ever holds, and no more
    than the model computes in _PART_SECONDS at its measured rate, so that other calls wait little."""
    spec = host.spec
    fits = min(spec.max_batch_size, spec.max_batch_tokens // max_seq_len, spec.max_queue_requests // _PARTS_IN_FLIGHT)
    fits = min(fits, spec.max_queue_tokens // (_PARTS_IN_FLIGHT * max_seq_len))
    rate = host.tokens_per_s
    if rate > 0:
        fits = min(fits, int(rate * _PART_SECONDS) // max_seq_len)
    return max(1, fits)


async def _run_parts(
    work: Work,
    windows: Iterator[_Window],
    fold: Callable[[list[_Window], list[np.ndarray]], None],
    *,
    part_size: int,
) -> int:
    """Send the windows through the batcher part by part and fold each part's logits in; return the tokens."""
    in_flight: deque[tuple[list[_Window], asyncio.Future[list[Completed[np.ndarray]]]]] = deque()
    tokens = 0
    admitted = exhausted = False
    try:
        while True:
            while not exhausted and len(in_flight) < _PARTS_IN_FLIGHT:
                part = await work.timed(work.off_loop(lambda: list(itertools.islice(windows, part_size))))
                exhausted = len(part) < part_size
                if part:
                    tokens += sum(len(w) for _, w in part)
                    submitted = _submit(work, [w for _, w in part], admitted=admitted)
                    in_flight.append((part, asyncio.ensure_future(submitted)))
                    admitted = True
            if not in_flight:
                return tokens
            part, pending = in_flight.popleft()
            results = await pending
            await work.off_loop(fold, part, [r.value for r in results])
    finally:
        for _, pending in in_flight:
            pending.cancel()


async def _submit(work: Work, windows: list[Encoding], *, admitted: bool) -> list[Completed[np.ndarray]]:
    """One part through the batcher. The first part is the call's admission: a full queue refuses
    the call at once. Later parts belong to a call already under way, so they wait for room."""
    deadline = work.call.deadline
    while True:
        try:
            return await work.run(HeadOp(Head.QUESTION_ANSWERING), windows)
        except Overloaded as e:
            if not admitted:
                raise
            wait = min(e.retry_after_s or _MAX_REQUEUE_WAIT_S, _MAX_REQUEUE_WAIT_S)
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise
            await asyncio.sleep(wait)


def _validate(query: AnswerQuery, model: str, max_context_bytes: int) -> None:
    if not query.questions:
        raise InvalidRequest("questions is empty: send at least one (question, context) pair")
    for i, (question, context) in enumerate(query.questions):
        if not question or question.isspace():
            raise InvalidRequest(f"question {i} is empty")
        size = len(context.encode())
        if size > max_context_bytes:
            raise InvalidRequest(
                f"context {i} has {size} bytes, over the limit of {max_context_bytes} bytes (max_context_bytes) "
                f"of model {model!r}"
            )
        if not context or context.isspace():
            raise InvalidRequest(f"context {i} is empty")
    if query.top_k < 1:
        raise InvalidRequest(f"top_k must be at least 1, got {query.top_k}")
    if query.max_answer_len < 1:
        raise InvalidRequest(f"max_answer_len must be at least 1, got {query.max_answer_len}")
    if query.max_question_len < 1:
        raise InvalidRequest(f"max_question_len must be at least 1, got {query.max_question_len}")
    if query.max_seq_len < 1:
        raise InvalidRequest(f"max_seq_len must be at least 1, got {query.max_seq_len}")
