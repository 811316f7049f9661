"""A zmq socket driven by the event loop with no future per message, and the messages of one turn
of the loop sent together.

zmq.asyncio makes a future, a poll registration and a callback for every send and every receive:
tens of microseconds a message, paid twice a call on each side of the link. Here a message is
sent without blocking (the link's sockets have no high-water mark, so a send only fails when its
peer is gone), and the socket's file descriptor wakes the loop to read every message that has
come, in one turn.

Messages posted in one turn of the loop go at its end as one zmq message per peer, a bundle: the
engine posts its replies, and the replies of the calls that one forward pass answered wake in the
same turn. A zmq send costs Python calls and a release of the interpreter lock per frame (pyzmq
sends without it) and a wake-up of zmq's I/O thread, so a pass of 32 calls pays that once per
front end instead of 32 times. The reading side splits a bundle and hands on each message in
order, so handlers never see one. (A front end sends its calls at once: they start in turns of
their own, so there is nothing to bundle there.)

zmq's descriptor is edge-triggered: it signals once when the socket's events change, and any
operation on the socket (a send too) can take that edge. So after every send and every read the
socket's own event flags are checked, and a read is scheduled while a message waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from array import array
from collections.abc import Callable, Sequence

import zmq

__all__ = ["BUNDLE", "Frames", "LoopSocket", "Unsent"]

log = logging.getLogger(__name__)

#: The most messages one turn of the loop reads before the loop runs its other work.
READ_BATCH = 256

#: The first frame of a bundle (after a ROUTER's peer frame): the messages' frame counts follow,
#: as native uint32, then their frames. No message of the link may start with it.
BUNDLE = b"\x00bundle"

#: A message's frames, as sent, or as zmq hands them over (read in place).
Frames = Sequence[bytes | memoryview]
#: Told why a posted message could not go (zmq.Again: no peer connected; ZMQError: the peer is gone).
Unsent = Callable[[zmq.ZMQError], None]


class LoopSocket:
    """socket (a plain zmq socket, which this object drives from now on) on the running loop:
    on_message is called with each message's frames (read in place), on the loop, in order."""

    def __init__(
        self, socket: zmq.Socket[bytes], on_message: Callable[[list[zmq.Frame]], None], *, routed: bool = False
    ) -> None:
        """routed: a ROUTER socket, whose messages start with their peer's identity (bundles are
        made per peer, and keep the peer frame first)."""
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
        zmq.ZMQError when it is gone. Large frames go without a copy (pyzmq copies the small ones
        itself, which is cheaper)."""
        self._flush()
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        finally:
            self._schedule_read()

    def post(self, frames: Frames, unsent: Unsent | None = None) -> None:
        """Send at the end of this turn of the loop, bundled with the other messages posted to the
        same peer meanwhile; unsent is told if it could not go."""
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append((frames, unsent))

    def _flush(self) -> None:
        if not self._outbox or self._closed:
            self._outbox.clear()
            return
        outbox, self._outbox = self._outbox, []
        by_peer: dict[bytes | memoryview, list[tuple[Frames, Unsent | None]]] = {}
        for posted in outbox:
            by_peer.setdefault(posted[0][0] if self._routed else b"", []).append(posted)
        try:
            for peer, messages in by_peer.items():
                frames = messages[0][0] if len(messages) == 1 else self._bundle(peer, [m for m, _ in messages])
                try:
                    self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                except zmq.ZMQError as e:
                    for _, unsent in messages:
                        if unsent is not None:
                            unsent(e)
        finally:
            self._schedule_read()

    def _bundle(self, peer: bytes | memoryview, messages: list[Frames]) -> list[bytes | memoryview]:
        skip = 1 if self._routed else 0  # a ROUTER's messages each start with the peer
        counts = array("I", [len(m) - skip for m in messages])
        frames: list[bytes | memoryview] = [peer] if self._routed else []
        frames += [BUNDLE, counts.tobytes()]
        for message in messages:
            frames += message[skip:]
        return frames

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
            for each in self._unbundled(message):
                try:
                    self._on_message(each)
                except Exception:  # one message this side cannot take must not leave the others unread
                    log.exception("a message could not be handled")
        self._schedule_read()  # more wait: the loop runs its other work first

    def _unbundled(self, message: list[zmq.Frame]) -> list[list[zmq.Frame]]:
        """The messages of a bundle, each with the bundle's peer frame first (routed); else message."""
        skip = 1 if self._routed else 0
        if len(message) < skip + 2 or message[skip].bytes != BUNDLE:
            return [message]
        head, counts = message[:skip], array("I", message[skip + 1].bytes)
        messages, start = [], skip + 2
        for count in counts:
            messages.append(head + message[start : start + count])
            start += count
        return messages
