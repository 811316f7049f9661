"""One worker pool per device, shared by every model placed there.

All torch work of a device (loading and forward passes) runs on the same thread(s). Besides
keeping one stream of work per device, this matters on CPUs: each thread that runs torch ops
gets its own OpenMP team, and once the process holds more OpenMP threads than cores, OpenMP
stops spin-waiting between parallel regions and every op pays a sleep and wake-up. Measured
here with all-MiniLM-L6-v2 on 2 cores: one sentence took 12 ms with one team and 18 ms with three.

A CPU's workers each run their passes on their share of the cores (torch_threads), so that
passes side by side do not contend. A pass that starts while its device's other workers are
idle, for a lone caller, takes their share too (see AdaptiveCpuWorkers).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from bertserve.api import ModelSpec
from bertserve.errors import ConfigError
from bertserve.ops import DevicePass
from bertserve.runtime.placement import resolve_device

__all__ = ["AdaptiveCpuWorkers", "DeviceWorkers"]

T = TypeVar("T")


class AdaptiveCpuWorkers(ThreadPoolExecutor):
    """A CPU's worker threads, whose torch intra-op threads follow the work in flight.

    Each piece of work (a pass, a load) runs on `threads_each` threads, and a pass on all the
    pool's threads (workers x threads_each) when it is alone: no other work runs on the pool and
    its batcher has seen no calls contend lately (bertserve.ops.DevicePass). Under load each
    worker keeps to its share, even at the moment another is between two passes (a pass on every
    core, with a second starting beside it, would put more threads than cores to work); a lone
    caller's pass no longer leaves the other cores idle (all-MiniLM-L6-v2, one sentence, 2 cores:
    7-9 ms on one thread, 4-6 ms on two).
    torch's thread count is the calling thread's own (OpenMP's and MKL's settings are per
    thread), so a worker changing it leaves the others' as they are. The embeddings and token
    states came out bit for bit the same on one thread and on two (all-MiniLM-L6-v2, float32 and
    bfloat16, 240 batches of 1 to 64 texts of 3 to 200 words, packed and pooled both ways).
    """

    def __init__(self, max_workers: int, threads_each: int, thread_name_prefix: str) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix=thread_name_prefix)
        self.threads_each = max(1, threads_each)
        self.threads_alone = self.threads_each * max_workers
        self._running = 0
        self._lock = threading.Lock()
        self._set = threading.local()  # each worker's current torch thread count
        self.passes_alone = 0  # passes run on all the pool's threads (for tests and diagnostics)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return super().submit(self._run, fn, args, kwargs)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
        lone_pass = isinstance(fn, DevicePass) and fn.uncontended
        with self._lock:
            alone = lone_pass and self._running == 0
            self._running += 1
            self.passes_alone += alone
        try:
            self._use(self.threads_alone if alone else self.threads_each)
            return fn(*args, **kwargs)
        finally:
            with self._lock:
                self._running -= 1

    def _use(self, threads: int) -> None:
        if getattr(self._set, "threads", None) != threads:
            from bertserve.runtime.lazy_torch import torch

            torch.set_num_threads(threads)
            self._set.threads = threads


class DeviceWorkers:
    """Executors by device; a device's pool has as many threads as its most demanding model's
    workers. threads_each: torch's intra-op threads per CPU worker (server.torch_threads, made
    concrete); 0 leaves each worker's threads as torch has them."""

    def __init__(self, specs: Iterable[ModelSpec], threads_each: int = 0) -> None:
        self._specs = list(specs)
        self._threads_each = threads_each
        self._pools: dict[str, ThreadPoolExecutor] | None = None

    def for_model(self, spec: ModelSpec) -> ThreadPoolExecutor:
        """The pool of spec's device; made for a model loaded at run time on a device new to this server."""
        pools = self._made()
        key = _device_key(spec.device)
        if key not in pools:
            pools[key] = self._pool(key, spec.workers)
        return pools[key]

    def _pool(self, key: str, size: int) -> ThreadPoolExecutor:
        if key == "cpu" and self._threads_each > 0:
            return AdaptiveCpuWorkers(size, self._threads_each, thread_name_prefix=f"device-{key}")
        return ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"device-{key}")

    def _made(self) -> dict[str, ThreadPoolExecutor]:
        """The pools of the configured models, made at the first model's placement: resolving a
        device asks torch, which a front end (it places no model) never imports."""
        if self._pools is None:
            sizes: dict[str, int] = {}
            for spec in self._specs:
                key = _device_key(spec.device)
                sizes[key] = max(sizes.get(key, 1), spec.workers)
            self._pools = {key: self._pool(key, size) for key, size in sizes.items()}
        return self._pools

    def shutdown(self) -> None:
        for pool in (self._pools or {}).values():
            pool.shutdown(wait=False, cancel_futures=True)


def _device_key(device: str) -> str:
    try:
        return str(resolve_device(device))
    except ConfigError:  # the model fails to load with this error; its pool stays unused
        return f"unavailable:{device}"
