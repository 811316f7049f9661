"""One structured log line per call, and the call's request id in its response metadata.

The line names the RPC, model, status code, inputs, tokens, queue and inference milliseconds,
the whole call's milliseconds, the peer, the token's name (never the token) and the request id.
It goes to the ``bertserve.access`` logger: text or JSON as ``server.log_format`` says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Container
from typing import Any

import grpc

from bertserve import metrics, request_ids
from bertserve.edge.auth import caller
from bertserve.edge.handlers import replace_behaviour
from bertserve.edge.status import RETRY_AFTER

__all__ = ["AccessLog"]

log = logging.getLogger("bertserve.access")


class AccessLog(grpc.aio.ServerInterceptor):
    """Outermost interceptor of the methods given: refused calls are counted and logged too.

    Every call is counted in the metrics; lines are written when lines is set. Metric labels
    name served models only (a caller's unknown name is "-"), so that callers cannot grow
    the label sets without bound.
    """

    def __init__(self, methods: Collection[str], models: Container[str], default_model: str, *, lines: bool) -> None:
        """models: the names served now (a live view: models come and go at run time)."""
        self._methods = frozenset(methods)
        self._models = models
        self._default_model = default_model
        self._lines = lines

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method not in self._methods:
            return handler
        rpc = details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary or handler.stream_stream
        return replace_behaviour(handler, _unary(inner, rpc, self._record), _streaming(inner, rpc, self._record))

    def _record(
        self,
        rpc: str,
        request: Any,
        response: Any,
        code: str,
        context: grpc.aio.ServicerContext,
        started: float,
        request_id: str,
        *,
        items: int | None,
    ) -> None:
        """Count the call and log its line; a fault here is logged, never the call's."""
        try:
            seconds = time.perf_counter() - started
            named = _served_model(response) or _model_of(request)
            label = named or self._default_model
            label = label if label in self._models else "-"
            metrics.CALLS.labels(rpc, label, code).inc()
            metrics.CALL_SECONDS.labels(rpc, label).observe(seconds)
            if self._lines and log.isEnabledFor(logging.INFO):
                _line(rpc, named, request, response, code, context, seconds, request_id, items=items)
        except Exception:
            log.exception("cannot record a %s call", rpc)


def _begin(context: grpc.aio.ServicerContext) -> str:
    """The call's request id, in its trailers from the start (an error's only metadata).

    Nothing is sent yet: response headers commit a call, and a gRPC client retries only calls
    not committed. An UNAVAILABLE or RESOURCE_EXHAUSTED answer (a draining server, a full queue)
    must go out as trailers alone for the caller's retry policy to send it elsewhere.
    """
    request_id = request_ids.from_metadata(context.invocation_metadata())  # type: ignore[arg-type]
    request_ids.current.set(request_id)
    context.set_trailing_metadata(((request_ids.HEADER, request_id),))
    return request_id


async def _answering(context: grpc.aio.ServicerContext, request_id: str) -> None:
    """Headers with the request id, sent before a stream's first message.

    A unary answer sends none of its own: gRPC then sends its headers, message and trailers
    (which hold the id) as one batch. Headers sent ahead would commit the call a moment early,
    and a replica killed in that moment would leave the caller a committed call without an
    answer, which its retry policy cannot send elsewhere.
    """
    await context.send_initial_metadata(((request_ids.HEADER, request_id),))


Record = Callable[..., None]


def _unary(inner: Any, rpc: str, record: Record) -> Any:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        request_id = _begin(context)
        response, raised = None, None
        try:
            response = await inner(request, context)
            return response
        except BaseException as e:
            raised = e
            raise
        finally:
            record(rpc, request, response, _code_of(context, raised), context, started, request_id, items=None)

    return handle


def _streaming(inner: Any, rpc: str, record: Record) -> Any:
    async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        request_id = _begin(context)
        seen: list[Any] = []  # the first request, for its model; and a count of the items answered
        answered, raised = 0, None

        async def counted() -> AsyncIterator[Any]:
            async for request in requests:
                if not seen:
                    seen.append(request)
                yield request

        try:
            async for response in inner(counted(), context):
                if not answered:
                    await _answering(context, request_id)
                answered += 1
                yield response
        except BaseException as e:
            raised = e
            raise
        finally:
            first = seen[0].request if seen and hasattr(seen[0], "request") else None
            record(rpc, first, None, _code_of(context, raised), context, started, request_id, items=answered)

    return handle


def _line(
    rpc: str,
    model: str,
    request: Any,
    response: Any,
    code: str,
    context: grpc.aio.ServicerContext,
    seconds: float,
    request_id: str,
    *,
    items: int | None,
) -> None:
    usage = None
    if response is not None and "usage" in response.DESCRIPTOR.fields_by_name and response.HasField("usage"):
        usage = response.usage
    fields: dict[str, Any] = {
        "rpc": rpc,
        "model": model,
        "code": code,
        "inputs": _inputs_of(request) if items is None else items,
        "tokens": usage.tokens if usage else 0,
        "queue_ms": round(usage.queue_time_ns / 1e6, 3) if usage else 0.0,
        "inference_ms": round(usage.inference_time_ns / 1e6, 3) if usage else 0.0,
        "ms": round(seconds * 1000, 3),
        "peer": context.peer(),
        "token_name": caller.get() or "-",
        "request_id": request_id,
        "retry_after_ms": _retry_after_ms(context),
    }
    log.info(" ".join(f"{k}={v}" for k, v in fields.items()), extra=fields)


def _retry_after_ms(context: grpc.aio.ServicerContext) -> int:
    """The retry hint the call was refused with; 0 for none."""
    for key, value in context.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key == RETRY_AFTER:
            return int(value)
    return 0


def _code_of(context: grpc.aio.ServicerContext, raised: BaseException | None) -> str:
    code = context.code()  # what the call was aborted with, or set to; None when neither
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(raised, asyncio.CancelledError) or context.cancelled():
        return "CANCELLED"
    if raised is not None and not isinstance(raised, GeneratorExit):
        return "UNKNOWN"  # what gRPC answers for an exception it was not told the code of
    return "OK"


def _served_model(response: Any) -> str:
    """The model a response names: a string on EncoderService's, a Model on LoadModel's and ReloadModel's."""
    model = getattr(response, "model", "")
    return model if isinstance(model, str) else str(getattr(model, "name", ""))


def _model_of(request: Any) -> str:
    if request is None or not hasattr(request, "DESCRIPTOR"):
        return ""
    fields = request.DESCRIPTOR.fields_by_name
    return str(request.model if "model" in fields else request.name if "name" in fields else "")


def _inputs_of(request: Any) -> int:
    if request is None or not hasattr(request, "DESCRIPTOR"):
        return 0
    fields = request.DESCRIPTOR.fields_by_name
    for name in ("inputs", "questions", "documents"):
        if name in fields:
            return len(getattr(request, name))
    return 0
