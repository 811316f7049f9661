"""bertserve on a CUDA device against in-process transformers on the same device, in one run.

    python bench/gpu.py --model bert-base-uncased [--dtype bfloat16] [--seconds 8]
    python bench/gpu.py --random-base TOKENIZER   # BERT-base shape, random weights

Where no checkpoint can be fetched, --random-base builds a BERT-base-sized model (12 layers,
hidden 768) with random weights around the given tokenizer: weights do not change the speed.
With the same seeded workload as bench/throughput.py:
  a  in-process transformers on the device, one sentence per forward pass
  b  in-process transformers on the device, length-sorted batches of 32
  c  bertserve over gRPC on loopback, single-sentence calls, concurrency 1, 8, 64 and 256
  d  bertserve, 32-sentence calls, concurrency 4
The server runs in its own process; ratios are against a and b measured in this run. Both sides
keep attention off cuDNN, as bertserve does (see bertserve.runtime.placement): with it, every new input
shape costs a plan build of tens of milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from throughput import Result, Settings, Target, _timed, over_grpc, serve, sorted_batches, warm_up, workload


def random_base(tokenizer_source: str, root: Path) -> Path:
    """A BERT-base-sized model with random weights, saved with the given tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    tokenizer.model_max_length = 512  # BERT-base's positions, whatever the tokenizer was saved with
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer))).save_pretrained(root, safe_serialization=True)
    tokenizer.save_pretrained(root)
    return root


class OnDevice:
    """Plain transformers on the device: the baselines a and b."""

    def __init__(self, source: str, dtype: str, sentences: list[str]) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        torch.backends.cuda.enable_cudnn_sdp(False)  # the same attention kernels as the server's
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModel.from_pretrained(source, dtype=getattr(torch, dtype)).to("cuda").eval()
        lengths = [len(ids) for ids in self.tokenizer(sentences)["input_ids"]]
        batches = sorted_batches(sentences, lengths)
        self._singles = itertools.cycle([[s] for s in sentences])
        self._batches = itertools.cycle(batches)
        for batch in batches[:8]:
            self.embed(batch)

    def embed(self, batch: list[str]) -> int:
        inputs = self.tokenizer(batch, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with self._torch.inference_mode():
            hidden = self.model(**inputs.to("cuda")).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            ((hidden * mask).sum(1) / mask.sum(1)).float().cpu()  # .cpu() waits for the device
        return int(inputs["attention_mask"].sum())

    def one_per_pass(self, seconds: float) -> Result:
        return _timed("a  in-process, 1 per pass", self._singles, self.embed, seconds)

    def batches_of_32(self, seconds: float) -> Result:
        return _timed("b  in-process, sorted batches of 32", self._batches, self.embed, seconds)


async def served(target: Target, sentences: list[str], seconds: float) -> list[Result]:
    singles = [[s] for s in sentences]
    await warm_up(target, "model", singles)
    results = [await over_grpc(target, f"c  conc {c}", "model", singles, c, seconds) for c in (1, 8, 64, 256)]
    thirty_twos = [sentences[k : k + 32] for k in range(0, len(sentences), 32)]
    results.append(await over_grpc(target, "d  32/call, conc 4", "model", thirty_twos, 4, seconds))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint: hub id or local directory")
    source.add_argument("--random-base", metavar="TOKENIZER", help="BERT-base shape, random weights")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--seconds", type=float, default=8.0, help="time limit of each scenario")
    parser.add_argument("--sentences", type=int, default=8000, help="workload size")
    parser.add_argument("--processes", type=int, default=1, help="server processes sharing the GPU")
    parser.add_argument(
        "--engine",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the processes are front ends of one engine that holds the model once (server.engine)",
    )
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 1
    sentences = workload(args.sentences)
    print(f"workload: {len(sentences)} sentences; torch {torch.__version__} on {torch.cuda.get_device_name()}")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(random_base(args.random_base, Path(tmp) / "random-base"))
        kind = "front end(s) of one engine" if args.engine else "process(es)"
        print(f"model: {args.model or 'BERT-base shape, random weights'}, {args.dtype}; {args.processes} {kind}")
        baseline = OnDevice(model, args.dtype, sentences)
        a, b = baseline.one_per_pass(args.seconds), baseline.batches_of_32(args.seconds)
        del baseline
        torch.cuda.empty_cache()
        spec = f"{{name: model, plugin: bert, source: '{model}', device: cuda, dtype: {args.dtype}}}"
        channels = 1 if args.processes == 1 else 8 * args.processes
        with serve(
            Path(tmp) / "gpu.yaml", [spec], Settings(args.processes, channels=channels, engine=args.engine)
        ) as target:
            results = asyncio.run(served(target, sentences, args.seconds))

    print(f"\n{'scenario':<34} {'sent/s':>9} {'tokens/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'sent':>7}")
    for result in (a, b, *results):
        print(result.row())
    print("\nratios (same run):")
    for result in results:
        print(f"  {result.name:<22} / a {result.rate / a.rate:7.3f}   / b {result.rate / b.rate:6.3f}")
    c1_p50, a_p50 = (float(np.percentile(r.latencies_ms, 50)) for r in (results[0], a))
    print(f"  c1 p50 - a p50            {c1_p50 - a_p50:+6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
