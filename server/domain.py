"""The server's requests and results, free of protobuf: what the servicers convert to and from."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bertserve.api import Encoding, Pooling
from bertserve.ops import Completed

__all__ = [
    "Aggregation",
    "AnswerQuery",
    "AnswerSpan",
    "CallLimits",
    "ClassifyFunction",
    "ClassifyQuery",
    "ClassifyResult",
    "ClassifyTokensQuery",
    "ClassifyTokensResult",
    "EmbedQuery",
    "EmbedResult",
    "Entity",
    "FillMaskQuery",
    "FillMaskResult",
    "LabelScore",
    "MaskCandidate",
    "OffsetUnit",
    "RankedDocument",
    "ReplacedTokens",
    "ReplacedTokensQuery",
    "ReplacedTokensResult",
    "RerankQuery",
    "RerankResult",
    "SimilarityQuery",
    "SimilarityResult",
    "TokenProbability",
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


def usage_of(results: Sequence[Completed[object]], *, tokens: int, tokenization_ns: int) -> Usage:
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

    def add(self, results: Sequence[Completed[object]]) -> None:
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


class ClassifyFunction(enum.Enum):
    """What turns a sequence classifier's logits into scores (the text-classification pipeline's
    function_to_apply)."""

    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"
    NONE = "none"


@dataclass(frozen=True)
class ClassifyQuery:
    model: str
    inputs: list[str]
    pairs: list[str] | None = None  # second segments, one per input
    top_k: int = 1  # labels per input, best first; 0: all of them
    function: ClassifyFunction | None = None  # None: as the checkpoint says (the pipeline's default rule)
    truncate: bool = False


@dataclass(frozen=True)
class LabelScore:
    label: str
    index: int  # in the classifier's output
    score: float


@dataclass(frozen=True)
class ClassifyResult:
    model: str
    labels: list[list[LabelScore]]  # per input, best first
    usage: Usage


@dataclass(frozen=True)
class RerankQuery:
    model: str
    query: str
    documents: list[str]
    truncate: bool = False
    return_documents: bool = False
    raw_scores: bool = False  # the logit instead of its sigmoid


@dataclass(frozen=True)
class RankedDocument:
    index: int
    score: float
    truncated: bool  # the (query, document) pair was cut to the model's limit
    text: str  # the document with return_documents, else ""


@dataclass(frozen=True)
class RerankResult:
    model: str
    documents: list[RankedDocument]  # in request order
    ranking: list[int]  # document indices, best score first
    usage: Usage


@dataclass(frozen=True)
class FillMaskQuery:
    model: str
    inputs: list[str]  # each with at least one mask: "[MASK]" or the model's own mask token
    top_k: int = 5  # candidates per mask
    targets: list[str] | None = None  # restrict the candidates to these (the pipeline's targets)
    truncate: bool = False


@dataclass(frozen=True)
class MaskCandidate:
    token: str  # the tokenizer's decoding of token_id
    token_id: int
    score: float  # softmax over the whole vocabulary
    sequence: str  # the input with this token in the mask, decoded as the fill-mask pipeline does


@dataclass(frozen=True)
class FillMaskResult:
    model: str
    results: list[list[list[MaskCandidate]]]  # per input, per mask (in text order), best first
    usage: Usage


@dataclass(frozen=True)
class ReplacedTokensQuery:
    model: str
    inputs: list[str]
    aggregate_words: bool = False
    offset_unit: OffsetUnit = OffsetUnit.CODE_POINT
    truncate: bool = False


@dataclass(frozen=True)
class TokenProbability:
    text: str  # the token as the tokenizer spells it, or the word as it stands in the input
    start: int  # in the query's offset unit; (0, 0) for a special token
    end: int
    probability: float  # that it was replaced: sigmoid of the discriminator's logit
    special: bool = False  # a special token the tokenizer added


@dataclass(frozen=True)
class ReplacedTokens:
    tokens: list[TokenProbability]
    words: list[TokenProbability]  # with aggregate_words, else empty


@dataclass(frozen=True)
class ReplacedTokensResult:
    model: str
    results: list[ReplacedTokens]  # per input
    usage: Usage


class Aggregation(enum.Enum):
    """How ClassifyTokens merges tokens into entities (the token-classification pipeline's
    aggregation_strategy; see bertserve.serving.entities)."""

    NONE = "none"  # one entity per token
    SIMPLE = "simple"  # adjacent tokens of the same B-/I- entity grouped, scores averaged
    FIRST = "first"  # a word takes its first token's label
    AVERAGE = "average"  # a word takes the label of its tokens' average scores
    MAX = "max"  # a word takes the label of its highest-scoring token


@dataclass(frozen=True)
class ClassifyTokensQuery:
    model: str
    inputs: list[str]
    aggregation: Aggregation = Aggregation.NONE
    ignore_labels: tuple[str, ...] = ("O",)  # labels left out of the results; () keeps every label
    offset_unit: OffsetUnit = OffsetUnit.CODE_POINT
    truncate: bool = False


@dataclass(frozen=True)
class Entity:
    label: str  # the token's label (aggregation none) or the entity group
    score: float
    word: str  # the text as the pipeline reports it (decoded tokens)
    start: int  # in the query's offset unit
    end: int
    index: int  # the token's index in the tokenized input with aggregation none; 0 otherwise


@dataclass(frozen=True)
class ClassifyTokensResult:
    model: str
    entities: list[list[Entity]]  # per input, in text order
    usage: Usage


@dataclass(frozen=True)
class SimilarityQuery:
    model: str
    source_sentence: str
    sentences: list[str]
    truncate: bool = False


@dataclass(frozen=True)
class SimilarityResult:
    model: str
    scores: list[float]  # per sentence, in request order
    usage: Usage
