"""The server's requests and results, free of protobuf: what the servicers convert to and from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bertserve.api import Encoding, Pooling
from bertserve.batcher import Completed

__all__ = ["AnswerQuery", "AnswerSpan", "EmbedQuery", "EmbedResult", "TokenizeQuery", "Usage", "usage_of"]


@dataclass(frozen=True)
class Usage:
    tokens: int = 0
    queue_time_ns: int = 0
    inference_time_ns: int = 0
    tokenization_time_ns: int = 0


def usage_of(results: Sequence[Completed], *, tokens: int, tokenization_ns: int) -> Usage:
    """Usage of one request from its sequences' results: shared passes count once, whole."""
    passes = {r.pass_id: r.pass_ns for r in results}
    return Usage(
        tokens=tokens,
        queue_time_ns=max((r.queue_ns for r in results), default=0),
        inference_time_ns=sum(passes.values()),
        tokenization_time_ns=tokenization_ns,
    )


@dataclass(frozen=True)
class EmbedQuery:
    model: str
    inputs: list[str]
    pooling: Pooling | None  # None: the model's default
    normalize: bool = False
    truncate: bool = False
    with_token_states: bool = False


@dataclass(frozen=True)
class EmbedResult:
    model: str
    pooled: np.ndarray  # [inputs, hidden] float32
    token_states: list[np.ndarray] | None
    token_counts: list[int]
    truncated_indices: list[int]
    usage: Usage


@dataclass(frozen=True)
class TokenizeQuery:
    model: str
    inputs: list[str]
    pairs: list[str] | None
    add_special_tokens: bool = True


@dataclass(frozen=True)
class TokenizeResult:
    model: str
    encodings: list[Encoding]


@dataclass(frozen=True)
class AnswerQuery:
    model: str
    questions: list[tuple[str, str]]  # (question, context)
    top_k: int = 1
    doc_stride: int = 128
    max_seq_len: int = 384
    max_question_len: int = 64
    max_answer_len: int = 15
    handle_impossible_answer: bool = False
    align_to_words: bool = True


@dataclass(frozen=True)
class AnswerSpan:
    text: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class AnswerResult:
    model: str
    answers: list[list[AnswerSpan]]
    usage: Usage
