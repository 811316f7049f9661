"""Embed and Tokenize: validate, tokenize once off the loop, batch through the model, pool."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bertserve.api import Capability, Encoding
from bertserve.domain import EmbedQuery, EmbedResult, OffsetUnit, TokenizeQuery, TokenizeResult
from bertserve.errors import CapabilityNotSupported, InvalidRequest
from bertserve.ops import EmbedOp
from bertserve.serving.flow import Flow, Work, check_pairs, check_texts
from bertserve.serving.offsets import OffsetMap

__all__ = ["EMBED", "TOKENIZE"]


async def _tokenize(work: Work, query: TokenizeQuery) -> TokenizeResult:
    info = work.info
    check_texts(query.inputs, blank_allowed=True)  # an empty text tokenizes to its special tokens
    check_pairs(query.inputs, query.pairs, blank_allowed=True)
    max_length = None
    if query.truncate:
        max_length = info.max_input_tokens if query.max_length is None else query.max_length
        if max_length > info.max_input_tokens:
            raise InvalidRequest(
                f"max_length {max_length} is over the limit of {info.max_input_tokens} tokens of model {work.name!r}"
            )
    elif query.max_length is not None:
        raise InvalidRequest("max_length applies only with truncate: set truncate too")
    encodings = await work.host.tokenize(
        query.inputs, pairs=query.pairs, add_special_tokens=query.add_special_tokens, max_length=max_length
    )
    if query.offset_unit is not OffsetUnit.CODE_POINT:
        encodings = await work.off_loop(_in_unit, encodings, query.inputs, query.pairs, query.offset_unit)
    # Every token's text is counted: on the pool, as a large call has millions of them.
    work.check_reply(await work.off_loop(_tokenize_reply_bytes, encodings), len(encodings))
    return TokenizeResult(model=work.name, encodings=encodings)


async def _embed(work: Work, query: EmbedQuery) -> EmbedResult:
    info = work.info
    pooling = query.pooling or info.default_pooling
    if pooling not in info.poolings:
        offered = ", ".join(p.value for p in info.poolings)
        raise CapabilityNotSupported(
            f"model {work.name!r} does not offer {pooling.value} pooling (it has no pooler head); it offers {offered}"
        )
    check_texts(query.inputs)
    encodings = await work.tokenize(query.inputs, truncate=query.truncate)
    vector = 4 * info.hidden_size  # float32
    reply = 64 + len(encodings) * (vector + 8)
    if query.with_token_states:
        reply += sum(len(e) * vector + 24 for e in encodings)
    work.check_reply(reply, len(encodings), " or leave out return_token_embeddings" if query.with_token_states else "")

    results = await work.run(EmbedOp(pooling, query.with_token_states), encodings)
    pooled = np.stack([r.value.pooled for r in results]).astype(np.float32, copy=False)
    if query.normalize:
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    counts = [len(e) for e in encodings]
    return EmbedResult(
        model=work.name,
        pooled=pooled,
        token_states=[t for r in results if (t := r.value.token_states) is not None] or None,
        token_counts=counts,
        truncated_indices=[i for i, e in enumerate(encodings) if e.truncated],
        usage=work.usage(sum(counts)),
    )


TOKENIZE = Flow(Capability.TOKENIZE, _tokenize)
EMBED = Flow(Capability.EMBED, _embed)


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
