"""What the least Python server that does a one-sentence Embed's work costs per call, in one run.

    python bench/floor.py [--seconds 12] [--slices 3] [--concurrency 64] [--rounds 1] [--workers 2]
    python bench/floor.py --minilm [--seconds 24] [--slices 4]

bench/frontend.py sets bertserve's CPU per call against a bare grpc.aio server that answers a fixed
reply. This bench adds two servers between them, written with no more than the work itself, to
show how much of bertserve's cost is the work a call must do in Python and how much is bertserve:

  bare       grpc.aio answering Embed with a fixed reply of the same size (frontend.py's floor)
  encode     the same, after the Rust tokenizer's encode of the call's text on the event loop (the
             token ids alone, nothing made of them)
  tokenize   the same, after tokenizing the call's text on the event loop with the bert plugin's own
             tokenize (the Rust tokenizer's encode), its token count in the reply
  minimal    the same, and the calls' encodings run through the near-free model: every call waiting
             goes into the next packed pass (the bert plugin's own embed) on one of two
             single-threaded worker threads, and each call's reply holds its row of the pooled
             output. It has no access log, metrics, request ids, auth, limits, fairness,
             deadlines, cancellation, drain or error handling, all of which a server in
             production needs.
  bertserve  one process, default settings (with the access log and metrics on)

Each runs in a process of its own; a driver in another process runs --concurrency callers of
one-sentence Embed for --seconds against each, in --slices alternating slices, and the server's
CPU time (user + system, from /proc) is divided by the calls answered. Printed: calls/s, CPU per
call, and each server's ratio to the bare one. --workers sets the minimal server's worker threads.

--minilm serves the real all-MiniLM-L6-v2 from the minimal server and from bertserve instead, and
sets the sentences/s of 64 callers of single-sentence Embed (bench/throughput.py's workload and
client) against in-process transformers' length-sorted batches of 32 (throughput.py's ceiling "b"),
all three in alternating slices: whether a server as lean as can be reaches that ceiling at all.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import frontend
import throughput

_KINDS = ("encode", "tokenize", "minimal")


def _serve(kind: str, model: str, port_file: str, worker_threads: int) -> None:
    """A server of the given kind (see the module's docstring), its port written to port_file."""
    import numpy as np
    import torch
    from tokenizers import Tokenizer

    from bertserve.api import Encoding, ModelSpec, Pooling
    from bertserve.plugins.bert import BertPlugin
    from bertserve_client.v1 import common_pb2, encoder_service_pb2, encoder_service_pb2_grpc

    plugin = BertPlugin(ModelSpec(name="near-free", plugin="bert", source=model, device="cpu"))
    info = plugin.load()
    workers = ThreadPoolExecutor(worker_threads, initializer=torch.set_num_threads, initargs=(1,))
    waiting: list[tuple[Encoding, asyncio.Future[Any]]] = []
    idle = [worker_threads]

    def run(batch: list[tuple[Encoding, asyncio.Future[Any]]]) -> Any:
        return plugin.embed([e for e, _ in batch], pooling=Pooling.MEAN, with_token_states=False).pooled

    def start_passes(loop: asyncio.AbstractEventLoop) -> None:
        while waiting and idle[0]:
            batch = waiting[:]
            waiting.clear()
            idle[0] -= 1
            done = loop.run_in_executor(workers, run, batch)
            done.add_done_callback(functools.partial(finish, loop, batch))

    def finish(loop: asyncio.AbstractEventLoop, batch: list[Any], done: asyncio.Future[Any]) -> None:
        idle[0] += 1
        for (_, future), row in zip(batch, done.result(), strict=True):
            future.set_result(row)
        start_passes(loop)

    ones = np.ones((1, info.hidden_size), dtype="<f4")
    rust = Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
    rust.no_padding()  # MiniLM's file pads every text to 128 tokens
    rust.no_truncation()

    def reply(vectors: Any, counts: list[int]) -> Any:
        return encoder_service_pb2.EmbedResponse(
            model="near-free",
            embeddings=common_pb2.Tensor(data=vectors.tobytes(), shape=vectors.shape),
            token_counts=counts,
            usage=common_pb2.Usage(tokens=sum(counts)),
        )

    class Servicer(encoder_service_pb2_grpc.EncoderServiceServicer):
        async def Embed(self, request: Any, context: Any) -> Any:
            if kind == "encode":
                ids = [rust.encode(text).ids for text in request.inputs]
                counts = [len(each) for each in ids]
                return reply(ones, counts)
            encodings = plugin.tokenize(list(request.inputs), max_length=info.max_input_tokens)
            vectors = ones
            if kind == "minimal":
                loop = asyncio.get_running_loop()
                futures = [loop.create_future() for _ in encodings]
                waiting.extend(zip(encodings, futures, strict=True))
                start_passes(loop)
                vectors = np.stack([await f for f in futures])
            return reply(vectors, [len(e) for e in encodings])

    frontend.serve_encoder_service(Servicer(), port_file)


def _start(argv: list[str], port_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen([sys.executable, *argv])
    deadline = time.monotonic() + 300
    while not port_file.exists() or not port_file.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{argv} did not start")
        time.sleep(0.1)
    return process, int(port_file.read_text())


def _start_minimal(kind: str, model: Path, workers: int, port_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    return _start([__file__, "--serve", kind, str(model), str(port_file), str(workers)], port_file)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        _serve(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--slices", type=int)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="the minimal server's worker threads")
    parser.add_argument("--minilm", action="store_true", help="serve all-MiniLM-L6-v2, against in-process batches")
    parser.add_argument("--sentences", type=int, default=4000, help="--minilm's workload size")
    args = parser.parse_args()
    if args.minilm:
        args.seconds, args.slices = args.seconds or 24.0, args.slices or 4
        return asyncio.run(_minilm(args))
    args.seconds, args.slices = args.seconds or 12.0, args.slices or 3

    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        model = frontend.near_free_model(tmp / "model")
        hidden = 32
        processes: dict[str, tuple[Any, int]] = {}
        processes["bare"] = _start(
            [frontend.__file__, "--bare", str(tmp / "bare.port"), str(hidden)], tmp / "bare.port"
        )
        for kind in _KINDS:
            processes[kind] = _start_minimal(kind, model, args.workers, tmp / f"{kind}.port")
        options = argparse.Namespace(server_options="", model_options="")
        bertserve = frontend._bertserve(model, tmp, 1, False, options)
        processes["bertserve"] = (bertserve.process, bertserve.port)
        try:
            for process, port in processes.values():  # warm-up: connections, first passes
                frontend._slice(process.pid, f"127.0.0.1:{port}", 1.0, args.concurrency)
            for _ in range(args.rounds):
                slices: dict[str, list[dict[str, Any]]] = {name: [] for name in processes}
                for k in range(args.slices):
                    order = list(processes.items())
                    for name, (process, port) in order if k % 2 == 0 else order[::-1]:
                        each = frontend._slice(
                            process.pid, f"127.0.0.1:{port}", args.seconds / args.slices, args.concurrency
                        )
                        slices[name].append(each)
                _report(slices, args)
        finally:
            bertserve.stop()
            for name, (process, _) in processes.items():
                if name != "bertserve":
                    process.terminate()
                    process.wait(30)
    return 0


async def _minilm(args: argparse.Namespace) -> int:
    """The minimal server and bertserve on all-MiniLM-L6-v2, against the in-process ceiling."""
    sentences = throughput.workload(args.sentences)
    baseline = throughput.InProcess(sentences)
    singles = [[s] for s in sentences]
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        minimal, port = _start_minimal("minimal", throughput.minilm_dir(), args.workers, tmp / "minimal.port")
        config = tmp / "minilm.yaml"
        config.write_text(
            "server: {address: 127.0.0.1, port: 0, processes: 1, access_log: true, metrics_port: 0}\n"
            f"models:\n  - {{name: minilm, plugin: bert, source: '{throughput.minilm_dir()}', device: cpu}}\n"
        )
        bertserve = throughput.Server(config, expect_ready=1)
        targets = {
            "minimal": throughput.Target(f"127.0.0.1:{port}"),
            "bertserve": throughput.Target(f"127.0.0.1:{bertserve.port}"),
        }
        try:
            for target in targets.values():
                await throughput.warm_up(target, "minilm", singles)
            ceiling: list[throughput.Result] = []
            served: dict[str, list[throughput.Result]] = {name: [] for name in targets}
            share = args.seconds / args.slices
            for k in range(args.slices):
                ceiling.append(baseline.batches_of_32(share))
                for name, target in targets.items() if k % 2 == 0 else list(targets.items())[::-1]:
                    calls = singles[k * 500 :]
                    served[name].append(
                        await throughput.over_grpc(target, name, "minilm", calls, args.concurrency, share)
                    )
        finally:
            bertserve.stop()
            minimal.terminate()
            minimal.wait(30)
    b = throughput._merged("b  in-process, sorted batches of 32", ceiling)
    each_run = f"{args.seconds:g} s each in {args.slices} alternating slices"
    print(f"\n{args.concurrency} callers of single-sentence Embed on all-MiniLM-L6-v2, {each_run}")
    print(f"{'':36} {'sentences/s':>12} {'ratio to b':>11}")
    print(f"{b.name:36} {b.rate:12.1f} {1.0:11.3f}")
    for name, parts in served.items():
        each = throughput._merged(name, parts)
        print(f"{name:36} {each.rate:12.1f} {each.rate / b.rate:11.3f}")
    return 0


def _report(slices: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    each_run = f"{args.seconds:g} s each in {args.slices} alternating slices"
    print(f"\n{args.concurrency} callers of one-sentence Embed, {each_run}")
    print(f"{'':12} {'calls/s':>8} {'CPU us/call':>12} {'ratio to bare':>14}")
    bare = frontend.per_call(slices["bare"])["cpu_us_per_call"]
    for name, parts in slices.items():
        each = frontend.per_call(parts)
        cpu = each["cpu_us_per_call"]
        print(f"{name:12} {each['calls_per_s']:8.0f} {cpu:12.0f} {cpu / bare:14.2f}")


if __name__ == "__main__":
    sys.exit(main())
