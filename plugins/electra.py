"""ELECTRA (the discriminator): WordPiece like BERT, but no pooler head, so no POOLER pooling."""

from __future__ import annotations

from bertserve.transformers_plugin import TransformersPlugin


class ElectraPlugin(TransformersPlugin):
    variant = "electra"
    model_types = frozenset({"electra"})
    default_source = "google/electra-small-discriminator"
