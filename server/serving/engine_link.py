"""A front end's link to its engine: calls' passes out, results and the model table in.

One zmq DEALER socket over IPC carries every call of this process, driven by the event loop (see
bertserve.serving.engine_socket: no thread of its own, no hop and no future per message). A
socket monitor hears the connection drop the moment the engine process dies (the kernel closes
its end): every call in flight then fails at once with UNAVAILABLE, the models read as loading
(health NOT_SERVING), and zmq reconnects on its own to the engine the supervisor restarts. A
wedged engine is the supervisor's to find (see bertserve.app.supervisor): it kills it, and this
link sees that as a death.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from bertserve.api import Encoding
from bertserve.errors import BertserveError, ModelUnavailable
from bertserve.observability import request_ids, telemetry
from bertserve.ops import Completed, Op
from bertserve.serving import engine_wire as wire
from bertserve.serving.engine_socket import Frames, LoopSocket
from bertserve.serving.pass_reports import PassHealth

__all__ = ["EngineLink", "EnginePasses"]

log = logging.getLogger(__name__)


class EngineLink:
    """The connection of one front end to the engine at address (an ``ipc://`` endpoint)."""

    def __init__(
        self,
        address: str,
        identity: str,
        *,
        on_table: Callable[[wire.Table], Awaitable[dict[str, tuple[int, int]]]],
        on_lost: Callable[[], None],
    ) -> None:
        """on_table applies a model table (the link acknowledges it once that returns, with what it
        returns: the calls on the models that left, finished and abandoned, by name); on_lost is
        told when the engine went away."""
        self.address = address
        self._identity = identity.encode()
        self._on_table = on_table
        self._on_lost = on_lost
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._socket: LoopSocket | None = None
        self._monitor: LoopSocket | None = None
        self._calls = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], str, int]] = {}  # call -> (future, model, generation)
        self._connected = False
        #: How many times the engine went away: an instance's passes are of the engine it came from.
        self.engine_losses = 0
        self.connected_event = asyncio.Event()  # set while connected (for start-up and tests)
        self._tasks: list[asyncio.Task[None]] = []
        self._tables: asyncio.Queue[wire.Table] = asyncio.Queue()

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(self) -> None:
        socket = self._context.socket(zmq.DEALER)
        socket.setsockopt(zmq.IDENTITY, self._identity)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.IMMEDIATE, 1)  # nothing queues for an engine that is not there
        socket.setsockopt(zmq.SNDHWM, 0)
        socket.setsockopt(zmq.RCVHWM, 0)
        socket.setsockopt(zmq.RECONNECT_IVL, 100)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        socket.connect(self.address)
        self._socket = LoopSocket(socket, self._read)
        self._monitor = LoopSocket(monitor, self._watch)
        self._tasks = [asyncio.create_task(self._apply_tables(), name="engine-link:tables")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for each in (self._socket, self._monitor):
            if each is not None:
                each.close()
        self._fail_all(ModelUnavailable("the server is shutting down"))
        self._context.destroy(linger=0)  # the socket and its monitor with it

    async def run(
        self, model: str, generation: int, op: Op[Any], encodings: Sequence[Encoding], *, deadline: float | None
    ) -> wire.Results:
        """One call's sequences through the engine's batcher of model's instance generation; its
        results in order."""
        call = next(self._calls)
        frames = wire.encode_run(
            call,
            model,
            generation,
            op,
            encodings,
            deadline=deadline,
            request_id=request_ids.current.get(),
            trace=telemetry.carrier(),
        )
        result: wire.Results = await self._ask(call, model, frames, generation)
        return result

    async def admin(self, action: str, *args: Any) -> Any:
        """A change of the engine's models (load, unload, reload); returns once every front end has
        applied the table that shows it."""
        call = next(self._calls)
        return await self._ask(call, "", wire.encode_pickled(wire.ADMIN, (call, action, args)))

    async def _ask(self, call: int, model: str, frames: list[bytes | memoryview], generation: int = 0) -> Any:
        socket = self._socket
        if not self._connected or socket is None:
            raise _engine_gone(model)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call] = (future, model, generation)
        try:
            try:
                socket.send(frames)
            except zmq.ZMQError:  # zmq.Again: not connected (IMMEDIATE) at this moment
                raise _engine_gone(model) from None
            return await future
        except asyncio.CancelledError:
            if model:  # the caller went away: the engine drops what has not run
                self._call_off(call)
            raise
        finally:
            self._pending.pop(call, None)

    def abandon(self, model: str, generation: int, error: BertserveError) -> None:
        """Fail the calls of model's instance generation waiting on the engine now (a drain ran out
        of time); the engine drops their work."""
        for call, (future, of, instance) in list(self._pending.items()):
            if (of, instance) == (model, generation) and not future.done():
                future.set_exception(error)
                self._call_off(call)

    def _call_off(self, call: int) -> None:
        """Tell the engine that no one waits for call any more: it drops what has not run."""
        if self._connected and self._socket is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._socket.send(wire.encode_small(wire.CANCEL, call))

    def _read(self, message: list[memoryview]) -> None:
        frames: list[bytes | memoryview] = [bytes(message[0]), *message[1:]]
        try:
            self._dispatch(frames)
        except Exception:  # a reply this side cannot read fails its call, never the link
            log.exception("unreadable message from the engine (kind %r)", frames[0])

    def _dispatch(self, frames: Frames) -> None:
        kind = frames[0]
        if kind == wire.DONE:
            results = wire.decode_results(frames)
            self._settle(results.call, results, None)
        elif kind == wire.FAILED:
            call, error = wire.decode_error(frames)
            self._settle(call, None, error)
        elif kind == wire.ADMIN_DONE:
            call, failure, value = wire.decode_pickled(frames)
            self._settle(call, value, None if failure is None else wire.error_of(*failure))
        elif kind == wire.TABLE:
            self._tables.put_nowait(wire.decode_pickled(frames))

    def _settle(self, call: int, value: Any, error: BaseException | None) -> None:
        entry = self._pending.get(call)
        if entry is None or entry[0].done():  # cancelled, or failed when the engine went away
            return
        if error is not None:
            entry[0].set_exception(error)
        else:
            entry[0].set_result(value)

    async def _apply_tables(self) -> None:
        """Tables in the order they came, one at a time (loading a tokenizer takes a while); each
        acknowledged once applied, so that an admin change answers after every front end has it."""
        while True:
            table = await self._tables.get()
            departed: dict[str, tuple[int, int]] = {}
            try:
                departed = await self._on_table(table)
            except Exception:
                log.exception("the engine's model table %d could not be applied", table.version)
            if self._socket is not None:
                with contextlib.suppress(zmq.ZMQError):
                    self._socket.send(wire.encode_small(wire.TABLE_SEEN, table.engine, table.version, departed))

    def _watch(self, message: list[memoryview]) -> None:
        event = parse_monitor_message([bytes(frame) for frame in message])
        if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._connected = True
            self.connected_event.set()
            if self.engine_losses:
                log.info("the engine at %s is reachable again", self.address)
            if self._socket is not None:
                with contextlib.suppress(zmq.ZMQError):
                    self._socket.send([wire.HELLO])
        elif event["event"] == zmq.EVENT_DISCONNECTED and self._connected:
            self._connected = False
            self.engine_losses += 1
            self.connected_event.clear()
            log.error(
                "the engine at %s went away; the calls it had fail, and the models wait for it to come back",
                self.address,
            )
            self._fail_all(None)
            self._on_lost()

    def _fail_all(self, error: BertserveError | None) -> None:
        for future, model, _ in list(self._pending.values()):
            if not future.done():
                future.set_exception(error or _engine_gone(model))


