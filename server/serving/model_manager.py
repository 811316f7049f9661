"""Load, unload and reload models while the server runs.

The router always points at the instance that serves a name. A reload loads the new instance
beside the old one and switches the router only once it is ready; the old instance then drains
(the calls that hold it finish, up to the grace period) before its model is freed. Changes to
one name are serialised; changes to different names run side by side. Each change runs as a
task of its own, so a caller that goes away (deadline, cancel) does not cut a load in half.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from bertserve.api import ModelSpec
from bertserve.errors import InvalidRequest, ModelExists, ModelFailed, ModelUnavailable, PreconditionFailed, quoted
from bertserve.serving.model_host import Drained, ModelHost, ModelState
from bertserve.serving.router import Router

__all__ = ["ModelChanges", "ModelManager", "late_error", "reloaded_name", "start_change", "unloaded_name"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class ModelChanges(Protocol):
    """The run-time changes the admin RPCs make: ModelManager's within one process, or the engine's
    from a front end (bertserve.serving.engine_models.EngineModels)."""

    def parse(self, entry: str) -> ModelSpec: ...
    async def load(self, spec: ModelSpec) -> ModelHost: ...
    async def unload(self, name: str) -> Drained: ...
    async def reload(self, name: str, spec: ModelSpec | None = None) -> ModelHost: ...
    async def stop(self) -> None: ...


def unloaded_name(name: str) -> str:
    """The model an UnloadModel names: InvalidRequest when it names none."""
    if not name:
        raise InvalidRequest("name is empty: name the model to unload")
    return name


def reloaded_name(name: str, spec: ModelSpec | None, default_model: str) -> str:
    """The model a ReloadModel names (empty: the default model); InvalidRequest when its new entry
    names another."""
    name = name or default_model
    if spec is not None and spec.name != name:
        raise InvalidRequest(f"the entry is named {quoted(spec.name)}, not {quoted(name)}: a reload keeps the name")
    return name


class ModelManager:
    """The run-time changes to a server's models.

    new_host makes an unstarted host of a spec (published says whether its state shows at once);
    parse_entry turns an entry's text into a spec, raising InvalidRequest; published is called with
    each host that starts answering for its name, removed with each name that no longer has one;
    ended is called each time a change has ended, whether it succeeded, failed or was called off.
    """

    def __init__(
        self,
        router: Router,
        *,
        new_host: Callable[[ModelSpec, bool], ModelHost],
        parse_entry: Callable[[str], ModelSpec],
        published: Callable[[ModelHost], None],
        removed: Callable[[str], None],
        grace_period_s: float,
        ended: Callable[[], None] = lambda: None,
    ) -> None:
        self._router = router
        self._new_host = new_host
        self._parse_entry = parse_entry
        self._published = published
        self._removed = removed
        self._ended = ended
        self.grace_period_s = grace_period_s
        #: Where calls on a model are also held elsewhere (an engine's front ends): called once an
        #: instance has left the router (unloaded, or replaced by a reload), it returns when those
        #: calls have ended, and how.
        self.settle: Callable[[str], Awaitable[Drained]] | None = None
        #: Instances unloaded or replaced and still draining, by name and generation: the calls
        #: that hold them may still need them.
        self.leaving: dict[tuple[str, int], ModelHost] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._changes: set[asyncio.Task[Any]] = set()

    def parse(self, entry: str) -> ModelSpec:
        """The spec of a model entry's text; InvalidRequest naming what is wrong with it."""
        if not entry.strip():
            raise InvalidRequest("entry is empty: send a model entry such as {name: m, plugin: bert, source: ./m}")
        return self._parse_entry(entry)

    async def load(self, spec: ModelSpec) -> ModelHost:
        """Add the model of spec and wait for its first load attempt; raise ModelFailed when it failed."""
        host = await self._change(spec.name, lambda: self._load(spec))
        host.ready()
        return host

    async def unload(self, name: str) -> Drained:
        name = unloaded_name(name)
        return await self._change(name, lambda: self._unload(name))

    async def reload(self, name: str, spec: ModelSpec | None = None) -> ModelHost:
        """Load name again (as spec says, when given); the old instance serves until the new one is ready."""
        name = reloaded_name(name, spec, self._router.default_model)
        host = await self._change(name, lambda: self._reload(name, spec))
        host.ready()
        return host

    async def stop(self) -> None:
        """Call off the changes under way (the server is stopping)."""
        for task in self._changes:
            task.cancel()
        await asyncio.gather(*self._changes, return_exceptions=True)

    async def _change(self, name: str, change: Callable[[], Awaitable[T]]) -> T:
        """Run change as its own task, one at a time per name; the caller only waits for it."""
        lock = self._locks.setdefault(name, asyncio.Lock())

        async def locked() -> T:
            async with lock:
                return await change()

        task = start_change(self._changes, name, locked())
        task.add_done_callback(lambda _: self._ended())
        return await asyncio.shield(task)

    async def _load(self, spec: ModelSpec) -> ModelHost:
        if spec.name in self._router:
            raise ModelExists(f"a model named {spec.name!r} is already loaded; ReloadModel replaces it")
        host = self._new_host(spec, True)
        self._router.put(host)
        self._published(host)
        log.info("model %r added (plugin %s, source %r)", spec.name, spec.plugin, spec.source)
        await host.load()
        return host

    async def _unload(self, name: str) -> Drained:
        host = self._router.get(name)
        if host.name == self._router.default_model:
            raise PreconditionFailed(
                f"model {host.name!r} is the server's default model (server.default_model), which cannot be unloaded"
            )
        self._router.remove(host.name)
        host.unpublish()
        self._removed(host.name)
        drained = await self._drain_out(host, "unloaded")
        log.info(
            "model %r unloaded: %d calls in flight finished, %d abandoned", name, drained.finished, drained.abandoned
        )
        return drained

    async def _reload(self, name: str, spec: ModelSpec | None) -> ModelHost:
        old = self._router.get(name)
        spec = spec or old.spec
        if old.state is not ModelState.READY:  # nothing served by the old one: replace it at once
            new = self._new_host(spec, False)
            self._take_over(old, new)
            await self._retire(old, "reloaded")
            log.info("model %r reloading (it was %s)", name, old.state.value)
            await new.load()
            return new
        new = self._new_host(spec, False)
        log.info("model %r reloading; the loaded instance serves meanwhile", name)
        await new.load(retry=False)
        if new.state is not ModelState.READY:
            raise ModelFailed(
                f"model {name!r} was not reloaded: {new.failure_reason}; the instance loaded before keeps serving"
            )
        self._take_over(old, new)
        drained = await self._drain_out(old, "reloaded")
        log.info(
            "model %r reloaded: the old instance's %d calls in flight finished, %d abandoned",
            name,
            drained.finished,
            drained.abandoned,
        )
        return new

    def _take_over(self, old: ModelHost, new: ModelHost) -> None:
        """Route old's name to new from now on."""
        old.unpublish()
        self._router.put(new)
        self._published(new)

    async def _drain_out(self, host: ModelHost, what: str) -> Drained:
        """Drain an instance that has left the router (what: unloaded, reloaded), where its calls
        are held too (settle), then here, and free its model."""
        key = (host.name, host.generation)
        self.leaving[key] = host
        try:
            elsewhere = await self.settle(host.name) if self.settle is not None else None
            drained = await self._retire(host, what)
        finally:
            self.leaving.pop(key, None)
        # Where the calls are held elsewhere, the passes here were theirs: the calls are counted there.
        return elsewhere or drained

    async def _retire(self, host: ModelHost, what: str) -> Drained:
        """Drain a host that no call can reach any more, then free its model."""
        host.retire()
        drained = await host.drain(self.grace_period_s, late_error(host.name, what, self.grace_period_s))
        await host.stop()
        return drained


def late_error(name: str, what: str, grace_s: float) -> Callable[[], ModelUnavailable]:
    """The error of a call still running on an instance that was what (unloaded, reloaded) when
    the grace period of its drain ran out."""

    def late() -> ModelUnavailable:
        return ModelUnavailable(
            f"model {name!r} was {what} and the call did not finish within the grace period of {grace_s:g}s "
            "(grace_period_s); retry it"
        )

    return late


def start_change(changes: set[asyncio.Task[Any]], name: str, change: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """change of model name as a task of its own, kept in changes while it runs: its caller waits
    for it shielded, and a caller that leaves does not call it off (what it left half done would
    be nobody's); its error is logged once."""
    task = asyncio.create_task(change, name=f"model-change:{quoted(name)}")
    changes.add(task)
    task.add_done_callback(changes.discard)
    task.add_done_callback(_note_outcome)
    return task


def _note_outcome(task: asyncio.Task[object]) -> None:
    """Take a change's error (its caller may have left: a cancelled call does not wait for the
    change it started), so that it is logged as what it is, not as an unretrieved task's."""
    if task.cancelled() or (error := task.exception()) is None:
        return
    log.info("%s ended: %s", task.get_name().replace("model-change:", "change of model "), error)
