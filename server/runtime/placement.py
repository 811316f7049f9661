"""Resolve a model's configured device and dtype against the hardware actually present."""

from __future__ import annotations

import re

from bertserve.errors import ConfigError
from bertserve.runtime.lazy_torch import torch

__all__ = ["resolve_device", "resolve_dtype", "without_per_shape_attention_plans"]

_DTYPES = ("float32", "float16", "bfloat16")  # torch's names of the dtypes a model may run in
_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(device: str) -> torch.device:
    """``auto`` takes the first GPU when one is present, else the CPU; ``cuda:N`` must exist."""
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    match = _CUDA.match(device)
    if match is None:
        raise ConfigError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but no CUDA device is present")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device("cuda", index)


def without_per_shape_attention_plans() -> None:
    """Keep CUDA attention off cuDNN, process-wide.

    cuDNN's attention builds an execution plan for every new input shape, tens of milliseconds
    each, and serving traffic brings new (rows, width) shapes for a long time; the flash and
    memory-efficient kernels need no plan and are as fast at encoder lengths.
    """
    torch.backends.cuda.enable_cudnn_sdp(False)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is float32 on the CPU and bfloat16 (float16 where unsupported) on a GPU."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of auto, {', '.join(_DTYPES)}")
    resolved: torch.dtype = getattr(torch, dtype)
    return resolved


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
