"""The shared transformers-backed plugin: everything BERT variants have in common.

A variant subclasses :class:`TransformersPlugin` and states only what differs: the model
types it accepts, its default checkpoint, whether it has token types. Third-party plugins
may subclass it too.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import torch
from huggingface_hub import snapshot_download
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from transformers import AutoConfig, AutoTokenizer

from bertserve.api import (
    Capability,
    EmbedOutput,
    EncoderPlugin,
    Encoding,
    ModelInfo,
    ModelSpec,
    Pooling,
    QAWindowLogits,
)
from bertserve.config import parse_options
from bertserve.errors import CapabilityNotSupported, ConfigError, InvalidRequest
from bertserve.runtime import compiling, heads, onednn_linear, tracing
from bertserve.runtime.packed_inputs import PackedBatch, pack
from bertserve.runtime.placement import dtype_name, resolve_device, resolve_dtype, without_per_shape_attention_plans
from bertserve.runtime.sources import resolve_source
from bertserve.runtime.thread_tokenizers import ThreadTokenizers

__all__ = ["TransformersOptions", "TransformersPlugin"]

log = logging.getLogger(__name__)

# Tokenizers report "no limit" as a huge sentinel instead of None.
_NO_LIMIT = 1_000_000
# from_pretrained switches torch's process-wide default dtype while it builds a model, so two
# models loading at once on different threads can get each other's dtype: load one at a time.
_LOAD_LOCK = threading.Lock()
# A text longer than this many characters per allowed token is tokenized from a prefix first (real
# text has more than one token in eight characters; where it has not, the prefix grows).
_CHARS_PER_TOKEN = 8
# Tokens past max_length that a prefix must hold, so that where it was cut cannot reach the kept ones.
_PREFIX_MARGIN = 16
# What a checkpoint needs from the hub: configs, tokenizer files, safetensors weights.
_CHECKPOINT_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]


class TransformersOptions(BaseModel):
    """``options:`` of the transformers-backed plugins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: float32, bfloat16 on CPU: linear layers on oneDNN with weights packed once, checked at load.
    onednn_linear: StrictBool = True
    #: Tokens per row when short sequences share the rows of a pass.
    pack_row_tokens: Annotated[StrictInt, Field(ge=1)] = 64
    #: The encoder under torch.compile, checked against eager at load (see bertserve.runtime.compiling).
    compile: StrictBool = False
    #: Packed passes as a TorchScript trace; unset: on CPUs, off on GPUs (see bertserve.runtime.tracing).
    trace: StrictBool | None = None


