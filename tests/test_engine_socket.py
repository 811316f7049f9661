"""The link's sockets driven by the event loop: zmq's descriptor is edge-triggered, so a message
that comes while the loop sends, or while it reads others, must still be read, in order."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest
import zmq

from bertserve.serving.engine_socket import LoopSocket

MESSAGES = 20_000
_ADDRESSES = itertools.count()


def _pair(where: Path) -> tuple[zmq.Context[zmq.Socket[bytes]], zmq.Socket[bytes], zmq.Socket[bytes]]:
    """Two sockets over IPC, as the link's are (zmq's I/O thread between them)."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    a, b = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    address = f"ipc://{where}/loop-socket-{next(_ADDRESSES)}"
    for socket in (a, b):  # set before the connection, which takes them when it is made
        socket.setsockopt(zmq.SNDHWM, 0)  # as the link's: a burst is never refused for a slow reader
        socket.setsockopt(zmq.RCVHWM, 0)
        socket.setsockopt(zmq.SNDTIMEO, 5000)
        socket.setsockopt(zmq.RCVTIMEO, 5000)
    a.bind(address)
    b.connect(address)
    a.send(b"connected?")  # blocks until the connection is up
    assert b.recv() == b"connected?"
    return context, a, b


async def test_every_message_arrives_in_order_while_both_sides_send_and_answer(tmp_path: Path) -> None:
    context, a, b = _pair(tmp_path)
    answers: list[int] = []
    asked: list[int] = []
    all_answered = asyncio.Event()

    def take_answer(message: list[zmq.Frame]) -> None:
        answers.append(int(message[0].bytes))
        if len(answers) == MESSAGES:
            all_answered.set()

    def answer(message: list[zmq.Frame]) -> None:
        n = int(message[0].bytes)
        asked.append(n)
        side_b.send([str(n).encode()])  # sent from within a read: that must not swallow the next edge

    side_a = LoopSocket(a, take_answer)
    side_b = LoopSocket(b, answer)
    try:
        for i in range(MESSAGES):
            side_a.send([str(i).encode()])
            if i % 97 == 0:
                await asyncio.sleep(0)  # let some be read between bursts
        await asyncio.wait_for(all_answered.wait(), 10)
        assert asked == list(range(MESSAGES))
        assert answers == list(range(MESSAGES))
    finally:
        side_a.close()
        side_b.close()
        context.destroy(linger=0)


async def test_a_message_that_came_before_a_send_is_read_though_the_send_took_its_signal(tmp_path: Path) -> None:
    """The edge case itself: a message arrives, then a send on the same socket processes zmq's
    commands (and so takes the descriptor's signal) before the loop has looked; it is read all the same."""
    context, a, b = _pair(tmp_path)
    got: list[bytes] = []
    arrived = asyncio.Event()

    def take(message: list[zmq.Frame]) -> None:
        got.append(message[0].bytes)
        arrived.set()

    side_a = LoopSocket(a, take)
    try:
        b.send(b"answer")  # from a plain socket: nothing of side_a runs meanwhile
        time.sleep(0.1)  # noqa: ASYNC251 (the loop must not run: the message reaches side_a, signalled)
        side_a.send([b"question"])  # before the loop runs: this send takes the signal
        await asyncio.wait_for(arrived.wait(), 5)
        assert got == [b"answer"]
        assert b.recv() == b"question"
    finally:
        side_a.close()
        context.destroy(linger=0)


async def test_a_message_that_cannot_be_handled_leaves_the_others_read(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    context, a, b = _pair(tmp_path)
    seen: list[int] = []
    last = asyncio.Event()

    def take(message: list[zmq.Frame]) -> None:
        n = int(message[0].bytes)
        if n == 3:
            raise ValueError("unreadable")
        seen.append(n)
        if n == 9:
            last.set()

    side_a, side_b = LoopSocket(a, lambda message: None), LoopSocket(b, take)
    try:
        for i in range(10):
            side_a.send([str(i).encode()])
        await asyncio.wait_for(last.wait(), 10)
        assert seen == [0, 1, 2, 4, 5, 6, 7, 8, 9]
        assert "a message could not be handled" in caplog.text
    finally:
        side_a.close()
        side_b.close()
        context.destroy(linger=0)


async def test_a_send_with_no_peer_raises_again_at_once(tmp_path: Path) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.IMMEDIATE, 1)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(f"ipc://{tmp_path}/nobody-listens-here")
    side = LoopSocket(socket, lambda message: None)
    try:
        with pytest.raises(zmq.Again):
            side.send([b"x"])
    finally:
        side.close()
        context.destroy(linger=0)
