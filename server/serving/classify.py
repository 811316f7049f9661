"""Classify: sequence classification as transformers' text-classification pipeline computes it.

Texts (or text pairs, tokenized as the pipeline's {"text", "text_pair"} inputs are) go through the
model's batcher once; the plugin returns each sequence's raw logits and the scoring below runs once
for every variant: the pipeline's function_to_apply (its default rule when the request names none),
in float32 as the pipeline computes it, and the labels sorted by score as the pipeline sorts them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from bertserve.api import Capability, ModelInfo
from bertserve.domain import ClassifyFunction, ClassifyQuery, ClassifyResult, LabelScore, usage_of
from bertserve.errors import InvalidRequest
from bertserve.serving.activations import softmax
from bertserve.serving.model_host import ModelHost
from bertserve.serving.router import Router

__all__ = ["classify", "default_function", "scores_of", "top_labels"]


async def classify(router: Router, query: ClassifyQuery, *, deadline: float | None) -> ClassifyResult:
    with router.use(query.model) as host:
        return await _classify(host, query, deadline)


async def _classify(host: ModelHost, query: ClassifyQuery, deadline: float | None) -> ClassifyResult:
    info = host.require(Capability.CLASSIFY)
    _validate(query)
    started = time.monotonic_ns()
    encodings = await host.tokenize_inputs(query.inputs, pairs=query.pairs, truncate=query.truncate)
    tokenization_ns = time.monotonic_ns() - started
    results = await host.run(("classify",), encodings, deadline=deadline)
    function = query.function or default_function(info)
    logits = [np.asarray(r.value, dtype=np.float32) for r in results]
    labels = await host.off_loop(_labels, logits, function, info.labels, query.top_k)
    return ClassifyResult(
        model=host.name,
        labels=labels,
        usage=usage_of(results, tokens=sum(len(e) for e in encodings), tokenization_ns=tokenization_ns),
    )


def _validate(query: ClassifyQuery) -> None:
    if not query.inputs:
        raise InvalidRequest("inputs is empty: send at least one text")
    if query.pairs is not None and len(query.pairs) != len(query.inputs):
        raise InvalidRequest(
            f"pairs has {len(query.pairs)} entries for {len(query.inputs)} inputs: send none or one per input"
        )
    for i, text in enumerate(query.inputs):
        if not text or text.isspace():
            raise InvalidRequest(f"input {i} is empty")
    for i, text in enumerate(query.pairs or ()):
        if not text or text.isspace():
            raise InvalidRequest(f"pair {i} is empty")
    if query.top_k < 0:
        raise InvalidRequest(f"top_k {query.top_k} is negative: send 0 for every label")


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
