"""ALBERT: SentencePiece tokens spelled with '▁', factorized embeddings, shared layers, a pooler."""

from __future__ import annotations

from bertserve.transformers_plugin import TransformersPlugin


class AlbertPlugin(TransformersPlugin):
    variant = "albert"
    model_types = frozenset({"albert"})
    default_source = "albert-base-v2"
