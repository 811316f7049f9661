"""The calls in flight, counted so that a stopping server answers them all before gRPC stops.

Once a grpc server has begun to stop, grpc core closes each connection the moment its last call
ends. A reply still on its way is then lost: the client's flow-control frames, sent while it
reads a large reply, lie unread on the server's socket when it closes, so the kernel resets the
connection and drops what it had not yet delivered. The client sees UNAVAILABLE ("Stream
removed") for a call the server answered.

So a drain goes in two steps. First the gate closes: calls that arrive are refused with
UNAVAILABLE, which a client retries elsewhere, and the calls in flight run to their end. Only
once none is left does gRPC stop. Then each connection closes only after its GOAWAY's ping has
come back, and the client has read every reply that went before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc

from bertserve.edge.handlers import replace_behaviour
from bertserve.edge.status import abort_with
from bertserve.errors import ModelUnavailable

__all__ = ["CallGate"]


class CallGate(grpc.aio.ServerInterceptor):
    """Counts the calls in flight of the methods given; once closed, refuses new ones."""

    def __init__(self, methods: Collection[str]) -> None:
        self._methods = frozenset(methods)
        self._in_flight = 0
        self._closed = False
        self._idle = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def close(self) -> None:
        """Refuse every call from now on; the calls in flight go on."""
        self._closed = True
        self._note_idle()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to timeout seconds for the calls in flight to end; whether they all did."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method not in self._methods:
            return handler
        if handler.unary_unary:
            return replace_behaviour(handler, self._unary(handler.unary_unary), None)
        return replace_behaviour(handler, None, self._streaming(handler.stream_stream))

    def _unary(self, inner: Any) -> Any:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._enter(context)
            try:
                return await inner(request, context)
            finally:
                self._leave()

        return handle

    def _streaming(self, inner: Any) -> Any:
        async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self._enter(context)
            responses = inner(requests, context)
            try:
                async for response in responses:
                    yield response
            finally:
                try:
                    await responses.aclose()  # its finally blocks run now, while the call is alive
                finally:
                    self._leave()

        return handle

    async def _enter(self, context: grpc.aio.ServicerContext) -> None:
        if self._closed:
            await abort_with(context, ModelUnavailable("the server is shutting down; retry the call"))
        self._in_flight += 1

    def _leave(self) -> None:
        self._in_flight -= 1
        self._note_idle()

    def _note_idle(self) -> None:
        if self._closed and self._in_flight == 0:
            self._idle.set()
