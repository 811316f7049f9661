"""Logits to scores, in float32 as transformers' pipelines compute them."""

from __future__ import annotations

import numpy as np

__all__ = ["sigmoid", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Over the last axis, shifted by its maximum."""
    x = logits.astype(np.float32, copy=False)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), without overflow for logits of either sign."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(np.float32)  # type: ignore[no-any-return]
