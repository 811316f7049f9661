"""The model option ``compile`` against eager, in-process, through bertserve's own plugin.

    python bench/compile.py [--device cpu] [--dtype bfloat16]            # all-MiniLM-L6-v2
    python bench/compile.py --device cuda --random-base TOKENIZER         # BERT-base shape

Both are loaded (the load time of each is printed), then they take turns over the seeded
workload of bench/throughput.py, as length-sorted batches of 32 and as single sentences, so that
drift in the machine's speed hits both alike. The first round shows what shapes not seen at load
cost; the medians of the later rounds give the steady state.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gpu import random_base
from throughput import minilm_dir, workload


def load(source: str, device: str, dtype: str, compile_: bool) -> Any:
    from bertserve.api import ModelSpec
    from bertserve.plugins.bert import BertPlugin

    started = time.monotonic()
    spec = ModelSpec(name="m", plugin="bert", source=source, device=device, dtype=dtype, options={"compile": compile_})
    plugin = BertPlugin(spec)
    plugin.load()
    print(f"{'compiled' if plugin.compiled else 'eager'}: loaded in {time.monotonic() - started:.1f}s")
    return plugin


def one_round(plugin: Any, sentences: list[str]) -> tuple[float, float]:
    """Sentences per second in length-sorted batches of 32, and ms for one sentence."""
    from bertserve.api import Pooling

    by_length = sorted(sentences, key=len)
    batches = [plugin.tokenize(by_length[k : k + 32], max_length=256) for k in range(0, len(by_length), 32)]
    singles = [plugin.tokenize([s], max_length=256) for s in sentences[:300]]
    t = time.perf_counter()
    for batch in batches:
        plugin.embed(batch, pooling=Pooling.MEAN, with_token_states=False)
    rate = len(sentences) / (time.perf_counter() - t)
    t = time.perf_counter()
    for single in singles:
        plugin.embed(single, pooling=Pooling.MEAN, with_token_states=False)
    return rate, (time.perf_counter() - t) / len(singles) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--random-base", metavar="TOKENIZER", help="BERT-base shape, random weights")
    parser.add_argument("--sentences", type=int, default=2000, help="workload size")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each, alternating")
    args = parser.parse_args(argv)

    import torch

    sentences = workload(args.sentences)
    print(f"torch {torch.__version__}, {args.device}, {args.dtype}, intra-op threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        source = str(random_base(args.random_base, Path(tmp)) if args.random_base else minilm_dir())
        plugins = {"eager": load(source, args.device, args.dtype, False)}
        plugins["compiled"] = load(source, args.device, args.dtype, True)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in plugins}
        for round_ in range(1, args.rounds + 1):  # alternating, so that drift hits both alike
            for name, plugin in plugins.items():
                results[name].append(one_round(plugin, sentences))
                rate, single_ms = results[name][-1]
                print(f"  round {round_} {name:<8}: batches of 32 {rate:7.0f} sent/s; one sentence {single_ms:6.2f} ms")
    medians = {name: np.median(np.array(r[1:] or r), axis=0) for name, r in results.items()}
    (eager_rate, eager_ms), (compiled_rate, compiled_ms) = medians["eager"], medians["compiled"]
    print(
        f"median after round 1: compiled / eager, batches of 32 {compiled_rate / eager_rate:.3f}; "
        f"one sentence {compiled_ms:.2f} ms against {eager_ms:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
