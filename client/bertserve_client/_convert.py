"""Request builders and response parsers shared by Client and AsyncClient.

Everything here is pure: the clients differ only in how they call a stub.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import grpc
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from bertserve_client._errors import BertserveError
from bertserve_client._tensor import tensor_to_numpy
from bertserve_client._types import (
    Answer,
    Answers,
    Classifications,
    EmbedResult,
    Entities,
    Entity,
    FillMaskResults,
    LabelScore,
    MaskCandidate,
    ModelInfo,
    RankedDocument,
    ReplacedTokens,
    ReplacedTokensResults,
    RerankResult,
    Tokenization,
    TokenProbability,
    Usage,
)
from bertserve_client.v1 import common_pb2, encoder_service_pb2, heads_pb2, model_service_pb2

_POOLINGS = {
    "cls": common_pb2.POOLING_CLS,
    "mean": common_pb2.POOLING_MEAN,
    "pooler": common_pb2.POOLING_POOLER,
}


def _as_list(texts: str | Sequence[str]) -> list[str]:
    # A lone string is a batch of one, not a sequence of characters.
    return [texts] if isinstance(texts, str) else list(texts)


def _short_name(enum: EnumTypeWrapper, value: int, prefix: str) -> str:
    """POOLING_MEAN -> "mean"; a value newer than these stubs comes out as its number."""
    try:
        return enum.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def _usage(pb: common_pb2.Usage) -> Usage:
    return Usage(
        tokens=pb.tokens,
        queue_time_ns=pb.queue_time_ns,
        inference_time_ns=pb.inference_time_ns,
        tokenization_time_ns=pb.tokenization_time_ns,
    )


def embed_request(
    inputs: str | Sequence[str],
    *,
    model: str,
    pooling: str | None,
    normalize: bool,
    truncate: bool,
    return_token_embeddings: bool,
) -> encoder_service_pb2.EmbedRequest:
    if pooling is None:
        pooling_pb = common_pb2.POOLING_UNSPECIFIED
    elif pooling in _POOLINGS:
        pooling_pb = _POOLINGS[pooling]
    else:
        raise ValueError(f"unknown pooling {pooling!r}: expected one of {sorted(_POOLINGS)} or None")
    return encoder_service_pb2.EmbedRequest(
        model=model,
        inputs=_as_list(inputs),
        pooling=pooling_pb,
        normalize=normalize,
        truncate=truncate,
        return_token_embeddings=return_token_embeddings,
    )


def parse_embed(pb: encoder_service_pb2.EmbedResponse) -> EmbedResult:
    return EmbedResult(
        model=pb.model,
        embeddings=tensor_to_numpy(pb.embeddings),
        # The server sends token states only when asked, and then one per input (at least one).
        token_embeddings=[tensor_to_numpy(t) for t in pb.token_embeddings] or None,
        token_counts=list(pb.token_counts),
        truncated_indices=list(pb.truncated_indices),
        usage=_usage(pb.usage),
    )


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


def parse_stream_item(pb: encoder_service_pb2.EmbedStreamResponse) -> EmbedResult | BertserveError:
    """One stream item: its embeddings, or the error that the same unary Embed would have raised."""
    if pb.HasField("error"):
        return BertserveError(_STATUS_CODES.get(pb.error.code, grpc.StatusCode.UNKNOWN), pb.error.message)
    return parse_embed(pb.response)


def tokenize_request(
    inputs: str | Sequence[str],
    *,
    pairs: str | Sequence[str] | None,
    model: str,
    add_special_tokens: bool,
    truncate: bool = False,
    max_length: int | None = None,
    offset_unit: str = "code_point",
) -> encoder_service_pb2.TokenizeRequest:
    request = encoder_service_pb2.TokenizeRequest(
        model=model,
        inputs=_as_list(inputs),
        pairs=_as_list(pairs) if pairs is not None else [],
        add_special_tokens=add_special_tokens,
        truncate=truncate,
        offset_unit=_offset_unit(offset_unit),
    )
    if max_length is not None:
        request.max_length = max_length
    return request


def parse_tokenize(pb: encoder_service_pb2.TokenizeResponse) -> list[Tokenization]:
    truncated = set(pb.truncated_indices)
    return [
        Tokenization(
            tokens=list(t.tokens),
            ids=list(t.ids),
            token_type_ids=list(t.token_type_ids),
            attention_mask=list(t.attention_mask),
            special_tokens_mask=list(t.special_tokens_mask),
            offsets=[(span.start, span.end) for span in t.offsets],
            sequence_ids=list(t.sequence_ids),
            truncated=i in truncated,
        )
        for i, t in enumerate(pb.tokenizations)
    ]


def answer_request(
    questions: Sequence[tuple[str, str]] | tuple[str, str],
    *,
    model: str,
    top_k: int | None,
    doc_stride: int | None,
    max_seq_len: int | None,
    max_question_len: int | None,
    max_answer_len: int | None,
    handle_impossible_answer: bool | None,
    align_to_words: bool | None,
    merge_same_text: bool | None = None,
    offset_unit: str = "code_point",
) -> encoder_service_pb2.AnswerRequest:
    # A lone (question, context) pair is a batch of one.
    pairs = cast(Sequence[tuple[str, str]], [questions] if questions and isinstance(questions[0], str) else questions)
    # Unset optional fields let the server apply its documented defaults.
    options: dict[str, Any] = {
        "top_k": top_k,
        "doc_stride": doc_stride,
        "max_seq_len": max_seq_len,
        "max_question_len": max_question_len,
        "max_answer_len": max_answer_len,
        "handle_impossible_answer": handle_impossible_answer,
        "align_to_words": align_to_words,
        "merge_same_text": merge_same_text,
    }
    return encoder_service_pb2.AnswerRequest(
        model=model,
        questions=[encoder_service_pb2.Question(question=q, context=c) for q, c in pairs],
        offset_unit=_offset_unit(offset_unit),
        **{name: value for name, value in options.items() if value is not None},
    )


_OFFSET_UNITS = {
    "code_point": common_pb2.OFFSET_UNIT_CODE_POINT,
    "utf16": common_pb2.OFFSET_UNIT_UTF16_CODE_UNIT,
    "utf8": common_pb2.OFFSET_UNIT_UTF8_BYTE,
}


def _offset_unit(name: str) -> common_pb2.OffsetUnit:
    try:
        return _OFFSET_UNITS[name]
    except KeyError:
        raise ValueError(f"offset_unit must be one of {sorted(_OFFSET_UNITS)}, not {name!r}") from None


def parse_answer(pb: encoder_service_pb2.AnswerResponse) -> Answers:
    return Answers(
        [[Answer(text=a.text, start=a.start, end=a.end, score=a.score) for a in r.answers] for r in pb.results],
        model=pb.model,
        usage=_usage(pb.usage),
    )


_CLASSIFY_FUNCTIONS = {
    None: heads_pb2.CLASSIFY_FUNCTION_UNSPECIFIED,
    "softmax": heads_pb2.CLASSIFY_FUNCTION_SOFTMAX,
    "sigmoid": heads_pb2.CLASSIFY_FUNCTION_SIGMOID,
    "none": heads_pb2.CLASSIFY_FUNCTION_NONE,
}


def classify_request(
    inputs: str | Sequence[str],
    *,
    pairs: str | Sequence[str] | None,
    model: str,
    top_k: int | None,
    function: str | None,
    truncate: bool,
) -> heads_pb2.ClassifyRequest:
    if function not in _CLASSIFY_FUNCTIONS:
        names = sorted(f for f in _CLASSIFY_FUNCTIONS if f is not None)
        raise ValueError(f"unknown function {function!r}: expected one of {names} or None")
    request = heads_pb2.ClassifyRequest(
        model=model,
        inputs=_as_list(inputs),
        pairs=_as_list(pairs) if pairs is not None else [],
        function=_CLASSIFY_FUNCTIONS[function],
        truncate=truncate,
    )
    if top_k is not None:
        request.top_k = top_k
    return request


def parse_classify(pb: heads_pb2.ClassifyResponse) -> Classifications:
    return Classifications(
        [[LabelScore(label=s.label, index=s.index, score=s.score) for s in r.labels] for r in pb.results],
        model=pb.model,
        usage=_usage(pb.usage),
    )


def rerank_request(
    query: str,
    documents: str | Sequence[str],
    *,
    model: str,
    truncate: bool,
    return_documents: bool,
    raw_scores: bool,
) -> heads_pb2.RerankRequest:
    return heads_pb2.RerankRequest(
        model=model,
        query=query,
        documents=_as_list(documents),
        truncate=truncate,
        return_documents=return_documents,
        raw_scores=raw_scores,
    )


def parse_rerank(pb: heads_pb2.RerankResponse) -> RerankResult:
    return RerankResult(
        model=pb.model,
        # Documents are never empty: an empty text means the server did not send it back.
        documents=[
            RankedDocument(index=d.index, score=d.score, truncated=d.truncated, text=d.text or None)
            for d in pb.documents
        ],
        ranking=list(pb.ranking),
        usage=_usage(pb.usage),
    )


_AGGREGATIONS = {
    "none": heads_pb2.AGGREGATION_NONE,
    "simple": heads_pb2.AGGREGATION_SIMPLE,
    "first": heads_pb2.AGGREGATION_FIRST,
    "average": heads_pb2.AGGREGATION_AVERAGE,
    "max": heads_pb2.AGGREGATION_MAX,
}


def classify_tokens_request(
    inputs: str | Sequence[str],
    *,
    model: str,
    aggregation: str,
    ignore_labels: Sequence[str] | None,
    offset_unit: str,
    truncate: bool,
) -> heads_pb2.ClassifyTokensRequest:
    if aggregation not in _AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {list(_AGGREGATIONS)}, not {aggregation!r}")
    if isinstance(ignore_labels, str):
        raise ValueError("ignore_labels is a list of labels, not one string")
    # The wire's empty ignore_labels means ["O"]: keeping every label has a flag of its own.
    return heads_pb2.ClassifyTokensRequest(
        model=model,
        inputs=_as_list(inputs),
        aggregation=_AGGREGATIONS[aggregation],
        ignore_labels=list(ignore_labels or ()),
        keep_all_labels=ignore_labels is not None and not ignore_labels,
        offset_unit=_offset_unit(offset_unit),
        truncate=truncate,
    )


def parse_classify_tokens(pb: heads_pb2.ClassifyTokensResponse) -> Entities:
    return Entities(
        [[Entity(e.label, e.score, e.word, e.start, e.end, e.index) for e in r.entities] for r in pb.results],
        model=pb.model,
        usage=_usage(pb.usage),
    )


def fill_mask_request(
    inputs: str | Sequence[str],
    *,
    model: str,
    top_k: int | None,
    targets: str | Sequence[str] | None,
    truncate: bool,
) -> heads_pb2.FillMaskRequest:
    target_list = _as_list(targets) if targets is not None else []
    if targets is not None and not target_list:
        # On the wire no targets means the whole vocabulary: an empty list is surely not meant so.
        raise ValueError("targets is empty: pass None to take candidates from the whole vocabulary")
    request = heads_pb2.FillMaskRequest(model=model, inputs=_as_list(inputs), targets=target_list, truncate=truncate)
    if top_k is not None:
        request.top_k = top_k
    return request


def _candidate(pb: heads_pb2.MaskCandidate) -> MaskCandidate:
    return MaskCandidate(token=pb.token, token_id=pb.token_id, score=pb.score, sequence=pb.sequence)


def parse_fill_mask(pb: heads_pb2.FillMaskResponse) -> FillMaskResults:
    return FillMaskResults(
        [[[_candidate(c) for c in m.candidates] for m in r.masks] for r in pb.results],
        model=pb.model,
        usage=_usage(pb.usage),
    )


def detect_replaced_tokens_request(
    inputs: str | Sequence[str], *, model: str, aggregate_words: bool, offset_unit: str, truncate: bool
) -> heads_pb2.DetectReplacedTokensRequest:
    return heads_pb2.DetectReplacedTokensRequest(
        model=model,
        inputs=_as_list(inputs),
        aggregate_words=aggregate_words,
        offset_unit=_offset_unit(offset_unit),
        truncate=truncate,
    )


def _token_probability(pb: heads_pb2.TokenProbability) -> TokenProbability:
    return TokenProbability(text=pb.text, start=pb.start, end=pb.end, probability=pb.probability, special=pb.special)


def parse_detect_replaced_tokens(pb: heads_pb2.DetectReplacedTokensResponse) -> ReplacedTokensResults:
    return ReplacedTokensResults(
        [
            ReplacedTokens(tokens=list(map(_token_probability, r.tokens)), words=list(map(_token_probability, r.words)))
            for r in pb.results
        ],
        model=pb.model,
        usage=_usage(pb.usage),
    )


def parse_model(pb: model_service_pb2.Model) -> ModelInfo:
    return ModelInfo(
        name=pb.name,
        plugin=pb.plugin,
        source=pb.source,
        devices=list(pb.devices),
        dtype=pb.dtype,
        capabilities=[_short_name(model_service_pb2.Capability, c, "CAPABILITY_") for c in pb.capabilities],
        hidden_size=pb.hidden_size,
        max_input_tokens=pb.max_input_tokens,
        state=_short_name(model_service_pb2.ModelState, pb.state, "MODEL_STATE_"),
        failure_reason=pb.failure_reason,
        poolings=[_short_name(common_pb2.Pooling, p, "POOLING_") for p in pb.poolings],
        default_pooling=_short_name(common_pb2.Pooling, pb.default_pooling, "POOLING_"),
        is_default=pb.is_default,
        load_attempts=pb.load_attempts,
        next_attempt_at=pb.next_attempt_time.ToNanoseconds() / 1e9 if pb.HasField("next_attempt_time") else None,
        labels=list(pb.labels),
    )


def parse_models(pb: model_service_pb2.ListModelsResponse) -> list[ModelInfo]:
    return [parse_model(m) for m in pb.models]
