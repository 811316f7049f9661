"""Rerank throughput of bertserve against in-process transformers, measured in one run.

    python bench/rerank.py [--seconds 30] [--concurrency 4] [--max-pass-ms MS]

A small cross-encoder: all-MiniLM-L6-v2's encoder under a one-label sequence-classification head
(BertForSequenceClassification, num_labels 1, classifier initialised with seed 0), saved with its
tokenizer to a temporary directory. The workload: calls of one query (6-14 words) with 100
documents (20-80 words each), words drawn with a fixed seed. In pairs (query, document) per second:
  b   in-process transformers, each call's pairs scored in batches of 32 in request order (as
      sentence-transformers' CrossEncoder.predict does), torch.inference_mode, sigmoid of the logit
  b'  the same, each call's pairs sorted by length before batching (less padding: the ceiling)
  r   bertserve over gRPC on loopback: Rerank calls of 100 documents, --concurrency at once
The server runs in its own process, as in production, with as many torch threads as this process
has. b and b' run in alternating slices with r (the server idle while they run), so that drift in
the machine's speed hits both alike; ratios are r against each. Scores are checked too: the largest
difference between bertserve's and the in-process scores over the pairs of 2 calls.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from throughput import WORDS, Result, Settings, Target, interleaved, minilm_dir, serve

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DOCUMENTS_PER_CALL = 100
BATCH = 32

Call = tuple[str, list[str]]  # (query, documents)


def workload(calls: int, seed: int = 4321) -> list[Call]:
    """Queries of 6-14 words with 100 documents of 20-80 words each."""
    rng = random.Random(seed)

    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."

    return [(text(6, 14), [text(20, 80) for _ in range(DOCUMENTS_PER_CALL)]) for _ in range(calls)]


def build_cross_encoder(root: Path) -> Path:
    """MiniLM's encoder under a one-label classification head, its classifier seeded."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    model = BertForSequenceClassification.from_pretrained(minilm_dir(), num_labels=1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.randn(model.classifier.weight.shape, generator=generator) * 0.5)
        model.classifier.bias.zero_()
    path = root / "minilm-cross-encoder"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(path)
    return path


class InProcess:
    """The in-process baselines; each call runs one more slice of one of them."""

    def __init__(self, path: Path, calls: list[Call]) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        self._in_order = itertools.cycle(calls)
        self._sorted = itertools.cycle(calls)
        for call in calls[:2]:  # warm-up: the kernels of the shapes to come
            self.score(call)
            self.score(call, by_length=True)

    def score(self, call: Call, *, by_length: bool = False) -> np.ndarray:
        """The sigmoid of each (query, document) pair's logit, in request order."""
        query, documents = call
        order = list(range(len(documents)))
        if by_length:
            order.sort(key=lambda i: len(documents[i]))
        scores = np.empty(len(documents), dtype=np.float32)
        for k in range(0, len(order), BATCH):
            part = order[k : k + BATCH]
            inputs = self.tokenizer(
                [query] * len(part),
                [documents[i] for i in part],
                padding=True,
                truncation=True,
                return_tensors="pt",
            )
            with self._torch.inference_mode():
                scores[part] = self._torch.sigmoid(self.model(**inputs).logits[:, 0]).numpy()
        return scores

    def in_order(self, seconds: float) -> Result:
        return _timed("b  in-process, batches of 32", self._in_order, self.score, seconds)

    def sorted_by_length(self, seconds: float) -> Result:
        return _timed(
            "b' in-process, length-sorted 32s", self._sorted, lambda c: self.score(c, by_length=True), seconds
        )


def _timed(name: str, calls: itertools.cycle[Call], run: Callable[[Call], Any], seconds: float) -> Result:
    latencies, pairs = [], 0
    start = time.perf_counter()
    for call in calls:
        t = time.perf_counter()
        run(call)
        latencies.append((time.perf_counter() - t) * 1000)
        pairs += len(call[1])
        if time.perf_counter() - start > seconds:
            break
    return Result(name, pairs, 0, time.perf_counter() - start, latencies)


async def over_grpc(target: Target, calls: Sequence[Call], concurrency: int, seconds: float) -> Result:
    async with target.client(300) as client:
        latencies: list[float] = []
        pairs = tokens = 0
        queue = iter(calls)
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal pairs, tokens
            for query, documents in queue:
                if time.perf_counter() - start > seconds:
                    return
                t = time.perf_counter()
                result = await client.rerank(query, documents, model="cross-encoder")
                latencies.append((time.perf_counter() - t) * 1000)
                pairs += len(documents)
                tokens += result.usage.tokens

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return Result(f"r  bertserve, conc {concurrency}", pairs, tokens, time.perf_counter() - start, latencies)


async def served(
    target: Target, calls: list[Call], baseline: InProcess, seconds: float, concurrency: int
) -> tuple[list[Result], Result, float]:
    await over_grpc(target, calls[::-1], concurrency, 3.0)  # warm-up, unmeasured
    (in_order, by_length), rerank = await interleaved(
        [baseline.in_order, baseline.sorted_by_length],
        lambda s, k: over_grpc(target, calls[k * 50 :] + calls[: k * 50], concurrency, s),
        seconds,
    )
    worst = 0.0
    async with target.client(300) as client:
        for call in calls[:2]:
            result = await client.rerank(*call, model="cross-encoder")
            got = np.array([d.score for d in result.documents], dtype=np.float32)
            worst = max(worst, float(np.max(np.abs(got - baseline.score(call)))))
    return [in_order, by_length], rerank, worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="time of each scenario, in 4 slices")
    parser.add_argument("--concurrency", type=int, default=4, help="Rerank calls in flight at once")
    parser.add_argument("--calls", type=int, default=200, help="workload size, in calls of 100 documents")
    parser.add_argument("--max-pass-ms", type=float, default=None, help="the model's max_pass_ms (default: its own)")
    args = parser.parse_args(argv)
    began = time.perf_counter()

    import torch

    threads = torch.get_num_threads()
    calls = workload(args.calls)
    print(
        f"workload: {len(calls)} calls of 1 query + {DOCUMENTS_PER_CALL} documents (20-80 words), seed 4321; "
        f"torch {torch.__version__}, {os.cpu_count()} cores; torch intra-op threads {threads} here and in the server"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = build_cross_encoder(Path(tmp))
        baseline = InProcess(path, calls)
        pass_ms = "" if args.max_pass_ms is None else f", max_pass_ms: {args.max_pass_ms}"
        model = f"{{name: cross-encoder, plugin: bert, source: '{path}', device: cpu{pass_ms}}}"
        with serve(Path(tmp) / "bertserve.yaml", [model], Settings(torch_threads=threads)) as target:
            (in_order, by_length), rerank, worst = asyncio.run(
                served(target, calls, baseline, args.seconds, args.concurrency)
            )

    print(f"\n{'scenario':<34} {'pairs/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'pairs':>7}")
    for result in (in_order, by_length, rerank):
        p50, p99 = np.percentile(result.latencies_ms, [50, 99])
        print(f"{result.name:<34} {result.rate:>9.1f} {p50:>9.1f} {p99:>9.1f} {result.sentences:>7d}")
    print("\nratios (same run; each against the baseline slices interleaved with it; latency is per call of 100):")
    print(f"  r / b  (batches of 32, request order)  {rerank.rate / in_order.rate:6.3f}")
    print(f"  r / b' (length-sorted batches of 32)    {rerank.rate / by_length.rate:6.3f}")
    print(f"  largest |score difference| vs in-process: {worst:.2e}")
    print(f"\nbench took {time.perf_counter() - began:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
