"""Swap the behaviour of a gRPC method handler, as interceptors do to wrap a call."""

from __future__ import annotations

from typing import Any

import grpc

__all__ = ["replace_behaviour"]


def replace_behaviour(handler: grpc.RpcMethodHandler, unary: Any, streaming: Any) -> grpc.RpcMethodHandler:
    """The handler with unary as its unary-unary behaviour, or streaming as its bidirectional one
    (the only two kinds bertserve's services have)."""
    if handler.unary_unary:
        return handler._replace(unary_unary=unary)  # type: ignore[attr-defined,no-any-return]
    if handler.stream_stream:
        return handler._replace(stream_stream=streaming)  # type: ignore[attr-defined,no-any-return]
    raise NotImplementedError("bertserve's services are unary or bidirectional streams")
