"""Pack many short sequences into few rows, so a forward pass computes no padding.

Sequences share a row back to back; a block-diagonal attention mask keeps each one attending
only to itself, and position ids restart at every sequence, so each comes out as if run alone.
Linear layers (most of an encoder's work) then see only real tokens, and one pass can take every
pending sequence without paying for the longest one's width. Padding at the end of a row
attends to itself alone, which keeps its softmax finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bertserve.api import Encoding

__all__ = ["PackedBatch", "pack"]


@dataclass(frozen=True)
class PackedBatch:
    inputs: dict[str, torch.Tensor]  # input_ids, position_ids, attention_mask [rows, 1, W, W], token_type_ids?
    rows: torch.Tensor  # per sequence, in batch order: its row
    starts: torch.Tensor  # ... its first position in that row
    lengths: list[int]  # ... its token count


def pack(
    batch: Sequence[Encoding],
    *,
    row_tokens: int,
    pad_id: int,
    position_offset: int,
    with_token_types: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> PackedBatch:
    """First-fit-decreasing packing into rows of max(row_tokens, longest) tokens."""
    capacity = max(row_tokens, max(len(e) for e in batch))
    fill: list[int] = []
    place = [(0, 0)] * len(batch)
    for i in sorted(range(len(batch)), key=lambda i: -len(batch[i])):
        n = len(batch[i])
        row = next((r for r, used in enumerate(fill) if used + n <= capacity), len(fill))
        if row == len(fill):
            fill.append(0)
        place[i] = (row, fill[row])
        fill[row] += n
    width = max(fill)
    ids = np.full((len(fill), width), pad_id, dtype=np.int64)
    positions = np.zeros((len(fill), width), dtype=np.int64)
    types = np.zeros((len(fill), width), dtype=np.int64)
    allowed = np.zeros((len(fill), width, width), dtype=bool)
    for encoding, (row, start) in zip(batch, place, strict=True):
        end = start + len(encoding)
        ids[row, start:end] = encoding.ids
        positions[row, start:end] = np.arange(position_offset, position_offset + len(encoding))
        types[row, start:end] = encoding.type_ids
        allowed[row, start:end, start:end] = True
    for row, used in enumerate(fill):
        pad = np.arange(used, width)
        allowed[row, pad, pad] = True
    mask = torch.zeros((len(fill), 1, width, width), dtype=dtype)
    mask.masked_fill_(~torch.from_numpy(allowed).unsqueeze(1), torch.finfo(dtype).min)
    inputs = {"input_ids": torch.from_numpy(ids), "position_ids": torch.from_numpy(positions), "attention_mask": mask}
    if with_token_types:
        inputs["token_type_ids"] = torch.from_numpy(types)
    return PackedBatch(
        inputs={k: v.to(device, non_blocking=True) for k, v in inputs.items()},
        rows=torch.tensor([p[0] for p in place], device=device),
        starts=torch.tensor([p[1] for p in place], device=device),
        lengths=[len(e) for e in batch],
    )