def _engine_gone(model: str) -> ModelUnavailable:
    what = f"model {model!r}" if model else "the models"
    return ModelUnavailable(
        f"the engine that runs {what} is not reachable (it stopped and is being restarted); retry the call"
    )


class EnginePasses:
    """A model's passes run by the engine, as a front end's host sees them: the part of a batcher
    a host uses (bertserve.serving.model_host.Passes), over the link."""

    def __init__(self, link: EngineLink, name: str, generation: int, *, healthy: bool = True) -> None:
        """The passes of model name's instance generation on the engine link reaches now."""
        self._link = link
        self.name = name
        self.generation = generation
        self._engine_losses = link.engine_losses
        self._abandoned: BertserveError | None = None
        self.health = PassHealth(name)
        if not healthy:
            self.health.failures_in_a_row = 1_000_000
        self._tokens_per_s = 0.0
        self._retry_after_s = 0.05

    @property
    def healthy(self) -> bool:
        return self.health.healthy

    def set_healthy(self, healthy: bool) -> None:
        """The engine's word on the model's passes (from its table)."""
        if healthy != self.health.healthy:
            self.health.failures_in_a_row = 0 if healthy else 1_000_000
            self.health.on_change(healthy)

    @property
    def tokens_per_s(self) -> float:
        return self._tokens_per_s

    def retry_after_s(self) -> float:
        return self._retry_after_s

    def start(self) -> None:
        """Nothing to start: the engine's batcher runs there."""

    async def stop(self) -> None:
        """Nothing to stop here (see start)."""

    def abandon(self, error: BertserveError) -> None:
        """Fail this instance's calls waiting on the engine with error now, and every later one:
        as a batcher's abandon, since a call between passes (a long Answer's parts) comes back."""
        self._abandoned = error
        self._link.abandon(self.name, self.generation, error)

    def serve_first_come(self) -> None:
        """Nothing to change here: the supervisor tells the engine that the server drains."""

    async def submit(
        self, op: Op[Any], items: Sequence[Encoding], costs: Sequence[int], *, deadline: float | None = None
    ) -> list[Completed[Any]]:
        if self._abandoned is not None:
            raise self._abandoned
        if self._link.engine_losses != self._engine_losses:  # its engine died: the instance with it
            raise _engine_gone(self.name)
        results = await self._link.run(self.name, self.generation, op, items, deadline=deadline)
        self._tokens_per_s, self._retry_after_s = results.tokens_per_s, results.retry_after_s
        return results.completed
