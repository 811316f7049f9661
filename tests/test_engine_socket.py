"""The link's sockets driven by the event loop (zmq's descriptor is edge-triggered, so a message
that comes while the loop sends, or while it reads others, must still be read, in order), and the
engine's errors as they cross the link."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import zmq

from bertserve.edge.status import status_of
from bertserve.errors import BertserveError, DeadlineExceeded, ModelUnavailable, Overloaded
from bertserve.serving import engine_wire as wire
from bertserve.serving.engine_socket import LoopSocket, is_packed, pack, unpack

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


def _messages(frame: bytes) -> list[list[bytes]]:
    return [[bytes(f) for f in message] for message in unpack(frame)]


def _no_peer(where: Path) -> tuple[zmq.Context[zmq.Socket[bytes]], LoopSocket]:
    """A DEALER that connects where nobody listens, and queues nothing meanwhile (as the link's)."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.IMMEDIATE, 1)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(f"ipc://{where}/nobody-listens-here")
    return context, LoopSocket(socket, lambda message: None)


async def test_every_message_arrives_in_order_while_both_sides_send_and_answer(tmp_path: Path) -> None:
    context, a, b = _pair(tmp_path)
    answers: list[int] = []
    asked: list[int] = []
    all_answered = asyncio.Event()

    def take_answer(message: list[memoryview]) -> None:
        answers.append(int(bytes(message[0])))
        if len(answers) == MESSAGES:
            all_answered.set()

    def answer(message: list[memoryview]) -> None:
        n = int(bytes(message[0]))
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

    def take(message: list[memoryview]) -> None:
        got.append(bytes(message[0]))
        arrived.set()

    side_a = LoopSocket(a, take)
    try:
        b.send(b"answer")  # from a plain socket: nothing of side_a runs meanwhile
        time.sleep(0.1)  # noqa: ASYNC251 (the loop must not run: the message reaches side_a, signalled)
        side_a.send([b"question"])  # before the loop runs: this send takes the signal
        await asyncio.wait_for(arrived.wait(), 5)
        assert got == [b"answer"]
        assert _messages(b.recv()) == [[b"question"]]
    finally:
        side_a.close()
        context.destroy(linger=0)


async def test_a_message_that_cannot_be_handled_leaves_the_others_read(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    context, a, b = _pair(tmp_path)
    seen: list[int] = []
    last = asyncio.Event()

    def take(message: list[memoryview]) -> None:
        n = int(bytes(message[0]))
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
    context, side = _no_peer(tmp_path)
    try:
        with pytest.raises(zmq.Again):
            side.send([b"x"])
    finally:
        side.close()
        context.destroy(linger=0)


async def test_messages_posted_in_one_turn_go_as_one_bundle_and_are_read_one_by_one_in_order(tmp_path: Path) -> None:
    context, a, b = _pair(tmp_path)
    got: list[list[bytes]] = []
    all_read = asyncio.Event()

    def take(message: list[memoryview]) -> None:
        got.append([bytes(frame) for frame in message])
        if len(got) == 4:
            all_read.set()

    side_a, side_b = LoopSocket(a, lambda message: None), LoopSocket(b, take)
    try:
        side_a.post([b"one"])
        side_a.post([b"two", b"2", memoryview(b"\x00\x01")])
        side_a.send([b"three"])  # a send goes after what was posted before it
        side_a.post([b"four", b""])
        await asyncio.wait_for(all_read.wait(), 5)
        assert got == [[b"one"], [b"two", b"2", b"\x00\x01"], [b"three"], [b"four", b""]]
    finally:
        side_a.close()
        side_b.close()
        context.destroy(linger=0)
    # What goes over the wire: the messages posted in one turn, as one zmq message.
    context, a, b = _pair(tmp_path)
    side_a = LoopSocket(a, lambda message: None)
    try:
        for i in range(5):
            side_a.post([b"m", str(i).encode()])
        await asyncio.sleep(0)  # the turn ends: the bundle goes
        wire = await asyncio.to_thread(b.recv_multipart)
        assert len(wire) == 1 and is_packed(wire[0])
        assert _messages(wire[0]) == [[b"m", str(i).encode()] for i in range(5)]
        assert not b.poll(100)  # and nothing else
    finally:
        side_a.close()
        context.destroy(linger=0)


async def test_a_router_bundles_per_peer_and_each_peer_reads_its_own_messages_in_order(tmp_path: Path) -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    address = f"ipc://{tmp_path}/router"
    router.bind(address)
    dealers = []
    for name in (b"left", b"right"):
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.IDENTITY, name)
        dealer.connect(address)
        dealers.append(dealer)
    heard: list[list[bytes]] = []
    got: dict[bytes, list[bytes]] = {b"left": [], b"right": []}
    hellos, done = asyncio.Event(), asyncio.Event()

    def router_took(message: list[memoryview]) -> None:
        heard.append([bytes(frame) for frame in message])
        if len(heard) == 4:
            hellos.set()

    def dealer_took(name: bytes) -> Callable[[list[memoryview]], None]:
        def take(message: list[memoryview]) -> None:
            assert len(message) == 2
            got[name].append(bytes(message[0]) + bytes(message[1]))
            if sum(map(len, got.values())) == 20:
                done.set()

        return take

    side = LoopSocket(router, router_took, routed=True)
    left, right = (LoopSocket(d, dealer_took(n)) for d, n in zip(dealers, (b"left", b"right"), strict=True))
    try:
        for dealer_side in (left, right):
            dealer_side.post([b"hello"])
            dealer_side.post([b"again"])
        await asyncio.wait_for(hellos.wait(), 5)
        assert sorted(heard) == [[b"left", b"again"], [b"left", b"hello"], [b"right", b"again"], [b"right", b"hello"]]
        for i in range(10):
            side.post([b"left", b"L", str(i).encode()])
            side.post([b"right", b"R", str(i).encode()])
        await asyncio.wait_for(done.wait(), 5)
        assert got == {b"left": [f"L{i}".encode() for i in range(10)], b"right": [f"R{i}".encode() for i in range(10)]}
        unsent: list[zmq.ZMQError] = []
        side.post([b"nobody", b"x"], unsent.append)
        side.post([b"nobody", b"y"], unsent.append)
        await asyncio.sleep(0)
        assert [e.errno for e in unsent] == [zmq.EHOSTUNREACH] * 2
    finally:
        for each in (side, left, right):
            each.close()
        context.destroy(linger=0)


async def test_a_post_with_no_peer_is_told_it_was_not_sent(tmp_path: Path) -> None:
    context, side = _no_peer(tmp_path)
    unsent: list[zmq.ZMQError] = []
    try:
        side.post([b"x"], unsent.append)
        side.post([b"y"], unsent.append)
        assert unsent == []  # not before the turn ends
        await asyncio.sleep(0)
        assert len(unsent) == 2 and all(isinstance(e, zmq.Again) for e in unsent)
    finally:
        side.close()
        context.destroy(linger=0)


def test_packed_messages_come_back_frame_for_frame_each_frame_aligned_for_its_arrays() -> None:
    ids = np.arange(7, dtype=np.int32)
    vector = np.linspace(-1, 1, 5, dtype=np.float64)
    messages = [
        [b"r", b"header", ids.data, memoryview(b"")],
        [b"d"],
        [b"", vector.data, b"x" * 13, b"\x00" * 9],
        [],
    ]
    frame = pack(messages)
    assert is_packed(frame) and not is_packed(b"r") and not is_packed(b"plain message, not packed")
    back = unpack(frame)
    assert [len(m) for m in back] == [4, 1, 4, 0]
    assert [bytes(f) for f in back[0]] == [b"r", b"header", ids.tobytes(), b""]
    assert [bytes(f) for f in back[1]] == [b"d"]
    assert [bytes(f) for f in back[2]] == [b"", vector.tobytes(), b"x" * 13, b"\x00" * 9]
    offsets = [
        np.frombuffer(f, dtype=np.uint8).ctypes.data - np.frombuffer(frame, np.uint8).ctypes.data
        for m in back
        for f in m
        if len(f)
    ]
    assert all(offset % 8 == 0 for offset in offsets)
    assert np.array_equal(np.frombuffer(back[0][2], dtype=np.int32), ids)
    assert np.array_equal(np.frombuffer(back[2][1], dtype=np.float64), vector)


async def test_a_pack_cut_short_is_logged_and_the_messages_after_it_are_read(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    context, a, b = _pair(tmp_path)
    got: list[list[bytes]] = []
    last = asyncio.Event()

    def take(message: list[memoryview]) -> None:
        got.append([bytes(frame) for frame in message])
        last.set()

    side_b = LoopSocket(b, take)
    try:
        whole = pack([[b"d", b"header"], [b"d", b"more"]])
        a.send(whole[:9])  # its header cut inside the frame counts
        a.send(pack([[b"after"]]))
        await asyncio.wait_for(last.wait(), 5)
        assert got == [[b"after"]]
        assert "an unreadable message" in caplog.text
    finally:
        side_b.close()
        context.destroy(linger=0)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (DeadlineExceeded("the call's deadline passed before model 'm' ran it"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (ModelUnavailable("model 'm' is still loading"), grpc.StatusCode.UNAVAILABLE),
        (Overloaded("model 'm' is at capacity", retry_after_s=0.25), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_an_engines_error_reaches_the_front_end_as_the_same_status_message_and_hint(
    error: BertserveError, code: grpc.StatusCode
) -> None:
    """What a front end answers for an error of the engine's is what one process answers for it."""
    [kind, payload] = wire.encode_error(7, error)
    call, crossed = wire.decode_error([kind, payload])
    assert call == 7 and type(crossed) is type(error) and str(crossed) == str(error)
    assert status_of(crossed) is code
    assert getattr(crossed, "retry_after_s", None) == getattr(error, "retry_after_s", None)
