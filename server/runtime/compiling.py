"""torch.compile for an encoder's forward passes: the model option ``compile``.

Inductor fuses the elementwise ops between the matrix products, freezes the weights in, and
runs each pass as generated kernels with little Python between them. Measured in-process: on
one H100, a BERT-base-sized model in bfloat16 ran batches of 32 1.6x faster (5887 against 3646
sentences/s) and one sentence in 3.8 ms against 6.5, after 96 s of compiling. On 2 AVX-512
cores (bench/compile.py), MiniLM in bfloat16 was no faster in batches (0.98x, interleaved rounds)
and a little faster alone (7.2-7.7 ms against 8.1-8.5); in float32 it was slower than eager with
oneDNN linear layers. The price: a C++ compiler on CPU hosts, and 20-100 s at load to compile
and warm up (less from inductor's on-disk cache). Shapes are compiled as dynamic, so new batch
shapes do not recompile.
"""

from __future__ import annotations

from typing import Any

from bertserve.runtime.lazy_torch import torch

__all__ = ["compiled"]


def compiled(module: torch.nn.Module) -> Any:
    """The module under torch.compile; compilation happens at its first calls."""
    return torch.compile(module, dynamic=True, options={"freezing": True})
