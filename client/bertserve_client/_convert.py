"""Between protobuf and plain values: the option names the calls take, and the parsers of replies.

Everything here is pure; the calls that build their requests with these are in _calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from bertserve_client._errors import BertserveError
from bertserve_client._tensor import tensor_to_numpy
from bertserve_client._types import (
    Answer,
    Answers,
    Batch,
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
    Similarities,
    Tokenization,
    TokenProbability,
    Unloaded,
    Usage,
)
from bertserve_client.v1 import common_pb2, encoder_service_pb2, heads_pb2, model_service_pb2

B = TypeVar("B", bound=Batch[Any])
V = TypeVar("V")

# ---------------------------------------------------------------- request values


class _Names(Generic[V]):
    """The wire values of an option's names; called with a name, its value, or ValueError."""

    def __init__(self, values: dict[str | None, V], error: str) -> None:
        self._values = values
        self._error = error  # formatted with the name and the names there are

    def __call__(self, name: str | None) -> V:
        if name not in self._values:
            names = [n for n in self._values if n is not None]
            raise ValueError(self._error.format(name=name, names=names))
        return self._values[name]


pooling_pb = _Names(
    {
        None: common_pb2.POOLING_UNSPECIFIED,
        "cls": common_pb2.POOLING_CLS,
        "mean": common_pb2.POOLING_MEAN,
        "pooler": common_pb2.POOLING_POOLER,
    },
    "unknown pooling {name!r}: expected one of {names} or None",
)
offset_unit_pb = _Names(
    {
        "code_point": common_pb2.OFFSET_UNIT_CODE_POINT,
        "utf16": common_pb2.OFFSET_UNIT_UTF16_CODE_UNIT,
        "utf8": common_pb2.OFFSET_UNIT_UTF8_BYTE,
    },
    "offset_unit must be one of {names}, not {name!r}",
)
classify_function_pb = _Names(
    {
        None: heads_pb2.CLASSIFY_FUNCTION_UNSPECIFIED,
        "none": heads_pb2.CLASSIFY_FUNCTION_NONE,
        "sigmoid": heads_pb2.CLASSIFY_FUNCTION_SIGMOID,
        "softmax": heads_pb2.CLASSIFY_FUNCTION_SOFTMAX,
    },
    "unknown function {name!r}: expected one of {names} or None",
)
aggregation_pb = _Names(
    {
        "none": heads_pb2.AGGREGATION_NONE,
        "simple": heads_pb2.AGGREGATION_SIMPLE,
        "first": heads_pb2.AGGREGATION_FIRST,
        "average": heads_pb2.AGGREGATION_AVERAGE,
        "max": heads_pb2.AGGREGATION_MAX,
    },
    "aggregation must be one of {names}, not {name!r}",
)


def as_list(texts: str | Sequence[str]) -> list[str]:
    # A lone string is a batch of one, not a sequence of characters.
    return [texts] if isinstance(texts, str) else list(texts)


def optional_list(texts: str | Sequence[str] | None) -> list[str]:
    """as_list, with None for none."""
    return [] if texts is None else as_list(texts)


def given(**options: Any) -> dict[str, Any]:
    """The options that are not None: unset optional fields let the server apply its defaults."""
    return {name: value for name, value in options.items() if value is not None}


# ---------------------------------------------------------------- replies


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


def _batch(kind: type[B], results: Iterable[Any], pb: Any) -> B:
    """A reply's per-input results as `kind`, with the reply's model and usage."""
    return kind(results, model=pb.model, usage=_usage(pb.usage))


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


def parse_answer(pb: encoder_service_pb2.AnswerResponse) -> Answers:
    return _batch(Answers, ([Answer(a.text, a.start, a.end, a.score) for a in r.answers] for r in pb.results), pb)


def parse_classify(pb: heads_pb2.ClassifyResponse) -> Classifications:
    labels = ([LabelScore(s.label, s.index, s.score) for s in r.labels] for r in pb.results)
    return _batch(Classifications, labels, pb)


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


def parse_classify_tokens(pb: heads_pb2.ClassifyTokensResponse) -> Entities:
    entities = ([Entity(e.label, e.score, e.word, e.start, e.end, e.index) for e in r.entities] for r in pb.results)
    return _batch(Entities, entities, pb)


def _candidate(pb: heads_pb2.MaskCandidate) -> MaskCandidate:
    return MaskCandidate(token=pb.token, token_id=pb.token_id, score=pb.score, sequence=pb.sequence)


def parse_similarity(pb: heads_pb2.SimilarityResponse) -> Similarities:
    return _batch(Similarities, pb.scores, pb)


def parse_fill_mask(pb: heads_pb2.FillMaskResponse) -> FillMaskResults:
    return _batch(FillMaskResults, ([[_candidate(c) for c in m.candidates] for m in r.masks] for r in pb.results), pb)


def _token_probability(pb: heads_pb2.TokenProbability) -> TokenProbability:
    return TokenProbability(text=pb.text, start=pb.start, end=pb.end, probability=pb.probability, special=pb.special)


def parse_detect_replaced_tokens(pb: heads_pb2.DetectReplacedTokensResponse) -> ReplacedTokensResults:
    results = (
        ReplacedTokens(tokens=list(map(_token_probability, r.tokens)), words=list(map(_token_probability, r.words)))
        for r in pb.results
    )
    return _batch(ReplacedTokensResults, results, pb)


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


def parse_model_reply(
    pb: model_service_pb2.GetModelResponse
    | model_service_pb2.LoadModelResponse
    | model_service_pb2.ReloadModelResponse,
) -> ModelInfo:
    """The model of a GetModel, LoadModel or ReloadModel reply."""
    return parse_model(pb.model)


def parse_unloaded(pb: model_service_pb2.UnloadModelResponse) -> Unloaded:
    return Unloaded(pb.drained_calls, pb.abandoned_calls)
