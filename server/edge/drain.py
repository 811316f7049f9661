"""The encoder service's calls in flight, counted so that a stopping server answers them all
before gRPC stops.

Once a grpc server has begun to stop, grpc core closes each connection the moment its last call
ends. A reply still on its way is then lost: the client's flow-control frames, sent while it
reads a large reply, lie unread on the server's socket when it closes, so the kernel resets the
connection and drops what it had not yet delivered. The client sees UNAVAILABLE ("Stream
removed") for a call the server answered.

So a drain goes in two steps. First the gate closes: calls that arrive are refused with
UNAVAILABLE, which a client retries elsewhere, and the calls in flight run to their end. Only
once none is left does gRPC stop. Then each connection closes only after its GOAWAY's ping has
come back, and the client has read every reply that went before.

The same count is what ``max_concurrent_calls`` limits; the servicer enters and leaves the gate
around each call, so the hot path pays for one counter, not for an interceptor of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bertserve.errors import BertserveError, ModelUnavailable

__all__ = ["CallGate"]


class CallGate:
    """The calls in flight; once closed, it refuses new ones."""

    def __init__(self) -> None:
        self.in_flight = 0
        self._closed = False
        self._idle: asyncio.Event | None = None  # made on the loop, when a drain waits
        self.expired: BertserveError | None = None  # set once the grace period ran out
        self.call_seconds = 0.0  # how long a unary call takes lately (smoothed), for retry hints
        self._on_expiry: set[Callable[[], None]] = set()

    def enter(self) -> None:
        """Count a call in; ModelUnavailable once the server is stopping."""
        if self._closed:
            raise ModelUnavailable("the server is shutting down; retry the call")
        self.in_flight += 1

    def leave(self, seconds: float | None = None) -> None:
        """Count a call out; seconds: how long it took (a unary call: what a refused one waits for)."""
        self.in_flight -= 1
        if seconds is not None:
            self.call_seconds = seconds if not self.call_seconds else 0.8 * self.call_seconds + 0.2 * seconds
        if self._idle is not None and self.in_flight == 0:
            self._idle.set()

    def close(self) -> None:
        """Refuse every call from now on; the calls in flight go on."""
        self._closed = True

    def on_expiry(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call callback when the grace period runs out (a stream stops reading then); returns what
        unregisters it."""
        self._on_expiry.add(callback)
        return lambda: self._on_expiry.discard(callback)

    def expire(self, error: BertserveError) -> None:
        """The grace period ran out: the calls still in flight end with error (streams included,
        which would otherwise take items until gRPC cuts them with a message of its own)."""
        self.expired = error
        for callback in list(self._on_expiry):
            callback()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait up to timeout seconds for the calls in flight to end (once closed); whether they all did."""
        if self._idle is None:
            self._idle = asyncio.Event()
        if self.in_flight == 0:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
