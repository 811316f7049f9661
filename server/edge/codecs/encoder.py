"""The codecs of Embed, Tokenize and Answer: each request decoded into its query, each result encoded as its reply."""

from __future__ import annotations

from dataclasses import replace

from bertserve.api import Encoding
from bertserve.domain import (
    AnswerQuery,
    AnswerResult,
    EmbedQuery,
    EmbedResult,
    TokenizeQuery,
    TokenizeResult,
)
from bertserve.edge.codecs.codec import Codec
from bertserve.edge.codecs.common import POOLING_FROM_PB, numpy_to_tensor, offset_unit, usage_proto
from bertserve.errors import InvalidRequest
from bertserve_client.v1 import encoder_service_pb2


def embed_query(request: encoder_service_pb2.EmbedRequest) -> EmbedQuery:
    if request.pooling not in POOLING_FROM_PB:
        raise InvalidRequest(f"pooling {request.pooling} is not a known Pooling value")
    return EmbedQuery(
        model=request.model,
        inputs=list(request.inputs),
        pooling=POOLING_FROM_PB[request.pooling],
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
    tokenization = encoder_service_pb2.Tokenization(
        tokens=encoding.tokens,
        ids=encoding.ids,
        token_type_ids=encoding.type_ids,
        attention_mask=[1] * len(encoding),
        special_tokens_mask=encoding.special_tokens_mask,
        sequence_ids=encoding.sequence_ids,
    )
    # A Span added at a time: faster than making each and copying the list in, and, for a large
    # reply built on a thread, a C call per span, between which the event loop takes its turns (one
    # copy of millions of spans held the interpreter lock for seconds).
    add = tokenization.offsets.add
    for start, end in encoding.offsets:
        add(start=start, end=end)
    return tokenization


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


EMBED = Codec(embed_query, embed_response)
TOKENIZE = Codec(tokenize_query, tokenize_response, lambda result: sum(map(len, result.encodings)))
ANSWER = Codec(answer_query, answer_response)
