"""Embed and Tokenize: validate, tokenize once off the loop, batch through the model, pool."""

from __future__ import annotations

import time

import numpy as np

from bertserve.api import Capability
from bertserve.domain import EmbedQuery, EmbedResult, TokenizeQuery, TokenizeResult, usage_of
from bertserve.errors import CapabilityNotSupported, InputTooLong, InvalidRequest
from bertserve.router import Router

__all__ = ["embed", "tokenize"]


async def tokenize(router: Router, query: TokenizeQuery) -> TokenizeResult:
    host = router.get(query.model)
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
    encodings = await host.off_loop(
        host.plugin.tokenize,
        query.inputs,
        pairs=query.pairs,
        add_special_tokens=query.add_special_tokens,
        max_length=max_length,
    )
    return TokenizeResult(model=host.name, encodings=encodings)


async def embed(router: Router, query: EmbedQuery, *, deadline: float | None) -> EmbedResult:
    host = router.get(query.model)
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
        if not text.strip():
            raise InvalidRequest(f"input {i} is empty")

    limit = info.max_input_tokens
    started = time.monotonic_ns()
    encodings = await host.off_loop(host.plugin.tokenize, query.inputs, max_length=limit if query.truncate else None)
    tokenization_ns = time.monotonic_ns() - started
    for i, encoding in enumerate(encodings):
        if len(encoding) > limit:
            raise InputTooLong(host.name, i, len(encoding), limit)

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
