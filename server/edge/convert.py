"""Protobuf <-> domain conversion, in one place: servicers never touch model code, plugins never see protobuf."""

from __future__ import annotations

from dataclasses import replace

from bertserve.api import Capability, Encoding, Pooling
from bertserve.domain import (
    AnswerQuery,
    AnswerResult,
    EmbedQuery,
    EmbedResult,
    OffsetUnit,
    TokenizeQuery,
    TokenizeResult,
    Usage,
)
from bertserve.errors import InvalidRequest
from bertserve.serving.model_host import ModelHost, ModelState
from bertserve_client._tensor import numpy_to_tensor
from bertserve_client.v1 import common_pb2, encoder_service_pb2, model_service_pb2

__all__ = [
    "answer_query",
    "answer_response",
    "embed_query",
    "embed_response",
    "model_proto",
    "tokenize_query",
    "tokenize_response",
]

_POOLING_FROM_PB = {
    common_pb2.POOLING_UNSPECIFIED: None,
    common_pb2.POOLING_CLS: Pooling.CLS,
    common_pb2.POOLING_MEAN: Pooling.MEAN,
    common_pb2.POOLING_POOLER: Pooling.POOLER,
}
_POOLING_TO_PB = {v: k for k, v in _POOLING_FROM_PB.items() if v is not None}
_CAPABILITY_TO_PB = {
    Capability.TOKENIZE: model_service_pb2.CAPABILITY_TOKENIZE,
    Capability.EMBED: model_service_pb2.CAPABILITY_EMBED,
    Capability.ANSWER: model_service_pb2.CAPABILITY_ANSWER,
    Capability.FILL_MASK: model_service_pb2.CAPABILITY_FILL_MASK,
    Capability.DETECT_REPLACED_TOKENS: model_service_pb2.CAPABILITY_DETECT_REPLACED_TOKENS,
    Capability.CLASSIFY: model_service_pb2.CAPABILITY_CLASSIFY,
    Capability.RERANK: model_service_pb2.CAPABILITY_RERANK,
    Capability.CLASSIFY_TOKENS: model_service_pb2.CAPABILITY_CLASSIFY_TOKENS,
}
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
        model.capabilities.extend(sorted(_CAPABILITY_TO_PB[c] for c in info.capabilities))
        model.hidden_size = info.hidden_size
        model.max_input_tokens = info.max_input_tokens
        model.poolings.extend(_POOLING_TO_PB[p] for p in info.poolings)
        model.default_pooling = _POOLING_TO_PB[info.default_pooling]
        model.labels.extend(info.labels)
    return model
