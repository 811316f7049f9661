"""Prometheus metrics of a server process (prometheus_client), per model and RPC.

With several server processes, each writes its samples to files in PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode, which the supervisor sets up before it starts them), and
the supervisor serves one scrape of all of them. Names follow Prometheus conventions: base units,
``_total`` counters, ``_seconds`` durations.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server

__all__ = [
    "CALLS",
    "CALL_SECONDS",
    "INFERENCE_SECONDS",
    "MODEL_STATE",
    "PASS_SEQUENCES",
    "PASS_TOKENS",
    "QUEUE_SECONDS",
    "QUEUE_SEQUENCES",
    "QUEUE_TOKENS",
    "REFUSED",
    "TOKENS",
    "child",
    "serve_metrics",
]

log = logging.getLogger(__name__)

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKENS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)

CALLS = Counter("bertserve_calls", "Calls answered, by RPC, model and status code.", ["rpc", "model", "code"])
CALL_SECONDS = Histogram(
    "bertserve_call_duration_seconds", "Whole calls, from receipt to reply.", ["rpc", "model"], buckets=_LATENCY
)
QUEUE_SECONDS = Histogram(
    "bertserve_queue_duration_seconds",
    "Time a sequence waited in its model's queue before its forward pass.",
    ["model"],
    buckets=_LATENCY,
)
INFERENCE_SECONDS = Histogram(
    "bertserve_inference_duration_seconds", "Forward passes: their compute time.", ["model"], buckets=_LATENCY
)
PASS_SEQUENCES = Histogram("bertserve_pass_sequences", "Sequences per forward pass.", ["model"], buckets=_SIZES)
PASS_TOKENS = Histogram("bertserve_pass_tokens", "Tokens per forward pass.", ["model"], buckets=_TOKENS)
TOKENS = Counter("bertserve_tokens", "Tokens through forward passes.", ["model"])
QUEUE_SEQUENCES = Gauge(
    "bertserve_queue_sequences", "Sequences waiting for a pass.", ["model"], multiprocess_mode="livesum"
)
QUEUE_TOKENS = Gauge("bertserve_queue_tokens", "Tokens waiting for a pass.", ["model"], multiprocess_mode="livesum")
REFUSED = Counter(
    "bertserve_refused_calls",
    "Calls refused with RESOURCE_EXHAUSTED: the model's queue was full, or the server at max_concurrent_calls.",
    ["model", "reason"],
)
MODEL_STATE = Gauge(
    "bertserve_model_state",
    "1 for the state each model is in (loading, ready, failed), 0 for the others; summed over processes.",
    ["model", "state"],
    multiprocess_mode="livesum",
)


def serve_metrics(address: str, port: int) -> WSGIServer:
    """Serve /metrics over HTTP on a thread of its own (shutdown() stops it). In multiprocess
    mode the scrape gathers every process's samples."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    httpd, _ = start_http_server(port, addr=address, registry=registry)
    log.info("Prometheus metrics on http://%s:%d/metrics", address, httpd.server_port)
    return httpd


@functools.lru_cache(maxsize=4096)
def child(metric: Any, *labels: str) -> Any:
    """metric.labels(*labels), looked up once: the calls' hot path counts with it. The label values
    are bounded (RPCs, served models, codes), and the cache is bounded besides."""
    return metric.labels(*labels)
