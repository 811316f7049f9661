"""One worker pool per device, shared by every model placed there.

All torch work of a device (loading and forward passes) runs on the same thread(s). Besides
keeping one stream of work per device, this matters on CPUs: each thread that runs torch ops
gets its own OpenMP team, and once the process holds more OpenMP threads than cores, OpenMP
stops spin-waiting between parallel regions and every op pays a sleep and wake-up. Measured
here with all-MiniLM-L6-v2 on 2 cores: one sentence took 12 ms with one team and 18 ms with three.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from bertserve.api import ModelSpec
from bertserve.errors import ConfigError
from bertserve.runtime.placement import resolve_device

__all__ = ["DeviceWorkers"]


class DeviceWorkers:
    """Executors by device; a device's pool has as many threads as its most demanding model's workers."""

    def __init__(self, specs: Iterable[ModelSpec]) -> None:
        self._specs = list(specs)
        self._pools: dict[str, ThreadPoolExecutor] | None = None

    def for_model(self, spec: ModelSpec) -> ThreadPoolExecutor:
        """The pool of spec's device; made for a model loaded at run time on a device new to this server."""
        pools = self._made()
        key = _device_key(spec.device)
        if key not in pools:
            pools[key] = ThreadPoolExecutor(max_workers=spec.workers, thread_name_prefix=f"device-{key}")
        return pools[key]

    def _made(self) -> dict[str, ThreadPoolExecutor]:
        """The pools of the configured models, made at the first model's placement: resolving a
        device asks torch, which a front end (it places no model) never imports."""
        if self._pools is None:
            sizes: dict[str, int] = {}
            for spec in self._specs:
                key = _device_key(spec.device)
                sizes[key] = max(sizes.get(key, 1), spec.workers)
            self._pools = {
                key: ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"device-{key}")
                for key, size in sizes.items()
            }
        return self._pools

    def shutdown(self) -> None:
        for pool in (self._pools or {}).values():
            pool.shutdown(wait=False, cancel_futures=True)


def _device_key(device: str) -> str:
    try:
        return str(resolve_device(device))
    except ConfigError:  # the model fails to load with this error; its pool stays unused
        return f"unavailable:{device}"
