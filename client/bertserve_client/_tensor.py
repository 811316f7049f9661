"""numpy <-> bertserve.v1.Tensor: packed little-endian float32, row-major, with a shape.

The server imports these two functions too, so this module needs numpy and protobuf only.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from bertserve_client.v1 import common_pb2

_FLOAT32_LE = np.dtype("<f4")


def tensor_to_numpy(pb: common_pb2.Tensor) -> np.ndarray:
    """A read-only float32 view of the tensor's bytes (no copy); ValueError if they don't fit its shape."""
    shape = tuple(pb.shape)
    expected = math.prod(shape) * _FLOAT32_LE.itemsize
    if len(pb.data) != expected:
        raise ValueError(f"tensor of shape {list(shape)} needs {expected} bytes, got {len(pb.data)}")
    return np.frombuffer(pb.data, dtype=_FLOAT32_LE).reshape(shape)


def numpy_to_tensor(array: npt.ArrayLike) -> common_pb2.Tensor:
    """Pack any float-convertible array as little-endian float32 in row-major order."""
    packed = np.asarray(array, dtype=_FLOAT32_LE)
    # tobytes() writes C order whatever the array's memory layout.
    return common_pb2.Tensor(data=packed.tobytes(order="C"), shape=packed.shape)
