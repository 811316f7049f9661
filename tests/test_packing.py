"""Packed rows, checked cell by cell: each sequence's tokens where its place says, positions that
restart at each one, a block-diagonal attention mask, and padding that attends to itself alone."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from bertserve.api import Encoding, Pooling
from bertserve.runtime.packed_inputs import PackedBatch, pack, pooled_in_numpy, pooled_in_torch


def _encoding(rng: random.Random, n: int) -> Encoding:
    return Encoding(
        ids=[rng.randrange(1, 1000) for _ in range(n)],
        tokens=["t"] * n,
        type_ids=[rng.randrange(2) for _ in range(n)],
        special_tokens_mask=[0] * n,
        offsets=[(0, 0)] * n,
        sequence_ids=[0] * n,
        word_ids=[0] * n,
        full_length=n,
    )


def _packed_on_cpu(batch: list[Encoding], *, row_tokens: int, dtype: torch.dtype) -> PackedBatch:
    return pack(
        batch,
        row_tokens=row_tokens,
        pad_id=0,
        position_offset=0,
        with_token_types=False,
        dtype=dtype,
        device=torch.device("cpu"),
    )


def test_every_sequence_sits_alone_in_its_place_of_a_packed_row() -> None:
    rng = random.Random(7)
    low = torch.finfo(torch.float32).min
    for _ in range(300):
        batch = [_encoding(rng, rng.randrange(1, 50)) for _ in range(rng.randrange(1, 40))]
        row_tokens, offset = rng.choice([8, 64, 128]), rng.choice([0, 2])
        packed = pack(
            batch,
            row_tokens=row_tokens,
            pad_id=0,
            position_offset=offset,
            with_token_types=True,
            dtype=torch.float32,
            device=torch.device("cpu"),
        )
        ids, positions, types = (packed.inputs[k] for k in ("input_ids", "position_ids", "token_type_ids"))
        mask = packed.inputs["attention_mask"][:, 0]
        rows, width = ids.shape
        assert width <= max(row_tokens, max(len(e) for e in batch))
        owner = torch.full((rows, width), -1)
        for i, (e, row, start, n) in enumerate(
            zip(batch, packed.rows.tolist(), packed.starts.tolist(), packed.lengths, strict=True)
        ):
            assert n == len(e)
            assert ids[row, start : start + n].tolist() == e.ids
            assert types[row, start : start + n].tolist() == e.type_ids
            assert positions[row, start : start + n].tolist() == list(range(offset, offset + n))
            assert (owner[row, start : start + n] == -1).all(), "two sequences share a place"
            owner[row, start : start + n] = i
            # Its tokens' places in the flat rows, and their owner, as mean pooling gathers them.
            first, place = sum(packed.lengths[:i]), row * width + start
            assert packed.places[first : first + n].tolist() == list(range(place, place + n))
            assert packed.owners[first : first + n].tolist() == [i] * n
        assert len(packed.places) == len(packed.owners) == sum(packed.lengths)
        # Tokens attend to the tokens of their own sequence; a padding place to itself alone.
        own = owner[:, :, None] == owner[:, None, :]
        real = (owner >= 0)[:, :, None] | torch.eye(width, dtype=torch.bool)
        assert torch.equal(mask == 0, own & real)
        assert ((mask == 0) | (mask == low)).all()
        assert (ids[owner == -1] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_mask_holds_the_lowest_value_of_the_passes_dtype_where_a_place_is_not_attended_to(
    dtype: torch.dtype,
) -> None:
    rng = random.Random(11)
    batch = [_encoding(rng, n) for n in (5, 3, 9)]
    packed = _packed_on_cpu(batch, row_tokens=8, dtype=dtype)
    mask = packed.inputs["attention_mask"]
    assert mask.dtype == dtype
    assert set(mask.unique().tolist()) == {0.0, torch.finfo(dtype).min}
    assert "token_type_ids" not in packed.inputs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pooling", [Pooling.MEAN, Pooling.CLS])
def test_pooling_in_numpy_gives_the_bits_of_pooling_in_torch_and_each_sequences_own_mean(
    dtype: torch.dtype, pooling: Pooling
) -> None:
    """CPUs pool in numpy, other devices in torch: the same embeddings either way."""
    rng = random.Random(5)
    generator = torch.Generator().manual_seed(5)
    for _ in range(100):
        batch = [_encoding(rng, rng.randrange(1, 50)) for _ in range(rng.randrange(1, 30))]
        packed = _packed_on_cpu(batch, row_tokens=64, dtype=dtype)
        rows, width = packed.inputs["input_ids"].shape
        hidden = torch.randn((rows, width, 24), generator=generator).to(dtype)
        states = hidden.float().numpy()
        in_numpy = pooled_in_numpy(states.reshape(-1, 24), packed, pooling)
        in_torch = pooled_in_torch(hidden, packed, pooling).numpy()
        assert in_numpy.dtype == in_torch.dtype == np.float32
        assert np.array_equal(in_numpy, in_torch)
        for i, (row, start, n) in enumerate(
            zip(packed.rows.tolist(), packed.starts.tolist(), packed.lengths, strict=True)
        ):
            own = states[row, start : start + n]
            expected = own[0] if pooling is Pooling.CLS else own.mean(axis=0)
            np.testing.assert_allclose(in_numpy[i], expected, rtol=1e-5, atol=1e-6)
