"""The codecs of the heads' RPCs (Classify, Rerank, FillMask, DetectReplacedTokens, ClassifyTokens)."""

from __future__ import annotations

from bertserve.domain import (
    Aggregation,
    ClassifyFunction,
    ClassifyQuery,
    ClassifyResult,
    ClassifyTokensQuery,
    ClassifyTokensResult,
    FillMaskQuery,
    FillMaskResult,
    MaskCandidate,
    ReplacedTokens,
    ReplacedTokensQuery,
    ReplacedTokensResult,
    RerankQuery,
    RerankResult,
    TokenProbability,
)
from bertserve.edge.codecs.codec import Codec
from bertserve.edge.codecs.common import offset_unit, usage_proto
from bertserve.errors import InvalidRequest
from bertserve_client.v1 import heads_pb2

_CLASSIFY_FUNCTION_FROM_PB = {
    heads_pb2.CLASSIFY_FUNCTION_UNSPECIFIED: None,
    heads_pb2.CLASSIFY_FUNCTION_SOFTMAX: ClassifyFunction.SOFTMAX,
    heads_pb2.CLASSIFY_FUNCTION_SIGMOID: ClassifyFunction.SIGMOID,
    heads_pb2.CLASSIFY_FUNCTION_NONE: ClassifyFunction.NONE,
}


def classify_query(request: heads_pb2.ClassifyRequest) -> ClassifyQuery:
    if request.function not in _CLASSIFY_FUNCTION_FROM_PB:
        raise InvalidRequest(f"function {request.function} is not a known ClassifyFunction value")
    return ClassifyQuery(
        model=request.model,
        inputs=list(request.inputs),
        pairs=list(request.pairs) or None,
        top_k=request.top_k if request.HasField("top_k") else 1,
        function=_CLASSIFY_FUNCTION_FROM_PB[request.function],
        truncate=request.truncate,
    )


def classify_response(result: ClassifyResult) -> heads_pb2.ClassifyResponse:
    return heads_pb2.ClassifyResponse(
        model=result.model,
        results=[
            heads_pb2.Labels(labels=[heads_pb2.LabelScore(label=s.label, index=s.index, score=s.score) for s in labels])
            for labels in result.labels
        ],
        usage=usage_proto(result.usage),
    )


def rerank_query(request: heads_pb2.RerankRequest) -> RerankQuery:
    return RerankQuery(
        model=request.model,
        query=request.query,
        documents=list(request.documents),
        truncate=request.truncate,
        return_documents=request.return_documents,
        raw_scores=request.raw_scores,
    )


def rerank_response(result: RerankResult) -> heads_pb2.RerankResponse:
    return heads_pb2.RerankResponse(
        model=result.model,
        documents=[
            heads_pb2.RankedDocument(index=d.index, score=d.score, truncated=d.truncated, text=d.text)
            for d in result.documents
        ],
        ranking=result.ranking,
        usage=usage_proto(result.usage),
    )


def fill_mask_query(request: heads_pb2.FillMaskRequest) -> FillMaskQuery:
    return FillMaskQuery(
        model=request.model,
        inputs=list(request.inputs),
        top_k=request.top_k if request.HasField("top_k") else 5,
        targets=list(request.targets) or None,
        truncate=request.truncate,
    )


def fill_mask_response(result: FillMaskResult) -> heads_pb2.FillMaskResponse:
    return heads_pb2.FillMaskResponse(
        model=result.model,
        results=[
            heads_pb2.FillMaskResult(masks=[heads_pb2.MaskCandidates(candidates=map(_candidate, c)) for c in masks])
            for masks in result.results
        ],
        usage=usage_proto(result.usage),
    )


def _candidate(c: MaskCandidate) -> heads_pb2.MaskCandidate:
    return heads_pb2.MaskCandidate(token=c.token, token_id=c.token_id, score=c.score, sequence=c.sequence)


def detect_replaced_tokens_query(request: heads_pb2.DetectReplacedTokensRequest) -> ReplacedTokensQuery:
    return ReplacedTokensQuery(
        model=request.model,
        inputs=list(request.inputs),
        aggregate_words=request.aggregate_words,
        offset_unit=offset_unit(request.offset_unit),
        truncate=request.truncate,
    )


def detect_replaced_tokens_response(result: ReplacedTokensResult) -> heads_pb2.DetectReplacedTokensResponse:
    return heads_pb2.DetectReplacedTokensResponse(
        model=result.model,
        results=[_replaced_tokens(r) for r in result.results],
        usage=usage_proto(result.usage),
    )


def _replaced_tokens(result: ReplacedTokens) -> heads_pb2.ReplacedTokens:
    return heads_pb2.ReplacedTokens(
        tokens=[_token_probability(t) for t in result.tokens], words=[_token_probability(w) for w in result.words]
    )


def _token_probability(t: TokenProbability) -> heads_pb2.TokenProbability:
    return heads_pb2.TokenProbability(
        text=t.text, start=t.start, end=t.end, probability=t.probability, special=t.special
    )


_AGGREGATION_FROM_PB = {
    heads_pb2.AGGREGATION_UNSPECIFIED: Aggregation.NONE,
    heads_pb2.AGGREGATION_NONE: Aggregation.NONE,
    heads_pb2.AGGREGATION_SIMPLE: Aggregation.SIMPLE,
    heads_pb2.AGGREGATION_FIRST: Aggregation.FIRST,
    heads_pb2.AGGREGATION_AVERAGE: Aggregation.AVERAGE,
    heads_pb2.AGGREGATION_MAX: Aggregation.MAX,
}


def classify_tokens_query(request: heads_pb2.ClassifyTokensRequest) -> ClassifyTokensQuery:
    if request.aggregation not in _AGGREGATION_FROM_PB:
        raise InvalidRequest(f"aggregation {request.aggregation} is not a known Aggregation value")
    if request.keep_all_labels and request.ignore_labels:
        raise InvalidRequest("keep_all_labels leaves no label out: send it with an empty ignore_labels")
    if request.keep_all_labels:
        ignore: tuple[str, ...] = ()
    else:
        ignore = tuple(request.ignore_labels) or ClassifyTokensQuery.ignore_labels  # ("O",) when empty
    return ClassifyTokensQuery(
        model=request.model,
        inputs=list(request.inputs),
        aggregation=_AGGREGATION_FROM_PB[request.aggregation],
        ignore_labels=ignore,
        offset_unit=offset_unit(request.offset_unit),
        truncate=request.truncate,
    )


def classify_tokens_response(result: ClassifyTokensResult) -> heads_pb2.ClassifyTokensResponse:
    return heads_pb2.ClassifyTokensResponse(
        model=result.model,
        results=[
            heads_pb2.Entities(
                entities=[
                    heads_pb2.Entity(label=e.label, score=e.score, word=e.word, start=e.start, end=e.end, index=e.index)
                    for e in found
                ]
            )
            for found in result.entities
        ],
        usage=usage_proto(result.usage),
    )


CLASSIFY = Codec(classify_query, classify_response)
RERANK = Codec(rerank_query, rerank_response)
FILL_MASK = Codec(fill_mask_query, fill_mask_response)
DETECT_REPLACED_TOKENS = Codec(
    detect_replaced_tokens_query,
    detect_replaced_tokens_response,
    lambda result: sum(len(r.tokens) + len(r.words) for r in result.results),
)
CLASSIFY_TOKENS = Codec(classify_tokens_query, classify_tokens_response, lambda result: sum(map(len, result.entities)))
