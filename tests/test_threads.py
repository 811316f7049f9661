"""How a process's cores are shared between torch threads and model workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bertserve.app.config import load_config
from bertserve.runtime.threads import cpu_cores, share_cores


def _config(tmp_path: Path, server: str, *models: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"server: {{{server}}}\nmodels:\n"
        + "".join(f"  - {{name: m{i}, plugin: bert, {m}}}\n" for i, m in enumerate(models))
    )
    return path


@pytest.mark.parametrize(
    ("server", "models", "cores", "threads", "workers"),
    [
        ("", ["device: cpu"], 2, 1, [2]),  # one single-threaded worker per core
        ("", ["device: cpu"], 8, 1, [8]),
        ("", ["device: cpu, workers: 1"], 4, 4, [1]),  # one worker: every core as torch threads
        ("torch_threads: 2", ["device: cpu"], 8, 2, [4]),  # two threads each: half as many workers
        ("", ["device: cpu, workers: 2", "device: cpu"], 4, 2, [2, 2]),  # the busiest CPU model sets the threads
        ("", ["device: 'cuda:7'", "device: cpu"], 4, 1, [1, 4]),  # an accelerator runs one stream of work
        ("torch_threads: 3", ["device: cpu, workers: 5"], 4, 3, [5]),  # explicit settings are kept as they are
    ],
)
def test_automatic_settings_share_the_cores(
    tmp_path: Path, server: str, models: list[str], cores: int, threads: int, workers: list[int]
) -> None:
    shared = share_cores(load_config(_config(tmp_path, server, *models), environ={}), cores)
    assert shared.torch_threads == threads
    assert [spec.workers for spec in shared.models] == workers


def test_the_cores_are_those_the_process_may_run_on() -> None:
    """A process pinned to one core counts one, though the machine has more (as a container's CPU
    quota would count; joblib reads both)."""
    script = (
        "import os; os.sched_setaffinity(0, {0}); from bertserve.runtime.threads import cpu_cores; print(cpu_cores())"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "1"
    assert 1 <= cpu_cores() <= len(os.sched_getaffinity(0))
