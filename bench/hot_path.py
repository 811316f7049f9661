"""The per-pass pieces of a call's hot path, timed in-process on all-MiniLM-L6-v2's tokenizer.

    python bench/hot_path.py [--texts 32] [--repeat 300]

Printed, in microseconds for --texts one-sentence texts: transformers' own tokenizer call (the
Python wrapper over the Rust tokenizer); the same with the server's Encodings made from its output
(how bertserve tokenized before it called the Rust tokenizer itself); bertserve's tokenization
(one encode_batch of the Rust tokenizer, set as transformers sets it, and the server's Encodings
made from it; checked equal to the wrapper's output first); the Rust encode_batch alone; and
packing the encodings into rows. Each is timed in alternating slices, so that drift in the
machine's speed hits all alike.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from throughput import minilm_dir


def _timed(pieces: dict[str, Callable[[], object]], repeat: int, slices: int = 6) -> dict[str, float]:
    """Microseconds per run of each piece, the runs interleaved in slices."""
    spent = dict.fromkeys(pieces, 0.0)
    for _ in range(slices):
        for name, piece in pieces.items():
            piece()
            started = time.perf_counter()
            for _ in range(repeat // slices):
                piece()
            spent[name] += time.perf_counter() - started
    return {name: seconds / (repeat // slices * slices) * 1e6 for name, seconds in spent.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from bertserve.api import ModelSpec
    from bertserve.plugins.bert import BertPlugin
    from bertserve.runtime.packed_inputs import pack

    plugin = BertPlugin(ModelSpec(name="minilm", plugin="bert", source=str(minilm_dir()), device="cpu"))
    plugin.fetch()
    plugin.load()
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    texts = [f"A man is playing a guitar in the park, take {i}." for i in range(args.texts)]
    options = {"return_token_type_ids": True, "return_special_tokens_mask": True, "return_offsets_mapping": True}
    reference = tokenizer(texts, **options)
    ours = plugin.tokenize(texts)
    assert [e.ids for e in ours] == reference["input_ids"]
    assert [list(e.offsets) for e in ours] == [[tuple(o) for o in each] for each in reference["offset_mapping"]]
    backend = tokenizer.backend_tokenizer
    timings = _timed(
        {
            "transformers' tokenizer call": lambda: tokenizer(texts, **options),
            "... and the server's Encodings from it": lambda: [
                plugin._encoding_of(e) for e in tokenizer(texts, **options).encodings
            ],
            "bertserve tokenize (encode_batch)": lambda: plugin.tokenize(texts),
            "Rust encode_batch alone": lambda: backend.encode_batch(texts),
            "pack into rows": lambda: pack(
                ours,
                row_tokens=128,
                pad_id=0,
                position_offset=0,
                with_token_types=True,
                dtype=torch.float32,
                device=torch.device("cpu"),
            ),
        },
        args.repeat,
    )
    print(f"{args.texts} one-sentence texts, microseconds per batch:")
    for name, us in timings.items():
        print(f"  {name:36} {us:8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
