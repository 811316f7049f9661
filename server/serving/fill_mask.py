"""FillMask: the likeliest tokens at each mask, as transformers' fill-mask pipeline computes them.

Inputs are tokenized once off the loop and go through the model's batcher like any other work;
the plugin returns the masked-language-model logits at the mask positions only, and everything
after (softmax, targets, top-k, decoding) is done here, once for every variant, on the tokenizer
pool. What the pipeline does, this does: the score is the softmax over the whole vocabulary (in
float32), targets only pick columns of it, and each candidate's sequence is the input decoded with
that token in its mask, padding left out, special tokens skipped only when the input has one mask.
"""

from __future__ import annotations

import numpy as np

from bertserve.api import Capability, EncoderPlugin, Head
from bertserve.domain import FillMaskQuery, FillMaskResult, MaskCandidate
from bertserve.errors import CapabilityNotSupported, InvalidRequest
from bertserve.ops import HeadOp
from bertserve.serving.activations import softmax
from bertserve.serving.flow import Flow, Work, check_texts

__all__ = ["FILL_MASK", "PLACEHOLDER"]

#: The mask any caller may write, whatever the model: it becomes the model's own mask token.
PLACEHOLDER = "[MASK]"

# A candidate's share of the reply besides its sequence: token, id, score, framing.
_CANDIDATE_BYTES = 48


async def _fill_mask(work: Work, query: FillMaskQuery) -> FillMaskResult:
    info = work.info
    mask_token, mask_id = info.mask_token, info.mask_token_id
    if mask_token is None or mask_id is None:
        raise CapabilityNotSupported(f"model {work.name!r} cannot serve FillMask: its tokenizer has no mask token")
    check_texts(query.inputs)
    if query.top_k < 1:
        raise InvalidRequest(f"top_k must be at least 1, got {query.top_k}")
    texts = query.inputs if mask_token == PLACEHOLDER else [t.replace(PLACEHOLDER, mask_token) for t in query.inputs]
    plugin = work.plugin

    targets = None
    if query.targets:
        # The pipeline dedupes with a set, whose order is CPython's; first occurrence order is ours.
        targets = list(dict.fromkeys(await work.timed(work.off_loop(plugin.target_ids, query.targets))))
    encodings = await work.tokenize(texts, truncate=query.truncate)

    masks = [e.ids.count(mask_id) for e in encodings]
    for i, (text, encoding, count) in enumerate(zip(texts, encodings, masks, strict=True)):
        # A cut input may have had its masks past the cut: those are not filled (see the contract).
        if count == 0 and not (encoding.truncated and mask_token in text):
            own = "" if mask_token == PLACEHOLDER else f" (or the model's own mask token {mask_token!r})"
            raise InvalidRequest(f"input {i} has no mask: put {PLACEHOLDER}{own} where a token should be predicted")
    top_k = min(query.top_k, len(targets)) if targets is not None else query.top_k
    # Each candidate carries a sequence about as long as its input.
    size = 64 + sum(
        count * top_k * (len(text.encode()) + _CANDIDATE_BYTES) for text, count in zip(texts, masks, strict=True)
    )
    work.check_reply(size, len(texts), f" or lower top_k (now {top_k})")

    masked = [i for i, count in enumerate(masks) if count]
    results = await work.run(HeadOp(Head.MASKED_LM), [encodings[i] for i in masked])
    candidates: list[list[list[MaskCandidate]]] = [[] for _ in encodings]
    for i, result in zip(masked, results, strict=True):
        candidates[i] = await work.off_loop(
            _candidates, plugin, encodings[i].ids, result.value, top_k, targets, mask_id, info.pad_token_id
        )
    return FillMaskResult(model=work.name, results=candidates, usage=work.usage(sum(len(encodings[i]) for i in masked)))


FILL_MASK = Flow(Capability.FILL_MASK, _fill_mask)


def _candidates(
    plugin: EncoderPlugin,
    ids: list[int],
    logits: np.ndarray,
    top_k: int,
    targets: list[int] | None,
    mask_id: int,
    pad_id: int | None,
) -> list[list[MaskCandidate]]:
    """The pipeline's postprocess of one input: logits is [masks, vocabulary], masks in text order."""
    positions = [p for p, id_ in enumerate(ids) if id_ == mask_id]
    assert len(positions) == len(logits), "one row of logits per mask"
    probs = softmax(logits)
    if targets is not None:
        probs = probs[:, targets]
    # Beyond the vocabulary the pipeline fails; bertserve gives the whole vocabulary.
    k = min(top_k, probs.shape[1])
    single = len(positions) == 1  # several masks keep the special tokens, so the others still show
    found = []
    for row, position in zip(probs, positions, strict=True):
        best = []
        for j in _top(row, k):
            token_id = targets[j] if targets is not None else int(j)
            filled = list(ids)
            filled[position] = token_id
            if pad_id is not None:
                filled = [t for t in filled if t != pad_id]
            best.append(
                MaskCandidate(
                    token=plugin.decode([token_id]),
                    token_id=token_id,
                    score=float(row[j]),
                    sequence=plugin.decode(filled, skip_special_tokens=single),
                )
            )
        found.append(best)
    return found


def _top(row: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first; equal values by index."""
    part = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
    return part[np.lexsort((part, -row[part]))]  # type: ignore[no-any-return]
