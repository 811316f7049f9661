"""`bertserve serve` run as a child process, for tests of the command itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path


class Served:
    """`bertserve serve` in a child process, its log read as it comes."""

    def __init__(
        self, config: Path, *args: str, env: dict[str, str] | None = None, pin_cores: int | None = None
    ) -> None:
        """pin_cores: run it on that many of this process's cores (its CPU affinity), as a container would."""
        cores = sorted(os.sched_getaffinity(0))[:pin_cores] if pin_cores else None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bertserve.app.cli", "serve", "--config", str(config), *args],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
        )
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 90) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in list(self.log) if re.search(pattern, line)]
            if len(found) >= count:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {count} x {pattern!r} in the log:\n{''.join(self.log)}")

    @property
    def port(self) -> int:
        [line, *_] = self.wait_for(r"\(port \d+\)")
        return int(re.findall(r"\(port (\d+)\)", line)[0])

    def servers(self) -> list[int]:
        """The pids of the server processes under this one (not multiprocessing's resource tracker)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (stat.parent / "cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.process.pid and b"spawn_main" in cmdline:
                pids.append(int(stat.parent.name))
        return sorted(pids)
