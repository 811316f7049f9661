"""DetectReplacedTokens: ELECTRA's discriminator, the probability that each token was replaced.

Inputs are tokenized once off the loop and go through the model's batcher; the plugin returns the
discriminator's logit of each token, and the probability is its sigmoid. With aggregate_words,
each word (the tokens the tokenizer gives one word id) takes the highest probability of its
tokens, and its text is the input's, from its first token's start to its last token's end.
"""

from __future__ import annotations

import numpy as np

from bertserve.api import Capability, Encoding, Head
from bertserve.domain import OffsetUnit, ReplacedTokens, ReplacedTokensQuery, ReplacedTokensResult, TokenProbability
from bertserve.ops import HeadOp
from bertserve.serving.activations import sigmoid
from bertserve.serving.flow import Flow, Work, check_texts
from bertserve.serving.offsets import OffsetMap

__all__ = ["DETECT_REPLACED_TOKENS"]

# A token's (or word's) share of the reply besides its text: offsets, probability, flag, framing.
_ENTRY_BYTES = 24


async def _detect(work: Work, query: ReplacedTokensQuery) -> ReplacedTokensResult:
    check_texts(query.inputs)
    encodings = await work.tokenize(query.inputs, truncate=query.truncate)
    work.check_reply(await work.off_loop(_reply_bytes, encodings, query.aggregate_words), len(encodings))
    results = await work.run(HeadOp(Head.REPLACED_TOKENS), encodings)
    found = await work.off_loop(
        lambda: [
            _replaced(text, encoding, r.value, aggregate_words=query.aggregate_words, unit=query.offset_unit)
            for text, encoding, r in zip(query.inputs, encodings, results, strict=True)
        ]
    )
    return ReplacedTokensResult(model=work.name, results=found, usage=work.usage(sum(len(e) for e in encodings)))


DETECT_REPLACED_TOKENS = Flow(Capability.DETECT_REPLACED_TOKENS, _detect)


def _replaced(
    text: str, encoding: Encoding, logits: np.ndarray, *, aggregate_words: bool, unit: OffsetUnit
) -> ReplacedTokens:
    probabilities = sigmoid(logits)
    special = [bool(m) for m in encoding.special_tokens_mask]
    spans = [(0, 0) if s else span for span, s in zip(encoding.offsets, special, strict=True)]
    offsets = OffsetMap(text, unit)
    tokens = [
        TokenProbability(text=token, start=start, end=end, probability=float(p), special=s)
        for token, (start, end), p, s in zip(encoding.tokens, offsets.spans(spans), probabilities, special, strict=True)
    ]
    words: list[TokenProbability] = []
    if aggregate_words:
        members: dict[int, list[int]] = {}  # word id -> its tokens, in order
        for k, (word, s) in enumerate(zip(encoding.word_ids, special, strict=True)):
            if word >= 0 and not s:
                members.setdefault(word, []).append(k)
        word_spans = [(spans[ks[0]][0], spans[ks[-1]][1]) for ks in members.values()]
        words = [
            TokenProbability(text=text[start:end], start=s, end=e, probability=float(probabilities[ks].max()))
            for ks, (start, end), (s, e) in zip(members.values(), word_spans, offsets.spans(word_spans), strict=True)
        ]
    return ReplacedTokens(tokens=tokens, words=words)


def _reply_bytes(encodings: list[Encoding], aggregate_words: bool) -> int:
    """About the reply's size: each token's text and fields, and as much again for its words."""
    tokens = sum(_ENTRY_BYTES * len(e) + sum(len(t.encode()) for t in e.tokens) for e in encodings)
    return 64 + (2 * tokens if aggregate_words else tokens)
