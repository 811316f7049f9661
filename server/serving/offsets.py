"""Offsets in the unit a caller's language indexes strings by.

Tokenizers and the span search count Unicode code points (Python's str indices). JavaScript,
Java and C# index UTF-16 code units, Go and Rust UTF-8 bytes: a caller asks for its unit, and
each offset is mapped through the running count of that unit over the text's code points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bertserve.domain import OffsetUnit

__all__ = ["OffsetMap"]


class OffsetMap:
    """Maps code-point offsets of one text to offsets in unit."""

    def __init__(self, text: str, unit: OffsetUnit) -> None:
        self._starts: np.ndarray | None = None  # [len(text) + 1]: the unit's count before each code point
        if unit is OffsetUnit.CODE_POINT:
            return
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        if unit is OffsetUnit.UTF16:
            widths = 1 + (points > 0xFFFF)
        else:
            widths = 1 + (points > 0x7F).astype(np.int64) + (points > 0x7FF) + (points > 0xFFFF)
        self._starts = np.concatenate(([0], np.cumsum(widths, dtype=np.int64)))

    def __call__(self, offset: int) -> int:
        return offset if self._starts is None else int(self._starts[offset])

    def spans(self, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        if self._starts is None:
            return list(spans)
        if not spans:
            return []
        mapped = self._starts[np.asarray(spans, dtype=np.int64)]
        return [(int(s), int(e)) for s, e in mapped]
