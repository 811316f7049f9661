"""SpanBERT: BERT architecture pre-trained on spans, cased WordPiece; its checkpoints are mostly SQuAD heads."""

from __future__ import annotations

from bertserve.transformers_plugin import TransformersPlugin


class SpanBertPlugin(TransformersPlugin):
    variant = "spanbert"
    model_types = frozenset({"bert"})
    default_source = "mrm8488/spanbert-large-finetuned-squadv2"
