"""The plain values the clients return: no protobuf type reaches the user.

Enum values travel as lower-case short strings ("cls", "embed", "ready").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Usage:
    """What one response cost the server."""

    tokens: int
    queue_time_ns: int
    inference_time_ns: int
    tokenization_time_ns: int


# eq=False: comparing numpy arrays field by field would raise instead of answering.
@dataclass(frozen=True, slots=True, eq=False)
class EmbedResult:
    """Pooled vectors of a batch, in input order. Arrays are read-only views of the response."""

    model: str
    embeddings: np.ndarray
    """float32, shape [inputs, hidden_size]."""
    token_embeddings: list[np.ndarray] | None
    """float32, shape [tokens, hidden_size] per input; None unless asked for."""
    token_counts: list[int]
    truncated_indices: list[int]
    usage: Usage


@dataclass(frozen=True, slots=True)
class Tokenization:
    """One input as the model's tokenizer splits it; every list has one entry per token."""

    tokens: list[str]
    ids: list[int]
    token_type_ids: list[int]
    attention_mask: list[int]
    special_tokens_mask: list[int]
    offsets: list[tuple[int, int]]
    """Half-open code point span in the token's own segment; (0, 0) for special tokens."""
    sequence_ids: list[int]
    """0 the input, 1 the pair, -1 a special token."""
    truncated: bool = False
    """Whether truncate cut this input."""


class Batch(list[T]):
    """A call's results, one entry per input in input order, plus what the call cost.

    A plain list, so the common case needs nothing else; `model` (the model that answered) and
    `usage` ride along as attributes. The named kinds below are this with their entries' type.
    """

    def __init__(self, results: Iterable[T], *, model: str, usage: Usage) -> None:
        super().__init__(results)
        self.model = model
        self.usage = usage


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer span: text == context[start:end]; empty text means "no answer"."""

    text: str
    start: int
    end: int
    score: float


class Answers(Batch[list[Answer]]):
    """The answers of each (question, context) pair, best first, plus what they cost.

    A plain list of lists, so the common case needs nothing else; `model` and `usage`
    ride along as attributes.
    """


@dataclass(frozen=True, slots=True)
class LabelScore:
    """One label of a sequence classifier with its score."""

    label: str
    index: int
    """The label's index in the classifier's output."""
    score: float


class Classifications(Batch[list[LabelScore]]):
    """The labels of each input, best first, plus what they cost: a plain list of lists, with
    `model` and `usage` as attributes."""


@dataclass(frozen=True, slots=True)
class RankedDocument:
    """One document's score against the query."""

    index: int
    """Its index in the request."""
    score: float
    """sigmoid of the cross-encoder's logit (the logit itself with raw_scores)."""
    truncated: bool
    """Whether the (query, document) pair was cut to fit the model."""
    text: str | None = None
    """The document, with return_documents."""


@dataclass(frozen=True, slots=True)
class RerankResult:
    """Scores of a query's documents."""

    model: str
    documents: list[RankedDocument]
    """In request order."""
    ranking: list[int]
    """Document indices, best score first (ties in request order)."""
    usage: Usage


@dataclass(frozen=True, slots=True)
class MaskCandidate:
    """One token that may fill a mask."""

    token: str
    """The token as text (the tokenizer's decoding of token_id)."""
    token_id: int
    score: float
    """Its probability at the mask: softmax over the whole vocabulary, targets or not."""
    sequence: str
    """The input with this token in the mask, decoded as transformers' fill-mask pipeline does."""


class Similarities(Batch[float]):
    """Per sentence, in request order, its cosine similarity with the source sentence (-1 to 1);
    a plain list of floats, with `model` and `usage` as attributes."""


class FillMaskResults(Batch[list[list[MaskCandidate]]]):
    """Per input, per mask (in text order), the candidates best first; a plain list of lists of
    lists, with `model` and `usage` as attributes."""


@dataclass(frozen=True, slots=True)
class TokenProbability:
    """One token (or word) with the probability that it was replaced."""

    text: str
    """The token as the tokenizer spells it, or the word as it stands in the input."""
    start: int
    """Where it starts in the input, in the call's offset_unit; 0 for a special token."""
    end: int
    """One past where it ends; 0 for a special token."""
    probability: float
    """sigmoid of the discriminator's logit."""
    special: bool = False
    """A special token the tokenizer added ([CLS], [SEP])."""


@dataclass(frozen=True, slots=True)
class ReplacedTokens:
    """One input's tokens, special tokens included, and with aggregate_words its words."""

    tokens: list[TokenProbability]
    words: list[TokenProbability]
    """Each word's probability is the highest of its tokens'; empty without aggregate_words."""


class ReplacedTokensResults(Batch[ReplacedTokens]):
    """One entry per input, with `model` and `usage` as attributes."""


@dataclass(frozen=True, slots=True)
class Entity:
    """One token (aggregation "none") or group of tokens with a label: text[start:end] is what it covers."""

    label: str
    """The token's label, or with aggregation the entity group (the label without its B-/I- prefix)."""
    score: float
    word: str
    """The text as transformers' token-classification pipeline reports it: the decoded tokens."""
    start: int
    end: int
    index: int
    """With aggregation "none": the token's index in the tokenized input; 0 otherwise."""


class Entities(Batch[list[Entity]]):
    """The entities of each input, in text order, plus what they cost: a plain list of lists, with
    `model` and `usage` as attributes."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model the server is configured with, whatever its state."""

    name: str
    plugin: str
    source: str
    devices: list[str]
    dtype: str
    capabilities: list[str]
    """Of "tokenize", "embed", "answer"; empty until loaded."""
    hidden_size: int
    max_input_tokens: int
    state: str
    """"loading", "ready" or "failed"."""
    failure_reason: str
    poolings: list[str]
    """Of "cls", "mean", "pooler"."""
    default_pooling: str
    is_default: bool
    load_attempts: int = 0
    next_attempt_at: float | None = None
    """Unix time of the next load attempt, while one is due (see the server's load_retry_max_s)."""
    labels: list[str] = field(default_factory=list)
    """The labels of its classification head, by index; empty without one."""


@dataclass(frozen=True, slots=True)
class Unloaded:
    """How the calls in flight on an unloaded model ended."""

    drained_calls: int
    """Finished before the model was freed."""
    abandoned_calls: int
    """Still running at the end of the server's grace period: answered UNAVAILABLE."""
