"""What the codecs share: tensors, usage, pooling and offset units in their protobuf form."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from bertserve.api import Pooling
from bertserve.domain import (
    OffsetUnit,
    Usage,
)
from bertserve.errors import InvalidRequest
from bertserve_client.v1 import common_pb2


def numpy_to_tensor(array: npt.ArrayLike) -> common_pb2.Tensor:
    """An array as the contract's Tensor: little-endian float32 in row-major order, with its shape."""
    packed = np.asarray(array, dtype="<f4")
    return common_pb2.Tensor(data=packed.tobytes(order="C"), shape=packed.shape)  # C order, whatever the layout


POOLING_FROM_PB = {
    common_pb2.POOLING_UNSPECIFIED: None,
    common_pb2.POOLING_CLS: Pooling.CLS,
    common_pb2.POOLING_MEAN: Pooling.MEAN,
    common_pb2.POOLING_POOLER: Pooling.POOLER,
}


POOLING_TO_PB = {v: k for k, v in POOLING_FROM_PB.items() if v is not None}


_OFFSET_UNIT_FROM_PB = {
    common_pb2.OFFSET_UNIT_UNSPECIFIED: OffsetUnit.CODE_POINT,
    common_pb2.OFFSET_UNIT_CODE_POINT: OffsetUnit.CODE_POINT,
    common_pb2.OFFSET_UNIT_UTF16_CODE_UNIT: OffsetUnit.UTF16,
    common_pb2.OFFSET_UNIT_UTF8_BYTE: OffsetUnit.UTF8,
}


def offset_unit(value: int) -> OffsetUnit:
    try:
        return _OFFSET_UNIT_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise InvalidRequest(f"offset_unit {value} is not a known OffsetUnit value") from None


def usage_proto(usage: Usage) -> common_pb2.Usage:
    return common_pb2.Usage(
        tokens=usage.tokens,
        queue_time_ns=usage.queue_time_ns,
        inference_time_ns=usage.inference_time_ns,
        tokenization_time_ns=usage.tokenization_time_ns,
    )
