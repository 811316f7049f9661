"""How a client's channels spread calls over the replicas behind one target, and ride out their
failures: gRPC's own machinery, set through the channel's service config and arguments.

- ``round_robin`` over every address the target resolves to (a ``dns:///`` name, such as a
  Kubernetes headless Service, or an ``ipv4:a:p,b:p`` list).
- A retry policy for UNAVAILABLE (a replica that died, drains or still loads) and
  RESOURCE_EXHAUSTED (a full queue: gRPC waits the server's ``grpc-retry-pushback-ms``). gRPC
  retries a call only while no response headers came back, and bertserve sends none before its
  answer, so a call cut by a dying replica is tried again on another.
- Keepalive pings, so that a replica that vanished without closing its connections is noticed.
- Optionally, gRPC's client-side health checking: replicas that report NOT_SERVING (loading,
  or draining before they stop) get no calls.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["RETRIED_CODES", "fleet_options"]

RETRIED_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
_RETRIED_METHODS = [
    {"service": "bertserve.v1.EncoderService"},
    {"service": "bertserve.v1.ModelService", "method": "ListModels"},
    {"service": "bertserve.v1.ModelService", "method": "GetModel"},
]
_MAX_REQUEST_BYTES = 8 * 1024 * 1024  # the server's default max_input_bytes


def fleet_options(*, health_check: bool) -> dict[str, Any]:
    """Channel arguments: the service config, keepalive, and retry buffers for bertserve's requests."""
    config: dict[str, Any] = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": _RETRIED_METHODS,
                "retryPolicy": {
                    "maxAttempts": 5,  # gRPC's cap
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": list(RETRIED_CODES),
                },
            }
        ],
    }
    if health_check:
        config["healthCheckConfig"] = {"serviceName": ""}
    return {
        "grpc.service_config": json.dumps(config),
        "grpc.enable_retries": 1,
        # A request is retried only while it fits the buffers (256 KiB each by default).
        "grpc.per_rpc_retry_buffer_size": _MAX_REQUEST_BYTES,
        "grpc.retry_buffer_size": 8 * _MAX_REQUEST_BYTES,
        "grpc.keepalive_time_ms": 20_000,
        "grpc.keepalive_timeout_ms": 10_000,
        "grpc.keepalive_permit_without_calls": 1,
        # A replica back from a restart is tried again within seconds, not gRPC's two minutes.
        "grpc.initial_reconnect_backoff_ms": 250,
        "grpc.max_reconnect_backoff_ms": 5_000,
    }
