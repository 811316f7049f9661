"""No way a client ends a call takes the server down: the cancellation matrix and a soak.

`bertserve serve` runs as a child process, so that a crash is seen (a segfault in grpc's C core
would take the test process with it otherwise). Every RPC of EncoderService and ModelService is cut
at each point its caller can end it (tests/cancellation.py lists them), with the access log (text
and JSON), metrics, tracing to a real OTLP receiver and token auth on, and again with each of them
off. After every case the server still answers and every model is SERVING; at the end its log holds
no traceback. The soak then sends thousands of random calls, cancelled at random or given short
deadlines, and checks the same.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import re
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from bertserve_client.v1 import encoder_service_pb2, model_service_pb2

from cancellation import (
    ADMIN_PHASES,
    ENCODER_RPCS,
    Outcome,
    Server,
    Setup,
    Stubs,
    admin_case,
    alive,
    code_of,
    encoder_case,
    heavy_seconds,
    serving,
    stream_case,
    stream_items,
)

CANCELLED, OK = grpc.StatusCode.CANCELLED, grpc.StatusCode.OK
NOT_SLOW = pytest.mark.skipif(
    os.environ.get("BERTSERVE_SLOW_TESTS") != "1",
    reason="the matrix with one part off (a server and some 20 s each): set BERTSERVE_SLOW_TESTS=1 (.ci/run does)",
)


#: Everything on (text and JSON logs), then each part off in turn. The first and the last run by
#: default (the two interceptor chains: tokens, and the loopback rule for admin calls without
#: them); the others with the slow suites.
SETUPS = {
    "all-on": Setup(),
    "all-on-json-log": Setup(log_format="json"),
    "access-log-off": Setup(access_log=False),
    "metrics-off": Setup(metrics=False),
    "tracing-off": Setup(tracing=False),
    "auth-off": Setup(auth=False),
}
DEFAULT_SETUPS = ("all-on", "auth-off")


async def run_matrix(server: Server, tiny: dict[str, Path]) -> list[Outcome]:
    """Every case of the matrix, one after another, the server checked after each."""
    stubs, target = server.stubs, server.target
    outcomes: list[Outcome] = []

    async def checked(case: str, outcome: Outcome) -> None:
        server.check_alive(case)
        await alive(stubs)
        outcomes.append(outcome)

    for rpc in ENCODER_RPCS:
        heavy_s = await heavy_seconds(stubs, rpc) if rpc.heavy is not None else 0.0
        phases: tuple[str, ...] = (
            ("before_start", "after_answer")
            if rpc.heavy is None
            else ("before_start", "queued", "mid_pass", "after_answer")
        )
        for phase in phases:
            await checked(f"{rpc.name} {phase}", await encoder_case(stubs, target, rpc, phase, heavy_s))
    stream_heavy_s = await heavy_seconds(stubs, ENCODER_RPCS[0])
    for phase in ("before_start", "queued", "mid_pass", "mid_stream", "after_answer"):
        await checked(f"EmbedStream {phase}", await stream_case(stubs, target, phase, stream_heavy_s))
    for rpc_name, admin_phases in ADMIN_PHASES.items():
        for phase in admin_phases:
            await checked(f"{rpc_name} {phase}", await admin_case(stubs, target, tiny, rpc_name, phase))
    return outcomes


def _expected(outcome: Outcome) -> set[grpc.StatusCode]:
    """What the caller must see: its own cancel, or the unary answer it had before it cut the call
    (a stream cut after its answers, but before it ended, is cancelled as well)."""
    return {OK} if outcome.phase == "after_answer" and outcome.rpc != "EmbedStream" else {CANCELLED}


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "name",
    [name if name in DEFAULT_SETUPS else pytest.param(name, marks=[pytest.mark.slow, NOT_SLOW]) for name in SETUPS],
)
async def test_no_cut_call_takes_the_server_down(name: str, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    setup = SETUPS[name]
    async with serving(setup, tiny_models, tmp_path) as server:
        outcomes = await run_matrix(server, tiny_models)
        await alive(server.stubs)
        server.check_alive("the matrix")
        counts = collections.Counter((o.rpc, o.phase) for o in outcomes)
        print(f"\n{name}: {len(outcomes)} cases over {len({o.rpc for o in outcomes})} RPCs: {dict(counts)}")
        wrong = [o for o in outcomes if o.code not in _expected(o)]
        assert not wrong, f"calls that did not end as their callers ended them: {wrong}"
        # The calls a case kept going beside the cut one (a blocker, the first of two changes) end
        # as they would have: answered, or (a call that an unload drained too long) UNAVAILABLE.
        others = [
            o
            for o in outcomes
            if not set(o.others) <= {OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ALREADY_EXISTS}
        ]
        assert not others, f"calls beside the cut ones that failed: {others}"
        services = (
            encoder_service_pb2.DESCRIPTOR.services_by_name["EncoderService"],
            model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
        )
        assert {o.rpc for o in outcomes} == {m.name for s in services for m in s.methods}, "every RPC of both"
        await _check_telemetry(server)
    assert not (found := server.tracebacks()), "\n---\n".join(found)


async def _check_telemetry(server: Server) -> None:
    """What the parts that are on recorded of the cut calls."""
    served, setup = server.served, server.setup
    log = "".join(served.log)
    if setup.access_log:
        if setup.log_format == "json":
            lines = [json.loads(line) for line in served.log if '"logger": "bertserve.access"' in line]
            cut = {line["rpc"] for line in lines if line["code"] == "CANCELLED"}
        else:
            cut = set(re.findall(r"rpc=(\w+) model=\S* code=CANCELLED", log))
        assert {"Embed", "EmbedStream", "Answer", "LoadModel"} <= cut, f"cancelled calls logged: {cut}"
        if setup.auth:
            assert "token_name=operator" in log or '"token_name": "operator"' in log
    else:
        assert "bertserve.access" not in log
    if setup.metrics:
        [line] = served.wait_for(r"Prometheus metrics on http://127\.0\.0\.1:\d+/metrics")
        port = int(re.findall(r":(\d+)/metrics", line)[0])
        text = await asyncio.to_thread(_scrape, port)
        assert re.search(r'bertserve_calls_total\{code="CANCELLED",model="minilm",rpc="EmbedStream"\} [1-9]', text), (
            text[-3000:]
        )
    if server.collector is not None:
        deadline = time.monotonic() + 20
        while not any(span.name.endswith("/EmbedStream") for _, span in server.collector.spans):
            assert time.monotonic() < deadline, "no EmbedStream span reached the receiver"
            await asyncio.sleep(0.1)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


# -- the soak ---------------------------------------------------------------------------------------

SOAK_CALLS = 3000
SOAK_CONCURRENCY = 24
SOAK_BUDGET_S = 240.0  # a bound on the whole soak, so that a wedged server fails rather than hangs
#: A stream write that grpc's asyncio client issued as the call ended (its deadline passed): the
#: client overwrites the call's status with a local INTERNAL "Internal error from Core"
#: (https://github.com/grpc/grpc/issues/36066). The server sent no such status: the soak checks
#: its access log for INTERNAL too.
WRITE_AFTER_END = "WRITE_AFTER_END"
#: How a soak call may end: answered, cut by its caller or its deadline, or refused while the queues are full.
SOAK_CODES = {OK, CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED, WRITE_AFTER_END}


def _wrote_after_the_end(e: grpc.aio.AioRpcError) -> bool:
    return (
        e.code() is grpc.StatusCode.INTERNAL
        and e.details() == "Internal error from Core"
        and 'Failed "execute_batch"' in (e.debug_error_string() or "")
    )


async def soak_call(stubs: Stubs, rng: random.Random) -> grpc.StatusCode | str:
    """One random call: an RPC, light or (rarely) heavy, cancelled after a random wait, given a
    deadline of a few milliseconds, a stream cut after a few answers, or left alone."""
    rpc = rng.choice(ENCODER_RPCS)
    request = rpc.heavy() if rpc.heavy is not None and rng.random() < 0.05 else rpc.light()
    how = rng.random()
    if how < 0.35:
        call = stubs.unary(rpc.name, request)
        await asyncio.sleep(rng.uniform(0, 0.03))
        call.cancel()
        return await code_of(call)
    if how < 0.7:
        return await code_of(stubs.unary(rpc.name, request, timeout=rng.uniform(0.001, 0.08)))
    if how < 0.9:
        call = stubs.stream(timeout=rng.choice((0.05, 0.5, 30.0)))
        try:
            for item in stream_items(rng.randint(1, 40)):
                try:
                    await call.write(item)
                except asyncio.InvalidStateError:  # the client saw the call end first: its status tells how
                    return await code_of(call)
                except grpc.aio.AioRpcError as e:
                    if _wrote_after_the_end(e):
                        return WRITE_AFTER_END
                    raise
            for _ in range(rng.randint(0, 10)):
                await call.read()
        except grpc.aio.AioRpcError as e:
            return e.code()
        call.cancel()
        return await code_of(call)
    return await code_of(stubs.unary(rpc.name, request))


async def test_a_soak_of_random_cancels_and_deadlines(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    rng = random.Random(20261203)
    async with serving(SETUPS["all-on"], tiny_models, tmp_path) as server:
        gate = asyncio.Semaphore(SOAK_CONCURRENCY)

        async def one(seed: int) -> grpc.StatusCode | str:
            async with gate:
                return await soak_call(server.stubs, random.Random(seed))

        started = time.perf_counter()
        codes = await asyncio.wait_for(
            asyncio.gather(*(one(rng.getrandbits(32)) for _ in range(SOAK_CALLS))), SOAK_BUDGET_S
        )
        seconds = time.perf_counter() - started
        counted = collections.Counter(code if isinstance(code, str) else code.name for code in codes)
        print(f"\nsoak: {SOAK_CALLS} calls in {seconds:.1f}s: {dict(counted)}")
        server.check_alive("the soak")
        await alive(server.stubs)
        assert set(codes) <= SOAK_CODES, counted
        assert counted["CANCELLED"] > SOAK_CALLS // 10 and counted["DEADLINE_EXCEEDED"] > 0, counted
    assert not [line for line in server.served.log if " code=INTERNAL " in line]
    assert not (found := server.tracebacks()), "\n---\n".join(found)
