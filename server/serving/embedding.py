"""Embed and Tokenize: validate, tokenize once off the loop, batch through the model, pool."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from bertserve.api import Capability, Encoding
from bertserve.domain import EmbedQuery, EmbedResult, OffsetUnit, TokenizeQuery, TokenizeResult, usage_of
from bertserve.errors import CapabilityNotSupported, InvalidRequest
from bertserve.serving.model_host import ModelHost
from bertserve.serving.offsets import OffsetMap
from bertserve.serving.replies import check_reply_size
from bertserve.serving.router import Router

__all__ = ["embed", "tokenize"]


async def tokenize(router: Router, query: TokenizeQuery, *, max_reply_bytes: int = 1 << 62) -> TokenizeResult:
    with router.use(query.model) as host:
        return await _tokenize(host, query, max_reply_bytes)


async def _tokenize(host: ModelHost, query: TokenizeQuery, max_reply_bytes: int) -> TokenizeResult:
    info = host.require(Capability.TOKENIZE)
    if not query.inputs:
        raise InvalidRequest("inputs is empty: send at least one text")
    if query.pairs is not None and len(query.pairs) != len(query.inputs):
        raise InvalidRequest(
            f"pairs has {len(query.pairs)} entries for {len(query.inputs)} inputs: send none or one per input"
        )
    max_length = None
    if query.truncate:
        max_length = info.max_input_tokens if query.max_length is None else query.max_length
        if max_length > info.max_input_tokens:
            raise InvalidRequest(
                f"max_length {max_length} is over the limit of {info.max_input_tokens} tokens of model {host.name!r}"
            )
    elif query.max_length is not None:
        raise InvalidRequest("max_length applies only with truncate: set truncate too")
    encodings = await host.tokenize(
        query.inputs, pairs=query.pairs, add_special_tokens=query.add_special_tokens, max_length=max_length
    )
    if query.offset_unit is not OffsetUnit.CODE_POINT:
        encodings = await host.off_loop(_in_unit, encodings, query.inputs, query.pairs, query.offset_unit)
    # Every token's text is counted: on the pool, as a large call has millions of them.
    check_reply_size(await host.off_loop(_tokenize_reply_bytes, encodings), max_reply_bytes, len(encodings))
    return TokenizeResult(model=host.name, encodings=encodings)


async def embed(
    router: Router, query: EmbedQuery, *, deadline: float | None, max_reply_bytes: int = 1 << 62
) -> EmbedResult:
    with router.use(query.model) as host:
        return await _embed(host, query, deadline, max_reply_bytes)


async def _embed(host: ModelHost, query: EmbedQuery, deadline: float | None, max_reply_bytes: int) -> EmbedResult:
    info = host.require(Capability.EMBED)
    pooling = query.pooling or info.default_pooling
    if pooling not in info.poolings:
        offered = ", ".join(p.value for p in info.poolings)
        raise CapabilityNotSupported(
            f"model {host.name!r} does not offer {pooling.value} pooling (it has no pooler head); it offers {offered}"
        )
    if not query.inputs:
        raise InvalidRequest("inputs is empty: send at least one text")
    for i, text in enumerate(query.inputs):
        if not text or text.isspace():  # (strip() would copy a megabyte input to learn this)
            raise InvalidRequest(f"input {i} is empty")

    started = time.monotonic_ns()
    encodings = await host.tokenize_inputs(query.inputs, truncate=query.truncate)
    tokenization_ns = time.monotonic_ns() - started
    vector = 4 * info.hidden_size  # float32
    reply = 64 + len(encodings) * (vector + 8)
    if query.with_token_states:
        reply += sum(len(e) * vector + 24 for e in encodings)
    or_else = " or leave out return_token_embeddings" if query.with_token_states else ""
    check_reply_size(reply, max_reply_bytes, len(encodings), or_else)

    results = await host.run(("embed", pooling, query.with_token_states), encodings, deadline=deadline)
    pooled = np.stack([r.value[0] for r in results]).astype(np.float32, copy=False)
    if query.normalize:
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    counts = [len(e) for e in encodings]
    return EmbedResult(
        model=host.name,
        pooled=pooled,
        token_states=[r.value[1] for r in results] if query.with_token_states else None,
        token_counts=counts,
        truncated_indices=[i for i, e in enumerate(encodings) if e.truncated],
        usage=usage_of(results, tokens=sum(counts), tokenization_ns=tokenization_ns),
    )


def _in_unit(encodings: list[Encoding], inputs: list[str], pairs: list[str] | None, unit: OffsetUnit) -> list[Encoding]:
    """The encodings with each token's offsets counted in unit, in its own segment's text."""
    converted = []
    for i, encoding in enumerate(encodings):
        maps = [OffsetMap(inputs[i], unit), OffsetMap(pairs[i], unit) if pairs is not None else None]
        offsets = [
            span if segment < 0 else maps[segment].spans([span])[0]  # type: ignore[union-attr]
            for span, segment in zip(encoding.offsets, encoding.sequence_ids, strict=True)
        ]
        converted.append(replace(encoding, offsets=offsets))
    return converted


# A token's share of a Tokenize reply besides its text: id, segment, masks, offsets, sequence id.
_TOKEN_BYTES = 16


def _tokenize_reply_bytes(encodings: list[Encoding]) -> int:
    return 64 + sum(_TOKEN_BYTES * len(e) + sum(len(t.encode()) for t in e.tokens) for e in encodings)
