"""A zmq socket driven by the event loop with no future per message, and the messages of one turn
of the loop sent together.

zmq.asyncio makes a future, a poll registration and a callback for every send and every receive:
tens of microseconds a message, paid twice a call on each side of the link. Here a message is
sent without blocking (the link's sockets have no high-water mark, so a send only fails when its
peer is gone), and the socket's file descriptor wakes the loop to read every message that has
come, in one turn.

Every message goes as one zmq frame (after a ROUTER's peer frame), its frames packed into it: a
zmq send costs Python calls and a release of the interpreter lock per frame (pyzmq sends without
it), and while a device worker waits for the lock, each release hands it over and the loop then
waits to take it back. The reading side unpacks a message into memoryviews of the frame it came
in, so that arrays are read where zmq put them. A packed frame starts with a zero byte, which no
message of the link starts with; anything else is read as zmq's own frames (the socket monitor's
events, a plain message).

Messages posted in one turn of the loop go at its end packed together, one zmq message per peer:
the engine posts its replies, and the replies of the calls that one forward pass answered wake
in the same turn, so that such a pass costs one send per front end instead of one per call. (A
front end sends its calls at once: they start in turns of their own, so there is nothing to
bundle there.)

zmq's descriptor is edge-triggered: it signals once when the socket's events change, and any
operation on the socket (a send too) can take that edge. So after every send and every read the
socket's own event flags are checked, and a read is scheduled while a message waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from array import array
from collections.abc import Callable, Sequence

import zmq

__all__ = ["Frames", "LoopSocket", "Unsent", "is_packed", "messages_in", "pack", "unpack"]

log = logging.getLogger(__name__)

#: The most messages one turn of the loop reads before the loop runs its other work.
READ_BATCH = 256

#: Each frame of a packed message starts at a multiple of this many bytes, so that arrays read in
#: place are aligned for their dtype.
_ALIGN = 8
_PADDING = bytes(_ALIGN)

#: A message's frames, as sent, or as read (memoryviews of the zmq frame they came in).
Frames = Sequence[bytes | memoryview]
#: Told why a posted message could not go (zmq.Again: no peer connected; ZMQError: the peer is gone).
Unsent = Callable[[zmq.ZMQError], None]


def pack(messages: Sequence[Frames]) -> bytes:
    """messages as one frame: a header of uint32 (native order) -- 0, the number of messages, each
    one's frame count, each frame's size -- then the frames, each at a multiple of 8 bytes."""
    frames = [frame for message in messages for frame in message]
    sizes = [len(frame) if type(frame) is bytes else frame.nbytes for frame in frames]  # type: ignore[union-attr]
    head = array("I", [0, len(messages)])
    head.extend([len(message) for message in messages])
    head.extend(sizes)
    parts: list[bytes | memoryview] = [head.tobytes(), _PADDING[: -len(head) * 4 % _ALIGN]]
    for frame, size in zip(frames, sizes, strict=True):
        parts += (frame, _PADDING[: -size % _ALIGN])
    return b"".join(parts)


def unpack(frame: bytes | memoryview) -> list[list[memoryview]]:
    """The messages of a packed frame, their frames as memoryviews of it."""
    view = memoryview(frame)
    count = int.from_bytes(view[4:8], sys.byteorder)
    counts, sizes = array("I"), array("I")
    counts.frombytes(view[8 : 8 + 4 * count])
    at = 8 + 4 * count
    sizes.frombytes(view[at : at + 4 * sum(counts)])
    at += 4 * len(sizes)
    at += -at % _ALIGN
    views: list[memoryview] = []
    for size in sizes:
        views.append(view[at : at + size])
        at += size + -size % _ALIGN
    if count == 1:
        return [views]
    messages, start = [], 0
    for n in counts:
        messages.append(views[start : start + n])
        start += n
    return messages


def is_packed(frame: bytes | memoryview) -> bool:
    """Whether frame (bytes, or a memoryview of bytes) is a packed one."""
    return len(frame) >= 8 and frame[0] == 0


def messages_in(frames: list[memoryview], *, routed: bool = False) -> list[list[memoryview]]:
    """The messages one zmq message holds: those of its pack, each with the peer frame first
    (routed: a ROUTER's message), or the message itself where it is plain."""
    skip = 1 if routed else 0
    if len(frames) != skip + 1 or not is_packed(frames[skip]):
        return [frames]
    head = frames[:skip]
    return [head + each for each in unpack(frames[skip])]


class LoopSocket:
    """socket (a plain zmq socket, which this object drives from now on) on the running loop:
    on_message is called with each message's frames (memoryviews, read in place), on the loop, in
    order."""

    def __init__(
        self, socket: zmq.Socket[bytes], on_message: Callable[[list[memoryview]], None], *, routed: bool = False
    ) -> None:
        """routed: a ROUTER socket, whose messages start with their peer's identity (the peer
        frame goes first, unpacked, and messages are bundled per peer)."""
        self.socket = socket
        self._on_message = on_message
        self._routed = routed
        self._outbox: list[tuple[Frames, Unsent | None]] = []
        self._loop = asyncio.get_running_loop()
        self._fd = int(socket.getsockopt(zmq.FD))
        self._read_due = False
        self._closed = False
        self._loop.add_reader(self._fd, self._read)
        self._schedule_read()  # a message may have come before the reader was added

    def send(self, frames: Frames) -> None:
        """Send now, after what was posted before; zmq.Again when the peer is not connected,
        zmq.ZMQError when it is gone."""
        self._flush()
        try:
            self._send_packed(frames[0] if self._routed else b"", [frames])
        finally:
            self._schedule_read()

    def post(self, frames: Frames, unsent: Unsent | None = None) -> None:
        """Send at the end of this turn of the loop, packed with the other messages posted to the
        same peer meanwhile; unsent is told if it could not go."""
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append((frames, unsent))

    def _send_packed(self, peer: bytes | memoryview, messages: list[Frames]) -> None:
        if self._routed:
            self.socket.send_multipart([peer, pack([m[1:] for m in messages])], flags=zmq.NOBLOCK, copy=False)
        else:
            self.socket.send(pack(messages), flags=zmq.NOBLOCK, copy=False)

    def _flush(self) -> None:
        if not self._outbox or self._closed:
            self._outbox.clear()
            return
        outbox, self._outbox = self._outbox, []
        by_peer: dict[bytes | memoryview, list[tuple[Frames, Unsent | None]]] = {}
        for posted in outbox:
            by_peer.setdefault(posted[0][0] if self._routed else b"", []).append(posted)
        try:
            for peer, posted_to_peer in by_peer.items():
                try:
                    self._send_packed(peer, [m for m, _ in posted_to_peer])
                except zmq.ZMQError as e:
                    for _, unsent in posted_to_peer:
                        if unsent is not None:
                            unsent(e)
        finally:
            self._schedule_read()

    def close(self) -> None:
        """Stop reading; the socket is its owner's to close."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._fd)

    def _schedule_read(self) -> None:
        if not self._read_due and not self._closed and int(self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self._read_due = True
            self._loop.call_soon(self._read)

    def _read(self) -> None:
        self._read_due = False
        for _ in range(READ_BATCH):
            if self._closed:
                return
            try:
                message = self.socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            except zmq.ZMQError:  # the socket was closed under the loop
                self.close()
                return
            try:
                messages = messages_in([frame.buffer for frame in message], routed=self._routed)
            except Exception:  # a pack cut short: the others must still be read
                log.exception("an unreadable message")
                continue
            for each in messages:
                try:
                    self._on_message(each)
                except Exception:  # one message this side cannot take must not leave the others unread
                    log.exception("a message could not be handled")
        self._schedule_read()  # more wait: the loop runs its other work first
