"""The gRPC servicers: thin translations between protobuf and the domain flows."""

from __future__ import annotations

import time

import grpc
from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc, model_service_pb2, model_service_pb2_grpc

from bertserve import convert, embedding, qa
from bertserve.router import Router
from bertserve.status import grpc_errors

__all__ = ["EncoderServicer", "ModelServicer"]


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as a time.monotonic() value, or None when the caller set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class EncoderServicer(encoder_service_pb2_grpc.EncoderServiceServicer):
    def __init__(self, router: Router) -> None:
        self._router = router

    @grpc_errors
    async def Embed(  # noqa: N802 (gRPC method name)
        self, request: encoder_service_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> encoder_service_pb2.EmbedResponse:
        result = await embedding.embed(self._router, convert.embed_query(request), deadline=deadline_of(context))
        return convert.embed_response(result)

    @grpc_errors
    async def Tokenize(  # noqa: N802
        self, request: encoder_service_pb2.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> encoder_service_pb2.TokenizeResponse:
        result = await embedding.tokenize(self._router, convert.tokenize_query(request))
        return convert.tokenize_response(result)

    @grpc_errors
    async def Answer(  # noqa: N802
        self, request: encoder_service_pb2.AnswerRequest, context: grpc.aio.ServicerContext
    ) -> encoder_service_pb2.AnswerResponse:
        result = await qa.answer(self._router, convert.answer_query(request), deadline=deadline_of(context))
        return convert.answer_response(result)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, router: Router) -> None:
        self._router = router

    @grpc_errors
    async def ListModels(  # noqa: N802
        self, request: model_service_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> model_service_pb2.ListModelsResponse:
        default = self._router.default_model
        return model_service_pb2.ListModelsResponse(
            models=[convert.model_proto(h, is_default=h.name == default) for h in self._router]
        )

    @grpc_errors
    async def GetModel(  # noqa: N802
        self, request: model_service_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> model_service_pb2.GetModelResponse:
        host = self._router.get(request.name)
        return model_service_pb2.GetModelResponse(
            model=convert.model_proto(host, is_default=host.name == self._router.default_model)
        )
