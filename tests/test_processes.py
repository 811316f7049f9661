"""`serve` with several whole servers on one port (engine: false; front ends of an engine are
test_engine.py's), the port rules of one process, and client channels."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from bertserve.app.config import load_config
from bertserve.app.server import BertServer
from bertserve_client import AsyncClient, BertserveError, Client

from served import Served


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


@pytest.fixture(scope="module")
def two_processes(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = tmp_path_factory.mktemp("processes") / "two.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, processes: 2, engine: false, grace_period_s: 2}\nmodels:\n"
        f"  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}', device: cpu}}\n"
    )
    served = Served(config)
    served.wait_for(r"model 'bert' ready", count=2)
    yield served
    if served.process.poll() is None:  # a test failed before the one that stops it
        served.process.send_signal(signal.SIGTERM)
        served.process.wait(30)


async def test_two_processes_share_one_port_and_both_serve(two_processes: Served) -> None:
    assert len(two_processes.wait_for(r"\[[12]/2\] bertserve\.app\.server: bertserve listening", count=2)) == 2
    assert "1 cores each" in two_processes.wait_for(r"2 server processes")[0]  # 2 cores here, one per process
    threads = two_processes.wait_for(r"threads: torch intra-op", count=2)
    assert all("torch intra-op 1 per worker; workers bert 1;" in line for line in threads), threads
    servers = two_processes.servers()
    assert len(servers) == 2
    before = {pid: cpu_ticks(pid) for pid in servers}
    # Sixteen connections, which the kernel hands out between the two processes; calls in flight
    # at once spread over the connections.
    async with AsyncClient(f"127.0.0.1:{two_processes.port}", channels=16, timeout=60) as client:
        for _ in range(10):
            results = await asyncio.gather(*(client.embed(f"sentence number {i}") for i in range(64)))
            assert [r.embeddings.shape for r in results] == [(1, 32)] * 64
    # Both did real work: well over an idle server's ticks (100 a second of CPU).
    busy = {pid: cpu_ticks(pid) - before[pid] for pid in servers}
    assert all(ticks >= 5 for ticks in busy.values()), busy


async def test_model_management_is_refused_with_several_processes(two_processes: Served) -> None:
    """A call reaches one process: it cannot change the models of all of them."""
    async with AsyncClient(f"127.0.0.1:{two_processes.port}", timeout=30) as client:
        with pytest.raises(BertserveError) as info:
            await client.unload_model("bert")
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.message == (
        "UnloadModel would change the models of one of this server's processes only (several whole servers: "
        "server.engine is false); change the configuration and restart, or let the processes share an engine"
    )


def test_a_server_process_that_dies_is_restarted(two_processes: Served) -> None:
    first, second = two_processes.servers()
    os.kill(first, signal.SIGKILL)
    two_processes.wait_for(r"process \d exited \(exit status -9\); restarting it")
    two_processes.wait_for(r"model 'bert' ready", count=3)
    assert second in two_processes.servers() and first not in two_processes.servers()
    with Client(f"127.0.0.1:{two_processes.port}", channels=8, timeout=60) as client:
        assert all(client.embed("still served").embeddings.shape == (1, 32) for _ in range(16))


def test_sigterm_stops_every_process(two_processes: Served) -> None:
    servers = two_processes.servers()
    two_processes.process.send_signal(signal.SIGTERM)
    assert two_processes.process.wait(30) == 0
    assert not [pid for pid in servers if Path(f"/proc/{pid}").exists()]
    assert len(two_processes.wait_for(r"bertserve stopped", count=2)) == 2


def test_servers_end_with_a_supervisor_killed_outright(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "two.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, processes: 2, engine: false}\nmodels:\n"
        f"  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}', device: cpu}}\n"
    )
    served = Served(config)
    served.wait_for(r"bertserve listening", count=2)
    servers = served.servers()
    assert len(servers) == 2
    served.process.kill()
    served.process.wait()
    deadline = time.monotonic() + 30
    while [pid for pid in servers if Path(f"/proc/{pid}").exists()] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in servers if Path(f"/proc/{pid}").exists()]


async def test_one_process_refuses_a_port_in_use(server: BertServer, config_path: Path) -> None:
    from dataclasses import replace

    second = BertServer(replace(load_config(config_path), port=server.port))
    with pytest.raises(OSError, match=rf"cannot bind 127\.0\.0\.1:{server.port}: the address is in use"):
        await second.start()
    await second.stop(grace=0)


async def test_serve_reports_a_port_in_use(server: BertServer, config_path: Path) -> None:
    for processes in ("1", "2"):
        command = [sys.executable, "-m", "bertserve.app.cli", "serve", "--config", str(config_path)]
        run = await asyncio.to_thread(
            subprocess.run,
            [*command, "--port", str(server.port), "--processes", processes],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 1, run.stderr
        assert f"bertserve: cannot bind 127.0.0.1:{server.port}" in run.stderr


async def test_client_channels_spread_calls(target: str) -> None:
    import grpc

    async with AsyncClient(target, channels=4) as client:
        for i in range(4):  # one at a time: ties go round, so each call opens the next connection
            await client.embed(f"sentence {i}", model="bert")
        assert [c.get_state() for c in client._channels] == [grpc.ChannelConnectivity.READY] * 4
        results = await asyncio.gather(*(client.embed(f"sentence {i}", model="bert") for i in range(32)))
        assert client._in_flight == [0, 0, 0, 0]
    reference = results[0].embeddings
    async with AsyncClient(target) as single:
        np.testing.assert_allclose((await single.embed("sentence 0", model="bert")).embeddings, reference, atol=1e-5)


def test_client_channels_must_be_positive_and_own_their_connections() -> None:
    with pytest.raises(ValueError, match="channels must be at least 1, not 0"):
        Client("127.0.0.1:1", channels=0)
    import grpc

    with grpc.insecure_channel("127.0.0.1:1") as channel, pytest.raises(ValueError, match="not to a channel passed in"):
        Client(channel=channel, channels=2)
