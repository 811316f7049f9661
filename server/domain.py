"""The server's requests and results, free of protobuf: what the servicers convert to and from."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bertserve.api import Encoding, Pooling
from bertserve.serving.batcher import Completed

__all__ = [
    "AnswerQuery",
    "AnswerSpan",
    "CallLimits",
    "EmbedQuery",
    "EmbedResult",
    "OffsetUnit",
    "TokenizeQuery",
    "Usage",
    "UsageMeter",
    "usage_of",
]


class OffsetUnit(enum.Enum):
    """What offsets into a caller's text count (see bertserve.serving.offsets)."""

    CODE_POINT = "code_point"
    UTF16 = "utf16_code_unit"
    UTF8 = "utf8_byte"


@dataclass(frozen=True)
class CallLimits:
    """What one call may take back, and how many may run at once (the request's own size is
    checked as it arrives: bertserve.edge.parsing)."""

    max_reply_bytes: int = 64 * 1024 * 1024  # the reply, as predicted before the model runs
    max_concurrent_calls: int = 1024  # calls in flight at once; more are refused with a retry hint


@dataclass(frozen=True)
class Usage:
    tokens: int = 0
    queue_time_ns: int = 0
    inference_time_ns: int = 0
    tokenization_time_ns: int = 0


def usage_of(results: Sequence[Completed], *, tokens: int, tokenization_ns: int) -> Usage:
    """Usage of one request from its sequences' results: shared passes count once, whole."""
    meter = UsageMeter(tokenization_ns=tokenization_ns)
    meter.add(results)
    return meter.usage(tokens=tokens)


@dataclass
class UsageMeter:
    """Usage of a request whose sequences go through the batcher in several parts."""

    tokenization_ns: int = 0
    queue_ns: int = 0
    pass_ns: dict[int, int] = field(default_factory=dict)  # pass id -> its time: shared passes count once

    def add(self, results: Sequence[Completed]) -> None:
        for r in results:
            self.pass_ns[r.pass_id] = r.pass_ns
            self.queue_ns = max(self.queue_ns, r.queue_ns)

    def usage(self, *, tokens: int) -> Usage:
        return Usage(
            tokens=tokens,
            queue_time_ns=self.queue_ns,
            inference_time_ns=sum(self.pass_ns.values()),
            tokenization_time_ns=self.tokenization_ns,
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
    truncate: bool = False
    max_length: int | None = None  # with truncate; None: the model's limit
    offset_unit: OffsetUnit = OffsetUnit.CODE_POINT


@dataclass(frozen=True)
class TokenizeResult:
    model: str
    encodings: list[Encoding]


@dataclass(frozen=True)
class AnswerQuery:
    model: str
    questions: list[tuple[str, str]]  # (question, context)
    top_k: int = 1
    doc_stride: int | None = None  # None: 128 or half the window, whichever is less
    max_seq_len: int = 384
    max_question_len: int = 64
    max_answer_len: int = 15
    handle_impossible_answer: bool = False
    align_to_words: bool = True
    merge_same_text: bool = True  # add up the scores of answers whose text is equal ignoring case
    offset_unit: OffsetUnit = OffsetUnit.CODE_POINT


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
