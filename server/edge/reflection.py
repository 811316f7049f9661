"""Server reflection under both names that tools ask for: ``grpc.reflection.v1`` and the older
``grpc.reflection.v1alpha``.

grpcio-reflection ships only v1alpha. The v1 service is the same protocol, message for message
and field for field, under another package; so the v1 file is the v1alpha file renamed, added to
the descriptor pool (reflection can then describe itself), and v1 calls run on the same servicer,
their bytes parsed and written by the v1alpha messages that share their wire format.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from bertserve.edge.parsing import add_generic_only

__all__ = ["METHODS", "SERVICE_NAMES", "enable_reflection"]

_ALPHA = "grpc.reflection.v1alpha"
_V1 = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{_V1}.ServerReflection"
SERVICE_NAMES = (V1_SERVICE_NAME, reflection.SERVICE_NAME)
METHODS = tuple(f"/{name}/ServerReflectionInfo" for name in SERVICE_NAMES)


def _add_v1_file() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindServiceByName(V1_SERVICE_NAME)
        return  # already there (the grpcio-reflection of a later release, or a second server)
    except KeyError:
        pass
    v1 = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(v1)
    for message in v1.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = field.type_name.replace(f".{_ALPHA}.", f".{_V1}.")
    for service in v1.service:
        for method in service.method:
            method.input_type = method.input_type.replace(f".{_ALPHA}.", f".{_V1}.")
            method.output_type = method.output_type.replace(f".{_ALPHA}.", f".{_V1}.")
    v1.name = "grpc/reflection/v1/reflection.proto"
    v1.package = _V1
    v1.options.Clear()
    pool.Add(v1)


def enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection of service_names (and of reflection itself) under v1 and v1alpha."""
    _add_v1_file()
    names = (*service_names, *SERVICE_NAMES)
    servicer = reflection.aio.ReflectionServicer(names)
    add_generic_only(reflection_pb2_grpc.add_ServerReflectionServicer_to_server, servicer, server)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {"ServerReflectionInfo": handler}),)
    )
