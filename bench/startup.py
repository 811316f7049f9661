"""Start-up time and memory of `bertserve serve` on its default configuration.

    python bench/startup.py [--config FILE]

Reports, from process start: when the port accepts calls, when each model is ready or failed,
and the server's resident memory (now and peak) once every model has settled; then the time a
SIGTERM takes to drain and exit.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from bertserve_client import BertserveError, Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_mib(pid: int) -> tuple[float, float]:
    """Resident and peak resident memory of a process, MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: the packaged default configuration)")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    port = free_port()
    command = [sys.executable, "-m", "bertserve.app.cli", "serve", "--port", str(port), "--log-level", "warning"]
    if args.config:
        command += ["--config", args.config]
    started = time.monotonic()
    server = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    settled: dict[str, tuple[str, float]] = {}
    listening = None
    try:
        with Client(f"127.0.0.1:{port}", timeout=2) as client:
            while time.monotonic() - started < args.timeout:
                try:
                    models = client.models()
                except BertserveError as e:
                    if e.code is not grpc.StatusCode.UNAVAILABLE:
                        raise
                    time.sleep(0.05)
                    continue
                listening = listening or time.monotonic() - started
                for m in models:
                    if m.state != "loading" and m.name not in settled:
                        settled[m.name] = (m.state, time.monotonic() - started)
                if len(settled) == len(models):
                    break
                time.sleep(0.05)
            rss, peak = memory_mib(server.pid)
        print(f"port accepting calls after {listening:.2f}s")
        for name, (state, at) in sorted(settled.items(), key=lambda item: item[1][1]):
            print(f"  {name:<10} {state:<7} after {at:6.2f}s")
        print(f"memory once settled: {rss:.0f} MiB resident, {peak:.0f} MiB peak")
    finally:
        stopping = time.monotonic()
        server.send_signal(signal.SIGTERM)
        code = server.wait(60)
        print(f"SIGTERM to exit: {time.monotonic() - stopping:.2f}s (exit code {code}); {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
