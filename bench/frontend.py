"""What the server itself costs per call, against the floor of Python gRPC, in one run.

    python bench/frontend.py [--seconds 12] [--concurrency 64] [--processes 1] [--front-ends 1 2] [--rounds 1]
                             [--slices 3] [--server-options "torch_threads: 1"] [--model-options "workers: 1"]
                             [--layers] [--threads] [--with "access_log: false"]

A near-free model (one layer, hidden size 32, all-MiniLM-L6-v2's real tokenizer) makes the
forward pass cost almost nothing, so what bertserve spends on a single-sentence Embed is its own
cost: gRPC, the access log, metrics, tokenization, batching, packing, the hops between threads.
The same run starts a bare grpc.aio server in Python that answers Embed with a fixed reply of the
same size, as the floor. A driver in a separate process runs --concurrency callers of one-sentence
Embed calls for --seconds against each, over raw stubs (the same client cost for both), in
--slices alternating slices of the two, so that the machine's drift (a third within minutes on a
shared machine) hits both alike. Printed: calls/s and the server's CPU time per call (user +
system of the server's processes, from /proc), bertserve's ratio to the floor, and the resident
memory of all the server's processes.

--processes runs whole servers (one process, or several side by side with engine: false);
--front-ends runs that many front ends of one engine process.

--layers also serves the same model with Embed's flow cut short, to show what each layer of a call
costs: "edge" answers a fixed result once the call has passed the interceptors, the access log,
the metrics, the codec and the router; "tokenize" also tokenizes the input; "full" is the server
as it is. (One process: the cut flow is set in the served process before it starts.)

--with "SETTINGS" (repeatable) also measures one process with those server settings, against the
bare server like every row: --with "access_log: false" shows what the access log costs a call.

--threads also prints, under each row, the CPU microseconds per call of each thread of the server's
processes that spent 5 or more: the event loop, the device workers, the engine's loop and zmq's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from throughput import Server, minilm_dir

_SENTENCE = "A man is playing a guitar in the park."


def near_free_model(into: Path) -> Path:
    """One layer, hidden size 32, random weights, and all-MiniLM-L6-v2's tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(into)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm_dir() / name).exists():
            shutil.copy(minilm_dir() / name, into / name)
    return into


def _bare_server(port_file: str, hidden: int) -> None:
    """A grpc.aio server whose Embed answers a fixed reply of a one-sentence Embed's size."""
    import numpy as np

    from bertserve_client.v1 import common_pb2, encoder_service_pb2, encoder_service_pb2_grpc

    vector = np.ones((1, hidden), dtype="<f4")
    reply = encoder_service_pb2.EmbedResponse(
        model="near-free",
        embeddings=common_pb2.Tensor(data=vector.tobytes(), shape=vector.shape),
        token_counts=[11],
        usage=common_pb2.Usage(tokens=11),
    )

    class Bare(encoder_service_pb2_grpc.EncoderServiceServicer):
        async def Embed(self, request: Any, context: Any) -> Any:
            return reply

    serve_encoder_service(Bare(), port_file)


def serve_encoder_service(servicer: Any, port_file: str) -> None:
    """Serve an EncoderService servicer with grpc.aio as generated code registers it, on a free
    loopback port written to port_file, until the process is stopped."""
    import grpc

    from bertserve_client.v1 import encoder_service_pb2_grpc

    async def serve() -> None:
        server = grpc.aio.server()
        encoder_service_pb2_grpc.add_EncoderServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        Path(port_file).write_text(str(port))  # noqa: ASYNC240 (once, before serving)
        await server.wait_for_termination()

    asyncio.run(serve())


def _drive(target: str, seconds: float, concurrency: int) -> dict[str, float]:
    """Run one-sentence Embed callers against target; calls answered and the seconds taken."""
    import grpc

    from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc

    async def run() -> dict[str, float]:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
            request = encoder_service_pb2.EmbedRequest(model="near-free", inputs=[_SENTENCE])
            for _ in range(20):
                await stub.Embed(request, timeout=30)
            done = 0
            started = time.perf_counter()

            async def caller() -> None:
                nonlocal done
                while time.perf_counter() - started < seconds:
                    await stub.Embed(request, timeout=30)
                    done += 1

            await asyncio.gather(*(caller() for _ in range(concurrency)))
            return {"calls": done, "seconds": time.perf_counter() - started}

    return asyncio.run(run())


