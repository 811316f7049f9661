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

import numpy as np

from bertserve.api import Capability, Head
from bertserve.domain import RankedDocument, RerankQuery, RerankResult
from bertserve.errors import InvalidRequest
from bertserve.ops import HeadOp
from bertserve.serving.activations import sigmoid
from bertserve.serving.flow import Flow, Work, check_texts

__all__ = ["RERANK"]


async def _rerank(work: Work, query: RerankQuery) -> RerankResult:
    if not query.query or query.query.isspace():
        raise InvalidRequest("query is empty")
    check_texts(query.documents, "document")
    limit = work.info.max_input_tokens
    # Pairs are flagged when cut, or refused naming the document (not InputTooLong's "input").
    encodings = await work.tokenize([query.query] * len(query.documents), pairs=query.documents, truncate=True)
    if not query.truncate:
        for i, encoding in enumerate(encodings):
            if encoding.truncated:
                raise InvalidRequest(
                    f"document {i} and the query make {encoding.full_length} tokens, over the limit of {limit} "
                    f"of model {work.name!r}; shorten it or set truncate"
                )
    # A document sent twice is scored once: less work, and its copies tie exactly, whatever passes
    # the model's workers would have put them in.
    first_of: dict[str, int] = {}
    computed = [i for i, d in enumerate(query.documents) if first_of.setdefault(d, i) == i]
    results = await work.run(HeadOp(Head.SEQUENCE_CLASSIFICATION), [encodings[i] for i in computed])
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
    tokens = sum(len(encodings[i]) for i in computed)
    return RerankResult(model=work.name, documents=documents, ranking=ranking, usage=work.usage(tokens))


RERANK = Flow(Capability.RERANK, _rerank)
