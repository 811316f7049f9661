"""Answer's decoding of start and end logits into answers, window by window.

By default this is transformers' QuestionAnsweringPipeline as 4.53 to 4.57.6 (the last 4.x
release) run it with a fast tokenizer, step for step:

1. Per window, logits of tokens outside the context, except classifier tokens, are set to -10000,
   and start and end are softmaxed separately, in float32.
2. The window's null score is start[0] x end[0]; then the classifier position is zeroed.
3. The window's candidate pool: the best ``top_k * 2 + 10`` spans (``top_k`` without
   align_to_words) with 0 <= end - start < max_answer_len, picked from the outer product of the
   two distributions by the pipeline's own top-k rule.
4. Each candidate becomes characters of the context, widened to whole words with align_to_words.
   A candidate whose text equals, ignoring case, one seen before adds its score to that answer,
   which keeps the first position seen (`MergedAnswers`).
5. With handle_impossible_answer, "no answer" joins with the smallest null score of any window;
   then the answers are sorted (ties keep the order first seen) and cut to top_k.

Where the pipeline is wrong, bertserve keeps the better behaviour:
- Only real spans are candidates. When a window has fewer legal spans than the pool, the
  pipeline's top-k fills it with spans it scored 0: ends before starts (an empty answer with
  start > end), spans from the classifier token or longer than max_answer_len.
- An answer never starts or ends with white space: its span is trimmed and its offsets move; a
  candidate that is only white space is no answer. Merging compares the trimmed texts, so that
  no text (nor span) is listed twice: where a tokenizer's offsets hold white space (RoBERTa's
  do), the pipeline keeps "Paris" and " Paris" apart.

With merge_same_text off, each distinct character span is one answer with its best score over
every window and token span (`DistinctSpans`): the answers before 4.53, without the spans that
4.52 listed twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bertserve.api import Encoding
from bertserve.domain import AnswerSpan

__all__ = ["DistinctSpans", "MergedAnswers", "WindowScores", "all_spans", "candidate_pool", "score_window", "top_spans"]

# What the pipeline writes over the logits of tokens that cannot be in an answer.
_MASKED_LOGIT = -10000.0


def candidate_pool(top_k: int, align_to_words: bool) -> int:
    """Spans taken from each window: some widen to the same words, so the pipeline takes extra."""
    return top_k * 2 + 10 if align_to_words else top_k


@dataclass(frozen=True)
class WindowScores:
    """One window's span probabilities, as the pipeline computes them."""

    start: np.ndarray  # [tokens] float32, the classifier position zeroed
    end: np.ndarray  # [tokens] float32
    null_score: float  # start x end at position 0, before it was zeroed
    context: np.ndarray  # [tokens] bool: tokens of the context


def score_window(logits: np.ndarray, window: Encoding, cls_token_id: int | None) -> WindowScores:
    """Steps 1 and 2: softmax over the context and classifier tokens, in float32 like the pipeline.

    logits: [tokens, 2], the start and the end logit of each token (Head.QUESTION_ANSWERING)."""
    context = np.asarray(window.sequence_ids) == 1
    allowed = context | (np.asarray(window.ids) == cls_token_id) if cls_token_id is not None else context
    # Shaped [1, tokens] as the pipeline's are, so that every reduction runs in the same order.
    start = _softmax(np.where(~allowed, _MASKED_LOGIT, logits[:, 0].astype(np.float32))[None])
    end = _softmax(np.where(~allowed, _MASKED_LOGIT, logits[:, 1].astype(np.float32))[None])
    null_score = (start[0, 0] * end[0, 0]).item()
    start[0, 0] = end[0, 0] = 0.0
    return WindowScores(start=start[0], end=end[0], null_score=null_score, context=context)


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum()


