"""How many processes serve the port, and whether they feed one engine: ``server.processes``
and ``server.engine`` made concrete for the cores this process may use.

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

from dataclasses import dataclass
from typing import Literal

__all__ = ["ProcessPlan", "plan_processes"]

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
