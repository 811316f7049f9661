"""What large callers do to small ones, served by bertserve on all-MiniLM-L6-v2, in one run.

    python bench/fairness.py [--seconds 10]

  small        one-sentence calls at concurrency 4, alone: p50 and p99 latency
  large        four callers sending 1,000-sentence calls back to back, alone: sentences/s
  small+large  both at once: the small calls' p99 against theirs alone (target: at most 3x), and
               the large calls' throughput against theirs alone (target: at least 0.9x)
  small+max    the small calls while two callers send maximal inputs (max_input_bytes of text in
               one input, no truncate; each is refused once its prefix shows it too long): the
               small calls' p99 (target: under 250 ms)
The scenarios run twice, in alternating order, each for --seconds; figures are from both rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from throughput import Settings, Target, minilm_dir, serve, workload

MAX_INPUT_BYTES = 8 * 1024 * 1024 - 1024  # the default max_input_bytes, less the request's own fields


async def small_calls(target: Target, sentences: list[str], until: float, latencies: list[float]) -> None:
    from bertserve_client import AsyncClient

    async with AsyncClient(target.address, timeout=60) as client:

        async def caller(offset: int) -> None:
            k = offset
            while time.monotonic() < until:
                t = time.perf_counter()
                await client.embed(sentences[k % len(sentences)], model="minilm")
                latencies.append((time.perf_counter() - t) * 1000)
                k += 4

        await asyncio.gather(*(caller(i) for i in range(4)))


async def large_calls(target: Target, sentences: list[str], until: float, done: list[int]) -> None:
    from bertserve_client import AsyncClient

    async with AsyncClient(target.address, timeout=600) as client:

        async def caller(offset: int) -> None:
            k = offset * 1000
            while time.monotonic() < until:
                batch = [sentences[(k + i) % len(sentences)] for i in range(1000)]
                await client.embed(batch, model="minilm")
                done.append(len(batch))
                k += 4000

        await asyncio.gather(*(caller(i) for i in range(4)))


async def maximal_calls(target: Target, until: float, refused: list[float]) -> None:
    from bertserve_client import AsyncClient, BertserveError

    text = ("the largest input a caller may send " * (MAX_INPUT_BYTES // 36))[:MAX_INPUT_BYTES]
    async with AsyncClient(target.address, timeout=600) as client:

        async def caller() -> None:
            while time.monotonic() < until:
                t = time.perf_counter()
                try:
                    await client.embed(text, model="minilm")
                except BertserveError as e:
                    assert e.code.name == "INVALID_ARGUMENT", e
                refused.append((time.perf_counter() - t) * 1000)

        await asyncio.gather(caller(), caller())


def _in_own_process(kind: str, target: Target, sentences: list[str], seconds: float) -> list[float]:
    """Large or maximal callers, run in a process of their own: their client's work (serializing
    megabytes) must not slow the small callers' client, only the server."""
    until = time.monotonic() + seconds
    out: list[Any] = []
    if kind == "large":
        asyncio.run(large_calls(target, sentences, until, out))
    else:
        asyncio.run(maximal_calls(target, until, out))
    return [float(x) for x in out]


async def scenario(
    target: Target, name: str, sentences: list[str], seconds: float, pool: ProcessPoolExecutor
) -> dict[str, list[float]]:
    loop = asyncio.get_running_loop()
    others = [k for k in ("large", "max") if k in name]
    started = time.monotonic()
    elsewhere = [loop.run_in_executor(pool, _in_own_process, k, target, sentences, seconds) for k in others]
    small: list[float] = []
    if "small" in name:
        await small_calls(target, sentences, time.monotonic() + seconds, small)
    done = dict(zip(others, await asyncio.gather(*elsewhere), strict=True))
    took = time.monotonic() - started
    large = done.get("large", [])
    return {"small": small, "large_rate": [sum(large) / took] if large else [], "maximal": done.get("max", [])}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-pass-ms", type=float, default=None, help="the model's max_pass_ms")
    parser.add_argument("--workers", type=int, default=None, help="the model's workers")
    parser.add_argument("--torch-threads", type=int, default=0, help="the server's torch_threads")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the scenarios, in alternating order")
    args = parser.parse_args(argv)
    sentences = workload(8000)
    names = ["small", "large", "small+large", "small+max"]
    results: dict[str, dict[str, list[float]]] = {n: {"small": [], "large_rate": [], "maximal": []} for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        # A queue that holds the four large callers' 4,000 sentences at once.
        model = (
            f"{{name: minilm, plugin: bert, source: '{minilm_dir()}', device: cpu, "
            "max_queue_requests: 8192, max_queue_tokens: 1048576"
            + ("" if args.max_pass_ms is None else f", max_pass_ms: {args.max_pass_ms}")
            + ("" if args.workers is None else f", workers: {args.workers}")
            + "}"
        )
        settings = Settings(torch_threads=args.torch_threads)
        with serve(Path(tmp) / "bertserve.yaml", [model], settings) as target, ProcessPoolExecutor(2) as pool:
            asyncio.run(scenario(target, "small", sentences, 2.0, pool))  # warm-up
            for order in ([names, names[::-1]] * args.rounds)[: args.rounds]:
                for name in order:
                    got = asyncio.run(scenario(target, name, sentences, args.seconds, pool))
                    for key, values in got.items():
                        results[name][key].extend(values)

    def p(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else float("nan")

    alone = results["small"]["small"]
    print(f"{'scenario':<14} {'small p50':>10} {'small p99':>10} {'calls':>7} {'large/s':>9}")
    for name in names:
        r = results[name]
        rate = float(np.mean(r["large_rate"])) if r["large_rate"] else float("nan")
        print(f"{name:<14} {p(r['small'], 50):>9.1f}ms {p(r['small'], 99):>9.1f}ms {len(r['small']):>7d} {rate:>9.1f}")
    large_ratio = float(np.mean(results["small+large"]["large_rate"]) / np.mean(results["large"]["large_rate"]))
    print(f"small p99 with large callers / alone: {p(results['small+large']['small'], 99) / p(alone, 99):.2f} (<= 3)")
    print(f"small p99 with maximal inputs: {p(results['small+max']['small'], 99):.1f} ms (< 250)")
    print(f"large callers' throughput with small callers / alone: {large_ratio:.3f} (>= 0.9)")
    print(f"maximal inputs refused in p50 {p(results['small+max']['maximal'], 50):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
