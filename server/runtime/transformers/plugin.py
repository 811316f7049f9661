"""The shared transformers-backed plugin: everything BERT variants have in common.

A variant subclasses :class:`TransformersPlugin` and states only what differs: the model
types it accepts, its default checkpoint, whether it has token types. Third-party plugins
may subclass it too.
"""

from __future__ import annotations

import inspect
from typing import Any

from bertserve.api import Capability, ModelInfo, Pooling
from bertserve.errors import ConfigError
from bertserve.runtime import heads
from bertserve.runtime.lazy_torch import torch
from bertserve.runtime.placement import dtype_name, resolve_device, resolve_dtype, without_per_shape_attention_plans
from bertserve.runtime.thread_tokenizers import ThreadTokenizers

from .acceleration import Acceleration
from .head_logits import HeadLogits
from .loading import checkpoint_config, fast_tokenizer, local_source, pretrained_model
from .sentence_transformers import sentence_transformers_settings

__all__ = ["TransformersPlugin"]

# Tokenizers report "no limit" as a huge sentinel instead of None.
_NO_LIMIT = 1_000_000


class TransformersPlugin(Acceleration, HeadLogits):
    """A BERT-family encoder loaded with ``from_pretrained`` from a hub id or a local directory.

    A variant sets ``variant``, ``model_types`` and ``default_source``, and ``position_offset``
    where its positions start later (see :class:`~bertserve.runtime.transformers.state.PluginState`).
    The work is done by the parts this class is composed of: tokenization
    (:mod:`~bertserve.runtime.transformers.tokenization`), padded and packed passes
    (:mod:`~bertserve.runtime.transformers.passes`), the faster paths checked at load
    (:mod:`~bertserve.runtime.transformers.acceleration`) and the heads' logits
    (:mod:`~bertserve.runtime.transformers.head_logits`); this class loads and unloads.
    """

    # -- loading -----------------------------------------------------------------------------

    def fetch(self) -> None:
        """Resolve the source to a local directory, downloading a hub checkpoint's files first."""
        self._source = local_source(self.spec, self.default_source)

    def load(self) -> ModelInfo:
        if self._source is None:
            self.fetch()
        source = self._source
        assert source is not None
        self._device = resolve_device(self.spec.device)
        if self._device.type == "cuda":
            without_per_shape_attention_plans()
        dtype = resolve_dtype(self.spec.dtype, self._device)
        common: dict[str, Any] = {"revision": self.spec.revision, "trust_remote_code": False}

        config = checkpoint_config(source, common, model_types=self.model_types, variant=self.variant)
        tokenizer = self._load_tokenizer(source, common)
        self._check_room_for_text()

        head = heads.head_of(config)
        model, loading = pretrained_model(
            head, source, config, dtype, allow_pickle=self.spec.allow_pickle, common=common
        )
        self._model = model.to(device=self._device, dtype=dtype).eval()
        self._dtype = dtype
        self._encoder = self._model.base_model
        self._uses_token_types = self._takes_token_types(config)
        self._qa_head = hasattr(self._model, "qa_outputs")
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        st_pooling, st_limit = sentence_transformers_settings(source)
        self._max_tokens = self._token_limit(config, st_limit)

        poolings = [Pooling.CLS, Pooling.MEAN]
        missing = set(loading.get("missing_keys", ()))
        if getattr(self._encoder, "pooler", None) is not None and not any("pooler" in k for k in missing):
            poolings.append(Pooling.POOLER)
        default_pooling = self.spec.default_pooling or st_pooling or Pooling.MEAN
        if default_pooling not in poolings:
            raise ConfigError(f"default pooling {default_pooling.value!r} is not offered by {source!r}")
        compile_wanted = self.options.compile
        self._onednn_layers = 0 if compile_wanted else self._swap_in_onednn_linear()
        self._packs = self._packing_works()
        if compile_wanted:
            self._compiled = self._compile_encoder()
            if not self._compiled:
                self._onednn_layers = self._swap_in_onednn_linear()
        if self._packs and not self._compiled and self._trace_wanted():
            self._trace_encoder()
        capabilities = {Capability.TOKENIZE, Capability.EMBED, Capability.SIMILARITY}
        if heads.head_weights_present(self._model, missing):
            capabilities |= head.capabilities
        self._mlm_head = heads.mlm_head(self._model) if Capability.FILL_MASK in capabilities else None
        id2label = getattr(config, "id2label", None) or {}
        labels = tuple(str(id2label.get(i, f"LABEL_{i}")) for i in range(int(getattr(config, "num_labels", 0))))
        return ModelInfo(
            capabilities=frozenset(capabilities),
            devices=(str(self._device),),
            dtype=dtype_name(dtype),
            hidden_size=int(config.hidden_size),
            max_input_tokens=self._max_tokens,
            poolings=tuple(poolings),
            default_pooling=default_pooling,
            packed_poolings=(Pooling.CLS, Pooling.MEAN) if self._packs else (),
            cls_token_id=tokenizer.cls_token_id,
            labels=labels if capabilities & {Capability.CLASSIFY, Capability.CLASSIFY_TOKENS} else (),
            problem_type=getattr(config, "problem_type", None),
            mask_token=tokenizer.mask_token,
            mask_token_id=tokenizer.mask_token_id,
            pad_token_id=tokenizer.pad_token_id,
            unk_token_id=tokenizer.unk_token_id,
            # The token-classification pipeline's test for a word-aware tokenizer.
            word_aware=bool(getattr(tokenizer.backend_tokenizer.model, "continuing_subword_prefix", None)),
            uses_token_types=self._uses_token_types,
        )

    def load_tokenizer(self, info: ModelInfo) -> None:
        """The tokenizer alone, set as load() sets it: the rest comes from the engine's info."""
        if self._source is None:
            self.fetch()
        assert self._source is not None
        tokenizer = self._load_tokenizer(self._source, {"revision": self.spec.revision, "trust_remote_code": False})
        self._uses_token_types = info.uses_token_types
        self._max_tokens = info.max_input_tokens
        self._qa_head = Capability.ANSWER in info.capabilities
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def _load_tokenizer(self, source: str, common: dict[str, Any]) -> Any:
        tokenizer = fast_tokenizer(source, common)
        self._tokenizers = ThreadTokenizers(tokenizer)
        self._pair_specials = tokenizer.num_special_tokens_to_add(pair=True)
        self._single_specials = tokenizer.num_special_tokens_to_add(pair=False)
        return tokenizer

    def _takes_token_types(self, config: Any) -> bool:
        """Whether the model gets segment ids: whenever its architecture takes them and its config
        has more than one segment type. The tokenizer's model_input_names is no guide (transformers
        5 leaves token_type_ids out of ALBERT's); it decides only for a config that is silent."""
        if "token_type_ids" not in inspect.signature(self._encoder.forward).parameters:
            return False
        types = getattr(config, "type_vocab_size", None)
        if types is None:
            return "token_type_ids" in self._tokenizer.model_input_names
        return int(types) > 1

    def _check_room_for_text(self) -> None:
        """A max_input_tokens that the special tokens fill is refused before the weights are read."""
        limit = self.spec.max_input_tokens
        if limit and limit <= self._pair_specials:
            raise ConfigError(
                f"max_input_tokens {limit} leaves no room for text: the tokenizer of model {self.spec.name!r} adds "
                f"{self._single_specials} special tokens to a text and {self._pair_specials} to a pair; set at "
                f"least {self._pair_specials + 1}"
            )

    def _token_limit(self, config: Any, checkpoint_limit: int | None) -> int:
        limits = [int(config.max_position_embeddings) - self.position_offset]
        if checkpoint_limit:
            limits.append(checkpoint_limit)
        if 0 < self._tokenizer.model_max_length < _NO_LIMIT:
            limits.append(int(self._tokenizer.model_max_length))
        if self.spec.max_input_tokens:
            limits.append(self.spec.max_input_tokens)
        return min(limits)

    # -- lifecycle ---------------------------------------------------------------------------

    def unload(self) -> None:
        on_gpu = self._model is not None and self._device.type == "cuda"
        self._model = self._encoder = None
        self._tokenizers = None  # and with it every thread's copy
        if on_gpu:
            torch.cuda.empty_cache()
