"""Token-classification postprocessing: per-token logits into entities, as transformers'
token-classification pipeline makes them (gather_pre_entities, aggregate, aggregate_words,
group_entities), once for every plugin. Pure Python and numpy.

The pipeline's quirks are kept, since callers compare against it: a word's tokens are joined with
the tokenizer's convert_tokens_to_string, and with a word strategy (first, average, max) the words
of a group are joined that way a second time (so byte-level BPE words with accents come out
garbled there, as in the pipeline; start and end always give the exact text).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertserve.api import Encoding
from bertserve.domain import Aggregation, Entity
from bertserve.serving.activations import softmax

__all__ = ["EntityTraits", "entities_of"]


@dataclass(frozen=True)
class EntityTraits:
    """What the postprocessing needs of the model besides its logits."""

    labels: tuple[str, ...]  # id2label, by index
    #: Whether the tokenizer marks word-continuing pieces ("##" in WordPiece): then a token is a
    #: subword when its text and the text it covers differ in length; otherwise (byte-level BPE,
    #: unigram) when no space is just before it or at its start: the pipeline's fallback heuristic.
    word_aware: bool
    unk_token_id: int | None
    #: The tokenizer's convert_tokens_to_string.
    tokens_to_string: Callable[[Sequence[str]], str]


@dataclass
class _Token:
    """The pipeline's pre-entity, and its entity once labelled."""

    word: str
    scores: np.ndarray  # [labels] float32 probabilities
    start: int
    end: int
    index: int
    is_subword: bool = False
    label: str = ""
    score: Any = None  # a numpy float32 scalar, as the pipeline keeps it


def entities_of(
    text: str,
    encoding: Encoding,
    logits: np.ndarray,
    traits: EntityTraits,
    aggregation: Aggregation,
    ignore_labels: Collection[str],
) -> list[Entity]:
    """The entities of one input from its per-token logits [tokens, labels]."""
    tokens = _pre_entities(text, encoding, softmax(logits), traits)
    if aggregation in (Aggregation.NONE, Aggregation.SIMPLE):
        for token in tokens:
            best = token.scores.argmax()
            token.label, token.score = traits.labels[best], token.scores[best]
        entities = tokens
    else:
        entities = _aggregate_words(tokens, aggregation, traits)
    if aggregation is Aggregation.NONE:
        found = [Entity(t.label, float(t.score), t.word, t.start, t.end, t.index) for t in entities]
    else:
        found = _group_entities(entities, traits)
    return [e for e in found if e.label not in ignore_labels]


def _pre_entities(text: str, encoding: Encoding, scores: np.ndarray, traits: EntityTraits) -> list[_Token]:
    """Every non-special token with its scores, offsets and whether it continues a word."""
    pre = []
    for index, (id_, word, (start, end), special) in enumerate(
        zip(encoding.ids, encoding.tokens, encoding.offsets, encoding.special_tokens_mask, strict=True)
    ):
        if special:
            continue
        word_ref = text[start:end]
        if traits.word_aware:
            is_subword = len(word) != len(word_ref)
        else:
            is_subword = start > 0 and " " not in text[start - 1 : start + 1]
        if id_ == traits.unk_token_id:
            word, is_subword = word_ref, False
        pre.append(_Token(word, scores[index], start, end, index, is_subword))
    return pre


def _aggregate_words(tokens: list[_Token], aggregation: Aggregation, traits: EntityTraits) -> list[_Token]:
    """One labelled entry per word: a token that is no subword starts a new word."""
    words: list[list[_Token]] = []
    for token in tokens:
        if words and token.is_subword:
            words[-1].append(token)
        else:
            words.append([token])
    return [_aggregate_word(word, aggregation, traits) for word in words]


def _aggregate_word(tokens: list[_Token], aggregation: Aggregation, traits: EntityTraits) -> _Token:
    word = traits.tokens_to_string([t.word for t in tokens])
    if aggregation is Aggregation.FIRST:
        scores = tokens[0].scores
    elif aggregation is Aggregation.MAX:
        scores = max(tokens, key=lambda t: t.scores.max()).scores
    else:  # AVERAGE
        scores = np.nanmean(np.stack([t.scores for t in tokens]), axis=0)
    best = scores.argmax()
    entity = _Token(word, scores, tokens[0].start, tokens[-1].end, 0)
    entity.label, entity.score = traits.labels[best], scores[best]
    return entity


def _tag(label: str) -> tuple[str, str]:
    """(B or I, the entity type): a label without a B-/I- prefix continues (the pipeline's get_tag)."""
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


def _group_entities(entities: list[_Token], traits: EntityTraits) -> list[Entity]:
    """Adjacent entities of the same type grouped; a B- label always starts a new group."""
    groups: list[list[_Token]] = []
    for entity in entities:
        if groups:
            bi, tag = _tag(entity.label)
            if tag == _tag(groups[-1][-1].label)[1] and bi != "B":
                groups[-1].append(entity)
                continue
        groups.append([entity])
    return [_group(group, traits) for group in groups]


def _group(entities: list[_Token], traits: EntityTraits) -> Entity:
    score = np.mean(np.nanmean([e.score for e in entities]))
    return Entity(
        label=entities[0].label.split("-", 1)[-1],
        score=float(score),
        word=traits.tokens_to_string([e.word for e in entities]),
        start=entities[0].start,
        end=entities[-1].end,
        index=0,
    )
