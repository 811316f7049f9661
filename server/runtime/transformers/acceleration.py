"""The faster paths a model may take, each checked at load against the plain one it replaces:
oneDNN linear layers, packed passes, torch.compile, and packed passes traced with TorchScript."""

from __future__ import annotations

import inspect
import logging
import time

import numpy as np

from bertserve.api import EmbedOutput, Pooling
from bertserve.runtime import compiling
from bertserve.runtime.lazy_torch import torch

from .passes import Passes
from .tokenization import Tokenization

__all__ = ["Acceleration"]

# The name these lines have always been logged under.
log = logging.getLogger(__name__)


class Acceleration(Tokenization, Passes):
    """Load-time switches to faster paths, each kept only where its outputs match the plain path's."""

    @property
    def onednn_linear_layers(self) -> int:
        """How many linear layers run on oneDNN (0: torch's own kernels)."""
        return self._onednn_layers

    def _swap_in_onednn_linear(self) -> int:
        """On CPU in float32 or bfloat16, move the linear layers to oneDNN, if the model's outputs
        stay within tolerance of torch's; return how many moved. Options: onednn_linear: false
        keeps torch's."""
        from bertserve.runtime import onednn_linear  # its layers are torch modules: imported only to load

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
        half = max(long // 2, min(long, self._single_specials + 1))  # a tiny token limit leaves room for one
        long_text = " ".join(["word"] * long)
        samples = [
            self.tokenize(["Short one."]),
            self.tokenize([long_text], max_length=long),
            self.tokenize(["A check of the traced encoder.", "Short one.", long_text], max_length=half),
        ]
        from bertserve.runtime import tracing  # its graph wraps a torch module: imported only to load

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


def _one_line(e: Exception) -> str:
    """An exception's message on one line, cut to a log line's length."""
    return " ".join(str(e).split())[:300]


def _outputs_close(a: EmbedOutput, b: EmbedOutput, tolerance: float) -> bool:
    states = zip(a.token_states or [], b.token_states or [], strict=True)
    return np.allclose(a.pooled, b.pooled, rtol=tolerance, atol=tolerance) and all(
        np.allclose(x, y, rtol=tolerance, atol=tolerance) for x, y in states
    )
