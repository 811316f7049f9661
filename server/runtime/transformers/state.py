"""What a transformers-backed plugin holds, and the views of it that each of its parts uses.

:class:`PluginState` is the base of the parts :class:`~bertserve.runtime.transformers.plugin.TransformersPlugin`
is composed of (tokenization, passes, acceleration, head logits): it sets up the state they share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from bertserve.api import EncoderPlugin, ModelSpec
from bertserve.errors import CapabilityNotSupported
from bertserve.runtime.thread_tokenizers import ThreadTokenizers
from bertserve.validation import parse_options

from .options import TransformersOptions

if TYPE_CHECKING:
    import torch

    from bertserve.runtime import tracing

__all__ = ["PluginState"]


class PluginState(EncoderPlugin):
    """The settings a variant states and the loaded model's state, empty until load()."""

    #: ``config.model_type`` values this variant serves; a checkpoint of another type fails to load.
    model_types: ClassVar[frozenset[str]]
    #: The checkpoint used when the configuration gives no source.
    default_source: ClassVar[str]
    #: Positions the model reserves before the first token (RoBERTa offsets by padding_idx + 1).
    position_offset: ClassVar[int] = 0
    options_schema: ClassVar[type[TransformersOptions]] = TransformersOptions
    #: Where the model runs and in what precision: set by load(), so that a front end, which loads
    #: the tokenizer alone, never imports torch.
    _device: torch.device
    _dtype: torch.dtype

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.options = parse_options(self.options_schema, spec.options, where=f"model {spec.name!r} options")
        self._tokenizers: ThreadTokenizers[Any] | None = None  # see bertserve.runtime.thread_tokenizers
        self._model: Any = None  # the full model: a base encoder or a ...ForQuestionAnswering
        self._encoder: Any = None  # the base encoder inside it
        self._source: str | None = None  # the local directory fetch() resolved
        self._uses_token_types = False
        self._qa_head = False  # the model has a question-answering head (so Answer's windows are made)
        self._pair_specials = 0  # special tokens the tokenizer adds to a pair
        self._single_specials = 0  # ... and to a text alone
        self._max_tokens = 0
        self._pad_id = 0
        self._packs = False  # run CLS and MEAN embeddings as packed rows (see bertserve.runtime.packed_inputs)
        self._onednn_layers = 0  # linear layers running on oneDNN (see bertserve.runtime.onednn_linear)
        self._compiled = False  # the encoder runs under torch.compile (see bertserve.runtime.compiling)
        self._traced: tracing.TracedEncoder | None = None  # packed passes run traced (see bertserve.runtime.tracing)
        self._mlm_head: Any = None  # FillMask runs the head at mask positions only (see bertserve.runtime.heads)

    @property
    def _tokenizer(self) -> Any:
        """The tokenizer as loaded, for what never changes; calls go through _tokenize_with."""
        assert self._tokenizers is not None, "the model is not loaded"
        return self._tokenizers.shared

    def _tokenize_with(self) -> Any:
        """This thread's own copy of the tokenizer, to call."""
        assert self._tokenizers is not None, "the model is not loaded"
        return self._tokenizers.get()

    def _require_qa_head(self) -> None:
        if not self._qa_head:
            raise CapabilityNotSupported(f"model {self.spec.name!r} has no question-answering head")
