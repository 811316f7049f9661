"""Pack many short sequences into few rows, so a forward pass computes no padding.

Sequences share a row back to back; a block-diagonal attention mask keeps each one attending
only to itself, and position ids restart at every sequence, so each comes out as if run alone.
Linear layers (most of an encoder's work) then see only real tokens, and one pass can take every
pending sequence without paying for the longest one's width. Padding at the end of a row
attends to itself alone, which keeps its softmax finite. The pass's states are pooled back out of
the rows by sequence (CLS or MEAN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain

import numpy as np

from bertserve.api import Encoding, Pooling
from bertserve.runtime.lazy_torch import torch

__all__ = ["PackedBatch", "pack", "pooled_in_numpy", "pooled_in_torch"]


@dataclass(frozen=True)
class PackedBatch:
    inputs: dict[str, torch.Tensor]  # input_ids, position_ids, attention_mask [rows, 1, W, W], token_type_ids?
    rows: np.ndarray  # per sequence, in batch order: its row
    starts: np.ndarray  # ... its first position in that row
    lengths: list[int]  # ... its token count
    places: np.ndarray  # per token of the batch, laid end to end in batch order: its place in the flat [rows * W]
    owners: np.ndarray  # ... the index of its sequence in the batch
    firsts: np.ndarray  # per sequence: the index of its first token in places


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
    """First-fit-decreasing packing into rows of max(row_tokens, longest) tokens.

    Only the placement (a few dozen sequences) is decided in Python; the arrays are filled with
    one scatter each over the batch's tokens, laid end to end. They are made in numpy and handed
    to torch as they are: a torch call from a device worker releases the interpreter lock, and
    under load each release waits to take it back from the event loop.
    """
    count = len(batch)
    lengths = np.fromiter((len(e) for e in batch), dtype=np.int64, count=count)
    capacity = max(row_tokens, int(lengths.max()))
    fill: list[int] = []
    rows, starts = np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.int64)
    for i in np.argsort(-lengths, kind="stable").tolist():
        n = int(lengths[i])
        row = next((r for r, used in enumerate(fill) if used + n <= capacity), len(fill))
        if row == len(fill):
            fill.append(0)
        rows[i], starts[i] = row, fill[row]
        fill[row] += n
    width, total, shape = max(fill), int(lengths.sum()), (len(fill), max(fill))
    # Each token's place in the [rows, width] arrays, in batch order, and its position in its sequence.
    firsts = np.cumsum(lengths) - lengths
    within = np.arange(total, dtype=np.int64) - np.repeat(firsts, lengths)
    where = np.repeat(rows * width + starts, lengths) + within
    ids = np.full(len(fill) * width, pad_id, dtype=np.int64)
    ids[where] = np.fromiter(chain.from_iterable(e.ids for e in batch), dtype=np.int64, count=total)
    positions = np.zeros(len(fill) * width, dtype=np.int64)
    positions[where] = within + position_offset
    # Which sequence each place holds; padding gets ids of its own, so that it attends to itself alone.
    flat_owner = -1 - np.arange(len(fill) * width, dtype=np.int64)
    owners = np.repeat(np.arange(count, dtype=np.int64), lengths)
    flat_owner[where] = owners
    owner = flat_owner.reshape(shape)
    allowed = owner[:, None, :, None] == owner[:, None, None, :]
    mask = np.where(allowed, np.float32(0), np.float32(_lowest(dtype)))
    inputs = {
        "input_ids": torch.from_numpy(ids.reshape(shape)),
        "position_ids": torch.from_numpy(positions.reshape(shape)),
        "attention_mask": torch.from_numpy(mask) if dtype == torch.float32 else torch.from_numpy(mask).to(dtype),
    }
    if with_token_types:
        types = np.zeros(len(fill) * width, dtype=np.int64)
        types[where] = np.fromiter(chain.from_iterable(e.type_ids for e in batch), dtype=np.int64, count=total)
        inputs["token_type_ids"] = torch.from_numpy(types.reshape(shape))
    if device.type != "cpu":
        inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
    return PackedBatch(inputs, rows, starts, lengths.tolist(), where, owners, firsts)


@cache
def _lowest(dtype: torch.dtype) -> float:
    """The mask's value for a place not attended to: dtype's lowest, exact in float32 (bfloat16's
    and float16's values all are)."""
    return float(torch.finfo(dtype).min)


def pooled_in_torch(hidden: torch.Tensor, packed: PackedBatch, pooling: Pooling) -> torch.Tensor:
    """CLS or MEAN pooling of a packed pass's states (hidden: [rows, width, hidden]) in torch, on
    their device, as float32."""
    device = hidden.device

    def on_device(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(device, non_blocking=True)

    if pooling is Pooling.CLS:
        return hidden[on_device(packed.rows), on_device(packed.starts)].float()
    # MEAN: sum each sequence's positions (placed by the packing), then divide by its length
    lengths = torch.tensor(packed.lengths, device=device)
    flat = hidden.reshape(-1, hidden.shape[-1])
    sums = torch.zeros((len(packed.lengths), flat.shape[-1]), dtype=torch.float32, device=device)
    sums.index_add_(0, on_device(packed.owners), flat[on_device(packed.places)].float())
    return sums / lengths.unsqueeze(-1)


def pooled_in_numpy(flat: np.ndarray, packed: PackedBatch, pooling: Pooling) -> np.ndarray:
    """CLS or MEAN pooling of a packed pass's states (flat: [rows * width, hidden], float32), with
    as few torch calls as may be: each one of a device worker releases the interpreter lock, and
    under load waits to take it back. The sums are torch's index_add_, which adds faster than
    numpy's reduceat over large passes; the results are those of pooling in torch, bit for bit."""
    if pooling is Pooling.CLS:
        return flat[packed.places[packed.firsts]]
    sums = torch.zeros((len(packed.lengths), flat.shape[-1]), dtype=torch.float32)
    sums.index_add_(0, torch.from_numpy(packed.owners), torch.from_numpy(flat[packed.places]))
    return sums.numpy() / np.asarray(packed.lengths, dtype=np.float32)[:, None]
