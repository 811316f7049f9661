"""One structured log line per call, and the call's request id in its response metadata.

The line names the RPC, model, status code, inputs, tokens, queue and inference milliseconds,
the whole call's milliseconds, the peer, the token's name (never the token) and the request id.
It goes to the ``bertserve.access`` logger: text or JSON as ``server.log_format`` says, stamped
with the time the call ended.

The lines of the calls that end in one turn of the event loop are made and logged together, once
the turn's callbacks have run, not one by one inside each call as it ends. Measured on the
near-free bench model (bench/frontend.py's set-up, 64 callers, two servers alternated in one run,
six slices of 5 s, twice): 768 and 771 us of the server's CPU a call against 840 and 847 with
each line made as its call ended (docs/performance.md). Writing the lines once a turn while still
making each as its call ended measured no different, so the gain is in making them in a row,
most likely from running the logging code while it is in cache rather than between the steps
of a call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Container
from dataclasses import dataclass
from typing import Any

import grpc

from bertserve.edge import call_facts
from bertserve.edge.call_facts import CallFacts
from bertserve.edge.handlers import replace_behaviour
from bertserve.observability import metrics, request_ids
from bertserve.observability.logs import shown

__all__ = ["AccessLog"]

log = logging.getLogger("bertserve.access")


class AccessLog(grpc.aio.ServerInterceptor):
    """Outermost interceptor of the methods given: refused calls are counted and logged too.

    It reads the call's facts as the handler starts (see bertserve.edge.call_facts) and records
    the call from them alone. Streams are served as reader-writer coroutines that close the
    handlers under them before they return, so that nothing of a cancelled stream outlives its
    call. Every call is counted in the metrics; lines are written when lines is set. Metric labels
    name served models only (a caller's unknown name is "-"), so that callers cannot grow the
    label sets without bound.
    """

    def __init__(self, methods: Collection[str], models: Container[str], default_model: str, *, lines: bool) -> None:
        """models: the names served now (a live view: models come and go at run time)."""
        self._methods = frozenset(methods)
        self._models = models
        self._default_model = default_model
        self._lines = lines
        self._waiting: list[_Ended] = []  # the calls ended in this loop turn whose lines are to write

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method not in self._methods:
            return handler
        inner = handler.unary_unary or handler.stream_stream
        return replace_behaviour(
            handler, _unary(inner, details, self._record, self._models), _streaming(inner, details, self._record)
        )

    def _record(
        self,
        facts: CallFacts,
        request: Any,
        response: Any,
        raised: BaseException | None,
        *,
        items: int | None,
        served_at_start: str = "",
    ) -> None:
        """Count the call and log its line; a fault here is logged, never the call's.

        served_at_start: the model the request named, where it was served as the call began (an
        unloaded model is gone by the time its UnloadModel call is recorded)."""
        try:
            seconds = time.perf_counter() - facts.started
            code = _code_of(facts, raised)
            named = _served_model(response) or _model_of(request) or facts.model
            model = named or (self._default_model if _names_default(request) else "-")
            label = model if model in self._models or model == served_at_start else "-"
            metrics.child(metrics.CALLS, facts.rpc, label, code).inc()
            metrics.child(metrics.CALL_SECONDS, facts.rpc, label).observe(seconds)
            if self._lines and log.isEnabledFor(logging.INFO):
                self._later(_Ended(facts, model, request, response, code, seconds, items, time.time()))
        except Exception:
            log.exception("cannot record a %s call", facts.rpc)

    def _later(self, ended: _Ended) -> None:
        """Log the call's line at the end of this loop turn, with the others ended in it."""
        if not self._waiting:
            try:
                asyncio.get_running_loop().call_soon(self.write_lines)
            except RuntimeError:  # no loop runs on this thread: nothing would call back
                _line(ended)
                return
        self._waiting.append(ended)

    def write_lines(self) -> None:
        """Log the lines of the calls ended and not yet logged, in the order they ended (the server
        calls it as it stops, after its last call)."""
        waiting, self._waiting = self._waiting, []
        for ended in waiting:
            try:
                _line(ended)
            except Exception:
                log.exception("cannot log a %s call", ended.facts.rpc)


@dataclass(frozen=True, slots=True)
class _Ended:
    """A call ended, as its access-log line tells it."""

    facts: CallFacts
    model: str
    request: Any
    response: Any
    code: str
    seconds: float
    items: int | None  # a stream's messages answered; None for a unary call
    at: float  # when it ended, in time.time()


def _begin(details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext) -> CallFacts:
    """The call's facts, and its request id in its trailers from the start (an error's only metadata).

    Nothing is sent yet: response headers commit a call, and a gRPC client retries only calls
    not committed. An UNAVAILABLE or RESOURCE_EXHAUSTED answer (a draining server, a full queue)
    must go out as trailers alone for the caller's retry policy to send it elsewhere.
    """
    facts = call_facts.read(details.method, details.invocation_metadata, context)  # type: ignore[arg-type]
    context.set_trailing_metadata(((request_ids.HEADER, facts.request_id),))
    return facts


Record = Callable[..., None]


def _unary(inner: Any, details: grpc.HandlerCallDetails, record: Record, models: Container[str]) -> Any:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        facts = _begin(details, context)
        named = _model_of(request)
        served_at_start = named if named in models else ""
        response, raised = None, None
        try:
            response = await inner(request, context)
            return response
        except BaseException as e:
            raised = e
            raise
        finally:
            record(facts, request, response, raised, items=None, served_at_start=served_at_start)

    return handle


def _streaming(inner: Any, details: grpc.HandlerCallDetails, record: Record) -> Any:
    async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        """A reader-writer handler (a coroutine, not a generator): gRPC cancels it in its own task,
        so its finally runs while the call is alive, and closes the generators under it there."""
        facts = _begin(details, context)
        seen: list[Any] = []  # the first request, for its model
        answered, raised = 0, None

        async def counted() -> AsyncIterator[Any]:
            async for request in requests:
                if not seen:
                    seen.append(request)
                yield request

        responses = inner(counted(), context)
        try:
            async for response in responses:
                if not answered:
                    # Headers with the request id before a stream's first message. A unary answer
                    # sends none of its own: gRPC then sends its headers, message and trailers (which
                    # hold the id) as one batch, so a replica killed in between cannot leave a
                    # committed call unanswered, which a client's retry policy cannot send elsewhere.
                    await _sending(facts, context.send_initial_metadata(((request_ids.HEADER, facts.request_id),)))
                answered += 1
                await _sending(facts, context.write(response))
        except BaseException as e:
            raised = e
            raise
        finally:
            await _close(responses)
            first = seen[0].request if seen and hasattr(seen[0], "request") else None
            record(facts, first, None, raised, items=answered)

    return handle


#: What grpcio raises when a message cannot go out because the call has ended under it.
_CALL_ENDED: type[Exception] = grpc._cython.cygrpc.ExecuteBatchError  # type: ignore[attr-defined]


async def _sending(facts: CallFacts, sent: Awaitable[None]) -> None:
    """Send on a stream; if the caller has just cancelled (before gRPC has cancelled this task), the
    call ends as cancelled, as it would a moment later, not as a fault logged with a traceback."""
    try:
        await sent
    except _CALL_ENDED:
        facts.code = grpc.StatusCode.CANCELLED
        raise asyncio.CancelledError from None


async def _close(responses: Any) -> None:
    """Close a stream's handler now (its finally blocks run in this call's task), not whenever the
    garbage collector finalizes it, by which time gRPC has released the call."""
    aclose = getattr(responses, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        log.exception("a stream's handler failed as it closed")


def _line(ended: _Ended) -> None:
    facts, response = ended.facts, ended.response
    usage = None
    if response is not None and "usage" in response.DESCRIPTOR.fields_by_name and response.HasField("usage"):
        usage = response.usage
    fields: dict[str, Any] = {
        "rpc": facts.rpc,
        "model": shown(ended.model),
        "code": ended.code,
        "inputs": _inputs_of(ended.request) if ended.items is None else ended.items,
        "tokens": usage.tokens if usage else 0,
        "queue_ms": round(usage.queue_time_ns / 1e6, 3) if usage else 0.0,
        "inference_ms": round(usage.inference_time_ns / 1e6, 3) if usage else 0.0,
        "ms": round(ended.seconds * 1000, 3),
        "peer": facts.peer or "-",
        "token_name": facts.token_name or "-",
        "request_id": facts.request_id,
        "retry_after_ms": facts.retry_after_ms,
    }
    message = " ".join(f"{k}={v}" for k, v in fields.items())
    # As log.info makes its record (no caller's file: logs.configure_logging turns that off), but
    # stamped with the call's end, not with the end of the loop turn that logs it.
    record = log.makeRecord(log.name, logging.INFO, "(unknown file)", 0, message, (), None, extra=fields)
    late = record.created - ended.at
    record.created, record.msecs = ended.at, int((ended.at - int(ended.at)) * 1000) + 0.0
    record.relativeCreated -= late * 1000
    log.handle(record)


def _code_of(facts: CallFacts, raised: BaseException | None) -> str:
    if facts.code is not None:  # what bertserve aborted the call with
        return facts.code.name
    if isinstance(raised, asyncio.CancelledError):
        return "CANCELLED"
    if isinstance(raised, grpc.aio.AbortError):
        return "UNKNOWN"  # aborted by code that did not say how (bertserve's own aborts all do)
    if raised is not None and not isinstance(raised, GeneratorExit):
        return "UNKNOWN"  # what gRPC answers for an exception it was not told the code of
    return "OK"


def _names_default(request: Any) -> bool:
    """A request whose empty model (or name) field means the default model."""
    if request is None or not hasattr(request, "DESCRIPTOR"):
        return False
    fields = request.DESCRIPTOR.fields_by_name
    return "model" in fields or "name" in fields


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
    for name in ("inputs", "questions", "documents", "sentences"):
        if name in fields:
            return len(getattr(request, name))
    return 0
