"""Similarity: sentences scored against a source sentence by the cosine similarity of their
embeddings, as sentence-transformers' ``similarity`` scores them (its default, cosine).

The source and the sentences go through the model's batcher together, pooled as the model's
default pooling pools them (for a sentence-transformers checkpoint, its own pooling), and the
scores are computed in float32 as torch computes cos_sim: each vector over its L2 norm (at least
1e-12), then their dot products.
"""

from __future__ import annotations

import numpy as np

from bertserve.api import Capability
from bertserve.domain import SimilarityQuery, SimilarityResult
from bertserve.errors import InvalidRequest
from bertserve.ops import EmbedOp
from bertserve.serving.flow import Flow, Work, check_texts

__all__ = ["SIMILARITY"]


async def _similarity(work: Work, query: SimilarityQuery) -> SimilarityResult:
    if not query.source_sentence or query.source_sentence.isspace():
        raise InvalidRequest("source_sentence is empty")
    check_texts(query.sentences, "sentence")
    texts = [query.source_sentence, *query.sentences]
    # Cut either way, so that a sentence over the limit is named as a sentence, not an input.
    encodings = await work.tokenize(texts, truncate=True)
    if not query.truncate:
        for i, encoding in enumerate(encodings):
            if encoding.truncated:
                what = "source_sentence" if i == 0 else f"sentence {i - 1}"
                raise InvalidRequest(
                    f"{what} has {encoding.full_length} tokens, over the limit of {work.info.max_input_tokens} of "
                    f"model {work.name!r}; shorten it or set truncate"
                )
    results = await work.run(EmbedOp(work.info.default_pooling, with_token_states=False), encodings)
    vectors = np.stack([r.value.pooled for r in results]).astype(np.float32, copy=False)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.float32(1e-12))
    scores = unit[1:] @ unit[0]
    return SimilarityResult(
        model=work.name, scores=[float(s) for s in scores], usage=work.usage(sum(len(e) for e in encodings))
    )


SIMILARITY = Flow(Capability.SIMILARITY, _similarity)
