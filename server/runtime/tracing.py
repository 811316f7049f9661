"""An encoder traced to TorchScript for packed passes: the model option ``trace``.

An eager forward pass comes back to Python between every op and takes the interpreter lock
each time. In a server, the event loop (gRPC, batching) holds that lock often, and a pass that
waits for it stalls both its threads: the other OpenMP thread spins at the next barrier. A
traced graph runs all its ops in C++ and holds the lock only to start and to return. Measured
on 2 cores with all-MiniLM-L6-v2: an eager pass beside a pure-Python thread ran at 0.19 of its
speed alone, a traced one at 0.9; in-process, a lone sentence ran about 30% faster traced, and
batches of 32 5-15%; served (bench/throughput.py), single-sentence calls at concurrency 64 went
from 0.80-0.84 of the in-process batch ceiling to 0.89-0.91.

A trace leaves its graphs in torch's one global compilation unit, where they stay after the model
is gone (about 4 MB for each load of all-MiniLM-L6-v2, and more once the graph has run: pytorch
issues 35600 and 43119), so every LoadModel and ReloadModel would grow the process. The encoder is
therefore traced into a compilation unit of its own, saved and loaded back (a loaded module owns
its unit, which goes with it), and the loaded graph is given the eager model's own parameters and
buffers. It is saved with empty tensors in their place: nothing is copied, and the oneDNN linear
layers' packed weights (opaque tensors, which cannot be saved) need not be.

Only packed passes are traced. Their inputs (ids, position ids, a ready-made 4D mask, token
types) leave the model no decision to take from values; a 2D padding mask does not: transformers
looks at its values to decide whether to mask at all, and a trace would freeze that decision.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Callable, Mapping
from itertools import chain

import torch
import torch.jit._state

__all__ = ["TracedEncoder", "trace_encoder"]

# Warning filters are process-wide: two models tracing at once would restore each other's.
_TRACE_LOCK = threading.Lock()


class _LastHiddenState(torch.nn.Module):
    """The encoder as a function of positional tensors, returning its last hidden state."""

    def __init__(self, encoder: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.encoder = encoder
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.encoder(**dict(zip(self.names, tensors, strict=True))).last_hidden_state


class TracedEncoder:
    """A traced encoder, called with the same named inputs it was traced with."""

    def __init__(self, graph: torch.jit.ScriptModule, names: list[str]) -> None:
        self._graph = graph
        self._names = names

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The last hidden state, [rows, width, hidden]."""
        return self._graph(*(inputs[name] for name in self._names))


def trace_encoder(encoder: torch.nn.Module, sample: Mapping[str, torch.Tensor]) -> TracedEncoder:
    """Trace encoder on one sample of its inputs; the graph takes any rows and width, and holds
    the encoder's own weights (see the module's docstring for why it is loaded back)."""
    names = list(sample)
    module = _LastHiddenState(encoder, names)
    inputs = tuple(sample[name] for name in names)
    with _TRACE_LOCK, torch.inference_mode(), warnings.catch_warnings():
        # The tracer warns at every Python int it records; the load-time check against eager
        # passes of other shapes (TransformersPlugin) is what decides whether the graph is right.
        warnings.simplefilter("ignore")
        graph = _in_own_unit(lambda unit: torch.jit.trace(module, inputs, check_trace=False, _compilation_unit=unit))
    _set_tensors(graph, module, lambda tensor: torch.empty(0, dtype=tensor.dtype))
    loaded = _loaded_back(graph)
    del graph
    _set_tensors(loaded, module, lambda tensor: tensor)
    return TracedEncoder(loaded.eval(), names)


def _in_own_unit(trace: Callable[[torch._C.CompilationUnit], torch.jit.ScriptModule]) -> torch.jit.ScriptModule:
    """trace(unit) with a new compilation unit as the one the tracer registers its types in (torch's
    C++ side reads torch.jit._state._python_cu at each use), so that none of it stays global."""
    unit = torch._C.CompilationUnit()
    shared = torch.jit._state._python_cu
    torch.jit._state._python_cu = unit
    try:
        return trace(unit)
    finally:
        torch.jit._state._python_cu = shared


def _loaded_back(graph: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """The graph saved and loaded again: a module that owns its compilation unit."""
    buffer = io.BytesIO()
    torch.jit.save(graph, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


def _set_tensors(
    graph: torch.jit.ScriptModule, module: torch.nn.Module, value: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    """Set each parameter and buffer of graph (a trace of module) to value(module's own)."""
    for name, tensor in chain(module.named_parameters(), module.named_buffers()):
        *path, attribute = name.split(".")
        owner = graph
        for part in path:  # (ScriptModules have no get_submodule)
            owner = getattr(owner, part)
        setattr(owner, attribute, value(tensor))
