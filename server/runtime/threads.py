"""Process-wide settings that decide how gRPC, tokenization and torch share the CPU cores."""

from __future__ import annotations

import gc
import logging
import os
from dataclasses import replace
from typing import Protocol, TypeVar

from bertserve.api import ModelSpec
from bertserve.errors import ConfigError

__all__ = ["configure_runtime", "cpu_cores", "freeze_loaded_heap", "model_workers", "share_cores"]

log = logging.getLogger(__name__)


def cpu_cores() -> int:
    """The cores this process may use: its CPU affinity, and a container's CPU quota (cgroups v1
    and v2), which os.cpu_count() and torch's default both ignore."""
    import joblib

    return max(1, int(joblib.cpu_count()))


class ThreadSettings(Protocol):
    """What share_cores reads of a configuration (a dataclass: it returns a copy with them set)."""

    @property
    def torch_threads(self) -> int: ...
    @property
    def models(self) -> tuple[ModelSpec, ...]: ...


C = TypeVar("C", bound=ThreadSettings)


def share_cores(config: C, cores: int) -> C:
    """config with its automatic thread settings (0) made concrete for one process's `cores`.

    On a CPU, the default is one single-threaded worker per core: passes run side by side with
    no OpenMP team to synchronise, so the event loop or a tokenizer taking a core slows one pass
    instead of stalling every op of a two-threaded one at its barriers (docs/performance.md has the
    figures). An explicit setting on either side takes its share first: `workers: 1` leaves torch
    every core, `torch_threads: 2` gives each worker two.
    """
    cpu_workers = [spec.workers for spec in config.models if spec.workers and _on_cpu(spec)]
    threads = config.torch_threads or max(1, cores // max(cpu_workers, default=cores))
    models = tuple(replace(spec, workers=model_workers(spec, threads, cores)) for spec in config.models)
    return replace(config, torch_threads=threads, models=models)  # type: ignore[type-var]


def model_workers(spec: ModelSpec, torch_threads: int, cores: int) -> int:
    """The workers of a model: as configured, or, when automatic (0), one per torch_threads of
    the cores on a CPU and one on an accelerator, which runs one stream of work."""
    if spec.workers:
        return spec.workers
    return max(1, cores // max(1, torch_threads)) if _on_cpu(spec) else 1


def _on_cpu(spec: ModelSpec) -> bool:
    from bertserve.runtime.placement import resolve_device

    try:
        return resolve_device(spec.device).type == "cpu"
    except ConfigError:  # the model fails to load with this error; one worker for its unused pool
        return False


def configure_runtime(config: ThreadSettings, *, runs_passes: bool = True) -> None:
    """Apply the thread settings before any model loads; runs_passes: False in a front end,
    whose engine runs the passes (and which may keep torch out, see bertserve.app.front_end_imports).

    Tokenizers' own Rust thread pool would compete with torch's intra-op threads on small
    machines; bertserve already tokenizes on its own pool, so that inner parallelism is off
    unless the environment says otherwise.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # per-model progress bars would interleave in server logs
    if not runs_passes:
        log.info("threads: passes run in the engine; tokenizers parallelism %s", os.environ["TOKENIZERS_PARALLELISM"])
        return
    import torch

    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    log.info(
        "threads: torch intra-op %d per worker; workers %s; tokenizers parallelism %s",
        torch.get_num_threads(),
        ", ".join(f"{spec.name} {spec.workers}" for spec in config.models) or "none",
        os.environ["TOKENIZERS_PARALLELISM"],
    )


def freeze_loaded_heap() -> None:
    """Take what loading left on the heap out of the garbage collector's sight.

    Imported libraries, models and tokenizers leave hundreds of thousands of objects that live as
    long as the process. Every full collection walks all of them while holding the interpreter
    lock, which stops the event loop and every pass from starting or returning: measured with
    MiniLM under load on 2 cores, one full collection every 10 s or so, 248 ms each. Frozen, they
    are never walked again; what is made afterwards is collected as usual. Called once, when every
    model has loaded or failed: the one collection before freezing (a fraction of a second)
    happens at start-up, not under traffic.
    """
    gc.collect()
    gc.freeze()
    if log.isEnabledFor(logging.DEBUG):  # counting walks every frozen object
        log.debug("garbage collector: %d objects frozen after loading", gc.get_freeze_count())