def _tree(pid: int) -> list[int]:
    """pid and its living descendants."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found.append(current)
        pending += [int(c) for c in children]
    return found


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of pid and its living descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for each in _tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _thread_cpu(pid: int) -> dict[str, float]:
    """User + system CPU seconds of each thread of pid and its living descendants, by
    "pid/tid name" (Python threads all read "python": the kernel's name, not threading's)."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for each in _tree(pid):
        try:
            tasks = os.listdir(f"/proc/{each}/task")
        except (FileNotFoundError, ProcessLookupError):
            continue
        for tid in tasks:
            try:
                stat = Path(f"/proc/{each}/task/{tid}/stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            found[f"{each}/{tid} {name}"] = (int(fields[11]) + int(fields[12])) / tick
    return found


def _rss_mib(pid: int) -> float:
    """Resident memory of pid and its living descendants, in MiB."""
    total = 0
    for each in _tree(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total / 1024


def _slice(pid: int, target: str, seconds: float, concurrency: int, engine_pid: int = 0) -> dict[str, Any]:
    """One run of the driver against target: the calls, seconds and CPU seconds it took."""
    before, engine_before = _cpu_seconds(pid), _cpu_seconds(engine_pid) if engine_pid else 0.0
    threads_before = _thread_cpu(pid)
    drive = [sys.executable, __file__, "--drive", target, str(seconds), str(concurrency)]
    out = subprocess.run(drive, capture_output=True, text=True, check=True, timeout=seconds + 120)
    after, engine_after = _cpu_seconds(pid), _cpu_seconds(engine_pid) if engine_pid else 0.0
    threads_after = _thread_cpu(pid)
    result = json.loads(out.stdout)
    # The warm-up calls are few; their CPU falls in the total and is spread over the measured calls.
    return {
        "calls": result["calls"],
        "seconds": result["seconds"],
        "cpu_s": after - before,
        "engine_cpu_s": engine_after - engine_before,
        "threads_cpu_s": {thread: cpu - threads_before.get(thread, 0.0) for thread, cpu in threads_after.items()},
        "rss_mib": _rss_mib(pid),
    }


def per_call(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """The slices of one server summed: calls/s, CPU microseconds per call, the latest resident memory."""
    calls = max(1, sum(part["calls"] for part in slices))
    threads: dict[str, float] = {}
    for part in slices:
        for thread, cpu in part["threads_cpu_s"].items():
            threads[thread] = threads.get(thread, 0.0) + cpu
    return {
        "calls_per_s": sum(part["calls"] for part in slices) / sum(part["seconds"] for part in slices),
        "cpu_us_per_call": sum(part["cpu_s"] for part in slices) / calls * 1e6,
        "engine_us_per_call": sum(part["engine_cpu_s"] for part in slices) / calls * 1e6,
        "rss_mib": slices[-1]["rss_mib"],
        "threads_us_per_call": {thread: cpu / calls * 1e6 for thread, cpu in threads.items()},
    }


def _engine_pid(server: Server) -> int:
    """The engine process's pid, from its start-up line; 0 for whole servers."""
    found = [re.search(r"engine serving on .* \(pid (\d+)\)", line) for line in server.log]
    return next((int(m.group(1)) for m in reversed(found) if m), 0)


def _bertserve(
    model: Path,
    tmp: Path,
    processes: int,
    engine: bool,
    options: argparse.Namespace,
    layer: str = "full",
    setting: str = "",
) -> Server:
    """setting: server settings of this set-up alone, over --server-options (YAML flow mapping items)."""
    config = tmp / f"frontend-{processes}-{engine}-{layer}-{abs(hash(setting))}.yaml"
    server = (
        f"address: 127.0.0.1, port: 0, processes: {processes}, engine: {str(engine).lower()}, access_log: true, "
        "metrics_port: 0"
    )
    entry = f"name: near-free, plugin: bert, source: '{model}'"
    config.write_text(
        f"server: {{{', '.join(filter(None, [server, options.server_options, setting]))}}}\n"
        f"models:\n  - {{{', '.join(filter(None, [entry, options.model_options]))}}}\n"
    )
    ready = processes + 1 if engine else processes  # the engine's model and each front end's tokenizer
    if layer == "full":
        return Server(config, expect_ready=ready)
    return Server(config, expect_ready=ready, command=[sys.executable, __file__, "--serve-layer", layer])


def _serve_layer(layer: str, argv: list[str]) -> int:
    """bertserve's command, with Embed's flow cut short after the given layer (see --layers)."""
    import numpy as np

    from bertserve.app.cli import main
    from bertserve.domain import EmbedQuery, EmbedResult
    from bertserve.serving import embedding
    from bertserve.serving.flow import Work

    async def cut_short(work: Work, query: EmbedQuery) -> EmbedResult:
        counts = [11] * len(query.inputs)
        if layer == "tokenize":
            counts = [len(e) for e in await work.tokenize(query.inputs, truncate=query.truncate)]
        pooled = np.ones((len(query.inputs), work.info.hidden_size), dtype=np.float32)
        return EmbedResult(
            model=work.name,
            pooled=pooled,
            token_states=None,
            token_counts=counts,
            truncated_indices=[],
            usage=work.usage(sum(counts)),
        )

    object.__setattr__(embedding.EMBED, "body", cut_short)  # the flow table holds this Flow
    return main(argv)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--drive":
        print(json.dumps(_drive(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        _bare_server(sys.argv[2], int(sys.argv[3]))
        return 0
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-layer":
        return _serve_layer(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, nargs="*", default=[1], help="whole server processes")
    parser.add_argument("--front-ends", type=int, nargs="*", default=[1, 2], help="front ends of one engine")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--slices", type=int, default=3, help="each row's seconds, in this many alternating slices of each server"
    )
    parser.add_argument("--server-options", default="", help="more server settings, as YAML flow mapping items")
    parser.add_argument("--model-options", default="", help="more settings of the model's entry, likewise")
    parser.add_argument("--layers", action="store_true", help="also measure a call cut short after each layer")
    parser.add_argument("--threads", action="store_true", help="also print the CPU per call of each busy thread")
    parser.add_argument(
        "--with",
        dest="settings",
        action="append",
        default=[],
        metavar="SETTINGS",
        help="also measure one process with these server settings (YAML flow mapping items); repeatable",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        model = near_free_model(tmp / "near-free")
        port_file = tmp / "bare.port"
        bare = subprocess.Popen([sys.executable, __file__, "--bare", str(port_file), "32"])
        try:
            deadline = time.monotonic() + 60
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline or bare.poll() is not None:
                    raise RuntimeError("the bare grpc.aio server did not start")
                time.sleep(0.1)
            bare_target = f"127.0.0.1:{port_file.read_text()}"
            rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
            # Each row: one bertserve set-up, and the bare server measured just before it.
            setups = [(f"bertserve, processes: {n}", n, False, "full", "") for n in args.processes]
            setups += [(f"bertserve, {n} front end(s)+engine", n, True, "full", "") for n in args.front_ends]
            layers = ("edge", "tokenize") if args.layers else ()
            setups += [(f"  cut after: {layer}", 1, False, layer, "") for layer in layers]
            setups += [(f"  with {setting}", 1, False, "full", setting) for setting in args.settings]
            part = args.seconds / args.slices
            for _ in range(args.rounds):
                for name, processes, engine, layer, setting in setups:
                    server = _bertserve(model, tmp, processes, engine, args, layer, setting)
                    bare_slices, our_slices = [], []
                    try:
                        target = f"127.0.0.1:{server.port}"
                        for _ in range(args.slices):  # alternating: the machine's drift hits both alike
                            bare_slices.append(_slice(bare.pid, bare_target, part, args.concurrency))
                            our_slices.append(
                                _slice(server.process.pid, target, part, args.concurrency, _engine_pid(server))
                            )
                    finally:
                        server.stop()
                    rows.append((name, per_call(our_slices), per_call(bare_slices)))
        finally:
            bare.terminate()
            bare.wait(30)
    print(
        f"\n{args.concurrency} callers of one-sentence Embed, {args.seconds:.0f} s each in {args.slices} alternating "
        "slices, near-free model"
    )
    print(
        f"{'':32} {'calls/s':>9} {'CPU us/call':>12} {'of it engine':>12} {'RSS MiB':>8} | {'bare calls/s':>12} "
        f"{'bare us/call':>12} | "
        f"{'CPU ratio':>9}"
    )
    for name, ours, floor in rows:
        ratio = ours["cpu_us_per_call"] / floor["cpu_us_per_call"]
        print(
            f"{name:32} {ours['calls_per_s']:9.0f} {ours['cpu_us_per_call']:12.0f} {ours['engine_us_per_call']:12.0f} "
            f"{ours['rss_mib']:8.0f} | "
            f"{floor['calls_per_s']:12.0f} {floor['cpu_us_per_call']:12.0f} | {ratio:9.2f}"
        )
        if args.threads:
            busy = sorted(((us, thread) for thread, us in ours["threads_us_per_call"].items() if us >= 5), reverse=True)
            for us, thread in busy:
                print(f"    {thread:28} {us:12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
