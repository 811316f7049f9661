"""What a call that gives up the interpreter lock costs a device worker while another thread keeps
the lock busy, as a loaded event loop does.

    python bench/lock_handoff.py [--calls 300] [--rounds 2]

Every torch op called from Python lets go of the interpreter lock while it runs (so do some
numpy functions, and any blocking call). Alone, taking it back is free. Beside a thread that
runs Python, the lock has gone to that thread, and the worker waits for it: for up to the
switch interval (5 ms) of wall time, and, measured here, tens of microseconds of its own CPU for
each hand-off. So a device worker's pass pays per torch call it makes from Python, not per op of
its graph: a traced graph takes the lock once (bertserve.runtime.tracing), and packing and pooling
make few torch calls (bertserve.runtime.packed_inputs).

Each case runs in a worker thread, alone and then beside a thread running a pure-Python loop;
printed: the worker's CPU time per call (its thread's), its wall time per call, and its
voluntary context switches per call. The cases: a small torch op (torch.zeros), a plain release
(time.sleep(0)), a small numpy op, and pure Python of about the same cost, which never lets go.
"""

from __future__ import annotations

import argparse
import resource
import threading
import time
from collections.abc import Callable

import numpy as np
import torch


def _pure_python() -> int:
    total = 0
    for i in range(150):
        total += i
    return total


CASES: dict[str, Callable[[], object]] = {
    "torch.zeros((6, 32))": lambda: torch.zeros((6, 32)),
    "time.sleep(0)": lambda: time.sleep(0),
    "numpy add of 6x32": lambda: np.add(np.ones((6, 32), np.float32), 1),
    "pure Python, no release": _pure_python,
}


def _measure(call: Callable[[], object], calls: int, beside_busy_thread: bool) -> tuple[float, float, float]:
    """The worker thread's CPU µs, wall µs and voluntary context switches per call."""
    stop = threading.Event()

    def busy() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    found: list[tuple[float, float, float]] = []

    def worker() -> None:
        torch.set_num_threads(1)
        for _ in range(20):
            call()
        before = resource.getrusage(resource.RUSAGE_THREAD)
        cpu, wall = time.thread_time(), time.perf_counter()
        for _ in range(calls):
            call()
        after = resource.getrusage(resource.RUSAGE_THREAD)
        found.append(
            (
                (time.thread_time() - cpu) / calls * 1e6,
                (time.perf_counter() - wall) / calls * 1e6,
                (after.ru_nvcsw - before.ru_nvcsw) / calls,
            )
        )

    hog = threading.Thread(target=busy) if beside_busy_thread else None
    if hog is not None:
        hog.start()
    try:
        runner = threading.Thread(target=worker)
        runner.start()
        runner.join()
    finally:
        stop.set()
        if hog is not None:
            hog.join()
    return found[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="calls per case beside the busy thread")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{'':26} {'alone: CPU us':>13} {'wall us':>8} | {'beside a busy thread: CPU us':>28} {'wall us':>8} "
        f"{'switches':>8} | {'CPU ratio':>9}"
    )
    for _ in range(args.rounds):
        for name, call in CASES.items():
            alone = _measure(call, args.calls * 10, beside_busy_thread=False)
            busy = _measure(call, args.calls, beside_busy_thread=True)
            print(
                f"{name:26} {alone[0]:13.1f} {alone[1]:8.1f} | {busy[0]:28.1f} {busy[1]:8.0f} {busy[2]:8.1f} | "
                f"{busy[0] / alone[0]:9.1f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
