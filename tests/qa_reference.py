"""Reference answers for Answer tests, written from transformers' own source and not from the server's.

`pipeline_answers` transcribes QuestionAnsweringPipeline of transformers 4.57.6 (the last 4.x
release; `transformers/pipelines/question_answering.py`: preprocess on the fast-tokenizer path,
`select_starts_ends`, `decode_spans`, `get_indices`, `get_answer` and `postprocess`), run on
transformers 5 logits: each window goes alone through the model with the tokenizer's full
encoding, token_type_ids included. Two marked lines apply the departures bertserve documents:
picks that are not legal spans are skipped, and answers are trimmed of white space before they
are compared and merged (one that is only white space is skipped).

`per_span_answers` is the rule with the merge off: every legal span of every window, each
distinct character span once with its best score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Trace:
    """What a reference run went through, so tests can show which cases they cover."""

    windows: int = 0
    merged_within_window: int = 0  # same-text merges of two candidates of one window
    merged_across_windows: int = 0  # same-text merges of candidates of different windows
    answers: list[dict[str, Any]] = field(default_factory=list)


def window_logits(
    tokenizer: Any, model: Any, question: str, context: str, *, max_seq_len: int, doc_stride: int
) -> tuple[Any, list[tuple[np.ndarray, np.ndarray]]]:
    """The pipeline's preprocess (fast tokenizer, question first) and one forward pass per window."""
    encoded = tokenizer(
        text=question,
        text_pair=context,
        padding="do_not_pad",
        truncation="only_second",
        max_length=max_seq_len,
        stride=doc_stride,
        return_token_type_ids=True,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    logits = []
    for w in range(len(encoded["input_ids"])):
        inputs = {
            "input_ids": torch.tensor([encoded["input_ids"][w]]),
            "attention_mask": torch.tensor([encoded["attention_mask"][w]]),
            "token_type_ids": torch.tensor([encoded["token_type_ids"][w]]),
        }
        with torch.no_grad():
            out = model(**inputs)
        logits.append((out.start_logits.float().numpy(), out.end_logits.float().numpy()))
    return encoded, logits


def _default_windows(
    tokenizer: Any, model: Any, question: str, context: str, max_seq_len: int | None, doc_stride: int | None
) -> tuple[Any, list[tuple[np.ndarray, np.ndarray]]]:
    """window_logits with the pipeline's defaults for what is unset."""
    if max_seq_len is None:
        max_seq_len = min(tokenizer.model_max_length, 384)
    if doc_stride is None:
        doc_stride = min(max_seq_len // 2, 128)
    return window_logits(tokenizer, model, question, context, max_seq_len=max_seq_len, doc_stride=doc_stride)


def _p_mask(tokenizer: Any, encoded: Any, w: int) -> list[int]:
    p_mask = [int(tok != 1) for tok in encoded.sequence_ids(w)]
    if tokenizer.cls_token_id is not None:
        for cls_index in np.nonzero(np.array(encoded["input_ids"][w]) == tokenizer.cls_token_id)[0]:
            p_mask[cls_index] = 0
    return p_mask


def decode_spans(
    start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int, undesired_tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if start.ndim == 1:
        start = start[None]
    if end.ndim == 1:
        end = end[None]
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    scores_flat = candidates.flatten()
    idx_sort: Any
    if topk == 1:
        idx_sort = [np.argmax(scores_flat)]
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    desired_spans = np.isin(starts, undesired_tokens.nonzero()) & np.isin(ends, undesired_tokens.nonzero())
    starts = starts[desired_spans]
    ends = ends[desired_spans]
    scores = candidates[0, starts, ends]
    return starts, ends, scores


def select_starts_ends(
    start: np.ndarray,
    end: np.ndarray,
    p_mask: list[int],
    attention_mask: np.ndarray,
    min_null_score: float = 1000000,
    top_k: int = 1,
    handle_impossible_answer: bool = False,
    max_answer_len: int = 15,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    undesired_tokens = np.abs(np.array(p_mask) - 1)
    if attention_mask is not None:
        undesired_tokens = undesired_tokens & attention_mask
    undesired_tokens_mask = undesired_tokens == 0.0
    start = np.where(undesired_tokens_mask, -10000.0, start)
    end = np.where(undesired_tokens_mask, -10000.0, end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, undesired_tokens)
    return starts, ends, scores, min_null_score


def get_indices(enc: Any, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
    if align_to_words:
        try:
            start_word = enc.token_to_word(s)
            end_word = enc.token_to_word(e)
            start_index = enc.word_to_chars(start_word, sequence_index=sequence_index)[0]
            end_index = enc.word_to_chars(end_word, sequence_index=sequence_index)[1]
        except Exception:
            start_index = enc.offsets[s][0]
            end_index = enc.offsets[e][1]
    else:
        start_index = enc.offsets[s][0]
        end_index = enc.offsets[e][1]
    return start_index, end_index


def _legal(sequence_ids: list[int | None], s: int, e: int, max_answer_len: int) -> bool:
    return sequence_ids[s] == 1 and sequence_ids[e] == 1 and 0 <= e - s < max_answer_len


def _trim(context: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and context[start].isspace():
        start += 1
    while end > start and context[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def pipeline_answers(
    tokenizer: Any,
    model: Any,
    question: str,
    context: str,
    *,
    top_k: int = 1,
    doc_stride: int | None = None,
    max_seq_len: int | None = None,
    max_answer_len: int = 15,
    handle_impossible_answer: bool = False,
    align_to_words: bool = True,
    logits: tuple[Any, list[tuple[np.ndarray, np.ndarray]]] | None = None,
) -> Trace:
    encoded, outputs = logits or _default_windows(tokenizer, model, question, context, max_seq_len, doc_stride)
    trace = Trace(windows=len(outputs))
    min_null_score = 1000000.0
    answers: list[dict[str, Any]] = []
    by_text: dict[str, dict[str, Any]] = {}  # get_answer's linear search over answers, as a lookup
    for w, (start_, end_) in enumerate(outputs):
        pre_topk = top_k * 2 + 10 if align_to_words else top_k
        attention_mask = np.array([encoded["attention_mask"][w]])
        starts, ends, scores, min_null_score = select_starts_ends(
            start_,
            end_,
            _p_mask(tokenizer, encoded, w),
            attention_mask,
            min_null_score,
            pre_topk,
            handle_impossible_answer,
            max_answer_len,
        )
        enc = encoded.encodings[w]
        sequence_ids = encoded.sequence_ids(w)
        for s, e, score in zip(starts, ends, scores, strict=True):
            if not _legal(sequence_ids, int(s), int(e), max_answer_len):  # bertserve: only real spans
                continue
            start_index, end_index = get_indices(enc, int(s), int(e), 1, align_to_words)
            trimmed = _trim(context, start_index, end_index)  # bertserve: trimmed, never only white space
            if trimmed is None:
                continue
            start_index, end_index = trimmed
            target_answer = context[start_index:end_index]
            answer = by_text.get(target_answer.lower())
            if answer:
                answer["score"] += score.item()
                if answer["window"] == w:
                    trace.merged_within_window += 1
                else:
                    trace.merged_across_windows += 1
            else:
                answer = {"score": score.item(), "start": start_index, "end": end_index, "answer": target_answer}
                answers.append(by_text.setdefault(target_answer.lower(), {**answer, "window": w}))
    for a in answers:
        del a["window"]
    if handle_impossible_answer:
        answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
    trace.answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
    return trace


def per_span_answers(
    tokenizer: Any,
    model: Any,
    question: str,
    context: str,
    *,
    top_k: int = 1,
    doc_stride: int | None = None,
    max_seq_len: int | None = None,
    max_answer_len: int = 15,
    handle_impossible_answer: bool = False,
    align_to_words: bool = True,
    logits: tuple[Any, list[tuple[np.ndarray, np.ndarray]]] | None = None,
) -> Trace:
    """Every legal span of every window, scored as the pipeline scores it; each character span once."""
    encoded, outputs = logits or _default_windows(tokenizer, model, question, context, max_seq_len, doc_stride)
    best: dict[tuple[int, int], float] = {}
    null = 1000000.0
    for w, (start_, end_) in enumerate(outputs):
        allowed = np.array(_p_mask(tokenizer, encoded, w)) == 0
        start = np.where(~allowed, np.float32(-10000.0), start_[0])
        end = np.where(~allowed, np.float32(-10000.0), end_[0])
        start = np.exp(start - start.max())
        start = start / start.sum()
        end = np.exp(end - end.max())
        end = end / end.sum()
        null = min(null, (start[0] * end[0]).item())
        sequence_ids = encoded.sequence_ids(w)
        enc = encoded.encodings[w]
        for s in range(len(sequence_ids)):
            for e in range(s, len(sequence_ids)):
                if not _legal(sequence_ids, s, e, max_answer_len):
                    continue
                span = _trim(context, *get_indices(enc, s, e, 1, align_to_words))
                if span is not None:
                    best[span] = max(best.get(span, 0.0), (start[s] * end[e]).item())
    answers: list[dict[str, Any]] = [
        {"score": v, "start": s, "end": e, "answer": context[s:e]} for (s, e), v in best.items()
    ]
    if handle_impossible_answer:
        answers.append({"score": null, "start": 0, "end": 0, "answer": ""})
    return Trace(windows=len(outputs), answers=sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k])
