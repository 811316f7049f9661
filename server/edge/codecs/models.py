"""A model host as the model service's Model message."""

from __future__ import annotations

from bertserve.capabilities import CAPABILITIES
from bertserve.edge.codecs.common import POOLING_TO_PB
from bertserve.serving.model_host import ModelHost, ModelState
from bertserve_client.v1 import model_service_pb2

_STATE_TO_PB = {
    ModelState.LOADING: model_service_pb2.MODEL_STATE_LOADING,
    ModelState.READY: model_service_pb2.MODEL_STATE_READY,
    ModelState.FAILED: model_service_pb2.MODEL_STATE_FAILED,
}


def model_proto(host: ModelHost, *, is_default: bool) -> model_service_pb2.Model:
    model = model_service_pb2.Model(
        name=host.name,
        plugin=host.spec.plugin,
        source=host.spec.source,
        state=_STATE_TO_PB[host.state],
        failure_reason=host.failure_reason,
        is_default=is_default,
        load_attempts=host.load_attempts,
    )
    if host.next_attempt_at is not None:
        model.next_attempt_time.FromNanoseconds(int(host.next_attempt_at * 1e9))
    info = host.info
    if info is not None:
        model.devices.extend(info.devices)
        model.dtype = info.dtype
        model.capabilities.extend(sorted(CAPABILITIES[c].proto_value for c in info.capabilities))
        model.hidden_size = info.hidden_size
        model.max_input_tokens = info.max_input_tokens
        model.poolings.extend(POOLING_TO_PB[p] for p in info.poolings)
        model.default_pooling = POOLING_TO_PB[info.default_pooling]
        model.labels.extend(info.labels)
    return model
