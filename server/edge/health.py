"""The standard gRPC health service (grpc.health.v1.Health): Check, Watch and List."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2

__all__ = ["HealthServicer"]

_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health.aio.HealthServicer):
    """grpcio-health-checking's asyncio servicer, with List, which it leaves unimplemented though
    the service's reflection offers it (a caller got UNIMPLEMENTED and the log a traceback)."""

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        """A snapshot of every service's status: the server (""), its services and each model;
        a model that was unloaded (SERVICE_UNKNOWN) is no longer listed."""
        statuses = {
            service: health_pb2.HealthCheckResponse(status=status)
            for service, status in self._server_status.items()
            if status != _UNKNOWN
        }
        return health_pb2.HealthListResponse(statuses=statuses)
