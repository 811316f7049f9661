"""Which head a checkpoint carries, the class that loads it with its encoder, and how to run it.

A checkpoint names its head in ``config.architectures`` (``RobertaForMaskedLM``,
``ElectraForPreTraining``, ``BertForSequenceClassification``, ...). The model is loaded with that
head, once: Embed uses the encoder inside it (``base_model``), the head's RPCs the whole. A head
whose weights the checkpoint lacks would be random: it is not offered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from bertserve.api import Capability
from bertserve.runtime.lazy_torch import torch

__all__ = ["CheckpointHead", "head_of", "head_weights_present", "mlm_head"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointHead:
    name: str  # for messages: "question-answering", "masked-language-model", ...
    auto_class: Any
    capabilities: frozenset[Capability]


NO_HEAD = CheckpointHead("none", AutoModel, frozenset())


def head_of(config: Any) -> CheckpointHead:
    """The head config.architectures names (the first one bertserve serves), else none."""
    for architecture in config.architectures or ():
        if architecture.endswith("ForQuestionAnswering"):
            return CheckpointHead("question-answering", AutoModelForQuestionAnswering, frozenset({Capability.ANSWER}))
        if architecture.endswith("ForMaskedLM"):
            return CheckpointHead("masked-language-model", AutoModelForMaskedLM, frozenset({Capability.FILL_MASK}))
        if architecture.endswith("ForPreTraining"):
            if config.model_type == "electra":  # the discriminator: replaced-token detection
                caps = frozenset({Capability.DETECT_REPLACED_TOKENS})
                return CheckpointHead("replaced-token-detection", AutoModelForPreTraining, caps)
            # BERT's and ALBERT's pre-training heads hold a masked-language model (besides NSP/SOP).
            return CheckpointHead("masked-language-model", AutoModelForMaskedLM, frozenset({Capability.FILL_MASK}))
        if architecture.endswith("ForSequenceClassification"):
            classify = {Capability.CLASSIFY}
            if int(getattr(config, "num_labels", 0)) == 1:  # one score per (query, document): a cross-encoder
                classify.add(Capability.RERANK)
            return CheckpointHead("sequence-classification", AutoModelForSequenceClassification, frozenset(classify))
        if architecture.endswith("ForTokenClassification"):
            caps = frozenset({Capability.CLASSIFY_TOKENS})
            return CheckpointHead("token-classification", AutoModelForTokenClassification, caps)
    return NO_HEAD


def head_weights_present(model: Any, missing_keys: Iterable[str]) -> bool:
    """Whether the checkpoint held the head's weights: no missing key outside the encoder."""
    prefix = f"{model.base_model_prefix}."
    absent = [key for key in missing_keys if not key.startswith(prefix) and "position_ids" not in key]
    if absent:
        log.warning("the checkpoint lacks weights of its head (%s): the head is not offered", ", ".join(absent[:4]))
    return not absent


def mlm_head(model: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The masked-language-model head as a function of hidden states, to run at mask positions
    only (the full [batch, tokens, vocabulary] logits are gigabytes for a large batch); None for an
    architecture whose head is not one of these, which then runs whole."""
    if hasattr(model, "generator_lm_head"):  # ELECTRA's generator
        return lambda hidden: model.generator_lm_head(model.generator_predictions(hidden))
    for name in ("lm_head", "cls", "predictions"):  # RoBERTa, BERT, ALBERT
        head = getattr(model, name, None)
        if head is not None and callable(head):
            return head  # type: ignore[no-any-return]
    return None
