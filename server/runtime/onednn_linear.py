"""Linear layers on oneDNN, with their weights packed once at load (float32 and bfloat16).

Linear layers are most of an encoder's work. On CPU, torch runs float32 ones as MKL GEMMs that
repack the weight on every call; oneDNN keeps the weight in its own blocked layout, packed once,
and runs the same products faster. Measured on 2 cores (AVX-512) with all-MiniLM-L6-v2: about
15% faster GEMMs and 10-15% more sentences per second, with outputs within 2e-6 of torch's.
torch runs bfloat16 ones on oneDNN already, but reorders the weight on every call too: packed
once, the same products ran 5-10% faster on batches and 30% on a lone sentence, bit for bit equal
(AVX512-BF16), and MiniLM batches of 32 about 8% faster. float16 keeps torch's kernels: few
CPUs have native float16 products, and oneDNN's fallback was not measured.

A GELU straight after a linear layer (the feed-forward block of every BERT variant) runs inside
it, as oneDNN's post-op, instead of as a pass of its own over the product: MiniLM batches of 32
ran about 4% faster in float32 (bit for bit equal) and in bfloat16 (where the GELU now sees the
float32 product, rounded once instead of twice).

The swap is in place and undoable, so a plugin can compare outputs before and after and keep
whichever is right (see TransformersPlugin.load).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, TypeGuard

import torch

__all__ = ["PackedLinear", "Swapped", "available", "packable_dtypes", "swap_linear_layers"]


def available() -> bool:
    """Whether this torch build has oneDNN and the packed-linear ops."""
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )


@functools.cache
def packable_dtypes() -> frozenset[torch.dtype]:
    """The weight dtypes whose layers run packed here: float32; bfloat16 where torch itself sends
    bfloat16 products to oneDNN (CPUs with AVX-512 or newer)."""
    if not available():
        return frozenset()
    bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return frozenset({torch.float32, torch.bfloat16}) if bf16 is not None and bf16() else frozenset({torch.float32})


class PackedLinear(torch.nn.Module):
    """y = x W^T + b, as nn.Linear, with W held in oneDNN's packed layout (inference only);
    with gelu ("none": exact, "tanh": the tanh approximation), y = gelu(x W^T + b) in one op."""

    def __init__(self, linear: torch.nn.Linear, *, gelu: str | None = None) -> None:
        super().__init__()
        with torch.no_grad():
            # A buffer, not a plain attribute: a trace reads buffers from the module, while it would
            # have to copy an attribute into the graph as a constant, which oneDNN tensors cannot be.
            self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None))
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.post_op, self.algorithm = ("none", "") if gelu is None else ("gelu", gelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            return _scripted_packed_linear()(x, self.packed_weight, self.bias, self.post_op, self.algorithm)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, self.post_op, [], self.algorithm)


def _packed_linear(
    x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor | None, post_op: str, algorithm: str
) -> torch.Tensor:
    scalars: list[int | float | complex | None] = []
    return torch.ops.mkldnn._linear_pointwise(x, packed_weight, bias, post_op, scalars, algorithm)


@functools.cache
def _scripted_packed_linear() -> Any:
    """_packed_linear as TorchScript, so that a traced encoder (bertserve.runtime.tracing) records the
    call: the tracer cannot record the op's empty list of scalars; a script function types it.
    Scripted when first traced, not at import: TorchScript is deprecated, and a torch without it
    must still run eager."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(_packed_linear)


@dataclass
class Swapped:
    """The layers a swap replaced, to put back if the packed model turns out wrong."""

    replaced: list[tuple[torch.nn.Module, str, torch.nn.Module]]

    def __len__(self) -> int:
        """How many linear layers were replaced."""
        return sum(isinstance(original, torch.nn.Linear) for _, _, original in self.replaced)

    @property
    def fused_activations(self) -> int:
        """How many activations now run inside the linear layer before them."""
        return len(self.replaced) - len(self)

    def undo(self) -> None:
        for parent, name, original in reversed(self.replaced):
            setattr(parent, name, original)
        self.replaced = []


# Where a module applies an activation straight to a linear layer's output, under these names:
# BERT, RoBERTa, ELECTRA and their kin (dense, intermediate_act_fn); ALBERT (ffn, activation).
_LINEAR_THEN_ACTIVATION = (("dense", "intermediate_act_fn"), ("ffn", "activation"))


def swap_linear_layers(model: torch.nn.Module) -> Swapped:
    """Replace every CPU nn.Linear in model (exact type, not subclasses) whose dtype is packable
    (packable_dtypes) with a PackedLinear.

    A linear layer followed by a GELU (see _LINEAR_THEN_ACTIVATION) becomes one PackedLinear that
    applies it, and the activation an identity: the GELU runs on the product while it is in
    cache, in float32 before any rounding to bfloat16. A layer shared between blocks (ALBERT), or
    registered under several names, is packed once.
    """
    replaced: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    packed: dict[int, PackedLinear] = {}
    for parent in list(model.modules()):
        for linear_name, activation_name in _LINEAR_THEN_ACTIVATION:
            linear, activation = parent._modules.get(linear_name), parent._modules.get(activation_name)
            if _packable(linear) and (gelu := _gelu_algorithm(activation)) is not None:
                assert activation is not None  # a GELU was found
                replaced += [(parent, linear_name, linear), (parent, activation_name, activation)]
                setattr(parent, linear_name, PackedLinear(linear, gelu=gelu))
                setattr(parent, activation_name, torch.nn.Identity())
        for name, child in list(parent._modules.items()):  # every name, where named_children skips repeats
            if _packable(child):
                if id(child) not in packed:
                    packed[id(child)] = PackedLinear(child)
                setattr(parent, name, packed[id(child)])
                replaced.append((parent, name, child))
    return Swapped(replaced)


def _packable(module: torch.nn.Module | None) -> TypeGuard[torch.nn.Linear]:
    return (
        type(module) is torch.nn.Linear
        and module.weight.dtype in packable_dtypes()
        and module.weight.device.type == "cpu"
    )


def _gelu_algorithm(module: torch.nn.Module | None) -> str | None:
    """How oneDNN computes the GELU that module is ("none": exact, "tanh"), or None for any
    other module. transformers' activations are recognised by name, to keep this module free of
    transformers; a wrong guess fails the plugin's load-time comparison with torch's outputs."""
    if isinstance(module, torch.nn.GELU):
        return "none" if module.approximate == "none" else "tanh"
    name = type(module).__name__
    if name == "GELUActivation" and getattr(module, "act", None) is torch.nn.functional.gelu:
        return "none"
    if name in ("NewGELUActivation", "GELUTanh"):
        return "tanh"
    return None
