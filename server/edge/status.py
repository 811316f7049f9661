"""The one place where errors become gRPC status codes.

Every servicer method is wrapped by :func:`grpc_errors`: domain errors keep their message
and get the status code of their class; anything else is INTERNAL, logged with a request id
that the caller also receives, so the two can be matched.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from bertserve.edge import call_facts
from bertserve.edge.parsing import Unparsable
from bertserve.errors import (
    BertserveError,
    CapabilityNotSupported,
    DeadlineExceeded,
    InternalFailure,
    InvalidRequest,
    ModelExists,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    PermissionDenied,
    PreconditionFailed,
)
from bertserve.observability import request_ids

__all__ = [
    "RETRY_AFTER",
    "RETRY_PUSHBACK",
    "STATUS_OF",
    "abort",
    "abort_with",
    "grpc_errors",
    "internal_error",
    "status_of",
]

RETRY_AFTER = "retry-after-ms"
RETRY_PUSHBACK = "grpc-retry-pushback-ms"  # gRPC's own (see gRFC A6, client retries)

log = logging.getLogger(__name__)

STATUS_OF: dict[type[BertserveError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    CapabilityNotSupported: grpc.StatusCode.UNIMPLEMENTED,
    ModelUnavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    ModelExists: grpc.StatusCode.ALREADY_EXISTS,
    PreconditionFailed: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    InternalFailure: grpc.StatusCode.INTERNAL,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def status_of(error: BertserveError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]  # type: ignore[index]
    return grpc.StatusCode.INTERNAL


def grpc_errors(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Turn what a unary servicer method raises into a gRPC status with a clear message."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        if isinstance(request, Unparsable):
            await abort(context, request.code, str(request))
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:
            raise
        except BertserveError as e:
            await abort_with(context, e)
        except Exception:
            await abort(context, grpc.StatusCode.INTERNAL, internal_error(handler.__name__))
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


async def abort_with(context: grpc.aio.ServicerContext, error: BertserveError) -> None:
    """Abort the call with the status of error. An Overloaded error carries its retry hint twice:
    as retry-after-ms for the caller's own code, and as grpc-retry-pushback-ms, which a gRPC
    client whose retry policy covers the code waits for before its next attempt."""
    retry = getattr(error, "retry_after_s", None)
    retry_ms = None if retry is None else max(1, round(retry * 1000))
    await abort(context, status_of(error), str(error), retry_after_ms=retry_ms)


async def abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str, *, retry_after_ms: int | None = None
) -> None:
    """Abort the call, with the retry hint in its trailers when given, beside the request id.

    The outcome is noted in the call's facts first, so that the access log and the metrics never
    ask the context once the call has ended (see bertserve.edge.call_facts).
    """
    facts = call_facts.current.get()
    trailers: tuple[tuple[str, str], ...] = ()
    if facts is not None:
        facts.code = code
        facts.retry_after_ms = retry_after_ms or 0
        trailers = ((request_ids.HEADER, facts.request_id),)
    if retry_after_ms is not None:
        trailers += ((RETRY_AFTER, str(retry_after_ms)), (RETRY_PUSHBACK, str(retry_after_ms)))
    await context.abort(code, message, trailers)


def internal_error(where: str) -> str:
    """Log the exception being handled under the call's request id; return the message for the caller."""
    request_id = request_ids.current.get() or request_ids.new()
    log.exception("internal error in %s (request id %s)", where, request_id)
    return f"internal error (request id {request_id})"
