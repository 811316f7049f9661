"""The engine's side of the link: every front end's calls into the one batcher of each model.

A zmq ROUTER socket over IPC takes the calls of all front ends. Each call's sequences go to the
batcher of its model as a local call's would (its request id and trace context set, its model
held for a drain), so fairness, admission, deadlines and retry hints are the batcher's, across
every front end. The engine owns the models: the table of them goes to each front end when it
connects and after every change, and an admin change answers only once every connected front
end has applied the table that shows it. The supervisor pings; the answer says how long the
oldest pass in flight has run, so a pass that never ends is found as surely as a loop that stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import zmq

from bertserve.api import ModelSpec
from bertserve.errors import BertserveError, InternalFailure, ModelUnavailable
from bertserve.observability import request_ids, telemetry
from bertserve.serving import engine_wire as wire
from bertserve.serving.engine_socket import LoopSocket
from bertserve.serving.model_host import Drained, ModelHost
from bertserve.serving.model_manager import ModelManager
from bertserve.serving.router import Router

__all__ = ["EngineService"]

log = logging.getLogger(__name__)

#: How long an admin change waits for the front ends to apply its table before it answers anyway
#: (a front end that does not answer is being restarted, and gets the table when it connects).
TABLE_SEEN_WAIT_S = 30.0


class EngineService:
    """Serves router's models to the front ends that connect to address."""

    def __init__(
        self, address: str, router: Router, manager: ModelManager, on_stop: Callable[[], None] = lambda: None
    ) -> None:
        """on_stop: called when the supervisor says to stop."""
        self.address = address
        self._on_stop = on_stop
        self._router = router
        self._manager = manager
        manager.settle = self._settle
        self._departed: dict[str, list[int]] = {}  # unloaded models' calls the front ends saw end: finished, abandoned
        self._token = secrets.token_hex(8)  # this engine's start: the front ends' hosts of an earlier one are stale
        self._version = 0
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._socket: LoopSocket | None = None
        self._peers: dict[bytes, int] = {}  # front end -> the latest table version it applied
        self._seen = asyncio.Condition()
        self._calls: dict[tuple[bytes, int], asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._broadcast_due = False

    def bind(self) -> None:
        socket = self._context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, 0)
        socket.setsockopt(zmq.RCVHWM, 0)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a reply to a front end that left raises, not vanishes
        socket.bind(self.address)
        self._socket = LoopSocket(socket, self._read, routed=True)

    async def stop(self) -> None:
        if self._socket is not None:
            self._socket.close()
        for task in [*self._calls.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._calls.values(), *self._tasks, return_exceptions=True)
        self._context.destroy(linger=0)

    def models_changed(self, host: ModelHost | None = None) -> None:
        """A model's state or the set of models changed: send the table once this turn of the loop ends."""
        if not self._broadcast_due:
            self._broadcast_due = True
            asyncio.get_running_loop().call_soon(self._broadcast)

    def _broadcast(self) -> None:
        self._broadcast_due = False
        self._version += 1
        frames = wire.encode_pickled(wire.TABLE, self._table())
        for peer in list(self._peers):
            self._send(peer, frames)

    def _table(self) -> wire.Table:
        entries = tuple(
            wire.ModelEntry(
                spec=host.spec,
                generation=host.generation,
                state=host.state.value,
                info=host.info,
                failure_reason=host.failure_reason,
                load_attempts=host.load_attempts,
                next_attempt_at=host.next_attempt_at,
                healthy=host.batcher.healthy,
            )
            for host in self._router
        )
        return wire.Table(self._token, self._version, self._router.default_model, entries)

    def _send(self, peer: bytes, frames: list[bytes | memoryview]) -> None:
        assert self._socket is not None
        try:
            self._socket.send([peer, *frames])
        except zmq.ZMQError as e:  # the front end went away: its calls' answers have no one to go to
            log.debug("front end %r is gone: %s", peer, e)

    def _post(self, peer: bytes, frames: list[bytes | memoryview]) -> None:
        """Send at the end of this turn of the loop, with the other replies to peer (see LoopSocket.post)."""
        assert self._socket is not None
        self._socket.post([peer, *frames], _reply_unsent)

    def _read(self, message: list[memoryview]) -> None:
        peer, kind = bytes(message[0]), bytes(message[1])
        frames: list[bytes | memoryview] = [kind, *message[2:]]
        try:
            self._dispatch(peer, frames)
        except Exception:
            log.exception("an unreadable message from front end %r (kind %r)", peer, kind)

    def _dispatch(self, peer: bytes, frames: list[bytes | memoryview]) -> None:
        kind = frames[0]
        if kind == wire.RUN:
            request = wire.decode_run(frames)
            key = (peer, request.call)
            task = asyncio.create_task(self._run(peer, request))
            self._calls[key] = task
            task.add_done_callback(lambda _: self._calls.pop(key, None))
        elif kind == wire.CANCEL:
            (call,) = wire.decode_small(frames)
            if (running := self._calls.get((peer, call))) is not None:
                running.cancel()
        elif kind == wire.HELLO:
            # A front end's first word: the calls of one that had its name before are nobody's
            # now (it died), and its call numbers start over.
            self.drop_calls(f"{peer.decode(errors='replace')} started over", peer)
            self._peers[peer] = 0
            self._send(peer, wire.encode_pickled(wire.TABLE, self._table()))
        elif kind == wire.TABLE_SEEN:
            engine, version, departed = wire.decode_small(frames)
            if engine == self._token:
                self._peers[peer] = max(self._peers.get(peer, 0), version)
                for name, (finished, abandoned) in departed.items():
                    if (counts := self._departed.get(name)) is not None:
                        counts[0] += finished
                        counts[1] += abandoned
                self._keep(asyncio.create_task(self._notify_seen()))
        elif kind == wire.ADMIN:
            call, action, args = wire.decode_pickled(frames)
            self._keep(asyncio.create_task(self._admin(peer, call, action, args)))
        elif kind == wire.PING:
            self._send(peer, wire.encode_small(wire.PONG, self._oldest_pass_s()))
        elif kind == wire.GONE:
            (identity,) = wire.decode_small(frames)
            self.drop_calls(f"{identity} is gone", identity.encode())
        elif kind == wire.STOP:
            self._on_stop()
        elif kind == wire.DRAIN:
            log.info("the server drains: calls are served in the order they came")
            for host in self._router:
                host.batcher.serve_first_come()

    def drop_calls(self, why: str, peer: bytes | None = None) -> None:
        """Cancel the calls of front end peer (of every front end: None): no one is left to hear
        their answers. Their sequences never reach a pass; a pass already running finishes, unheard."""
        dropped = [task for (owner, _), task in self._calls.items() if peer is None or owner == peer]
        for task in dropped:
            task.cancel()
        if dropped:
            log.info("dropped %d calls: %s", len(dropped), why)

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, peer: bytes, request: wire.RunRequest) -> None:
        request_ids.current.set(request.request_id)
        try:
            host = self._host_of(request.model, request.generation)
            with telemetry.attached(request.trace), host.held():
                results = await host.run(request.op, request.encodings, deadline=request.deadline)
            reply = wire.encode_results(
                request.call, results, tokens_per_s=host.tokens_per_s, retry_after_s=host.retry_after_s()
            )
        except BertserveError as e:  # DeadlineExceeded too: the batcher dropped it unrun
            reply = wire.encode_error(request.call, e)
        except Exception:
            log.exception("a call of model %r failed in the engine (request id %s)", request.model, request.request_id)
            error = InternalFailure(f"internal error in the engine (request id {request.request_id})")
            reply = wire.encode_error(request.call, error)
        self._post(peer, reply)

    def _host_of(self, name: str, generation: int) -> ModelHost:
        """The instance a call holds: the router's, or one being unloaded or replaced, which the
        calls that the front ends admitted before it left still reach. The parts of one call (a
        long Answer's windows) so all run on the instance it started on."""
        if name in self._router and (current := self._router.get(name)).generation == generation:
            return current
        if (leaving := self._manager.leaving.get((name, generation))) is not None:
            return leaving
        if name not in self._router:
            return self._router.get(name)  # raises ModelNotFound with the router's message
        raise ModelUnavailable(
            f"model {name!r} was reloaded and the instance this call started on is gone; retry the call"
        )

    async def _settle(self, name: str) -> Drained:
        """Once an instance of model name has left the router (unloaded, or replaced by a reload):
        every front end applies the table without it, and acknowledges it once its own calls on
        it have ended or its grace period ran out."""
        self._departed[name] = [0, 0]
        try:
            await self._table_seen_by_all(self._manager.grace_period_s + TABLE_SEEN_WAIT_S)
            return Drained(*self._departed[name])
        finally:
            del self._departed[name]

    async def _admin(self, peer: bytes, call: int, action: str, args: tuple[Any, ...]) -> None:
        failure: tuple[str, str, float | None] | None = None
        value: Any = None
        try:
            value = await self._change(action, *args)
        except BertserveError as e:
            failure = wire.error_fields(e)
        except Exception as e:
            log.exception("the change %s of the engine's models failed", action)
            failure = wire.error_fields(InternalFailure(f"the change {action} failed: {type(e).__name__}"))
        await self._table_seen_by_all()
        self._send(peer, wire.encode_pickled(wire.ADMIN_DONE, (call, failure, value)))

    async def _change(self, action: str, *args: Any) -> Any:
        if action == "load":  # the instance made, which the front end answers with
            spec: ModelSpec = args[0]
            host = await self._manager.load(spec)
            return host.name, host.generation
        if action == "reload":
            name, spec = args
            host = await self._manager.reload(name, spec)
            return host.name, host.generation
        if action == "unload":
            return await self._manager.unload(args[0])
        raise ValueError(f"unknown change {action!r}")

    async def _table_seen_by_all(self, wait_s: float = TABLE_SEEN_WAIT_S) -> None:
        """Wait until every front end connected now has applied the table as it is now (at most wait_s)."""
        self.models_changed()
        await asyncio.sleep(0)  # the broadcast runs, and fixes the version to wait for
        version = self._version
        waiting = set(self._peers)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s), self._seen:
                await self._seen.wait_for(lambda: all(self._peers.get(p, version) >= version for p in waiting))

    async def _notify_seen(self) -> None:
        async with self._seen:
            self._seen.notify_all()

    def _oldest_pass_s(self) -> float:
        """How long the longest-running pass in flight has run, in seconds (0: none)."""
        now = time.monotonic_ns()
        started = [start for host in self._router for start in host.batcher.running_since_ns()]
        return (now - min(started)) / 1e9 if started else 0.0


def _reply_unsent(error: zmq.ZMQError) -> None:
    log.debug("replies to a front end that is gone were dropped: %s", error)
