"""Classify: sequence classification as transformers' text-classification pipeline computes it.

Texts (or text pairs, tokenized as the pipeline's {"text", "text_pair"} inputs are) go through the
model's batcher once; the plugin returns each sequence's raw logits and the scoring below runs once
for every variant: the pipeline's function_to_apply (its default rule when the request names none),
in float32 as the pipeline computes it, and the labels sorted by score as the pipeline sorts them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bertserve.api import Capability, Head, ModelInfo
from bertserve.domain import ClassifyFunction, ClassifyQuery, ClassifyResult, LabelScore
from bertserve.errors import InvalidRequest
from bertserve.ops import HeadOp
from bertserve.serving.activations import softmax
from bertserve.serving.flow import Flow, Work, check_pairs, check_texts

__all__ = ["CLASSIFY", "default_function", "scores_of", "top_labels"]


async def _classify(work: Work, query: ClassifyQuery) -> ClassifyResult:
    check_texts(query.inputs)
    check_pairs(query.inputs, query.pairs)
    if query.top_k < 0:
        raise InvalidRequest(f"top_k {query.top_k} is negative: send 0 for every label")
    encodings = await work.tokenize(query.inputs, pairs=query.pairs, truncate=query.truncate)
    results = await work.run(HeadOp(Head.SEQUENCE_CLASSIFICATION), encodings)
    function = query.function or default_function(work.info)
    logits = [np.asarray(r.value, dtype=np.float32) for r in results]
    labels = await work.off_loop(_labels, logits, function, work.info.labels, query.top_k)
    return ClassifyResult(model=work.name, labels=labels, usage=work.usage(sum(len(e) for e in encodings)))


CLASSIFY = Flow(Capability.CLASSIFY, _classify)


def default_function(info: ModelInfo) -> ClassifyFunction:
    """The pipeline's default rule, from the checkpoint's problem_type and its number of labels.

    (The pipeline's last resort, config.function_to_apply, is reached only by a head without
    labels, which is never served.)
    """
    if info.problem_type == "regression":
        return ClassifyFunction.NONE
    if info.problem_type == "multi_label_classification" or len(info.labels) == 1:
        return ClassifyFunction.SIGMOID
    if info.problem_type == "single_label_classification" or len(info.labels) > 1:
        return ClassifyFunction.SOFTMAX
    return ClassifyFunction.NONE


def scores_of(logits: np.ndarray, function: ClassifyFunction) -> np.ndarray:
    """One sequence's scores, [labels] float32, computed as the pipeline computes them."""
    if function is ClassifyFunction.SIGMOID:  # the pipeline's own formula: its ties at 0 and 1 are ours
        return 1.0 / (1.0 + np.exp(-logits))  # type: ignore[no-any-return]
    if function is ClassifyFunction.SOFTMAX:
        return softmax(logits)
    return logits


def top_labels(scores: np.ndarray, labels: Sequence[str], top_k: int) -> list[LabelScore]:
    """The top_k labels (0: all), best first; ties keep label order, as the pipeline's stable sort does."""
    order = sorted(range(len(scores)), key=lambda i: float(scores[i]), reverse=True)
    if top_k:
        order = order[:top_k]
    return [LabelScore(label=labels[i], index=i, score=float(scores[i])) for i in order]


def _labels(
    logits: list[np.ndarray], function: ClassifyFunction, labels: Sequence[str], top_k: int
) -> list[list[LabelScore]]:
    return [top_labels(scores_of(row, function), labels, top_k) for row in logits]
