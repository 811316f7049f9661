"""Protobuf <-> domain conversion, in one place: servicers never touch model code, plugins never see protobuf."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from bertserve.api import Encoding, Pooling
from bertserve.capabilities import CAPABILITIES
from bertserve.domain import (
    Aggregation,
    AnswerQuery,
    AnswerResult,
    ClassifyFunction,
    ClassifyQuery,
    ClassifyResult,
    ClassifyTokensQuery,
    ClassifyTokensResult,
    EmbedQuery,
    EmbedResult,
    FillMaskQuery,
    FillMaskResult,
    MaskCandidate,
    OffsetUnit,
    ReplacedTokens,
    ReplacedTokensQuery,
    ReplacedTokensResult,
    RerankQuery,
    RerankResult,
    TokenizeQuery,
    TokenizeResult,
    TokenProbability,
    Usage,
)
from bertserve.errors import InvalidRequest
from bertserve.serving.model_host import ModelHost, ModelState
from bertserve_client.v1 import common_pb2, encoder_service_pb2, heads_pb2, model_service_pb2

__all__ = [
    "answer_query",
    "answer_response",
    "classify_query",
    "classify_response",
    "classify_tokens_query",
    "classify_tokens_response",
    "detect_replaced_tokens_query",
    "detect_replaced_tokens_response",
    "embed_query",
    "embed_response",
    "fill_mask_query",
    "fill_mask_response",
    "model_proto",
    "rerank_query",
    "rerank_response",
    "tokenize_query",
    "tokenize_response",
]


def numpy_to_tensor(array: npt.ArrayLike) -> common_pb2.Tensor:
    """An array as the contract's Tensor: little-endian float32 in row-major order, with its shape."""
    packed = np.asarray(array, dtype="<f4")
    return common_pb2.Tensor(data=packed.tobytes(order="C"), shape=packed.shape)  # C order, whatever the layout


_POOLING_FROM_PB = {
    common_pb2.POOLING_UNSPECIFIED: None,
    common_pb2.POOLING_CLS: Pooling.CLS,
    common_pb2.POOLING_MEAN: Pooling.MEAN,
    common_pb2.POOLING_POOLER: Pooling.POOLER,
}
_POOLING_TO_PB = {v: k for k, v in _POOLING_FROM_PB.items() if v is not None}
_STATE_TO_PB = {
    ModelState.LOADING: model_service_pb2.MODEL_STATE_LOADING,
    ModelState.READY: model_service_pb2.MODEL_STATE_READY,
    ModelState.FAILED: model_service_pb2.MODEL_STATE_FAILED,
}


def embed_query(request: encoder_service_pb2.EmbedRequest) -> EmbedQuery:
    if request.pooling not in _POOLING_FROM_PB:
        raise InvalidRequest(f"pooling {request.pooling} is not a known Pooling value")
    return EmbedQuery(
        model=request.model,
        inputs=list(request.inputs),
        pooling=_POOLING_FROM_PB[request.pooling],
        normalize=request.normalize,
        truncate=request.truncate,
        with_token_states=request.return_token_embeddings,
    )


def embed_response(result: EmbedResult) -> encoder_service_pb2.EmbedResponse:
    return encoder_service_pb2.EmbedResponse(
        model=result.model,
        embeddings=numpy_to_tensor(result.pooled),
        token_embeddings=[numpy_to_tensor(t) for t in result.token_states or ()],
        token_counts=result.token_counts,
        truncated_indices=result.truncated_indices,
        usage=usage_proto(result.usage),
    )


def tokenize_query(request: encoder_service_pb2.TokenizeRequest) -> TokenizeQuery:
    return TokenizeQuery(
        model=request.model,
        inputs=list(request.inputs),
        pairs=list(request.pairs) or None,
        add_special_tokens=request.add_special_tokens if request.HasField("add_special_tokens") else True,
        truncate=request.truncate,
        max_length=request.max_length if request.HasField("max_length") else None,
        offset_unit=offset_unit(request.offset_unit),
    )


