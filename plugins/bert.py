"""Plain BERT and its distilled relatives (MiniLM, all-MiniLM-L6-v2): WordPiece, token types, a pooler."""

from __future__ import annotations

from bertserve.transformers_plugin import TransformersPlugin


class BertPlugin(TransformersPlugin):
    variant = "bert"
    model_types = frozenset({"bert"})
    default_source = "bert-base-uncased"