def top_spans(scores: WindowScores, pool: int, max_answer_len: int) -> list[tuple[int, int, float]]:
    """Step 3: the window's best `pool` spans, best first, as (start token, end token, score).

    Picked as the pipeline's decode_spans picks them, so that ties fall the same way; then the
    picks that are not legal spans of the context are dropped (they all score 0).
    """
    outer = np.matmul(np.expand_dims(scores.start[None], -1), np.expand_dims(scores.end[None], 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    flat = candidates.flatten()
    if pool == 1:
        order = np.array([np.argmax(flat)])
    elif len(flat) <= pool:  # (the pipeline's argpartition fails when they are equal)
        order = np.argsort(-flat)
    else:
        picked = np.argpartition(-flat, pool)[0:pool]
        order = picked[np.argsort(-flat[picked])]
    starts, ends = np.unravel_index(order, candidates.shape)[1:]
    legal = scores.context[starts] & scores.context[ends] & (starts <= ends) & (ends - starts < max_answer_len)
    return [(int(s), int(e), candidates[0, s, e].item()) for s, e in zip(starts[legal], ends[legal], strict=True)]


def all_spans(scores: WindowScores, max_answer_len: int) -> list[tuple[int, int, float]]:
    """Every legal span of the window, best first (ties in position order), as (start, end, score)."""
    context = np.flatnonzero(scores.context)
    starts, ends = np.triu_indices(context.size)
    keep = ends - starts < max_answer_len
    starts, ends = context[starts[keep]], context[ends[keep]]
    values = scores.start[starts] * scores.end[ends]
    order = np.argsort(-values, kind="stable")
    return [(int(starts[i]), int(ends[i]), values[i].item()) for i in order]


class _Words:
    """Character spans of one window's tokens, whole words or token offsets (step 4)."""

    def __init__(self, window: Encoding, align_to_words: bool) -> None:
        self._window = window
        self._align = align_to_words
        self._word_chars: dict[int, tuple[int, int]] | None = None

    def chars(self, start: int, end: int) -> tuple[int, int]:
        """Like the pipeline's get_indices: the words of the first and last token, in the context."""
        offsets, words = self._window.offsets, self._window.word_ids
        if self._align and words[start] >= 0 and words[end] >= 0:
            spans = self._word_spans()
            return spans[words[start]][0], spans[words[end]][1]
        return offsets[start][0], offsets[end][1]

    def _word_spans(self) -> dict[int, tuple[int, int]]:
        """Each context word's characters: from its first token's start to its last token's end."""
        if self._word_chars is None:
            spans: dict[int, tuple[int, int]] = {}
            window = self._window
            for (first, last), word, sequence in zip(window.offsets, window.word_ids, window.sequence_ids, strict=True):
                if sequence == 1 and word >= 0:
                    spans[word] = (spans[word][0], last) if word in spans else (first, last)
            self._word_chars = spans
        return self._word_chars


def _trimmed(context: str, start: int, end: int) -> tuple[int, int] | None:
    """The span without white space at either end; None when nothing else is left."""
    while start < end and context[start].isspace():
        start += 1
    while end > start and context[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


class MergedAnswers:
    """One pair's answers over its windows, same-text candidates merged as the pipeline merges them."""

    def __init__(self, context: str, *, top_k: int, max_answer_len: int, align_to_words: bool) -> None:
        self._context = context
        self._top_k = top_k
        self._pool = candidate_pool(top_k, align_to_words)
        self._max_answer_len = max_answer_len
        self._align = align_to_words
        self._by_text: dict[str, _Merged] = {}  # lowered answer text -> answer, first seen first
        self.null_score = 1_000_000.0  # the pipeline's start: large and positive

    def add(self, window: Encoding, logits: np.ndarray, cls_token_id: int | None) -> None:
        scores = score_window(logits, window, cls_token_id)
        self.null_score = min(self.null_score, scores.null_score)
        words = _Words(window, self._align)
        for s, e, score in top_spans(scores, self._pool, self._max_answer_len):
            span = _trimmed(self._context, *words.chars(s, e))
            if span is None:
                continue
            key = self._context[span[0] : span[1]].lower()
            merged = self._by_text.get(key)
            if merged is not None:
                merged.score += score
            else:
                self._by_text[key] = _Merged(*span, score)

    def answers(self, handle_impossible_answer: bool) -> list[AnswerSpan]:
        found = [AnswerSpan(self._context[m.start : m.end], m.start, m.end, m.score) for m in self._by_text.values()]
        return _ranked(found, self.null_score if handle_impossible_answer else None, self._top_k)


@dataclass(slots=True)
class _Merged:
    start: int
    end: int
    score: float


class DistinctSpans:
    """One pair's answers over its windows: each character span once, with its best score."""

    def __init__(self, context: str, *, top_k: int, max_answer_len: int, align_to_words: bool) -> None:
        self._context = context
        self._top_k = top_k
        self._max_answer_len = max_answer_len
        self._align = align_to_words
        self._best: dict[tuple[int, int], float] = {}  # trimmed span -> best score, first seen first
        self.null_score = 1_000_000.0

    def add(self, window: Encoding, logits: np.ndarray, cls_token_id: int | None) -> None:
        scores = score_window(logits, window, cls_token_id)
        self.null_score = min(self.null_score, scores.null_score)
        words = _Words(window, self._align)
        # A span among the best top_k overall is among the best top_k of the window it scores best in.
        found: set[tuple[int, int]] = set()
        for s, e, score in all_spans(scores, self._max_answer_len):
            span = _trimmed(self._context, *words.chars(s, e))
            if span is None or span in found:
                continue
            found.add(span)
            if score > self._best.get(span, -1.0):
                self._best[span] = score
            if len(found) == self._top_k:
                break
        self._keep_best()

    def _keep_best(self) -> None:
        """Forget all but the best few spans: one forgotten now could only come back with a score
        that already misses the top_k, so memory stays bounded over any number of windows."""
        if len(self._best) > 4 * self._top_k:
            ranked = sorted(self._best.items(), key=lambda item: -item[1])[: self._top_k]
            kept = {span for span, _ in ranked}
            self._best = {span: score for span, score in self._best.items() if span in kept}

    def answers(self, handle_impossible_answer: bool) -> list[AnswerSpan]:
        found = [AnswerSpan(self._context[s:e], s, e, score) for (s, e), score in self._best.items()]
        return _ranked(found, self.null_score if handle_impossible_answer else None, self._top_k)


def _ranked(answers: list[AnswerSpan], null_score: float | None, top_k: int) -> list[AnswerSpan]:
    """Step 5: "no answer" joins last, then best first (a stable sort: ties keep their order), cut to top_k."""
    if null_score is not None:
        answers.append(AnswerSpan("", 0, 0, null_score))
    return sorted(answers, key=lambda a: a.score, reverse=True)[:top_k]
