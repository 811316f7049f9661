"""Client (blocking, grpc) and AsyncClient (grpc.aio): two thin adapters over the calls of _calls.

Each unary RPC is defined once, in _calls, as a function from a method's arguments to a Call.
`_blocking` makes of it a Client method that runs the Call with a blocking stub call, `_awaited`
an AsyncClient method that awaits it; both keep the definition's name, docstring and signature.
What else differs between the two (how a channel opens, EmbedStream's request iterator, close)
is written here once for each. Both turn grpc.RpcError into BertserveError.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, get_args, get_type_hints

import grpc
import grpc.aio

from bertserve_client import _calls
from bertserve_client._calls import (
    DEFAULT,
    AggregationName,
    Call,
    ClassifyFunctionName,
    ModelEntry,
    OffsetUnitName,
    Timeout,
)
from bertserve_client._convert import parse_stream_item
from bertserve_client._errors import BertserveError, from_rpc_error
from bertserve_client._fleet import fleet_options
from bertserve_client._types import EmbedResult
from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc, model_service_pb2_grpc

__all__ = [
    "TOKEN_ENV",
    "AggregationName",
    "AsyncClient",
    "ClassifyFunctionName",
    "Client",
    "ModelEntry",
    "OffsetUnitName",
    "Timeout",
    "tls_credentials",
]

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
ChannelT = TypeVar("ChannelT", grpc.Channel, grpc.aio.Channel)

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


class _Base(Generic[ChannelT]):
    """The channels, their stubs and the default deadline; a channel passed in stays the caller's.

    With several channels, each call goes to the one with the fewest calls in flight.
    """

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        timeout: float | None = 30.0,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        channel: ChannelT | None = None,
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
        _check_timeout(timeout)
        token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        if token and not all(" " < c <= "~" for c in token):  # what a gRPC header value may hold
            raise ValueError("the token holds characters a gRPC header cannot carry (spaces, control or non-ASCII)")
        if channel is not None:
            if channels != 1:
                raise ValueError("channels applies to connections the client opens, not to a channel passed in")
            self._channels = [channel]
        else:
            if channels < 1:
                raise ValueError(f"channels must be at least 1, not {channels}")
            opts = _channel_options(options, health_check=health_check)
            if channels > 1:  # gRPC shares one connection between equal channels unless told otherwise
                opts.append(("grpc.use_local_subchannel_pool", 1))
            self._channels = [self._open_channel(target, credentials, opts) for _ in range(channels)]
        # Sent with every call: a server with token auth refuses calls without it.
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._owns_channel = channel is None
        self._timeout = timeout
        # Per channel, its stub methods by RPC name ("Embed", "ListModels", ...).
        self._rpcs: list[dict[str, Any]] = [
            {**vars(encoder_service_pb2_grpc.EncoderServiceStub(c)), **vars(model_service_pb2_grpc.ModelServiceStub(c))}
            for c in self._channels
        ]
        self._in_flight = [0] * len(self._channels)
        self._cursor = 0

    def _open_channel(
        self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
    ) -> ChannelT:
        raise NotImplementedError

    @property
    def channel(self) -> ChannelT:
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

    @contextmanager
    def _stub(self, method: str) -> Iterator[Callable[..., Any]]:
        """The stub method of the least busy channel, counted in flight while the block runs; a
        grpc.RpcError raised in the block comes out as BertserveError."""
        i = self._least_busy()
        self._in_flight[i] += 1
        try:
            yield self._rpcs[i][method]
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        finally:
            self._in_flight[i] -= 1

    def _call_options(self, timeout: Timeout) -> dict[str, Any]:
        """The deadline and metadata of one stub call."""
        if timeout is not DEFAULT:
            _check_timeout(timeout)
        return {"timeout": self._timeout if timeout is DEFAULT else timeout, "metadata": self._metadata}


def _check_timeout(timeout: float | None) -> None:
    """A deadline is a finite number of seconds above zero, or None: gRPC takes any other as
    already expired, and the call fails with DEADLINE_EXCEEDED for the caller's slip."""
    if timeout is not None and not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a number of seconds above 0, or None; got {timeout!r}")


def _like(method: F, define: Callable[..., Call[Any]], owner: str) -> F:
    """`method` named, documented and signed as `define` (with self first, returning the reply's type)."""
    hints = get_type_hints(define)
    returns = get_args(hints["return"])[0]  # Call[EmbedResult] -> EmbedResult
    signature = inspect.signature(define)
    parameters = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
    method.__name__ = define.__name__
    method.__qualname__ = f"{owner}.{define.__name__}"
    method.__doc__ = define.__doc__
    method.__annotations__ = {**hints, "return": returns}
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *parameters],
        return_annotation=returns,
    )
    return method


def _blocking(define: Callable[P, Call[T]]) -> Callable[Concatenate[Client, P], T]:
    """The Client method of a call: it runs the Call that `define` makes with a blocking stub call."""

    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(define(*args, **kwargs))

    return _like(method, define, "Client")


def _awaited(define: Callable[P, Call[T]]) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    """The AsyncClient method of a call: it awaits the Call that `define` makes."""

    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(define(*args, **kwargs))

    return _like(method, define, "AsyncClient")


