"""The heads' raw outputs, one method per head, for the server to postprocess (see bertserve.runtime.heads)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from bertserve.api import Encoding, QAWindowLogits

from .passes import Passes

__all__ = ["HeadLogits"]


class HeadLogits(Passes):
    """The whole model (encoder and head) over padded batches; logits as float32 numpy, unpadded.

    Heads run on padded batches: each is called as its model's forward calls it, on [batch, tokens]
    inputs. Packed rows would need each architecture's head internals called by name on gathered
    states (as FillMask does for its head, to keep its logits small).
    """

    def answer_windows(self, batch: Sequence[Encoding]) -> list[QAWindowLogits]:
        self._require_qa_head()
        inputs = self._inputs(batch)
        with torch.inference_mode():
            out = self._model(**inputs)
            start = out.start_logits.float().cpu().numpy()
            end = out.end_logits.float().cpu().numpy()
        return [QAWindowLogits(start=start[row, : len(e)], end=end[row, : len(e)]) for row, e in enumerate(batch)]

    def mask_logits(self, batch: Sequence[Encoding]) -> list[np.ndarray]:
        mask_id = self._tokenizer.mask_token_id
        inputs = self._inputs(batch)
        with torch.inference_mode():
            where = inputs["input_ids"] == mask_id
            if self._mlm_head is not None:
                hidden = self._encoder(**inputs).last_hidden_state
                logits = self._mlm_head(hidden[where]).float().cpu().numpy()  # [all masks, vocab]
            else:
                logits = self._model(**inputs).logits[where].float().cpu().numpy()
        counts = where.sum(dim=1).tolist()
        return list(np.split(logits, np.cumsum(counts)[:-1])) if batch else []

    def replaced_logits(self, batch: Sequence[Encoding]) -> list[np.ndarray]:
        inputs = self._inputs(batch)
        with torch.inference_mode():
            logits = self._model(**inputs).logits.float().cpu().numpy()  # [batch, tokens]
        return [logits[row, : len(e)] for row, e in enumerate(batch)]

    def sequence_logits(self, batch: Sequence[Encoding]) -> np.ndarray:
        inputs = self._inputs(batch)
        with torch.inference_mode():
            return self._model(**inputs).logits.float().cpu().numpy()  # type: ignore[no-any-return]

    def token_logits(self, batch: Sequence[Encoding]) -> list[np.ndarray]:
        inputs = self._inputs(batch)
        with torch.inference_mode():
            logits = self._model(**inputs).logits.float().cpu().numpy()  # [batch, tokens, labels]
        return [logits[row, : len(e)] for row, e in enumerate(batch)]
