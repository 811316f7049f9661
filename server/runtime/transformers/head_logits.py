"""The heads' raw outputs through one entry point, head_logits, for the server to postprocess
(see bertserve.runtime.heads for which head a checkpoint carries)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bertserve.api import Encoding, Head
from bertserve.runtime.lazy_torch import torch

from .passes import Passes

__all__ = ["HeadLogits"]


class HeadLogits(Passes):
    """The whole model (encoder and head) over padded batches; logits as float32 numpy, unpadded.

    Heads run on padded batches: each is called as its model's forward calls it, on [batch, tokens]
    inputs. Packed rows would need each architecture's head internals called by name on gathered
    states (as the masked-language-model head is, to keep its logits small).
    """

    def head_logits(self, head: Head, batch: Sequence[Encoding]) -> list[np.ndarray]:
        if not batch:
            return []
        if head is Head.QUESTION_ANSWERING:
            return self._answer_logits(batch)
        if head is Head.MASKED_LM:
            return self._mask_logits(batch)
        inputs = self._inputs(batch)
        with torch.inference_mode():
            # [batch, labels] for a sequence classifier; [batch, tokens(, labels)] for the others.
            logits = self._model(**inputs).logits.float().cpu().numpy()
        if head is Head.SEQUENCE_CLASSIFICATION:
            return list(logits)
        return [logits[row, : len(e)] for row, e in enumerate(batch)]  # REPLACED_TOKENS, TOKEN_CLASSIFICATION

    def _answer_logits(self, batch: Sequence[Encoding]) -> list[np.ndarray]:
        self._require_qa_head()
        inputs = self._inputs(batch)
        with torch.inference_mode():
            out = self._model(**inputs)
            both = torch.stack([out.start_logits, out.end_logits], dim=-1).float().cpu().numpy()  # [batch, tokens, 2]
        return [both[row, : len(e)] for row, e in enumerate(batch)]

    def _mask_logits(self, batch: Sequence[Encoding]) -> list[np.ndarray]:
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
        return list(np.split(logits, np.cumsum(counts)[:-1]))
