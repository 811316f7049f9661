"""Requests that do not parse: INVALID_ARGUMENT from bertserve, not UNKNOWN and a traceback from gRPC.

The generated ``add_*Servicer_to_server`` functions register deserializers that raise on a
malformed message (a string field that is not UTF-8, a truncated field). Registered through
:func:`add_servicer`, each deserializer instead hands the servicer an :class:`Unparsable`,
which ``bertserve.status.grpc_errors`` answers with INVALID_ARGUMENT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

__all__ = ["Unparsable", "add_servicer"]


@dataclass(frozen=True)
class Unparsable:
    """A request message that did not parse, in place of the message."""

    message_type: str
    reason: str

    def __str__(self) -> str:
        return f"the request does not parse as {self.message_type}: {self.reason}"


def add_servicer(add_to_server: Callable[[Any, Any], None], servicer: Any, server: grpc.aio.Server) -> None:
    """Register servicer as add_to_server (a generated function) would, with tolerant deserializers."""
    captured: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    class Capture:
        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            pass  # the same handlers come again, by service, below

        def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
            captured[service] = handlers

    add_to_server(servicer, Capture())
    for service, handlers in captured.items():
        tolerant = {
            name: handler._replace(request_deserializer=_tolerant(handler.request_deserializer))  # type: ignore[attr-defined]
            for name, handler in handlers.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, tolerant),))
        server.add_registered_method_handlers(service, tolerant)


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    message_class = getattr(deserialize, "__self__", None)
    message_type = getattr(getattr(message_class, "DESCRIPTOR", None), "full_name", "its message type")

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as e:  # protobuf's DecodeError, or what a broken encoding raises inside it
            return Unparsable(message_type, " ".join(str(e).split())[:200] or type(e).__name__)

    return parse
