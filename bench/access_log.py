"""What the access log line costs, in one run: small concurrent calls with it and without it.

    python bench/access_log.py [--calls 3000] [--rounds 2]

Each round starts bertserve on all-MiniLM-L6-v2 twice, with `access_log: true` and `false` (the
request id and the metrics stay in both), and sends --calls one-text Tokenize calls at once: the
cheapest call, where the per-call cost shows most. Prints calls/s and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from throughput import Server, minilm_dir


async def _rate(address: str, calls: int) -> float:
    from bertserve_client import AsyncClient

    async with AsyncClient(address, timeout=120) as client:
        await client.tokenize("warm up", model="minilm")
        started = time.perf_counter()
        await asyncio.gather(*(client.tokenize(f"text {i}", model="minilm") for i in range(calls)))
        return calls / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    rates: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for lines in (True, False):
                config = Path(tmp) / "bertserve.yaml"
                config.write_text(
                    f"server: {{address: 127.0.0.1, port: 0, log_level: info, access_log: {str(lines).lower()}}}\n"
                    f"models:\n  - {{name: minilm, plugin: bert, source: '{minilm_dir()}', device: cpu}}\n"
                )
                server = Server(config, expect_ready=1)
                try:
                    rates[lines].append(asyncio.run(_rate(f"127.0.0.1:{server.port}", args.calls)))
                finally:
                    server.stop()
    for lines in (True, False):
        shown = ", ".join(f"{r:.0f}" for r in rates[lines])
        print(f"access_log: {str(lines).lower():<5}  {shown} Tokenize calls/s")
    ratio = sum(rates[True]) / sum(rates[False])
    print(f"with the line / without: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
