"""`processes: auto` and `engine: auto` made concrete: the plan for each core count, and `serve`
starting what the plan says."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import numpy as np
import pytest

from bertserve.app.process_plan import ProcessPlan, plan_processes
from bertserve_client import Client

from served import Served


@pytest.mark.parametrize(
    ("processes", "engine", "cores", "plan"),
    [
        # One process up to 3 cores (measured best on 2), then one front end per 4 cores, at least 2.
        ("auto", "auto", 1, ProcessPlan(1, False)),
        ("auto", "auto", 2, ProcessPlan(1, False)),
        ("auto", "auto", 3, ProcessPlan(1, False)),
        ("auto", "auto", 4, ProcessPlan(2, True)),
        ("auto", "auto", 12, ProcessPlan(3, True)),
        ("auto", "auto", 64, ProcessPlan(16, True)),
        # An engine asked for: one front end where one process would be chosen.
        ("auto", True, 2, ProcessPlan(1, True)),
        ("auto", True, 16, ProcessPlan(4, True)),
        # No engine: one whole server unless told how many.
        ("auto", False, 64, ProcessPlan(1, False)),
        (3, False, 2, ProcessPlan(3, False)),
        # Explicit counts are kept; several share an engine unless engine is false.
        (1, "auto", 64, ProcessPlan(1, False)),
        (2, "auto", 2, ProcessPlan(2, True)),
        (1, True, 2, ProcessPlan(1, True)),
    ],
)
def test_the_plan_for_the_settings_and_the_cores(
    processes: int | str, engine: bool | str, cores: int, plan: ProcessPlan
) -> None:
    assert plan_processes(processes, engine, cores) == plan  # type: ignore[arg-type]


def test_a_plan_describes_itself() -> None:
    assert ProcessPlan(1, False).describe() == "1 server process"
    assert ProcessPlan(3, False).describe() == "3 server processes"
    assert ProcessPlan(1, True).describe() == "1 front end of one engine"
    assert ProcessPlan(4, True).describe() == "4 front ends of one engine"
    assert not ProcessPlan(1, False).supervised and ProcessPlan(1, True).supervised and ProcessPlan(2, False).supervised


@pytest.mark.parametrize(("engine", "chosen"), [("auto", "1 server process"), ("true", "1 front end of one engine")])
def test_serve_starts_what_auto_chose(tiny_models: dict[str, Path], tmp_path: Path, engine: str, chosen: str) -> None:
    """Pinned to 2 cores, `processes: auto` serves from one process, or from one front end of an
    engine when engine is true; either answers as BertServer does in the test's own process."""
    config = tmp_path / "auto.yaml"
    config.write_text(
        f"server: {{address: 127.0.0.1, port: 0, processes: auto, engine: {engine}, grace_period_s: 2}}\nmodels:\n"
        f"  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}', device: cpu}}\n"
    )
    served = Served(config, "--processes", "auto", pin_cores=2)
    try:
        [line] = served.wait_for(r"processes: auto chose")
        assert line.rstrip().endswith(f"processes: auto chose {chosen} for 2 cores")
        served.wait_for(r"model 'bert' ready")
        served.wait_for(r"bertserve listening")
        if engine == "true":
            served.wait_for(r"model 'bert': tokenizer ready")
        with Client(f"127.0.0.1:{served.port}", timeout=60) as client:
            first = client.embed(["a short sentence", "and another one"], model="bert").embeddings
            again = client.embed(["a short sentence", "and another one"], model="bert").embeddings
        assert first.shape[0] == 2 and np.array_equal(first, again)
        supervised = [
            line for line in served.log if re.search(r"bertserve\.app\.supervisor: .* on 127\.0\.0\.1:\d+ \(port", line)
        ]
        assert bool(supervised) == (engine == "true"), served.log
    finally:
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(30) == 0
