"""Client (blocking, grpc) and AsyncClient (grpc.aio): the same calls on two channel kinds.

Requests are built and responses parsed in _convert; each class only says how a stub is called
and turns grpc.RpcError into BertserveError.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeAlias

import grpc
import grpc.aio
from google.protobuf.message import Message

from bertserve_client._convert import (
    answer_request,
    classify_request,
    classify_tokens_request,
    detect_replaced_tokens_request,
    embed_request,
    fill_mask_request,
    parse_answer,
    parse_classify,
    parse_classify_tokens,
    parse_detect_replaced_tokens,
    parse_embed,
    parse_fill_mask,
    parse_model,
    parse_models,
    parse_rerank,
    parse_stream_item,
    parse_tokenize,
    rerank_request,
    tokenize_request,
)
from bertserve_client._errors import BertserveError, from_rpc_error
from bertserve_client._fleet import fleet_options
from bertserve_client._types import (
    Answers,
    Classifications,
    EmbedResult,
    Entities,
    FillMaskResults,
    ModelInfo,
    ReplacedTokensResults,
    RerankResult,
    Tokenization,
    Unloaded,
)
from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc


class _Default(enum.Enum):
    TIMEOUT = enum.auto()


# Per-call `timeout`: seconds, None for no deadline, or left out for the client's default.
Timeout: TypeAlias = float | Literal[_Default.TIMEOUT] | None
_DEFAULT = _Default.TIMEOUT

#: The environment variable a client takes its bearer token from when none is given.
TOKEN_ENV = "BERTSERVE_TOKEN"

# Token embeddings of a batch easily pass gRPC's 4 MiB default.
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_DEFAULT_OPTIONS: dict[str, Any] = {
    "grpc.max_send_message_length": _MAX_MESSAGE_BYTES,
    "grpc.max_receive_message_length": _MAX_MESSAGE_BYTES,
}


def _channel_options(options: Sequence[tuple[str, Any]], *, health_check: bool) -> list[tuple[str, Any]]:
    return list({**_DEFAULT_OPTIONS, **fleet_options(health_check=health_check), **dict(options)}.items())


class _Base:
    """The stubs of each channel and the default deadline; a channel passed in stays the caller's.

    With several channels, each call goes to the one with the fewest calls in flight.
    """

    def __init__(
        self,
        channels: Sequence[grpc.Channel | grpc.aio.Channel],
        *,
        owns_channel: bool,
        timeout: float | None,
        token: str | None,
    ) -> None:
        token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        # Sent with every call: a server with token auth refuses calls without it.
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._owns_channel = owns_channel
        self._timeout = timeout
        self._channels = list(channels)
        self._rpcs: list[dict[str, Any]] = []
        for channel in self._channels:
            encoder = encoder_service_pb2_grpc.EncoderServiceStub(channel)
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            self._rpcs.append(
                {
                    "Embed": encoder.Embed,
                    "EmbedStream": encoder.EmbedStream,
                    "Tokenize": encoder.Tokenize,
                    "Answer": encoder.Answer,
                    "Classify": encoder.Classify,
                    "Rerank": encoder.Rerank,
                    "ClassifyTokens": encoder.ClassifyTokens,
                    "FillMask": encoder.FillMask,
                    "DetectReplacedTokens": encoder.DetectReplacedTokens,
                    "ListModels": models.ListModels,
                    "GetModel": models.GetModel,
                    "LoadModel": models.LoadModel,
                    "UnloadModel": models.UnloadModel,
                    "ReloadModel": models.ReloadModel,
                }
            )
        self._in_flight = [0] * len(self._channels)
        self._cursor = 0

    @property
    def channel(self) -> Any:
        """The (first) channel, for other services of the same server, such as grpc.health.v1."""
        return self._channels[0]

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata sent with every call (the bearer token, when there is one)."""
        return self._metadata

    def _least_busy(self) -> int:
        """The channel with the fewest calls in flight; ties go round, so light load still spreads."""
        count = len(self._in_flight)
        if count == 1:
            return 0
        self._cursor = (self._cursor + 1) % count
        order = [(self._cursor + k) % count for k in range(count)]
        return min(order, key=self._in_flight.__getitem__)

    def _deadline(self, timeout: Timeout) -> float | None:
        return self._timeout if timeout is _DEFAULT else timeout


