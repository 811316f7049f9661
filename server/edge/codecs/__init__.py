"""Protobuf <-> domain, one codec per RPC (decode the request, encode the result): servicers never
touch model code, flows never see protobuf. A new head's codec is one small module here."""

from bertserve.edge.codecs.codec import Codec
from bertserve.edge.codecs.common import numpy_to_tensor, usage_proto
from bertserve.edge.codecs.encoder import ANSWER, EMBED, TOKENIZE
from bertserve.edge.codecs.heads import CLASSIFY, CLASSIFY_TOKENS, DETECT_REPLACED_TOKENS, FILL_MASK, RERANK
from bertserve.edge.codecs.models import model_proto
from bertserve.edge.codecs.similarity import SIMILARITY

__all__ = [
    "ANSWER",
    "CLASSIFY",
    "CLASSIFY_TOKENS",
    "DETECT_REPLACED_TOKENS",
    "EMBED",
    "FILL_MASK",
    "RERANK",
    "SIMILARITY",
    "TOKENIZE",
    "Codec",
    "model_proto",
    "numpy_to_tensor",
    "usage_proto",
]