class Client(_Base[grpc.Channel]):
    """A blocking client. Every call raises BertserveError when the server answers with an error."""

    def _open_channel(
        self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
    ) -> grpc.Channel:
        if credentials is None:
            return grpc.insecure_channel(target, options)
        return grpc.secure_channel(target, credentials, options)

    def _run(self, call: Call[T]) -> T:
        with self._stub(call.method) as stub:
            reply = stub(call.request, **self._call_options(call.timeout))
        return call.parse(reply)

    embed = _blocking(_calls.embed)
    tokenize = _blocking(_calls.tokenize)
    answer = _blocking(_calls.answer)
    classify = _blocking(_calls.classify)
    rerank = _blocking(_calls.rerank)
    similarity = _blocking(_calls.similarity)
    classify_tokens = _blocking(_calls.classify_tokens)
    fill_mask = _blocking(_calls.fill_mask)
    detect_replaced_tokens = _blocking(_calls.detect_replaced_tokens)
    models = _blocking(_calls.models)
    model = _blocking(_calls.model)
    load_model = _blocking(_calls.load_model)
    unload_model = _blocking(_calls.unload_model)
    reload_model = _blocking(_calls.reload_model)

    def embed_stream(
        self,
        items: Iterable[str | Sequence[str]],
        *,
        model: str = "",
        pooling: str | None = None,
        normalize: bool = False,
        truncate: bool = False,
        timeout: Timeout = DEFAULT,
    ) -> Iterator[EmbedResult | BertserveError]:
        """Embed a stream of items (each a text or a batch of texts) over one EmbedStream call.

        Yields one result per item, in order: its EmbedResult, or the BertserveError that the
        same unary embed would have raised (the stream goes on). `timeout` bounds the whole stream.
        """
        request = functools.partial(
            _calls.stream_request, model=model, pooling=pooling, normalize=normalize, truncate=truncate
        )
        failed = _InputFailure()

        def requests() -> Iterator[encoder_service_pb2.EmbedStreamRequest]:
            with failed.kept():
                for item in items:
                    yield request(item)

        with failed.raised(), self._stub("EmbedStream") as stub:
            responses = stub(requests(), **self._call_options(timeout))
            try:
                yield from map(parse_stream_item, responses)
            finally:
                responses.cancel()  # a consumer that stops early ends the call

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


class AsyncClient(_Base[grpc.aio.Channel]):
    """The asyncio twin of Client (grpc.aio): same arguments, same results, awaited.

    Create it inside the event loop that uses it: a grpc.aio channel is bound to its loop.
    """

    def _open_channel(
        self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
    ) -> grpc.aio.Channel:
        if credentials is None:
            return grpc.aio.insecure_channel(target, options)
        return grpc.aio.secure_channel(target, credentials, options)

    async def _run(self, call: Call[T]) -> T:
        with self._stub(call.method) as stub:
            reply = await stub(call.request, **self._call_options(call.timeout))
        return call.parse(reply)

    embed = _awaited(_calls.embed)
    tokenize = _awaited(_calls.tokenize)
    answer = _awaited(_calls.answer)
    classify = _awaited(_calls.classify)
    rerank = _awaited(_calls.rerank)
    similarity = _awaited(_calls.similarity)
    classify_tokens = _awaited(_calls.classify_tokens)
    fill_mask = _awaited(_calls.fill_mask)
    detect_replaced_tokens = _awaited(_calls.detect_replaced_tokens)
    models = _awaited(_calls.models)
    model = _awaited(_calls.model)
    load_model = _awaited(_calls.load_model)
    unload_model = _awaited(_calls.unload_model)
    reload_model = _awaited(_calls.reload_model)

    async def embed_stream(
        self,
        items: Iterable[str | Sequence[str]] | AsyncIterable[str | Sequence[str]],
        *,
        model: str = "",
        pooling: str | None = None,
        normalize: bool = False,
        truncate: bool = False,
        timeout: Timeout = DEFAULT,
    ) -> AsyncIterator[EmbedResult | BertserveError]:
        """As Client.embed_stream; items may also be an async iterable."""
        request = functools.partial(
            _calls.stream_request, model=model, pooling=pooling, normalize=normalize, truncate=truncate
        )

        failed = _InputFailure()

        async def requests() -> AsyncIterator[encoder_service_pb2.EmbedStreamRequest]:
            with failed.kept():
                if isinstance(items, AsyncIterable):
                    async for item in items:
                        yield request(item)
                else:
                    for item in items:
                        yield request(item)

        with failed.raised(), self._stub("EmbedStream") as stub:
            call = stub(requests(), **self._call_options(timeout))
            try:
                async for response in call:
                    yield parse_stream_item(response)
            finally:
                call.cancel()  # a consumer that stops early ends the call

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


class _InputFailure:
    """What the caller's own items raised while a stream sent them. grpc ends the call then, and
    says so as a cancellation (asyncio) or as UNKNOWN "Exception iterating requests!" (threads):
    the caller gets its own exception instead."""

    def __init__(self) -> None:
        self.error: Exception | None = None

    @contextmanager
    def kept(self) -> Iterator[None]:
        """Around the iteration of the caller's items."""
        try:
            yield
        except Exception as e:
            self.error = e
            raise

    @contextmanager
    def raised(self) -> Iterator[None]:
        """Around the call: what ends it after the items failed is their exception."""
        try:
            yield
        except (BertserveError, asyncio.CancelledError):
            if self.error is None:
                raise
            raise self.error from None


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
