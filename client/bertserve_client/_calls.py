"""Every unary call of the clients, defined once.

Each function here has the signature and the docstring of a client method, builds the request
from its arguments and returns a `Call`: which stub method to call, with what request, how to
parse the reply and under which deadline. `Client` runs a Call with a blocking stub call and
`AsyncClient` awaits it (see _client), so the two cannot drift apart. Everything here is pure.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeAlias, TypeVar, cast

from google.protobuf.message import Message

from bertserve_client._convert import (
    aggregation_pb,
    as_list,
    classify_function_pb,
    given,
    offset_unit_pb,
    optional_list,
    parse_answer,
    parse_classify,
    parse_classify_tokens,
    parse_detect_replaced_tokens,
    parse_embed,
    parse_fill_mask,
    parse_model_reply,
    parse_models,
    parse_rerank,
    parse_similarity,
    parse_tokenize,
    parse_unloaded,
    pooling_pb,
)
from bertserve_client._types import (
    Answers,
    Classifications,
    EmbedResult,
    Entities,
    FillMaskResults,
    ModelInfo,
    ReplacedTokensResults,
    RerankResult,
    Similarities,
    Tokenization,
    Unloaded,
)
from bertserve_client.v1 import encoder_service_pb2, heads_pb2, model_service_pb2

T = TypeVar("T")


class _Default(enum.Enum):
    TIMEOUT = enum.auto()


# Per-call `timeout`: seconds, None for no deadline, or left out for the client's default.
Timeout: TypeAlias = float | Literal[_Default.TIMEOUT] | None
DEFAULT = _Default.TIMEOUT

#: A model entry of the configuration file, as a mapping or as YAML/JSON text.
ModelEntry: TypeAlias = Mapping[str, Any] | str
#: What offsets count: code points (Python's str indices), UTF-16 code units or UTF-8 bytes.
OffsetUnitName: TypeAlias = Literal["code_point", "utf16", "utf8"]
#: How ClassifyTokens merges tokens into entities (the pipeline's aggregation_strategy).
AggregationName: TypeAlias = Literal["none", "simple", "first", "average", "max"]
#: How Classify turns logits into scores.
ClassifyFunctionName: TypeAlias = Literal["softmax", "sigmoid", "none"]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One unary call, ready to run on either kind of channel."""

    method: str
    """The stub method: the RPC's name, such as "Embed"."""
    request: Message
    parse: Callable[[Any], T]
    """Turns the reply into what the client method returns."""
    timeout: Timeout


def embed(
    inputs: str | Sequence[str],
    *,
    model: str = "",
    pooling: str | None = None,
    normalize: bool = False,
    truncate: bool = False,
    return_token_embeddings: bool = False,
    timeout: Timeout = DEFAULT,
) -> Call[EmbedResult]:
    """One vector per input (a lone string is a batch of one).

    `pooling` is "cls", "mean", "pooler" or None for the model's default; `truncate` cuts
    over-long inputs instead of failing; `model` "" is the server's default model.
    """
    pooling_value = pooling_pb(pooling)
    request = encoder_service_pb2.EmbedRequest(
        model=model,
        inputs=as_list(inputs),
        pooling=pooling_value,
        normalize=normalize,
        truncate=truncate,
        return_token_embeddings=return_token_embeddings,
    )
    return Call("Embed", request, parse_embed, timeout)


def stream_request(
    item: str | Sequence[str], *, model: str, pooling: str | None, normalize: bool, truncate: bool
) -> encoder_service_pb2.EmbedStreamRequest:
    """One item of an EmbedStream call: the Embed request of a text or a batch of texts."""
    call = embed(item, model=model, pooling=pooling, normalize=normalize, truncate=truncate)
    return encoder_service_pb2.EmbedStreamRequest(request=call.request)


def tokenize(
    inputs: str | Sequence[str],
    *,
    pairs: str | Sequence[str] | None = None,
    model: str = "",
    add_special_tokens: bool = True,
    truncate: bool = False,
    max_length: int | None = None,
    offset_unit: OffsetUnitName = "code_point",
    timeout: Timeout = DEFAULT,
) -> Call[list[Tokenization]]:
    """The model's tokenization of each input, with its pair (one per input) when given.

    `truncate` cuts each input (and its pair) to `max_length` tokens, or to the model's limit
    when `max_length` is None, as the model's tokenizer truncates. Offsets count
    `offset_unit`: code points (Python's str indices), or "utf16" / "utf8" for text that
    another language will slice.
    """
    request = encoder_service_pb2.TokenizeRequest(
        model=model,
        inputs=as_list(inputs),
        pairs=optional_list(pairs),
        add_special_tokens=add_special_tokens,
        truncate=truncate,
        offset_unit=offset_unit_pb(offset_unit),
        **given(max_length=max_length),
    )
    return Call("Tokenize", request, parse_tokenize, timeout)


