"""The codec of Similarity."""

from __future__ import annotations

from bertserve.domain import SimilarityQuery, SimilarityResult
from bertserve.edge.codecs.codec import Codec
from bertserve.edge.codecs.common import usage_proto
from bertserve_client.v1 import heads_pb2

__all__ = ["SIMILARITY"]


def _query(request: heads_pb2.SimilarityRequest) -> SimilarityQuery:
    return SimilarityQuery(
        model=request.model,
        source_sentence=request.source_sentence,
        sentences=list(request.sentences),
        truncate=request.truncate,
    )


def _response(result: SimilarityResult) -> heads_pb2.SimilarityResponse:
    return heads_pb2.SimilarityResponse(model=result.model, scores=result.scores, usage=usage_proto(result.usage))


SIMILARITY = Codec(_query, _response)
