"""BertserveError: the one exception the clients raise for a failed call.

    Exception
    └── BertserveError   code (grpc.StatusCode), message, retry_after_s

The original grpc.RpcError is kept as __cause__.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import grpc

# Trailing metadata a server sets (decimal milliseconds) when the client should wait before retrying,
# typically with RESOURCE_EXHAUSTED or UNAVAILABLE.
RETRY_AFTER_KEY = "retry-after-ms"


class BertserveError(Exception):
    """A call failed with a gRPC status: `message` is the server's details string."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


def from_rpc_error(err: grpc.RpcError) -> BertserveError:
    """Convert an error of the sync or the aio stack; the caller raises it `from err`."""
    # Sync errors yield namedtuples, aio errors plain tuples: both unpack as (key, value).
    metadata = cast(Iterable[tuple[str, str | bytes]], err.trailing_metadata() or ())
    return BertserveError(err.code(), err.details() or "", _retry_after_s(metadata))


def _retry_after_s(metadata: Iterable[tuple[str, str | bytes]]) -> float | None:
    for key, value in metadata:
        if key == RETRY_AFTER_KEY:
            try:
                return float(value) / 1000
            except ValueError:
                return None  # a malformed hint is no reason to hide the real error
    return None
