"""Requests refused as they arrive: INVALID_ARGUMENT from bertserve, before any work.

The generated ``add_*Servicer_to_server`` functions register deserializers that raise on a
malformed message (a string field that is not UTF-8, a truncated field), which gRPC answers with
UNKNOWN and a traceback in the log. Registered through :func:`add_servicer`, each deserializer
instead hands the servicer an :class:`Unparsable`, which ``bertserve.edge.status.grpc_errors``
answers with INVALID_ARGUMENT; so is a request over max_input_bytes, which is not even parsed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

__all__ = ["Unparsable", "add_generic_only", "add_servicer"]


@dataclass(frozen=True)
class Unparsable:
    """A request message refused as it arrived, in place of the message: why, for the caller, and
    the status that says so (a message that does not parse is INVALID_ARGUMENT; an EmbedStream item
    that names a model its token may not use is PERMISSION_DENIED, an error of its own)."""

    reason: str
    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT

    def __str__(self) -> str:
        return self.reason


def add_servicer(
    add_to_server: Callable[[Any, Any], None], servicer: Any, server: grpc.aio.Server, *, max_request_bytes: int
) -> None:
    """Register servicer as add_to_server (a generated function) would, with deserializers that
    refuse a request over max_request_bytes unread and one that does not parse (see
    add_generic_only for why its methods are not registered with grpc core)."""
    captured: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    class Capture:
        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            pass  # the same handlers come again, by service, below

        def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
            captured[service] = handlers

    add_to_server(servicer, Capture())
    for service, handlers in captured.items():
        tolerant = {
            name: handler._replace(  # type: ignore[attr-defined]
                request_deserializer=_tolerant(handler.request_deserializer, max_request_bytes)
            )
            for name, handler in handlers.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, tolerant),))


def add_generic_only(add_to_server: Callable[[Any, Any], None], servicer: Any, server: grpc.aio.Server) -> None:
    """Register servicer as add_to_server (a generated function) does, minus the registration of
    each method with grpc core: its generic handler serves the same methods.

    grpc.aio's server waits for its next call with asyncio.wait over one pending request per
    registered method and one for all others, and waits again after each call: with the ~20
    methods of bertserve's services, that cost the event loop about 25 us a wait more than a single
    pending request does (measured with uvloop). Generic handlers are found by a dict lookup.
    """

    class GenericOnly:
        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            server.add_generic_rpc_handlers(handlers)

        def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
            pass  # the generic handler above serves the same methods

    add_to_server(servicer, GenericOnly())


def _tolerant(deserialize: Callable[[bytes], Any], max_request_bytes: int) -> Callable[[bytes], Any]:
    message_class = getattr(deserialize, "__self__", None)
    message_type = getattr(getattr(message_class, "DESCRIPTOR", None), "full_name", "its message type")

    def parse(data: bytes) -> Any:
        if len(data) > max_request_bytes:
            return Unparsable(
                f"the request holds {len(data)} bytes, over the server's limit of {max_request_bytes} bytes per "
                "call (max_input_bytes); split it"
            )
        try:
            return deserialize(data)
        except Exception as e:  # protobuf's DecodeError, or what a broken encoding raises inside it
            reason = " ".join(str(e).split())[:200] or type(e).__name__
            return Unparsable(f"the request does not parse as {message_type}: {reason}")

    return parse
