"""A megabyte context answered over gRPC, against plain transformers on the same windows, in one run.

    python bench/long_context.py [--megabytes 1] [--rounds 2]

With all-MiniLM-L6-v2's encoder under a fresh QA head (a real-sized model), a seeded context of
--megabytes of text and one question:
  base    in-process transformers: the pipeline's tokenizer call (windows of 384 tokens
          overlapping by 128, the pipeline's defaults) and forward passes over the windows in
          batches of 32; no span search
  served  bertserve over gRPC on loopback: one Answer call, its windows sent through the batcher
          in parts; meanwhile a second client sends one-sentence Embed calls to the same model
          back to back, and their latency is set against the same calls with the model idle
The two run in alternating rounds, so that drift in the machine's speed hits both alike; the
ratio is served over base, from the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from throughput import WORDS, Settings, Target, build_qa_model, serve

QUESTION = "What is the river market model?"
WINDOW, STRIDE = 384, 128  # the pipeline's defaults, within MiniLM's 512 positions


def context_of(megabytes: float, seed: int = 7) -> str:
    rng = random.Random(seed)
    sentences = []
    size = 0
    while size < megabytes * 1_000_000:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30))).capitalize() + "."
        sentences.append(sentence)
        size += len(sentence) + 1
    return " ".join(sentences)


def in_process(qa_dir: Path, context: str) -> tuple[float, int]:
    """Seconds to tokenize the windows and run them through the model, as plain transformers would."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qa_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(qa_dir).eval()
    started = time.perf_counter()
    encoded = tokenizer(
        QUESTION,
        context,
        truncation="only_second",
        max_length=WINDOW,
        stride=STRIDE,
        return_overflowing_tokens=True,
        return_token_type_ids=True,
    )
    windows = len(encoded["input_ids"])
    with torch.inference_mode():
        for k in range(0, windows, 32):
            part = tokenizer.pad(
                {key: encoded[key][k : k + 32] for key in ("input_ids", "attention_mask", "token_type_ids")},
                return_tensors="pt",
            )
            model(**part)
    return time.perf_counter() - started, windows


async def served(target: Target, context: str) -> tuple[float, int, list[float]]:
    """Seconds of one Answer call, its window count, and the latencies (ms) of Embeds sent meanwhile."""
    from bertserve_client import AsyncClient

    async with AsyncClient(target.address, timeout=3600) as client, AsyncClient(target.address) as other:
        started = time.perf_counter()
        answering = asyncio.create_task(
            client.answer((QUESTION, context), model="minilm-qa", max_seq_len=WINDOW, doc_stride=STRIDE)
        )
        latencies = []
        while not answering.done():
            t = time.perf_counter()
            await other.embed("The river market model of the city.", model="minilm-qa")
            latencies.append((time.perf_counter() - t) * 1000)
        result = await answering
        return time.perf_counter() - started, result.usage.tokens, latencies


async def idle_latencies(target: Target, calls: int = 200) -> list[float]:
    from bertserve_client import AsyncClient

    async with AsyncClient(target.address) as client:
        latencies = []
        for _ in range(calls):
            t = time.perf_counter()
            await client.embed("The river market model of the city.", model="minilm-qa")
            latencies.append((time.perf_counter() - t) * 1000)
        return latencies


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    context = context_of(args.megabytes)
    print(f"context: {len(context.encode()):,} bytes")
    with tempfile.TemporaryDirectory() as tmp:
        qa_dir = build_qa_model(Path(tmp))
        model = f"{{name: minilm-qa, plugin: bert, source: '{qa_dir}', device: cpu}}"
        base: list[float] = []
        answered: list[float] = []
        during: list[float] = []
        with serve(Path(tmp) / "bertserve.yaml", [model], Settings()) as target:
            idle = asyncio.run(idle_latencies(target))
            for _ in range(args.rounds):
                seconds, windows = in_process(qa_dir, context)
                base.append(seconds)
                seconds, tokens, latencies = asyncio.run(served(target, context))
                answered.append(seconds)
                during.extend(latencies)
                print(f"  base {base[-1]:.1f}s ({windows} windows)   served {seconds:.1f}s ({tokens:,} tokens)")
    ratio = float(np.median(answered) / np.median(base))
    idle_p50, idle_p99 = np.percentile(idle, [50, 99])
    busy_p50, busy_p99 = np.percentile(during, [50, 99])
    print(f"served / base: {ratio:.3f}   (served median {np.median(answered):.1f}s, base {np.median(base):.1f}s)")
    print(f"one-sentence Embed, model idle:      p50 {idle_p50:.1f} ms  p99 {idle_p99:.1f} ms")
    print(f"one-sentence Embed, during Answer:   p50 {busy_p50:.1f} ms  p99 {busy_p99:.1f} ms  ({len(during)} calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
