"""The gRPC servicers: thin translations between protobuf and the domain flows.

The encoder service's unary RPCs are a table (UNARY): each row's codec decodes the request, its
flow runs within the server's limit on calls in flight, and the codec encodes the result. EmbedStream and the model
service are written out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from bertserve import __version__
from bertserve.api import ModelSpec
from bertserve.domain import CallLimits
from bertserve.edge import call_facts, codecs
from bertserve.edge.auth import may_see, require_model
from bertserve.edge.drain import CallGate
from bertserve.edge.parsing import Unparsable
from bertserve.edge.status import abort_with, grpc_errors, internal_error, status_of
from bertserve.errors import BertserveError, Overloaded, PreconditionFailed
from bertserve.observability import metrics
from bertserve.serving import classify, classify_tokens, embedding, fill_mask, qa, replaced_tokens, rerank, similarity
from bertserve.serving.batcher import MAX_RETRY_AFTER_S
from bertserve.serving.flow import Call, Flow, run_flow
from bertserve.serving.model_host import ModelHost
from bertserve.serving.model_manager import ModelChanges
from bertserve.serving.router import Router
from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc

__all__ = ["UNARY", "EncoderServicer", "ModelServicer", "Unary"]

Req = TypeVar("Req")
Q = TypeVar("Q")
T = TypeVar("T")
Resp = TypeVar("Resp")


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as a time.monotonic() value, or None when the caller set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class EncoderServicer(encoder_service_pb2_grpc.EncoderServiceServicer):
    def __init__(
        self,
        router: Router,
        *,
        stream_max_in_flight: int = 64,
        limits: CallLimits | None = None,
        gate: CallGate | None = None,
    ) -> None:
        """gate: the calls being served, which a drain waits for; past max_concurrent_calls,
        bertserve refuses more."""
        self._router = router
        self._stream_max_in_flight = stream_max_in_flight
        self._limits = limits or CallLimits()
        self._gate = gate or CallGate()

    def _refuse_when_full(self, model: str | None) -> None:
        """RESOURCE_EXHAUSTED, with the retry hint of model (None: a stream, whose items name
        theirs), when the calls in flight are at the limit: an overloaded server answers the
        caller itself, it does not leave it to the transport."""
        limit = self._limits.max_concurrent_calls
        if self._gate.in_flight < limit:
            return
        host = None
        if model is not None:
            with contextlib.suppress(BertserveError):  # a name no model has: not a label of its own
                host = self._router.get(model)
        retry, known = (host.retry_after_s(), host.name) if host is not None else (1.0, "-")
        # A place frees when a call ends: not sooner, whatever the model's queue holds.
        retry = min(MAX_RETRY_AFTER_S, max(retry, self._gate.call_seconds))
        metrics.REFUSED.labels(known, "max_concurrent_calls").inc()
        raise Overloaded(
            f"the server is at its limit of {limit} calls in flight (max_concurrent_calls); retry in {retry:.2f}s",
            retry_after_s=retry,
        )

    @contextlib.contextmanager
    def _slot(self, model: str) -> Iterator[None]:
        """A place among the calls in flight, or RESOURCE_EXHAUSTED with the model's retry hint."""
        self._refuse_when_full(model)
        self._gate.enter()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._gate.leave(time.perf_counter() - started)

    async def EmbedStream(
        self, request_iterator: AsyncIterator[encoder_service_pb2.EmbedStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[encoder_service_pb2.EmbedStreamResponse]:
        """Items run concurrently (so they batch with all other traffic) and are answered in order.

        At most stream_max_in_flight items are in flight per stream; past that the stream stops
        reading, and gRPC flow control pushes back on the sender.
        """
        try:  # an open stream is a call in flight: it counts against the limit, and is refused past it
            self._refuse_when_full(None)
            self._gate.enter()
        except BertserveError as e:
            await abort_with(context, e)
        # From here to the try below nothing awaits: the count is given back in its finally.
        deadline = deadline_of(context)
        slots = asyncio.Semaphore(self._stream_max_in_flight)  # taken before an item starts, freed once answered
        in_flight: asyncio.Queue[asyncio.Task[encoder_service_pb2.EmbedStreamResponse] | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for item in request_iterator:
                    await slots.acquire()
                    in_flight.put_nowait(asyncio.create_task(self._stream_item(item, deadline)))
            finally:
                in_flight.put_nowait(None)

        reader = asyncio.create_task(read())

        def stop_reading(_: object) -> None:
            # gRPC runs this as the call's task ends, before it releases the call: a reader left
            # running would read from a released call (a NULL pointer in grpc core) and crash.
            reader.cancel()

        context.add_done_callback(stop_reading)
        unregister = self._gate.on_expiry(reader.cancel)  # the drain's grace period ran out: read no more
        try:
            while (task := await in_flight.get()) is not None:
                try:
                    yield await task
                finally:
                    slots.release()
            if self._gate.expired is not None:  # the items read were answered: the stream ends as a call would
                await abort_with(context, self._gate.expired)
            await reader  # surfaces a broken request stream
        finally:  # the client went away or the stream ended: nothing of it may keep running
            unregister()
            reader.cancel()
            while not in_flight.empty():
                if (task := in_flight.get_nowait()) is not None:
                    task.cancel()
            self._gate.leave()

    async def _stream_item(
        self, item: encoder_service_pb2.EmbedStreamRequest | Unparsable, deadline: float | None
    ) -> encoder_service_pb2.EmbedStreamResponse:
        if isinstance(item, Unparsable):
            error = encoder_service_pb2.ItemError(code=item.code.value[0], message=str(item))
            return encoder_service_pb2.EmbedStreamResponse(error=error)
        try:
            call = Call(deadline, self._limits.max_reply_bytes)
            result = await run_flow(self._router, embedding.EMBED, codecs.EMBED.decode(item.request), call)
        except BertserveError as e:
            error = encoder_service_pb2.ItemError(code=status_of(e).value[0], message=str(e))
            return encoder_service_pb2.EmbedStreamResponse(error=error)
        except Exception:
            error = encoder_service_pb2.ItemError(
                code=grpc.StatusCode.INTERNAL.value[0], message=internal_error("EmbedStream")
            )
            return encoder_service_pb2.EmbedStreamResponse(error=error)
        return encoder_service_pb2.EmbedStreamResponse(response=codecs.EMBED.encode(result))


@dataclass(frozen=True)
class Unary(Generic[Req, Q, T, Resp]):
    """A unary RPC of the encoder service: its codec and the flow that serves it."""

    codec: codecs.Codec[Req, Q, T, Resp]
    flow: Flow[Q, T]


#: The encoder service's unary RPCs. A new head's RPC is one row here.
UNARY: dict[str, Unary[Any, Any, Any, Any]] = {
    "Embed": Unary(codecs.EMBED, embedding.EMBED),
    "Tokenize": Unary(codecs.TOKENIZE, embedding.TOKENIZE),
    "Answer": Unary(codecs.ANSWER, qa.ANSWER),
    "Classify": Unary(codecs.CLASSIFY, classify.CLASSIFY),
    "Rerank": Unary(codecs.RERANK, rerank.RERANK),
    "FillMask": Unary(codecs.FILL_MASK, fill_mask.FILL_MASK),
    "DetectReplacedTokens": Unary(codecs.DETECT_REPLACED_TOKENS, replaced_tokens.DETECT_REPLACED_TOKENS),
    "ClassifyTokens": Unary(codecs.CLASSIFY_TOKENS, classify_tokens.CLASSIFY_TOKENS),
    "Similarity": Unary(codecs.SIMILARITY, similarity.SIMILARITY),
}


def _unary_method(name: str, rpc: Unary[Any, Any, Any, Any]) -> Callable[..., Awaitable[Any]]:
    async def method(self: EncoderServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        with self._slot(request.model):
            call = Call(deadline_of(context), self._limits.max_reply_bytes)
            result = await run_flow(self._router, rpc.flow, rpc.codec.decode(request), call)
            if rpc.codec.encoded_off_loop(result):
                return await asyncio.to_thread(rpc.codec.encode, result)
            return rpc.codec.encode(result)

    method.__name__ = method.__qualname__ = name
    return grpc_errors(method)


for _name, _rpc in UNARY.items():
    setattr(EncoderServicer, _name, _unary_method(_name, _rpc))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, router: Router, manager: ModelChanges | None) -> None:
        """manager: None where the server runs several processes, whose models one call cannot change."""
        self._router = router
        self._manager = manager

    @grpc_errors
    async def ListModels(
        self, request: model_service_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> model_service_pb2.ListModelsResponse:
        default = self._router.default_model
        return model_service_pb2.ListModelsResponse(
            models=[codecs.model_proto(h, is_default=h.name == default) for h in self._router if may_see(h.name)],
            server_version=__version__,
        )

    @grpc_errors
    async def GetModel(
        self, request: model_service_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> model_service_pb2.GetModelResponse:
        return model_service_pb2.GetModelResponse(model=self._model(self._router.get(request.name)))

    @grpc_errors
    async def LoadModel(
        self, request: model_service_pb2.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> model_service_pb2.LoadModelResponse:
        manager = self._management("LoadModel")
        spec = await _parsed(manager, request.entry)
        require_model(spec.name)
        host = await manager.load(spec)
        return model_service_pb2.LoadModelResponse(model=self._model(host))

    @grpc_errors
    async def UnloadModel(
        self, request: model_service_pb2.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> model_service_pb2.UnloadModelResponse:
        drained = await self._management("UnloadModel").unload(request.name)
        return model_service_pb2.UnloadModelResponse(drained_calls=drained.finished, abandoned_calls=drained.abandoned)

    @grpc_errors
    async def ReloadModel(
        self, request: model_service_pb2.ReloadModelRequest, context: grpc.aio.ServicerContext
    ) -> model_service_pb2.ReloadModelResponse:
        manager = self._management("ReloadModel")
        spec = await _parsed(manager, request.entry) if request.entry else None
        host = await manager.reload(request.name, spec)
        return model_service_pb2.ReloadModelResponse(model=self._model(host))

    def _model(self, host: ModelHost) -> model_service_pb2.Model:
        return codecs.model_proto(host, is_default=host.name == self._router.default_model)

    def _management(self, rpc: str) -> ModelChanges:
        if self._manager is None:
            raise PreconditionFailed(
                f"{rpc} would change the models of one of this server's processes only (several whole servers: "
                "server.engine is false); change the configuration and restart, or let the processes share an engine"
            )
        return self._manager


async def _parsed(manager: ModelChanges, entry: str) -> ModelSpec:
    """An entry's spec, parsed and checked on a thread: however it is crafted, the event loop and
    every other call go on meanwhile. The model it names goes into the call's facts, for the metrics."""
    spec = await asyncio.to_thread(manager.parse, entry)
    if (facts := call_facts.current.get()) is not None:
        facts.model = spec.name
    return spec