def answer(
    questions: Sequence[tuple[str, str]] | tuple[str, str],
    *,
    model: str = "",
    top_k: int | None = None,
    doc_stride: int | None = None,
    max_seq_len: int | None = None,
    max_question_len: int | None = None,
    max_answer_len: int | None = None,
    handle_impossible_answer: bool | None = None,
    align_to_words: bool | None = None,
    merge_same_text: bool | None = None,
    offset_unit: OffsetUnitName = "code_point",
    timeout: Timeout = DEFAULT,
) -> Call[Answers]:
    """The best answers (top_k, best first) for each (question, context) pair.

    A lone pair is a batch of one. Options left None take the server's defaults. With
    `merge_same_text` (the default) answers whose text is equal ignoring case add up their
    scores, as transformers' pipeline does from 4.53 on; False gives each distinct span once.
    The result is a list of lists that also carries `.model` and `.usage`. Start and end
    count `offset_unit`, as in tokenize.
    """
    # A lone (question, context) pair is a batch of one.
    pairs = cast(Sequence[tuple[str, str]], [questions] if questions and isinstance(questions[0], str) else questions)
    request = encoder_service_pb2.AnswerRequest(
        model=model,
        questions=[encoder_service_pb2.Question(question=q, context=c) for q, c in pairs],
        offset_unit=offset_unit_pb(offset_unit),
        **given(
            top_k=top_k,
            doc_stride=doc_stride,
            max_seq_len=max_seq_len,
            max_question_len=max_question_len,
            max_answer_len=max_answer_len,
            handle_impossible_answer=handle_impossible_answer,
            align_to_words=align_to_words,
            merge_same_text=merge_same_text,
        ),
    )
    return Call("Answer", request, parse_answer, timeout)


def classify(
    inputs: str | Sequence[str],
    *,
    pairs: str | Sequence[str] | None = None,
    model: str = "",
    top_k: int | None = None,
    function: ClassifyFunctionName | None = None,
    truncate: bool = False,
    timeout: Timeout = DEFAULT,
) -> Call[Classifications]:
    """The labels of each input (with its pair, one per input, as a second segment), best first.

    `top_k` labels per input: None for the server's default (1), 0 for all of them.
    `function` turns logits into scores: "softmax", "sigmoid", "none", or None for the
    checkpoint's own (sigmoid for multi-label or one-label heads, softmax for single-label
    ones, none for regression, as transformers' text-classification pipeline decides).
    """
    function_pb = classify_function_pb(function)
    request = heads_pb2.ClassifyRequest(
        model=model,
        inputs=as_list(inputs),
        pairs=optional_list(pairs),
        function=function_pb,
        truncate=truncate,
        **given(top_k=top_k),
    )
    return Call("Classify", request, parse_classify, timeout)


def rerank(
    query: str,
    documents: str | Sequence[str],
    *,
    model: str = "",
    truncate: bool = False,
    return_documents: bool = False,
    raw_scores: bool = False,
    timeout: Timeout = DEFAULT,
) -> Call[RerankResult]:
    """Score each document against the query with a cross-encoder.

    The result holds the documents in request order (with their index, score and whether
    their pair with the query was cut) and `ranking`, their indices best first. Scores are
    the sigmoid of the model's logit, or the logit with `raw_scores`. `truncate` cuts a pair
    over the model's limit instead of refusing the call.
    """
    request = heads_pb2.RerankRequest(
        model=model,
        query=query,
        documents=as_list(documents),
        truncate=truncate,
        return_documents=return_documents,
        raw_scores=raw_scores,
    )
    return Call("Rerank", request, parse_rerank, timeout)


def similarity(
    source_sentence: str,
    sentences: str | Sequence[str],
    *,
    model: str = "",
    truncate: bool = False,
    timeout: Timeout = DEFAULT,
) -> Call[Similarities]:
    """Score each sentence against the source sentence: the cosine similarity of their embeddings
    (any embedding model, pooled as the model pools by default), one float per sentence in
    request order. `truncate` cuts a sentence over the model's limit instead of refusing the call.
    """
    request = heads_pb2.SimilarityRequest(
        model=model, source_sentence=source_sentence, sentences=as_list(sentences), truncate=truncate
    )
    return Call("Similarity", request, parse_similarity, timeout)


def classify_tokens(
    inputs: str | Sequence[str],
    *,
    model: str = "",
    aggregation: AggregationName = "none",
    ignore_labels: Sequence[str] | None = None,
    offset_unit: OffsetUnitName = "code_point",
    truncate: bool = False,
    timeout: Timeout = DEFAULT,
) -> Call[Entities]:
    """The entities of each input (named-entity recognition), in text order.

    `aggregation` is transformers' token-classification aggregation_strategy: "none" (one
    entity per token, with its index), "simple" (adjacent tokens of one B-/I- entity grouped),
    or "first", "average", "max" (tokens of a word agree on its first token's label, the
    label of their average scores, or their highest-scoring token's). Entities whose label is
    in `ignore_labels` are left out: None leaves out "O", [] keeps every label. Start and end
    count `offset_unit`, as in tokenize; `truncate` cuts inputs over the model's limit
    instead of refusing them.
    """
    aggregation_value = aggregation_pb(aggregation)
    if isinstance(ignore_labels, str):
        raise ValueError("ignore_labels is a list of labels, not one string")
    # The wire's empty ignore_labels means ["O"]: keeping every label has a flag of its own.
    request = heads_pb2.ClassifyTokensRequest(
        model=model,
        inputs=as_list(inputs),
        aggregation=aggregation_value,
        ignore_labels=list(ignore_labels or ()),
        keep_all_labels=ignore_labels is not None and not ignore_labels,
        offset_unit=offset_unit_pb(offset_unit),
        truncate=truncate,
    )
    return Call("ClassifyTokens", request, parse_classify_tokens, timeout)


