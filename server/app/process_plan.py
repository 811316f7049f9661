"""How many processes serve the port, and whether they feed engines: ``server.processes`` and
``server.engine`` made concrete for the cores this process may use; and which engine runs each
model: one engine per device (the CPU, or one GPU), each with the models placed on it.

``auto`` follows what bench/frontend.py and bench/throughput.py measured on 2 cores: one process
did as well as one front end feeding an engine (throughput within the runs' noise, single-call
latency about 1 ms better) on half the memory, and two front ends did worse, as two Python
processes then share the two cores with the engine's workers. So up to 3 cores, one process
serves. From 4, the event loop of one process is what tops out (about a thousand calls a second),
so front ends feed one engine: one front end per 4 cores, at least 2. That split is an
extrapolation from the per-call costs measured here (a front end's CPU per call against a
model's compute per call), not a measurement on such a machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bertserve.api import ModelSpec

__all__ = ["ProcessPlan", "engine_device", "engine_models", "gpu_present", "plan_processes"]

#: Up to this many cores, ``processes: auto`` is one process (measured best on 2 cores).
ONE_PROCESS_MAX_CORES = 3
#: From that on, one front end per this many cores.
CORES_PER_FRONT_END = 4


@dataclass(frozen=True)
class ProcessPlan:
    """What ``serve`` starts."""

    processes: int  # processes sharing the port: whole servers, or front ends of the engine
    engine: bool  # whether they feed one engine process that loads each model once

    @property
    def supervised(self) -> bool:
        """Whether a supervisor runs the processes (anything but one whole server)."""
        return self.engine or self.processes > 1

    def describe(self) -> str:
        if self.engine:
            return f"{self.processes} front end{'s' if self.processes > 1 else ''} of one engine"
        return f"{self.processes} server process{'es' if self.processes > 1 else ''}"


def plan_processes(processes: int | Literal["auto"], engine: bool | Literal["auto"], cores: int) -> ProcessPlan:
    """The plan for the settings and the cores; an explicit setting is kept as it is."""
    if processes != "auto":
        count = processes
    elif engine is False or cores <= ONE_PROCESS_MAX_CORES:
        count = 1
    else:
        count = max(2, cores // CORES_PER_FRONT_END)
    return ProcessPlan(count, count > 1 if engine == "auto" else engine)


def engine_device(device: str, gpu_present: bool) -> str:
    """The device whose engine runs a model configured with ``device``: cpu, or cuda:N (``auto``
    is the first GPU when one is present, as bertserve.runtime.placement places it)."""
    if device == "auto":
        return "cuda:0" if gpu_present else "cpu"
    return "cuda:0" if device == "cuda" else device


def gpu_present() -> bool:
    """Whether a CUDA device is visible, read without importing torch (the supervisor does not):
    NVIDIA's driver lists its GPUs under /proc/driver/nvidia/gpus, and CUDA_VISIBLE_DEVICES may
    hide them all."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(Path("/proc/driver/nvidia/gpus").glob("*"))


def engine_models(models: Sequence[ModelSpec], gpu: bool) -> dict[str, tuple[ModelSpec, ...]]:
    """The models of each engine, by device, in the order their devices first appear."""
    groups: dict[str, list[ModelSpec]] = {}
    for spec in models:
        groups.setdefault(engine_device(spec.device, gpu), []).append(spec)
    return {device: tuple(specs) for device, specs in groups.items()}
