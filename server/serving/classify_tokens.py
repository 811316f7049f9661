"""ClassifyTokens: named-entity recognition as transformers' token-classification pipeline does it.

The texts go through the model's batcher once; the plugin returns each sequence's per-token
logits, and bertserve.serving.entities turns them into entities once for every variant, off the
event loop. An input over the model's token limit is refused, or cut with truncate: the
pipeline's stride (overlapping chunks of a long text, merged) is not offered, as bertserve's
other single-pass heads do not split texts either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from bertserve.api import Capability, Encoding, Head
from bertserve.domain import ClassifyTokensQuery, ClassifyTokensResult, Entity, OffsetUnit
from bertserve.ops import HeadOp
from bertserve.serving.entities import EntityTraits, entities_of
from bertserve.serving.flow import Flow, Work, check_texts
from bertserve.serving.offsets import OffsetMap

__all__ = ["CLASSIFY_TOKENS"]

# Inputs postprocessed in one job of the shared pool: a large call holds one thread at a time.
_POSTPROCESS_SLICE = 16
# An entity's share of the reply besides its label and word: field tags, lengths, score, offsets, index.
_ENTITY_BYTES = 32


async def _classify_tokens(work: Work, query: ClassifyTokensQuery) -> ClassifyTokensResult:
    check_texts(query.inputs, blank_allowed=True)  # an empty text has no entities, as in the pipeline
    encodings = await work.tokenize(query.inputs, truncate=query.truncate)
    results = await work.run(HeadOp(Head.TOKEN_CLASSIFICATION), encodings)
    info = work.info
    traits = EntityTraits(
        labels=info.labels,
        word_aware=info.word_aware,
        unk_token_id=info.unk_token_id,
        tokens_to_string=work.plugin.tokens_to_string,
    )
    entities: list[list[Entity]] = []
    for start in range(0, len(encodings), _POSTPROCESS_SLICE):
        part = slice(start, start + _POSTPROCESS_SLICE)
        logits = [np.asarray(r.value, dtype=np.float32) for r in results[part]]
        entities += await work.off_loop(_postprocess, query, query.inputs[part], encodings[part], logits, traits)
    # The size is known only once the model has labelled the tokens, unlike Embed's.
    work.check_reply(await work.off_loop(_reply_bytes, entities), len(entities))
    return ClassifyTokensResult(model=work.name, entities=entities, usage=work.usage(sum(len(e) for e in encodings)))


CLASSIFY_TOKENS = Flow(Capability.CLASSIFY_TOKENS, _classify_tokens)


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
