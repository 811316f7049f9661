"""Forward passes of the encoder: padded batches, and packed ones where short sequences share rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bertserve.api import EmbedOutput, Encoding, Pooling
from bertserve.errors import CapabilityNotSupported
from bertserve.runtime.lazy_torch import torch
from bertserve.runtime.packed_inputs import PackedBatch, pack, pooled_in_numpy, pooled_in_torch

from .state import PluginState

__all__ = ["Passes"]


class Passes(PluginState):
    """Embed: the encoder over a batch, padded or packed (see bertserve.runtime.packed_inputs), pooled."""

    def _inputs(self, batch: Sequence[Encoding]) -> dict[str, torch.Tensor]:
        """Right-pad a batch into tensors on the model's device."""
        width = max(len(e) for e in batch)
        ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        types = np.zeros((len(batch), width), dtype=np.int64)
        for row, encoding in enumerate(batch):
            n = len(encoding)
            ids[row, :n] = encoding.ids
            mask[row, :n] = 1
            types[row, :n] = encoding.type_ids
        inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if self._uses_token_types:
            inputs["token_type_ids"] = torch.from_numpy(types)
        return {k: v.to(self._device, non_blocking=True) for k, v in inputs.items()}

    def embed(self, batch: Sequence[Encoding], *, pooling: Pooling, with_token_states: bool) -> EmbedOutput:
        # A lone sequence has no padding to save; eager, it runs fastest unmasked, traced, packed.
        if self._packs and pooling is not Pooling.POOLER and (len(batch) > 1 or self._traced is not None):
            return self._embed_packed(batch, pooling=pooling, with_token_states=with_token_states)
        inputs = self._inputs(batch)
        with torch.inference_mode():
            out = self._encoder(**inputs)
            hidden = out.last_hidden_state
            if pooling is Pooling.CLS:
                pooled = hidden[:, 0]
            elif pooling is Pooling.MEAN:
                mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            elif pooling is Pooling.POOLER:
                if out.pooler_output is None:
                    raise CapabilityNotSupported(f"model {self.spec.name!r} has no pooler head")
                pooled = out.pooler_output
            pooled_np = pooled.float().cpu().numpy()
            token_states = None
            if with_token_states:
                states = hidden.float().cpu().numpy()
                token_states = [states[row, : len(e)] for row, e in enumerate(batch)]
        return EmbedOutput(pooled=pooled_np, token_states=token_states)

    def _pack(self, batch: Sequence[Encoding]) -> PackedBatch:
        return pack(
            batch,
            row_tokens=self.options.pack_row_tokens,
            pad_id=self._pad_id,
            position_offset=self.position_offset,
            with_token_types=self._uses_token_types,
            dtype=self._dtype,
            device=self._device,
        )

    def _embed_packed(self, batch: Sequence[Encoding], *, pooling: Pooling, with_token_states: bool) -> EmbedOutput:
        packed = self._pack(batch)
        with torch.inference_mode():
            if self._traced is not None:
                hidden = self._traced(packed.inputs)
            else:
                hidden = self._encoder(**packed.inputs).last_hidden_state
            if hidden.device.type == "cpu":
                states = (hidden if hidden.dtype == torch.float32 else hidden.float()).numpy()
                pooled_np = pooled_in_numpy(states.reshape(-1, states.shape[-1]), packed, pooling)
            else:
                pooled_np = pooled_in_torch(hidden, packed, pooling).cpu().numpy()
                states = None
            token_states = None
            if with_token_states:
                if states is None:
                    states = hidden.float().cpu().numpy()
                token_states = [
                    states[row, start : start + n]
                    for row, start, n in zip(packed.rows.tolist(), packed.starts.tolist(), packed.lengths, strict=True)
                ]
        return EmbedOutput(pooled=pooled_np, token_states=token_states)
