"""A zmq socket driven by the event loop with no future per message.

zmq.asyncio makes a future, a poll registration and a callback for every send and every receive:
tens of microseconds a message, paid twice a call on each side of the link. Here a message is
sent at once, without blocking (the link's sockets have no high-water mark, so a send only fails
when its peer is gone), and the socket's file descriptor wakes the loop to read every message that
has come, in one turn.

zmq's descriptor is edge-triggered: it signals once when the socket's events change, and any
operation on the socket (a send too) can take that edge. So after every send and every read the
socket's own event flags are checked, and a read is scheduled while a message waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import zmq

__all__ = ["LoopSocket"]

log = logging.getLogger(__name__)

#: The most messages one turn of the loop reads before the loop runs its other work.
READ_BATCH = 256


class LoopSocket:
    """socket (a plain zmq socket, which this object drives from now on) on the running loop:
    on_message is called with each message's frames (read in place), on the loop, in order."""

    def __init__(self, socket: zmq.Socket[bytes], on_message: Callable[[list[zmq.Frame]], None]) -> None:
        self.socket = socket
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self._fd = int(socket.getsockopt(zmq.FD))
        self._read_due = False
        self._closed = False
        self._loop.add_reader(self._fd, self._read)
        self._schedule_read()  # a message may have come before the reader was added

    def send(self, frames: Sequence[bytes | memoryview]) -> None:
        """Send now; zmq.Again when the peer is not connected, zmq.ZMQError when it is gone. Large
        frames go without a copy (pyzmq copies the small ones itself, which is cheaper)."""
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
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
                self._on_message(message)
            except Exception:  # one message this side cannot take must not leave the others unread
                log.exception("a message could not be handled")
        self._schedule_read()  # more wait: the loop runs its other work first