def _open_channels(
    open_one: Callable[[list[tuple[str, Any]]], Any],
    channels: int,
    options: Sequence[tuple[str, Any]],
    channel: Any,
    health_check: bool,
) -> list[Any]:
    if channel is not None:
        if channels != 1:
            raise ValueError("channels applies to connections the client opens, not to a channel passed in")
        return [channel]
    if channels < 1:
        raise ValueError(f"channels must be at least 1, not {channels}")
    opts = _channel_options(options, health_check=health_check)
    if channels > 1:  # gRPC shares one connection between equal channels unless told otherwise
        opts.append(("grpc.use_local_subchannel_pool", 1))
    return [open_one(opts) for _ in range(channels)]


class Client(_Base):
    """A blocking client. Every call raises BertserveError when the server answers with an error."""

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        timeout: float | None = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        channel: grpc.Channel | None = None,
        channels: int = 1,
        token: str | None = None,
        health_check: bool = False,
    ) -> None:
        """Connect to `target` (TLS when `credentials` are given) or use `channel` as is.

        `timeout` is the default deadline in seconds of every call (None: none); `options` are
        gRPC channel arguments, laid over a 64 MiB message size limit each way. `channels` opens
        that many connections, each call taking the one with the fewest calls in flight: it pays
        against a server run with several processes, which share out connections, not calls.

        A target that resolves to several replicas (`dns:///bertserve-headless.ns.svc:50051`,
        `ipv4:10.0.0.1:50051,10.0.0.2:50051`) gets each call in turn (gRPC's round_robin); calls
        that meet UNAVAILABLE or RESOURCE_EXHAUSTED are retried, honouring the server's retry
        hint, and keepalive notices dead replicas. `health_check` also skips replicas whose
        grpc.health.v1 status is not SERVING (loading, or draining for a rollout).
        """

        def open_one(opts: list[tuple[str, Any]]) -> grpc.Channel:
            if credentials is None:
                return grpc.insecure_channel(target, opts)
            return grpc.secure_channel(target, credentials, opts)

        opened = _open_channels(open_one, channels, options, channel, health_check)
        super().__init__(opened, owns_channel=channel is None, timeout=timeout, token=token)

    def _call(self, method: str, request: Message, timeout: Timeout) -> Any:
        i = self._least_busy()
        self._in_flight[i] += 1
        try:
            return self._rpcs[i][method](request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        finally:
            self._in_flight[i] -= 1

    def embed(
        self,
        inputs: str | Sequence[str],
        *,
        model: str = "",
        pooling: str | None = None,
        normalize: bool = False,
        truncate: bool = False,
        return_token_embeddings: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> EmbedResult:
        """One vector per input (a lone string is a batch of one).

        `pooling` is "cls", "mean", "pooler" or None for the model's default; `truncate` cuts
        over-long inputs instead of failing; `model` "" is the server's default model.
        """
        request = embed_request(
            inputs,
            model=model,
            pooling=pooling,
            normalize=normalize,
            truncate=truncate,
            return_token_embeddings=return_token_embeddings,
        )
        return parse_embed(self._call("Embed", request, timeout))

    def embed_stream(
        self,
        items: Iterable[str | Sequence[str]],
        *,
        model: str = "",
        pooling: str | None = None,
        normalize: bool = False,
        truncate: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> Iterator[EmbedResult | BertserveError]:
        """Embed a stream of items (each a text or a batch of texts) over one EmbedStream call.

        Yields one result per item, in order: its EmbedResult, or the BertserveError that the
        same unary embed would have raised (the stream goes on). `timeout` bounds the whole stream.
        """
        requests = (_stream_request(i, model, pooling, normalize, truncate) for i in items)
        i = self._least_busy()
        self._in_flight[i] += 1
        responses = self._rpcs[i]["EmbedStream"](requests, timeout=self._deadline(timeout), metadata=self._metadata)
        try:
            for response in responses:
                yield parse_stream_item(response)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        finally:
            responses.cancel()  # a consumer that stops early ends the call
            self._in_flight[i] -= 1

    def tokenize(
        self,
        inputs: str | Sequence[str],
        *,
        pairs: str | Sequence[str] | None = None,
        model: str = "",
        add_special_tokens: bool = True,
        truncate: bool = False,
        max_length: int | None = None,
        offset_unit: OffsetUnitName = "code_point",
        timeout: Timeout = _DEFAULT,
    ) -> list[Tokenization]:
        """The model's tokenization of each input, with its pair (one per input) when given.

        `truncate` cuts each input (and its pair) to `max_length` tokens, or to the model's limit
        when `max_length` is None, as the model's tokenizer truncates. Offsets count
        `offset_unit`: code points (Python's str indices), or "utf16" / "utf8" for text that
        another language will slice.
        """
        request = tokenize_request(
            inputs,
            pairs=pairs,
            model=model,
            add_special_tokens=add_special_tokens,
            truncate=truncate,
            max_length=max_length,
            offset_unit=offset_unit,
        )
        return parse_tokenize(self._call("Tokenize", request, timeout))

    def answer(
        self,
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
        timeout: Timeout = _DEFAULT,
    ) -> Answers:
        """The best answers (top_k, best first) for each (question, context) pair.

        A lone pair is a batch of one. Options left None take the server's defaults. With
        `merge_same_text` (the default) answers whose text is equal ignoring case add up their
        scores, as transformers' pipeline does from 4.53 on; False gives each distinct span once.
        The result is a list of lists that also carries `.model` and `.usage`. Start and end
        count `offset_unit`, as in tokenize.
        """
        request = answer_request(
            questions,
            model=model,
            top_k=top_k,
            doc_stride=doc_stride,
            max_seq_len=max_seq_len,
            max_question_len=max_question_len,
            max_answer_len=max_answer_len,
            handle_impossible_answer=handle_impossible_answer,
            align_to_words=align_to_words,
            merge_same_text=merge_same_text,
            offset_unit=offset_unit,
        )
        return parse_answer(self._call("Answer", request, timeout))

    def classify(
        self,
        inputs: str | Sequence[str],
        *,
        pairs: str | Sequence[str] | None = None,
        model: str = "",
        top_k: int | None = None,
        function: ClassifyFunctionName | None = None,
        truncate: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> Classifications:
        """The labels of each input (with its pair, one per input, as a second segment), best first.

        `top_k` labels per input: None for the server's default (1), 0 for all of them.
        `function` turns logits into scores: "softmax", "sigmoid", "none", or None for the
        checkpoint's own (sigmoid for multi-label or one-label heads, softmax for single-label
        ones, none for regression, as transformers' text-classification pipeline decides).
        """
        request = classify_request(inputs, pairs=pairs, model=model, top_k=top_k, function=function, truncate=truncate)
        return parse_classify(self._call("Classify", request, timeout))

    def rerank(
        self,
        query: str,
        documents: str | Sequence[str],
        *,
        model: str = "",
        truncate: bool = False,
        return_documents: bool = False,
        raw_scores: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> RerankResult:
        """Score each document against the query with a cross-encoder.

        The result holds the documents in request order (with their index, score and whether
        their pair with the query was cut) and `ranking`, their indices best first. Scores are
        the sigmoid of the model's logit, or the logit with `raw_scores`. `truncate` cuts a pair
        over the model's limit instead of refusing the call.
        """
        request = rerank_request(
            query,
            documents,
            model=model,
            truncate=truncate,
            return_documents=return_documents,
            raw_scores=raw_scores,
        )
        return parse_rerank(self._call("Rerank", request, timeout))

    def classify_tokens(
        self,
        inputs: str | Sequence[str],
        *,
        model: str = "",
        aggregation: AggregationName = "none",
        ignore_labels: Sequence[str] | None = None,
        offset_unit: OffsetUnitName = "code_point",
        truncate: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> Entities:
        """The entities of each input (named-entity recognition), in text order.

        `aggregation` is transformers' token-classification aggregation_strategy: "none" (one
        entity per token, with its index), "simple" (adjacent tokens of one B-/I- entity grouped),
        or "first", "average", "max" (tokens of a word agree on its first token's label, the
        label of their average scores, or their highest-scoring token's). Entities whose label is
        in `ignore_labels` are left out: None leaves out "O", [] keeps every label. Start and end
        count `offset_unit`, as in tokenize; `truncate` cuts inputs over the model's limit
        instead of refusing them.
        """
        request = classify_tokens_request(
            inputs,
            model=model,
            aggregation=aggregation,
            ignore_labels=ignore_labels,
            offset_unit=offset_unit,
            truncate=truncate,
        )
        return parse_classify_tokens(self._call("ClassifyTokens", request, timeout))

    def fill_mask(
        self,
        inputs: str | Sequence[str],
        *,
        model: str = "",
        top_k: int | None = None,
        targets: str | Sequence[str] | None = None,
        truncate: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> FillMaskResults:
        """The likeliest tokens at each mask of each input, as transformers' fill-mask pipeline finds them.

        Write a mask as "[MASK]" for any model, or as the model's own mask token ("<mask>" for
        RoBERTa); each input needs at least one. The result holds, per input, per mask in text
        order, up to `top_k` candidates (None: the server's default, 5), best first, each with
        its token, id, probability and the input with it in the mask. `targets` restricts the
        candidates to these tokens (a word not in the vocabulary stands for its first token);
        scores stay the probability over the whole vocabulary. `truncate` cuts an input over the
        model's limit instead of refusing the call; a mask past the cut is not filled.
        """
        request = fill_mask_request(inputs, model=model, top_k=top_k, targets=targets, truncate=truncate)
        return parse_fill_mask(self._call("FillMask", request, timeout))

    def detect_replaced_tokens(
        self,
        inputs: str | Sequence[str],
        *,
        model: str = "",
        aggregate_words: bool = False,
        offset_unit: OffsetUnitName = "code_point",
        truncate: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> ReplacedTokensResults:
        """With an ELECTRA discriminator: the probability that each token of each input was replaced.

        Each input's tokens come in order, special tokens included (flagged, at offsets 0, 0);
        with `aggregate_words` also its words, each with the highest probability of its tokens.
        Offsets count `offset_unit`, as in tokenize.
        """
        request = detect_replaced_tokens_request(
            inputs, model=model, aggregate_words=aggregate_words, offset_unit=offset_unit, truncate=truncate
        )
        return parse_detect_replaced_tokens(self._call("DetectReplacedTokens", request, timeout))

    def models(self, *, timeout: Timeout = _DEFAULT) -> list[ModelInfo]:
        """Every configured model, in configuration order, whatever its state."""
        return parse_models(self._call("ListModels", model_service_pb2.ListModelsRequest(), timeout))

    def model(self, name: str = "", *, timeout: Timeout = _DEFAULT) -> ModelInfo:
        """One model by name ("" for the default model); BertserveError NOT_FOUND if unknown."""
        response = self._call("GetModel", model_service_pb2.GetModelRequest(name=name), timeout)
        return parse_model(response.model)

    def load_model(self, entry: ModelEntry, *, timeout: Timeout = _DEFAULT) -> ModelInfo:
        """Add a model to the running server: entry is a configuration file's model entry, as a
        mapping or as YAML/JSON text. Returns once it is ready; BertserveError FAILED_PRECONDITION
        with the reason when it failed to load, ALREADY_EXISTS when the name is taken. Needs the
        admin scope where token auth is on. A load may take minutes: give it a timeout to match
        (the load goes on when the call times out)."""
        request = model_service_pb2.LoadModelRequest(entry=_entry_text(entry))
        return parse_model(self._call("LoadModel", request, timeout).model)

    def unload_model(self, name: str, *, timeout: Timeout = _DEFAULT) -> Unloaded:
        """Remove a model once its calls in flight have finished (up to the server's grace period)."""
        response = self._call("UnloadModel", model_service_pb2.UnloadModelRequest(name=name), timeout)
        return Unloaded(response.drained_calls, response.abandoned_calls)

    def reload_model(
        self, name: str = "", entry: ModelEntry | None = None, *, timeout: Timeout = _DEFAULT
    ) -> ModelInfo:
        """Load a model again, from its entry or a new one with the same name; its old instance
        serves until the new one is ready (and keeps serving when the new one fails)."""
        request = model_service_pb2.ReloadModelRequest(name=name, entry=_entry_text(entry) if entry else "")
        return parse_model(self._call("ReloadModel", request, timeout).model)

    def close(self) -> None:
        """Close the channels, unless the channel was passed in."""
        if self._owns_channel:
            for channel in self._channels:
                channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient(_Base):
    """The asyncio twin of Client (grpc.aio): same arguments, same results, awaited.

    Create it inside the event loop that uses it: a grpc.aio channel is bound to its loop.
    """

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        timeout: float | None = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        channel: grpc.aio.Channel | None = None,
        channels: int = 1,
        token: str | None = None,
        health_check: bool = False,
    ) -> None:
        def open_one(opts: list[tuple[str, Any]]) -> grpc.aio.Channel:
            if credentials is None:
                return grpc.aio.insecure_channel(target, opts)
            return grpc.aio.secure_channel(target, credentials, opts)

        opened = _open_channels(open_one, channels, options, channel, health_check)
        super().__init__(opened, owns_channel=channel is None, timeout=timeout, token=token)

    async def _call(self, method: str, request: Message, timeout: Timeout) -> Any:
        i = self._least_busy()
        self._in_flight[i] += 1
        try:
            return await self._rpcs[i][method](request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        finally:
            self._in_flight[i] -= 1

    async def embed(
        self,
        inputs: str | Sequence[str],
        *,
        model: str = "",
        pooling: str | None = None,
        normalize: bool = False,
        truncate: bool = False,
        return_token_embeddings: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> EmbedResult:
        """See Client.embed."""
        request = embed_request(
            inputs,
            model=model,
            pooling=pooling,
            normalize=normalize,
            truncate=truncate,
            return_token_embeddings=return_token_embeddings,
        )
        return parse_embed(await self._call("Embed", request, timeout))

    async def embed_stream(
        self,
        items: Iterable[str | Sequence[str]] | AsyncIterable[str | Sequence[str]],
        *,
        model: str = "",
        pooling: str | None = None,
        normalize: bool = False,
        truncate: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> AsyncIterator[EmbedResult | BertserveError]:
        """See Client.embed_stream; items may also be an async iterable."""

        async def requests() -> AsyncIterator[encoder_service_pb2.EmbedStreamRequest]:
            if isinstance(items, AsyncIterable):
                async for item in items:
                    yield _stream_request(item, model, pooling, normalize, truncate)
            else:
                for item in items:
                    yield _stream_request(item, model, pooling, normalize, truncate)

        i = self._least_busy()
        self._in_flight[i] += 1
        call = self._rpcs[i]["EmbedStream"](requests(), timeout=self._deadline(timeout), metadata=self._metadata)
        try:
            async for response in call:
                yield parse_stream_item(response)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        finally:
            call.cancel()  # a consumer that stops early ends the call
            self._in_flight[i] -= 1

    async def tokenize(
        self,
        inputs: str | Sequence[str],
        *,
        pairs: str | Sequence[str] | None = None,
        model: str = "",
        add_special_tokens: bool = True,
        truncate: bool = False,
        max_length: int | None = None,
        offset_unit: OffsetUnitName = "code_point",
        timeout: Timeout = _DEFAULT,
    ) -> list[Tokenization]:
        """See Client.tokenize."""
        request = tokenize_request(
            inputs,
            pairs=pairs,
            model=model,
            add_special_tokens=add_special_tokens,
            truncate=truncate,
            max_length=max_length,
            offset_unit=offset_unit,
        )
        return parse_tokenize(await self._call("Tokenize", request, timeout))

    async def answer(
        self,
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
        timeout: Timeout = _DEFAULT,
    ) -> Answers:
        """See Client.answer."""
        request = answer_request(
            questions,
            model=model,
            top_k=top_k,
            doc_stride=doc_stride,
            max_seq_len=max_seq_len,
            max_question_len=max_question_len,
            max_answer_len=max_answer_len,
            handle_impossible_answer=handle_impossible_answer,
            align_to_words=align_to_words,
            merge_same_text=merge_same_text,
            offset_unit=offset_unit,
        )
        return parse_answer(await self._call("Answer", request, timeout))

    async def classify(
        self,
        inputs: str | Sequence[str],
        *,
        pairs: str | Sequence[str] | None = None,
        model: str = "",
        top_k: int | None = None,
        function: ClassifyFunctionName | None = None,
        truncate: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> Classifications:
        """See Client.classify."""
        request = classify_request(inputs, pairs=pairs, model=model, top_k=top_k, function=function, truncate=truncate)
        return parse_classify(await self._call("Classify", request, timeout))

    async def rerank(
        self,
        query: str,
        documents: str | Sequence[str],
        *,
        model: str = "",
        truncate: bool = False,
        return_documents: bool = False,
        raw_scores: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> RerankResult:
        """See Client.rerank."""
        request = rerank_request(
            query,
            documents,
            model=model,
            truncate=truncate,
            return_documents=return_documents,
            raw_scores=raw_scores,
        )
        return parse_rerank(await self._call("Rerank", request, timeout))

    async def classify_tokens(
        self,
        inputs: str | Sequence[str],
        *,
        model: str = "",
        aggregation: AggregationName = "none",
        ignore_labels: Sequence[str] | None = None,
        offset_unit: OffsetUnitName = "code_point",
        truncate: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> Entities:
        """See Client.classify_tokens."""
        request = classify_tokens_request(
            inputs,
            model=model,
            aggregation=aggregation,
            ignore_labels=ignore_labels,
            offset_unit=offset_unit,
            truncate=truncate,
        )
        return parse_classify_tokens(await self._call("ClassifyTokens", request, timeout))

    async def fill_mask(
        self,
        inputs: str | Sequence[str],
        *,
        model: str = "",
        top_k: int | None = None,
        targets: str | Sequence[str] | None = None,
        truncate: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> FillMaskResults:
        """See Client.fill_mask."""
        request = fill_mask_request(inputs, model=model, top_k=top_k, targets=targets, truncate=truncate)
        return parse_fill_mask(await self._call("FillMask", request, timeout))

    async def detect_replaced_tokens(
        self,
        inputs: str | Sequence[str],
        *,
        model: str = "",
        aggregate_words: bool = False,
        offset_unit: OffsetUnitName = "code_point",
        truncate: bool = False,
        timeout: Timeout = _DEFAULT,
    ) -> ReplacedTokensResults:
        """See Client.detect_replaced_tokens."""
        request = detect_replaced_tokens_request(
            inputs, model=model, aggregate_words=aggregate_words, offset_unit=offset_unit, truncate=truncate
        )
        return parse_detect_replaced_tokens(await self._call("DetectReplacedTokens", request, timeout))

    async def models(self, *, timeout: Timeout = _DEFAULT) -> list[ModelInfo]:
        """See Client.models."""
        return parse_models(await self._call("ListModels", model_service_pb2.ListModelsRequest(), timeout))

    async def model(self, name: str = "", *, timeout: Timeout = _DEFAULT) -> ModelInfo:
        """See Client.model."""
        response = await self._call("GetModel", model_service_pb2.GetModelRequest(name=name), timeout)
        return parse_model(response.model)

    async def load_model(self, entry: ModelEntry, *, timeout: Timeout = _DEFAULT) -> ModelInfo:
        """See Client.load_model."""
        request = model_service_pb2.LoadModelRequest(entry=_entry_text(entry))
        return parse_model((await self._call("LoadModel", request, timeout)).model)

    async def unload_model(self, name: str, *, timeout: Timeout = _DEFAULT) -> Unloaded:
        """See Client.unload_model."""
        response = await self._call("UnloadModel", model_service_pb2.UnloadModelRequest(name=name), timeout)
        return Unloaded(response.drained_calls, response.abandoned_calls)

    async def reload_model(
        self, name: str = "", entry: ModelEntry | None = None, *, timeout: Timeout = _DEFAULT
    ) -> ModelInfo:
        """See Client.reload_model."""
        request = model_service_pb2.ReloadModelRequest(name=name, entry=_entry_text(entry) if entry else "")
        return parse_model((await self._call("ReloadModel", request, timeout)).model)

    async def close(self) -> None:
        """Close the channels, unless the channel was passed in."""
        if self._owns_channel:
            for channel in self._channels:
                await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


ModelEntry: TypeAlias = "Mapping[str, Any] | str"
#: What offsets count: code points (Python's str indices), UTF-16 code units or UTF-8 bytes.
OffsetUnitName: TypeAlias = Literal["code_point", "utf16", "utf8"]
#: How ClassifyTokens merges tokens into entities (the pipeline's aggregation_strategy).
AggregationName: TypeAlias = Literal["none", "simple", "first", "average", "max"]
#: How Classify turns logits into scores.
ClassifyFunctionName: TypeAlias = Literal["softmax", "sigmoid", "none"]


def _entry_text(entry: ModelEntry) -> str:
    """A model entry as the server takes it: text as given, a mapping as JSON (which is YAML)."""
    return entry if isinstance(entry, str) else json.dumps(dict(entry))


def _stream_request(
    item: str | Sequence[str], model: str, pooling: str | None, normalize: bool, truncate: bool
) -> encoder_service_pb2.EmbedStreamRequest:
    request = embed_request(
        item, model=model, pooling=pooling, normalize=normalize, truncate=truncate, return_token_embeddings=False
    )
    return encoder_service_pb2.EmbedStreamRequest(request=request)


def tls_credentials(
    ca_file: str | os.PathLike[str] | None = None,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
) -> grpc.ChannelCredentials:
    """TLS credentials for `credentials=`: the CA that signed the server's certificate (None: the
    system's roots), and for mutual TLS the client's certificate and key."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("mutual TLS needs both a client certificate and its key")

    def read(path: str | os.PathLike[str] | None) -> bytes | None:
        return None if path is None else Path(path).read_bytes()

    return grpc.ssl_channel_credentials(read(ca_file), read(key_file), read(cert_file))