def tokenize_response(result: TokenizeResult) -> encoder_service_pb2.TokenizeResponse:
    return encoder_service_pb2.TokenizeResponse(
        model=result.model,
        tokenizations=[_tokenization(e) for e in result.encodings],
        truncated_indices=[i for i, e in enumerate(result.encodings) if e.truncated],
    )


def _tokenization(encoding: Encoding) -> encoder_service_pb2.Tokenization:
    return encoder_service_pb2.Tokenization(
        tokens=encoding.tokens,
        ids=encoding.ids,
        token_type_ids=encoding.type_ids,
        attention_mask=[1] * len(encoding),
        special_tokens_mask=encoding.special_tokens_mask,
        offsets=[encoder_service_pb2.Span(start=s, end=e) for s, e in encoding.offsets],
        sequence_ids=encoding.sequence_ids,
    )


def answer_query(request: encoder_service_pb2.AnswerRequest) -> AnswerQuery:
    defaults = AnswerQuery(model=request.model, questions=[(q.question, q.context) for q in request.questions])
    options = {
        name: getattr(request, name)
        for name in (
            "top_k",
            "doc_stride",
            "max_seq_len",
            "max_question_len",
            "max_answer_len",
            "handle_impossible_answer",
            "align_to_words",
            "merge_same_text",
        )
        if request.HasField(name)
    }
    return replace(defaults, **options, offset_unit=offset_unit(request.offset_unit))


_OFFSET_UNIT_FROM_PB = {
    common_pb2.OFFSET_UNIT_UNSPECIFIED: OffsetUnit.CODE_POINT,
    common_pb2.OFFSET_UNIT_CODE_POINT: OffsetUnit.CODE_POINT,
    common_pb2.OFFSET_UNIT_UTF16_CODE_UNIT: OffsetUnit.UTF16,
    common_pb2.OFFSET_UNIT_UTF8_BYTE: OffsetUnit.UTF8,
}


def offset_unit(value: int) -> OffsetUnit:
    try:
        return _OFFSET_UNIT_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise InvalidRequest(f"offset_unit {value} is not a known OffsetUnit value") from None


def answer_response(result: AnswerResult) -> encoder_service_pb2.AnswerResponse:
    return encoder_service_pb2.AnswerResponse(
        model=result.model,
        results=[
            encoder_service_pb2.Answers(
                answers=[
                    encoder_service_pb2.Answer(text=a.text, start=a.start, end=a.end, score=a.score) for a in answers
                ]
            )
            for answers in result.answers
        ],
        usage=usage_proto(result.usage),
    )


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


def usage_proto(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        tokens=usage.tokens,
        queue_time_ns=usage.queue_time_ns,
        inference_time_ns=usage.inference_time_ns,
        tokenization_time_ns=usage.tokenization_time_ns,
    )


def model_proto(host: ModelHost, *, is_default: bool) -> model_service_pb2.Model:
    model = model_service_pb2.Model(
        name=host.name,
        plugin=host.spec.plugin,
        source=host.spec.source,
        state=_STATE_TO_PB[host.state],
        failure_reason=host.failure_reason,
        is_default=is_default,
        load_attempts=host.load_attempts,
    )
    if host.next_attempt_at is not None:
        model.next_attempt_time.FromNanoseconds(int(host.next_attempt_at * 1e9))
    info = host.info
    if info is not None:
        model.devices.extend(info.devices)
        model.dtype = info.dtype
        model.capabilities.extend(sorted(CAPABILITIES[c].proto_value for c in info.capabilities))
        model.hidden_size = info.hidden_size
        model.max_input_tokens = info.max_input_tokens
        model.poolings.extend(_POOLING_TO_PB[p] for p in info.poolings)
        model.default_pooling = _POOLING_TO_PB[info.default_pooling]
        model.labels.extend(info.labels)
    return model