def fill_mask(
    inputs: str | Sequence[str],
    *,
    model: str = "",
    top_k: int | None = None,
    targets: str | Sequence[str] | None = None,
    truncate: bool = False,
    timeout: Timeout = DEFAULT,
) -> Call[FillMaskResults]:
    """The likeliest tokens at each mask of each input, as transformers' fill-mask pipeline finds them.

    Write a mask as "[MASK]" for any model, or as the model's own mask token ("<mask>" for
    RoBERTa); each input needs at least one. The result holds, per input, per mask in text
    order, up to `top_k` candidates (None: the server's default, 5), best first, each with
    its token, id, probability and the input with it in the mask. `targets` restricts the
    candidates to these tokens (a word not in the vocabulary stands for its first token);
    scores stay the probability over the whole vocabulary. `truncate` cuts an input over the
    model's limit instead of refusing the call; a mask past the cut is not filled.
    """
    target_list = optional_list(targets)
    if targets is not None and not target_list:
        # On the wire no targets means the whole vocabulary: an empty list is surely not meant so.
        raise ValueError("targets is empty: pass None to take candidates from the whole vocabulary")
    request = heads_pb2.FillMaskRequest(
        model=model, inputs=as_list(inputs), targets=target_list, truncate=truncate, **given(top_k=top_k)
    )
    return Call("FillMask", request, parse_fill_mask, timeout)


def detect_replaced_tokens(
    inputs: str | Sequence[str],
    *,
    model: str = "",
    aggregate_words: bool = False,
    offset_unit: OffsetUnitName = "code_point",
    truncate: bool = False,
    timeout: Timeout = DEFAULT,
) -> Call[ReplacedTokensResults]:
    """With an ELECTRA discriminator: the probability that each token of each input was replaced.

    Each input's tokens come in order, special tokens included (flagged, at offsets 0, 0);
    with `aggregate_words` also its words, each with the highest probability of its tokens.
    Offsets count `offset_unit`, as in tokenize.
    """
    request = heads_pb2.DetectReplacedTokensRequest(
        model=model,
        inputs=as_list(inputs),
        aggregate_words=aggregate_words,
        offset_unit=offset_unit_pb(offset_unit),
        truncate=truncate,
    )
    return Call("DetectReplacedTokens", request, parse_detect_replaced_tokens, timeout)


def models(*, timeout: Timeout = DEFAULT) -> Call[list[ModelInfo]]:
    """Every configured model, in configuration order, whatever its state."""
    return Call("ListModels", model_service_pb2.ListModelsRequest(), parse_models, timeout)


def model(name: str = "", *, timeout: Timeout = DEFAULT) -> Call[ModelInfo]:
    """One model by name ("" for the default model); BertserveError NOT_FOUND if unknown."""
    return Call("GetModel", model_service_pb2.GetModelRequest(name=name), parse_model_reply, timeout)


def load_model(entry: ModelEntry, *, timeout: Timeout = DEFAULT) -> Call[ModelInfo]:
    """Add a model to the running server: entry is a configuration file's model entry, as a
    mapping or as YAML/JSON text. Returns once it is ready; BertserveError FAILED_PRECONDITION
    with the reason when it failed to load, ALREADY_EXISTS when the name is taken. Needs the
    admin scope where token auth is on. A load may take minutes: give it a timeout to match
    (the load goes on when the call times out)."""
    request = model_service_pb2.LoadModelRequest(entry=_entry_text(entry))
    return Call("LoadModel", request, parse_model_reply, timeout)


def unload_model(name: str, *, timeout: Timeout = DEFAULT) -> Call[Unloaded]:
    """Remove a model once its calls in flight have finished (up to the server's grace period)."""
    return Call("UnloadModel", model_service_pb2.UnloadModelRequest(name=name), parse_unloaded, timeout)


def reload_model(name: str = "", entry: ModelEntry | None = None, *, timeout: Timeout = DEFAULT) -> Call[ModelInfo]:
    """Load a model again, from its entry or a new one with the same name; its old instance
    serves until the new one is ready (and keeps serving when the new one fails)."""
    request = model_service_pb2.ReloadModelRequest(name=name, entry=_entry_text(entry) if entry else "")
    return Call("ReloadModel", request, parse_model_reply, timeout)


def _entry_text(entry: ModelEntry) -> str:
    """A model entry as the server takes it: text as given, a mapping as JSON (which is YAML)."""
    return entry if isinstance(entry, str) else json.dumps(dict(entry))
