"""What an engine's reply costs it on the link, sent at once or bundled with its turn's others.

    python bench/link_bundles.py [--messages 60000] [--per-turn 1 3 8 32 128] [--rounds 2]

An engine answers the calls of one forward pass in one turn of its event loop. This bench sends
--messages replies of a one-sentence Embed's size (a peer frame and three frames, as
bertserve.serving.engine_wire makes them) from a ROUTER socket driven by bertserve's LoopSocket to a
DEALER in another process, --per-turn of them each turn of the loop, either each at once (send:
one zmq message each) or posted to go packed together at the turn's end (post: one zmq message a
turn), alternating the two in each round. Printed: the sending process's CPU microseconds per
reply (its event loop and zmq's I/O thread), and the wall time per reply.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

from bertserve.serving.engine_socket import LoopSocket

_READER = """
import sys, zmq
from bertserve.serving.engine_socket import unpack
context = zmq.Context()
socket = context.socket(zmq.DEALER)
socket.setsockopt(zmq.RCVHWM, 0)
socket.setsockopt(zmq.IDENTITY, b"front-end")
socket.connect(sys.argv[1])
socket.send(b"hello")
got, wanted = 0, int(sys.argv[2])
while got < wanted:
    got += len(unpack(socket.recv()))
socket.send(b"done")
"""


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(address: str, mode: str, per_turn: int, messages: int) -> tuple[float, float]:
    """CPU and wall microseconds per reply."""
    turns = -(-messages // per_turn)
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.SNDHWM, 0)  # as the engine's
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    router.bind(address)
    reader = subprocess.Popen([sys.executable, "-c", _READER, address, str(turns * per_turn)])
    try:
        router.recv_multipart()  # its hello: connected
        cpu, wall = asyncio.run(_send(router, mode, per_turn, turns))
        return cpu / (turns * per_turn) * 1e6, wall / (turns * per_turn) * 1e6
    finally:
        reader.wait(30)
        context.destroy(linger=0)


async def _send(router: zmq.Socket[bytes], mode: str, per_turn: int, turns: int) -> tuple[float, float]:
    done = asyncio.Event()
    side = LoopSocket(router, lambda message: done.set(), routed=True)
    reply = [b"front-end", b"d", b"h" * 40, b"v" * 128]  # peer, kind, header, one 32-float vector
    send = side.post if mode == "post" else side.send
    cpu, wall = _cpu_seconds(), time.perf_counter()
    for _ in range(turns):
        for _ in range(per_turn):
            send(reply)
        await asyncio.sleep(0)
    await asyncio.wait_for(done.wait(), 120)
    side.close()
    return _cpu_seconds() - cpu, time.perf_counter() - wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--per-turn", type=int, nargs="+", default=[1, 3, 8, 32, 128])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    columns = f"{'send: CPU us':>12} {'wall us':>8} | {'post: CPU us':>12} {'wall us':>8}"
    print(f"{'replies a turn':>14} {'round':>5} | {columns}")
    with tempfile.TemporaryDirectory() as scratch:
        address = f"ipc://{Path(scratch) / 'link'}"
        for per_turn in args.per_turn:
            for round_ in range(1, args.rounds + 1):
                sent = _measure(address, "send", per_turn, args.messages)
                posted = _measure(address, "post", per_turn, args.messages)
                print(
                    f"{per_turn:14} {round_:5} | {sent[0]:12.1f} {sent[1]:8.1f} | {posted[0]:12.1f} {posted[1]:8.1f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
