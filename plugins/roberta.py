"""RoBERTa: byte-level BPE (tokens like 'Ġwas'), no token types, positions offset past padding_idx."""

from __future__ import annotations

from typing import ClassVar

from bertserve.transformers_plugin import TransformersPlugin


class RobertaPlugin(TransformersPlugin):
    variant = "roberta"
    model_types = frozenset({"roberta"})
    default_source = "roberta-base"
    # Position ids start at padding_idx + 1 = 2, so two position embeddings hold no token.
    position_offset: ClassVar[int] = 2
