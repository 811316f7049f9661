"""ClassifyTokens: named-entity recognition as transformers' token-classification pipeline does it.

The texts go through the model's batcher once; the plugin returns each sequence's per-token
logits, and bertserve.serving.entities turns them into entities once for every variant, off the
event loop. An input over the model's token limit is refused, or cut with truncate: the
pipeline's stride (overlapping chunks of a long text, merged) is not offered, as bertserve's
other single-pass heads do not split texts either.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from bertserve.api import Capability, Encoding
from bertserve.domain import ClassifyTokensQuery, ClassifyTokensResult, Entity, OffsetUnit, usage_of
from bertserve.errors import InvalidRequest
from bertserve.serving.entities import EntityTraits, entities_of
from bertserve.serving.model_host import ModelHost
from bertserve.serving.offsets import OffsetMap
from bertserve.serving.replies import check_reply_size
from bertserve.serving.router import Router

__all__ = ["classify_tokens"]

# Inputs postprocessed in one job of the shared pool: a large call holds one thread at a time.
_POSTPROCESS_SLICE = 16
# An entity's share of the reply besides its label and word: field tags, lengths, score, offsets, index.
_ENTITY_BYTES = 32


async def classify_tokens(
    router: Router, query: ClassifyTokensQuery, *, deadline: float | None, max_reply_bytes: int = 1 << 62
) -> ClassifyTokensResult:
    with router.use(query.model) as host:
        return await _classify_tokens(host, query, deadline, max_reply_bytes)


async def _classify_tokens(
    host: ModelHost, query: ClassifyTokensQuery, deadline: float | None, max_reply_bytes: int
) -> ClassifyTokensResult:
    info = host.require(Capability.CLASSIFY_TOKENS)
    if not query.inputs:
        raise InvalidRequest("inputs is empty: send at least one text")
    # (An empty text is no error: it has no entities, as in the pipeline.)
    started = time.monotonic_ns()
    encodings = await host.tokenize_inputs(query.inputs, truncate=query.truncate)
    tokenization_ns = time.monotonic_ns() - started

    results = await host.run(("classify_tokens",), encodings, deadline=deadline)
    traits = EntityTraits(
        labels=info.labels,
        word_aware=info.word_aware,
        unk_token_id=info.unk_token_id,
        tokens_to_string=host.plugin.tokens_to_string,
    )
    entities: list[list[Entity]] = []
    for start in range(0, len(encodings), _POSTPROCESS_SLICE):
        part = slice(start, start + _POSTPROCESS_SLICE)
        logits = [np.asarray(r.value, dtype=np.float32) for r in results[part]]
        entities += await host.off_loop(_postprocess, query, query.inputs[part], encodings[part], logits, traits)
    # The size is known only once the model has labelled the tokens, unlike Embed's.
    check_reply_size(await host.off_loop(_reply_bytes, entities), max_reply_bytes, len(entities))
    return ClassifyTokensResult(
        model=host.name,
        entities=entities,
        usage=usage_of(results, tokens=sum(len(e) for e in encodings), tokenization_ns=tokenization_ns),
    )


def _postprocess(
    query: ClassifyTokensQuery,
    texts: Sequence[str],
    encodings: Sequence[Encoding],
    logits: Sequence[np.ndarray],
    traits: EntityTraits,
) -> list[list[Entity]]:
    """The entities of some inputs, offsets in the query's unit."""
    ignore = frozenset(query.ignore_labels)
    out = []
    for text, encoding, token_logits in zip(texts, encodings, logits, strict=True):
        found = entities_of(text, encoding, token_logits, traits, query.aggregation, ignore)
        if query.offset_unit is not OffsetUnit.CODE_POINT and found:
            spans = OffsetMap(text, query.offset_unit).spans([(e.start, e.end) for e in found])
            found = [replace(e, start=s, end=t) for e, (s, t) in zip(found, spans, strict=True)]
        out.append(found)
    return out


def _reply_bytes(entities: list[list[Entity]]) -> int:
    return 64 + sum(_ENTITY_BYTES + len(e.label.encode()) + len(e.word.encode()) for found in entities for e in found)


def _check_reply(size: int, limit: int, inputs: int) -> None:
    """Refuse a reply over the send limit with a clear message rather than fail to send it (its
    size is known only once the model has labelled the tokens, unlike Embed's)."""
    if size > limit:
        fit = max(1, inputs * limit // size)
        raise InvalidRequest(
            f"the reply would hold about {size} bytes, over the server's limit of {limit} bytes per reply "
            f"(max_send_message_bytes); send at most {fit} inputs per call"
        )
