"""Rerank: a cross-encoder scores documents against a query.

Each (query, document) pair is one sequence, tokenized as the model's tokenizer tokenizes a text
pair (the query first), and all of them go through the model's batcher as Classify's sequences
do. A pair over the model's token limit is cut as sentence-transformers' CrossEncoder cuts it
(the tokenizer's "longest_first": tokens come off the longer segment first, so a short query stays
whole) when the request allows it, and is refused otherwise. A document's score is the sigmoid of
its logit (or the logit itself), and the ranking orders the documents by score, ties in request
order.
"""

from __future__ import annotations

import time

import numpy as np

from bertserve.api import Capability
from bertserve.domain import RankedDocument, RerankQuery, RerankResult, usage_of
from bertserve.errors import InvalidRequest
from bertserve.serving.activations import sigmoid
from bertserve.serving.model_host import ModelHost
from bertserve.serving.router import Router

__all__ = ["rerank"]


async def rerank(router: Router, query: RerankQuery, *, deadline: float | None) -> RerankResult:
    with router.use(query.model) as host:
        return await _rerank(host, query, deadline)


async def _rerank(host: ModelHost, query: RerankQuery, deadline: float | None) -> RerankResult:
    info = host.require(Capability.RERANK)
    _validate(query)
    limit = info.max_input_tokens
    started = time.monotonic_ns()
    # Pairs are flagged when cut, or refused naming the document (not InputTooLong's "input").
    encodings = await host.tokenize_inputs([query.query] * len(query.documents), pairs=query.documents, truncate=True)
    tokenization_ns = time.monotonic_ns() - started
    if not query.truncate:
        for i, encoding in enumerate(encodings):
            if encoding.truncated:
                raise InvalidRequest(
                    f"document {i} and the query make {encoding.full_length} tokens, over the limit of {limit} "
                    f"of model {host.name!r}; shorten it or set truncate"
                )
    # A document sent twice is scored once: less work, and its copies tie exactly, whatever passes
    # the model's workers would have put them in.
    first_of: dict[str, int] = {}
    computed = [i for i, d in enumerate(query.documents) if first_of.setdefault(d, i) == i]
    results = await host.run(("classify",), [encodings[i] for i in computed], deadline=deadline)
    logit_of = {i: r.value[0] for i, r in zip(computed, results, strict=True)}
    logits = np.array([logit_of[first_of[d]] for d in query.documents], dtype=np.float32)
    scores = logits if query.raw_scores else sigmoid(logits)
    documents = [
        RankedDocument(
            index=i,
            score=float(scores[i]),
            truncated=encoding.truncated,
            text=query.documents[i] if query.return_documents else "",
        )
        for i, encoding in enumerate(encodings)
    ]
    # Python's sort is stable, also in reverse: equal scores keep request order.
    ranking = sorted(range(len(documents)), key=lambda i: documents[i].score, reverse=True)
    return RerankResult(
        model=host.name,
        documents=documents,
        ranking=ranking,
        usage=usage_of(
            results,
            tokens=sum(len(encodings[i]) for i in computed),
            tokenization_ns=tokenization_ns,
        ),
    )


def _validate(query: RerankQuery) -> None:
    if not query.query or query.query.isspace():
        raise InvalidRequest("query is empty")
    if not query.documents:
        raise InvalidRequest("documents is empty: send at least one document")
    for i, text in enumerate(query.documents):
        if not text or text.isspace():
            raise InvalidRequest(f"document {i} is empty")