class TransformersPlugin(EncoderPlugin):
    """A BERT-family encoder loaded with ``from_pretrained`` from a hub id or a local directory."""

    #: ``config.model_type`` values this variant serves; a checkpoint of another type fails to load.
    model_types: ClassVar[frozenset[str]]
    #: The checkpoint used when the configuration gives no source.
    default_source: ClassVar[str]
    #: Positions the model reserves before the first token (RoBERTa offsets by padding_idx + 1).
    position_offset: ClassVar[int] = 0
    options_schema: ClassVar[type[TransformersOptions]] = TransformersOptions

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.options = parse_options(self.options_schema, spec.options, where=f"model {spec.name!r} options")
        self._tokenizers: ThreadTokenizers[Any] | None = None  # see bertserve.runtime.thread_tokenizers
        self._model: Any = None  # the full model: a base encoder or a ...ForQuestionAnswering
        self._encoder: Any = None  # the base encoder inside it
        self._source: str | None = None  # the local directory fetch() resolved
        self._device = torch.device("cpu")
        self._uses_token_types = False
        self._pair_specials = 0  # special tokens the tokenizer adds to a pair
        self._max_tokens = 0
        self._pad_id = 0
        self._dtype = torch.float32
        self._packs = False  # run CLS and MEAN embeddings as packed rows (see bertserve.runtime.packed_inputs)
        self._onednn_layers = 0  # linear layers running on oneDNN (see bertserve.runtime.onednn_linear)
        self._compiled = False  # the encoder runs under torch.compile (see bertserve.runtime.compiling)
        self._traced: tracing.TracedEncoder | None = None  # packed passes run traced (see bertserve.runtime.tracing)
        self._mlm_head: Any = None  # FillMask runs the head at mask positions only (see bertserve.runtime.heads)

    # -- loading -----------------------------------------------------------------------------

    def fetch(self) -> None:
        """Resolve the source to a local directory, downloading a hub checkpoint's files first."""
        source = resolve_source(self.spec.source or self.default_source)
        if not Path(source).is_dir():
            patterns = [*_CHECKPOINT_FILES, "*.bin"] if self.spec.allow_pickle else _CHECKPOINT_FILES
            source = snapshot_download(source, revision=self.spec.revision, allow_patterns=patterns)
        self._source = source

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

        config = AutoConfig.from_pretrained(source, **common)
        if config.model_type not in self.model_types:
            raise ConfigError(
                f"checkpoint {source!r} is a {config.model_type!r} model; "
                f"plugin {self.variant!r} serves {sorted(self.model_types)}"
            )
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
        if not tokenizer.is_fast:
            raise ConfigError(f"checkpoint {source!r} has no fast tokenizer; character offsets need one")
        self._tokenizers = ThreadTokenizers(tokenizer)
        self._pair_specials = tokenizer.num_special_tokens_to_add(pair=True)

        head = heads.head_of(config)
        try:
            with _LOAD_LOCK:
                model, loading = head.auto_class.from_pretrained(
                    source,
                    config=config,
                    dtype=dtype,
                    use_safetensors=None if self.spec.allow_pickle else True,
                    output_loading_info=True,
                    **common,
                )
        except OSError as e:
            if self.spec.allow_pickle or "safetensors" not in str(e):
                raise
            raise ConfigError(
                f"checkpoint {source!r} has no safetensors weights; pickle weights load only with allow_pickle: true"
            ) from e
        self._model = model.to(device=self._device, dtype=dtype).eval()
        self._dtype = dtype
        self._encoder = self._model.base_model
        self._uses_token_types = self._takes_token_types(config)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        st_pooling, st_limit = _sentence_transformers_settings(source)
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
        capabilities = {Capability.TOKENIZE, Capability.EMBED}
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
        )

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

    @property
    def _tokenizer(self) -> Any:
        """The tokenizer as loaded, for what never changes; calls go through _tokenize_with."""
        assert self._tokenizers is not None, "the model is not loaded"
        return self._tokenizers.shared

    def _tokenize_with(self) -> Any:
        """This thread's own copy of the tokenizer, to call."""
        assert self._tokenizers is not None, "the model is not loaded"
        return self._tokenizers.get()

    def _token_limit(self, config: Any, checkpoint_limit: int | None) -> int:
        limits = [int(config.max_position_embeddings) - self.position_offset]
        if checkpoint_limit:
            limits.append(checkpoint_limit)
        if 0 < self._tokenizer.model_max_length < _NO_LIMIT:
            limits.append(int(self._tokenizer.model_max_length))
        if self.spec.max_input_tokens:
            limits.append(self.spec.max_input_tokens)
        return min(limits)

    # -- tokenization ------------------------------------------------------------------------

    def tokenize(
        self,
        texts: Sequence[str],
        *,
        pairs: Sequence[str] | None = None,
        add_special_tokens: bool = True,
        max_length: int | None = None,
    ) -> list[Encoding]:
        if max_length is not None:
            specials = self._tokenizer.num_special_tokens_to_add(pair=pairs is not None) if add_special_tokens else 0
            if max_length <= specials:
                raise InvalidRequest(
                    f"max_length {max_length} leaves no room for text: model {self.spec.name!r} adds {specials} "
                    f"special tokens to each {'pair' if pairs is not None else 'text'}"
                )
        if max_length is None:
            return self._encode(texts, pairs, add_special_tokens, truncate_to=None)
        if pairs is None:  # never tokenize 200,000 words to learn that they are over 256 tokens
            limit = max_length * _CHARS_PER_TOKEN
            texts = [self._deciding_prefix(t, max_length, add_special_tokens) if len(t) > limit else t for t in texts]
        encodings = self._encode(texts, pairs, add_special_tokens, truncate_to=None)
        # Over-long inputs are rare: tokenize those alone a second time, with truncation.
        long = [i for i, e in enumerate(encodings) if len(e) > max_length]
        if long:
            cut = self._encode(
                [texts[i] for i in long],
                [pairs[i] for i in long] if pairs is not None else None,
                add_special_tokens,
                truncate_to=max_length,
            )
            for i, encoding in zip(long, cut, strict=True):
                encodings[i] = replace(encoding, full_length=len(encodings[i]))
        return encodings

    def _deciding_prefix(self, text: str, max_length: int, add_special_tokens: bool) -> str:
        """The shortest prefix (of a few tried) that shows a text to be over max_length tokens.

        A prefix ends at white space, where no tokenizer of the family joins tokens across, and
        grows fourfold until it holds max_length tokens and a margin, or is the whole text. Its
        first max_length tokens are the whole text's; cut from it, the encoding's full_length
        counts the prefix's tokens: all a caller needs to know is that it is over max_length.
        """
        size = max_length * _CHARS_PER_TOKEN
        while size < len(text):
            end = next((k for k in range(size - 1, size // 2, -1) if text[k].isspace()), size)
            prefix = text[:end]
            if len(self._encode([prefix], None, add_special_tokens, truncate_to=None)[0]) > max_length + _PREFIX_MARGIN:
                return prefix
            size *= 4
        return text

    def _encode(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None,
        add_special_tokens: bool,
        truncate_to: int | None,
    ) -> list[Encoding]:
        batch = self._tokenize_with()(
            list(texts),
            list(pairs) if pairs is not None else None,
            add_special_tokens=add_special_tokens,
            truncation="longest_first" if truncate_to is not None else False,
            max_length=truncate_to,
            return_token_type_ids=True,
            return_attention_mask=False,
            return_special_tokens_mask=True,
            return_offsets_mapping=True,
        )
        return [self._encoding_of(e) for e in batch.encodings]

    def _encoding_of(self, encoding: Any) -> Encoding:
        """A tokenizers.Encoding as the server's Encoding; segment ids as the model gets them."""
        ids = encoding.ids
        return Encoding(
            ids=ids,
            tokens=encoding.tokens,
            type_ids=encoding.type_ids if self._uses_token_types else [0] * len(ids),
            special_tokens_mask=encoding.special_tokens_mask,
            offsets=encoding.offsets,
            sequence_ids=[-1 if s is None else s for s in encoding.sequence_ids],
            word_ids=[-1 if w is None else w for w in encoding.word_ids],
            full_length=len(ids),
        )

    def tokenize_windows(
        self, question: str, context: str, *, max_seq_len: int, doc_stride: int, max_question_len: int
    ) -> Iterator[Encoding]:
        self._require_qa_head()
        question, question_tokens = self._cut_question(question, max_question_len)
        room = max_seq_len - question_tokens - self._pair_specials
        if room < 1:
            raise InvalidRequest(
                f"the question takes {question_tokens} tokens (max_question_len {max_question_len}) and model "
                f"{self.spec.name!r} adds {self._pair_specials} special tokens, leaving no room for context within "
                f"max_seq_len {max_seq_len}; shorten the question or raise max_seq_len"
            )
        if doc_stride >= room:  # the windows must advance by at least one token
            doc_stride = room // 2
        return self._windows(question, context, max_seq_len=max_seq_len, doc_stride=doc_stride)

    def _windows(self, question: str, context: str, *, max_seq_len: int, doc_stride: int) -> Iterator[Encoding]:
        """The windows as the question-answering pipeline's tokenizer call makes them (the pair cut
        "only_second" with a stride), taken from the Rust encoding one at a time: a long context's
        windows never all sit in Python at once."""
        backend = self._tokenize_with().backend_tokenizer
        backend.no_padding()
        backend.enable_truncation(
            max_seq_len, stride=doc_stride, strategy="only_second", direction=self._tokenizer.truncation_side
        )
        try:
            # encode_batch runs without the interpreter lock (encode holds it): a megabyte takes a second.
            [first] = backend.encode_batch([(question, context)], add_special_tokens=True)
        finally:
            backend.no_truncation()
        rest = deque(first.overflowing)
        window = self._encoding_of(first)
        del first  # it holds a copy of every other window
        yield window
        while rest:
            yield self._encoding_of(rest.popleft())

    def _cut_question(self, question: str, max_question_len: int) -> tuple[str, int]:
        """The question cut to its first max_question_len tokens (the classic query limit), and its length."""
        tokenizer = self._tokenize_with()
        offsets = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) <= max_question_len:
            return question, len(offsets)
        question = question[: offsets[max_question_len - 1][1]]
        # Counted again: a word cut in two can come out as more pieces than it had.
        return question, len(tokenizer(question, add_special_tokens=False)["input_ids"])

    # -- forward passes ----------------------------------------------------------------------

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
            if pooling is Pooling.CLS:
                pooled = hidden[packed.rows, packed.starts]
            else:  # MEAN: sum each sequence's positions, then divide by its length
                lengths = torch.tensor(packed.lengths, device=self._device)
                flat = hidden.reshape(-1, hidden.shape[-1])
                segment = torch.repeat_interleave(torch.arange(len(batch), device=self._device), lengths)
                first = torch.repeat_interleave(packed.rows * hidden.shape[1] + packed.starts, lengths)
                within = torch.arange(len(segment), device=self._device) - torch.repeat_interleave(
                    torch.cumsum(lengths, 0) - lengths, lengths
                )
                sums = torch.zeros((len(batch), flat.shape[-1]), dtype=torch.float32, device=self._device)
                sums.index_add_(0, segment, flat[first + within].float())
                pooled = sums / lengths.unsqueeze(-1)
            pooled_np = pooled.float().cpu().numpy()
            token_states = None
            if with_token_states:
                states = hidden.float().cpu().numpy()
                token_states = [
                    states[row, start : start + n]
                    for row, start, n in zip(packed.rows.tolist(), packed.starts.tolist(), packed.lengths, strict=True)
                ]
        return EmbedOutput(pooled=pooled_np, token_states=token_states)

    @property
    def onednn_linear_layers(self) -> int:
        """How many linear layers run on oneDNN (0: torch's own kernels)."""
        return self._onednn_layers

    def _swap_in_onednn_linear(self) -> int:
        """On CPU in float32 or bfloat16, move the linear layers to oneDNN, if the model's outputs
        stay within tolerance of torch's; return how many moved. Options: onednn_linear: false
        keeps torch's."""
        on_cpu = self._device.type == "cpu"
        if not (self.options.onednn_linear and on_cpu and self._dtype in onednn_linear.packable_dtypes()):
            return 0
        inputs = self._inputs(self.tokenize(["A check of oneDNN linear layers.", "Short one."]))
        before = self._output_tensors(inputs)
        swapped = onednn_linear.swap_linear_layers(self._model)
        try:
            after = self._output_tensors(inputs)
        except Exception as e:
            swapped.undo()
            log.info("model %r keeps torch's linear layers: oneDNN failed (%s)", self.spec.name, e)
            return 0
        tolerance = self._tolerance
        if not all(torch.allclose(a, b, rtol=tolerance, atol=tolerance) for a, b in zip(after, before, strict=True)):
            swapped.undo()
            log.info("model %r keeps torch's linear layers: oneDNN outputs differ", self.spec.name)
            return 0
        log.info(
            "model %r runs %d linear layers on oneDNN, %d of them with their GELU",
            self.spec.name,
            len(swapped),
            swapped.fused_activations,
        )
        return len(swapped)

    @property
    def _tolerance(self) -> float:
        """How far a faster path's outputs may stray from the plain one's at load-time checks."""
        return 1e-4 if self._dtype == torch.float32 else 5e-2

    @property
    def compiled(self) -> bool:
        """Whether the encoder runs under torch.compile."""
        return self._compiled

    def _compile_encoder(self) -> bool:
        """Put the encoder under torch.compile if its embeddings stay within tolerance of eager
        ones; compile and warm up at load the shapes that serving brings."""
        texts = ["A check of the compiled encoder.", "Short one.", "Another sentence, a little longer than that."]
        samples = [self.tokenize(texts[:1]), self.tokenize(texts)]  # a lone sequence; a packed batch
        eager = [self.embed(s, pooling=Pooling.MEAN, with_token_states=False) for s in samples]
        encoder = self._encoder
        started = time.monotonic()
        self._encoder = compiling.compiled(encoder)
        try:
            after = [self.embed(s, pooling=Pooling.MEAN, with_token_states=False) for s in samples]
            warm = self.tokenize([" ".join(["word"] * n) for n in range(1, 64)])
            for count in (2, 3, 8, 17, 32, 63):
                self.embed(warm[-count:], pooling=Pooling.MEAN, with_token_states=False)
        except Exception as e:
            self._encoder = encoder
            log.warning("model %r runs eager: compiling failed (%s)", self.spec.name, _one_line(e))
            return False
        if not all(_outputs_close(a, b, self._tolerance) for a, b in zip(after, eager, strict=True)):
            self._encoder = encoder
            log.warning("model %r runs eager: compiled outputs differ from eager ones", self.spec.name)
            return False
        log.info("model %r compiled in %.1fs", self.spec.name, time.monotonic() - started)
        return True

    @property
    def traced(self) -> bool:
        """Whether packed passes run as a TorchScript trace of the encoder."""
        return self._traced is not None

    def _trace_wanted(self) -> bool:
        """Options: trace (default: on CPUs; GPUs have not been measured with it)."""
        return self.options.trace if self.options.trace is not None else self._device.type == "cpu"

    def _trace_encoder(self) -> None:
        """Run packed passes as a trace of the encoder if it gives what eager passes give for
        shapes other than the one traced: a lone short sequence, a lone long one, a batch."""
        long = min(self._max_tokens, 200)  # wider than any row of short sequences, cheap to check
        long_text = " ".join(["word"] * long)
        samples = [
            self.tokenize(["Short one."]),
            self.tokenize([long_text], max_length=long),
            self.tokenize(["A check of the traced encoder.", "Short one.", long_text], max_length=long // 2),
        ]
        started = time.monotonic()
        eager = [self._embed_packed(s, pooling=Pooling.MEAN, with_token_states=True) for s in samples]
        try:
            sample = self._pack(self.tokenize(["A sample to trace."])).inputs
            self._traced = tracing.trace_encoder(self._encoder, sample)
            traced = [self._embed_packed(s, pooling=Pooling.MEAN, with_token_states=True) for s in samples]
        except Exception as e:
            self._traced = None
            log.warning("model %r runs eager: tracing failed (%s)", self.spec.name, _one_line(e))
            return
        if not all(_outputs_close(t, e, self._tolerance) for t, e in zip(traced, eager, strict=True)):
            self._traced = None
            log.warning("model %r runs eager: traced outputs differ from eager ones", self.spec.name)
            return
        log.info(
            "model %r runs packed passes traced (traced and checked in %.1fs)",
            self.spec.name,
            time.monotonic() - started,
        )

    def _output_tensors(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The model's outputs; per-token ones at real tokens only, as padding's are never served
        (and in half precision drift further between kernels than real tokens' do)."""
        with torch.inference_mode():
            out = self._model(**inputs)
        real = inputs["attention_mask"].bool()
        tensors = [v for v in out.values() if isinstance(v, torch.Tensor)]
        return [v[real] if v.shape[:2] == real.shape else v for v in tensors]

    def _packing_works(self) -> bool:
        """Whether packed passes give what padded ones do: the encoder must take position ids and
        a ready-made 4D mask, which a third-party architecture may not."""
        if "position_ids" not in inspect.signature(self._encoder.forward).parameters:
            return False
        sample = self.tokenize(["Packing check.", "A somewhat longer sentence to check packing with.", "x"])
        tolerance = self._tolerance
        for pooling in (Pooling.CLS, Pooling.MEAN):
            padded = self.embed(sample, pooling=pooling, with_token_states=False).pooled
            try:
                packed = self._embed_packed(sample, pooling=pooling, with_token_states=False).pooled
            except Exception as e:  # an architecture that rejects the inputs just keeps padding
                log.info("model %r runs padded batches: packing failed (%s)", self.spec.name, e)
                return False
            if not np.allclose(packed, padded, rtol=tolerance, atol=tolerance):
                log.info("model %r runs padded batches: packed passes differ from padded ones", self.spec.name)
                return False
        return True

    def answer_windows(self, batch: Sequence[Encoding]) -> list[QAWindowLogits]:
        self._require_qa_head()
        inputs = self._inputs(batch)
        with torch.inference_mode():
            out = self._model(**inputs)
            start = out.start_logits.float().cpu().numpy()
            end = out.end_logits.float().cpu().numpy()
        return [QAWindowLogits(start=start[row, : len(e)], end=end[row, : len(e)]) for row, e in enumerate(batch)]

    def _require_qa_head(self) -> None:
        if not hasattr(self._model, "qa_outputs"):
            raise CapabilityNotSupported(f"model {self.spec.name!r} has no question-answering head")

    # Heads run on padded batches: each is called as its model's forward calls it, on
    # [batch, tokens] inputs. Packed rows would need each architecture's head internals called by
    # name on gathered states (as FillMask does for its head, to keep its logits small).

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

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return str(self._tokenize_with().decode(list(ids), skip_special_tokens=skip_special_tokens))

    def target_ids(self, targets: Sequence[str]) -> list[int]:
        # As the fill-mask pipeline's get_target_ids: a target that tokenizes to nothing is skipped.
        tokenizer = self._tokenize_with()
        vocab = tokenizer.get_vocab()
        ids = []
        for target in targets:
            id_ = vocab.get(target)
            if id_ is None:
                pieces = tokenizer(target, add_special_tokens=False, max_length=1, truncation=True)["input_ids"]
                if not pieces:
                    continue
                id_ = pieces[0]
            ids.append(int(id_))
        if not ids:
            raise InvalidRequest(
                f"no target is a token of model {self.spec.name!r}: each of the {len(targets)} targets tokenizes "
                "to nothing; send a word or a token of the model's vocabulary"
            )
        return ids

    def tokens_to_string(self, tokens: Sequence[str]) -> str:
        return str(self._tokenize_with().convert_tokens_to_string(list(tokens)))

    # -- lifecycle ---------------------------------------------------------------------------

    def unload(self) -> None:
        self._model = self._encoder = None
        self._tokenizers = None  # and with it every thread's copy
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def _one_line(e: Exception) -> str:
    """An exception's message on one line, cut to a log line's length."""
    return " ".join(str(e).split())[:300]


def _outputs_close(a: EmbedOutput, b: EmbedOutput, tolerance: float) -> bool:
    states = zip(a.token_states or [], b.token_states or [], strict=True)
    return np.allclose(a.pooled, b.pooled, rtol=tolerance, atol=tolerance) and all(
        np.allclose(x, y, rtol=tolerance, atol=tolerance) for x, y in states
    )


def _sentence_transformers_settings(source: str) -> tuple[Pooling | None, int | None]:
    """The pooling and input limit a local sentence-transformers checkpoint declares, if any."""
    root = Path(source)
    pooling, limit = None, None
    pooling_file = root / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        modes = json.loads(pooling_file.read_text())
        if modes.get("pooling_mode_mean_tokens"):
            pooling = Pooling.MEAN
        elif modes.get("pooling_mode_cls_token"):
            pooling = Pooling.CLS
    settings_file = root / "sentence_bert_config.json"
    if settings_file.is_file():
        limit = json.loads(settings_file.read_text()).get("max_seq_length")
    return pooling, limit
