"""A front end's models: each engine's table applied to this process's router, and the admin
changes sent to the engine that holds the model (the models are the engines'; see
bertserve.serving.engine_service). There is one engine per device; each table speaks for the
models of its engine alone.

An instance the engine loaded anew (a load, a reload, an engine restarted) gets a host of its own
here; during a reload the host of the old instance serves until the new one's tokenizer is
loaded, as within one process. A model the table no longer lists is gone here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bertserve.api import ModelSpec
from bertserve.errors import InvalidRequest, ModelExists, ModelNotFound, PreconditionFailed
from bertserve.serving.engine_link import EngineLink
from bertserve.serving.engine_wire import ModelEntry, Table
from bertserve.serving.front_host import FrontEndHost
from bertserve.serving.model_host import Drained, ModelHost, ModelState
from bertserve.serving.model_manager import late_error, reloaded_name, start_change, unloaded_name
from bertserve.serving.name_locks import NameLocks
from bertserve.serving.router import Router

__all__ = ["EngineModels"]


class EngineModels:
    """The model changes of a front end (the same calls as bertserve.serving.model_manager's), and
    the table that keeps its router in step with the engine's."""

    def __init__(
        self,
        router: Router,
        *,
        new_host: Callable[[ModelEntry, str, str], FrontEndHost],
        parse_entry: Callable[[str], ModelSpec],
        published: Callable[[ModelHost], None],
        removed: Callable[[str], None],
        device_of: Callable[[ModelSpec], str],
        grace_period_s: float,
        names: NameLocks,
    ) -> None:
        """new_host(entry, engine, device) makes the host of an instance; device_of says which
        engine's device a model entry belongs on; grace_period_s bounds the wait for the calls on
        an unloaded model; names holds a name across the front ends while a load of it is decided."""
        self._router = router
        self._new_host = new_host
        self._parse_entry = parse_entry
        self._published = published
        self._removed = removed
        self._device_of = device_of
        self._grace_period_s = grace_period_s
        self._names = names
        self._loads: set[asyncio.Task[tuple[str, int]]] = set()
        #: The instance that last took each name: what a load or reload made, to answer with even
        #: when another change has replaced or unloaded it before the engine's answer came.
        self._latest: dict[str, FrontEndHost] = {}
        self.links: dict[str, EngineLink] = {}  # by device; set once made: the links call apply and lost
        self._stopping: set[asyncio.Task[None]] = set()

    # -- the engine's table -----------------------------------------------------------------

    async def apply(self, device: str, table: Table) -> dict[str, tuple[int, int]]:
        """Make the router's models of device's engine what its table says: new instances get
        hosts (their tokenizers loaded before they take over from a ready one), gone models leave.

        Returns once the calls on the instances that left (unloaded, or replaced by a reload) have
        ended, or the grace period ran out and those still running were failed, as within one
        process: by name, the calls that finished and those abandoned. The engine's change waits
        for that, and meanwhile runs those calls' passes on the instance they started on."""
        listed = {entry.spec.name for entry in table.models}
        leaving: list[tuple[FrontEndHost, str]] = []
        for host in list(self._router):
            if isinstance(host, FrontEndHost) and host.device == device and host.name not in listed:
                self._router.remove(host.name)
                leaving.append((host, "unloaded"))
                self._retire(host)
                self._removed(host.name)
        loads: list[Awaitable[None]] = []
        take_overs: list[Awaitable[FrontEndHost | None]] = []
        replaced: list[FrontEndHost] = []
        for entry in table.models:
            current = self._current(entry.spec.name)
            if current is not None and current.device != device:
                continue  # the same name on another engine: the first keeps it (loads hold the name, so only a fault)
            if current is not None and current.is_instance(table.engine, entry):
                current.follow(entry)
                if entry.state == ModelState.READY.value and current.state is not ModelState.READY:
                    loads.append(current.load(retry=False))
                continue
            new = self._new_host(entry, table.engine, device)
            if entry.state == ModelState.READY.value and current is not None and current.state is ModelState.READY:
                take_overs.append(self._take_over_when_loaded(current, new))
            else:
                self._take_over(current, new)
                if current is not None:
                    replaced.append(current)
                if entry.state == ModelState.READY.value:
                    loads.append(new.load(retry=False))
        done = await asyncio.gather(*take_overs, *loads)
        replaced += [host for host in done[: len(take_overs)] if host is not None]
        # An instance the same engine replaced was reloaded; one of an engine gone went with it.
        leaving += [(host, "reloaded") for host in replaced if host.engine == table.engine]
        drained = await asyncio.gather(*(self._drain(host, what) for host, what in leaving))
        return {host.name: (each.finished, each.abandoned) for (host, _), each in zip(leaving, drained, strict=True)}

    async def _drain(self, host: FrontEndHost, what: str) -> Drained:
        """Wait for the calls on an instance that left to end, up to the grace period; then fail
        those still running, as a drain within one process does."""
        return await host.drain(self._grace_period_s, late_error(host.name, what, self._grace_period_s))

    def lost(self, device: str) -> None:
        """device's engine went away: its models wait for it."""
        for host in self._router:
            if isinstance(host, FrontEndHost) and host.device == device:
                host.engine_lost()

    def _current(self, name: str) -> FrontEndHost | None:
        if name not in self._router:
            return None
        host = self._router.get(name)
        return host if isinstance(host, FrontEndHost) else None

    async def _take_over_when_loaded(self, old: FrontEndHost, new: FrontEndHost) -> FrontEndHost | None:
        """new takes over from old once its tokenizer is loaded; old, when it did."""
        await new.load(retry=False)
        if self._current(new.name) is old:
            self._take_over(old, new)
            return old
        return None

    def _take_over(self, old: FrontEndHost | None, new: FrontEndHost) -> None:
        if old is not None:
            old.unpublish()
            self._retire(old)
        self._router.put(new)
        self._latest[new.name] = new
        self._published(new)

    def _retire(self, host: ModelHost) -> None:
        """Free a host's tokenizer once the calls holding it end (their passes are the engine's)."""

        async def when_idle() -> None:
            await host.idle()
            await host.stop()

        host.retire()
        task = asyncio.create_task(when_idle(), name=f"retire:{host.name}")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    # -- the admin changes, done by the engine ------------------------------------------------

    def parse(self, entry: str) -> ModelSpec:
        """As ModelManager.parse: the checks of this server's admin settings are made here."""
        if not entry.strip():
            raise InvalidRequest("entry is empty: send a model entry such as {name: m, plugin: bert, source: ./m}")
        return self._parse_entry(entry)

    async def load(self, spec: ModelSpec) -> ModelHost:
        """As ModelManager.load. The name is held across the front ends until the engine has
        answered (see bertserve.serving.name_locks), however the call ends: a caller gone while its
        engine loads must not let a load of the same name go to another engine meanwhile."""

        async def decided() -> tuple[str, int]:
            async with self._names.held(spec.name):
                if spec.name in self._router:  # perhaps on another engine than the one this entry's device picks
                    raise ModelExists(f"a model named {spec.name!r} is already loaded; ReloadModel replaces it")
                link = self._engine_for(spec)
                made: tuple[str, int] = await link.admin("load", spec)
                return made

        name, generation = await asyncio.shield(start_change(self._loads, spec.name, decided()))
        host = self._instance(self._engine_for(spec), name, generation)
        host.ready()
        return host

    async def unload(self, name: str) -> Drained:
        name = unloaded_name(name)
        drained: Drained = await self._engine_of(name).admin("unload", name)
        return drained

    async def reload(self, name: str, spec: ModelSpec | None = None) -> ModelHost:
        name = reloaded_name(name, spec, self._router.default_model)
        link = self._engine_of(name)
        if spec is not None and self._engine_for(spec) is not link:
            raise PreconditionFailed(
                f"model {name!r} runs on {self._device_at(link)}, and the new entry puts it on "
                f"{self._device_of(spec)}: a reload keeps a model on its device; unload it, then load the new entry"
            )
        name, generation = await link.admin("reload", name, spec)
        host = self._instance(link, name, generation)
        host.ready()
        return host

    def _instance(self, link: EngineLink, name: str, generation: int) -> FrontEndHost:
        """The host of the instance of name that a change made (generation, on link's engine), as
        the change's answer: the one serving, or, where a later change already replaced or unloaded
        it, the one it was (as one process answers with the host its change made)."""
        host = self._latest.get(name)  # the one serving, if any: every host takes its name through _take_over
        if host is not None and host.generation == generation and self.links.get(host.device) is link:
            return host
        self._router.get(name)  # raises ModelNotFound with the router's message
        raise ModelNotFound(f"model {name!r} is not served here")

    async def stop(self) -> None:
        """Stop waiting for the engines' answers to loads (the changes themselves are the engines')."""
        for task in self._loads:
            task.cancel()
        await asyncio.gather(*self._loads, return_exceptions=True)

    def _engine_for(self, spec: ModelSpec) -> EngineLink:
        """The link to the engine of the device spec puts the model on."""
        device = self._device_of(spec)
        if device not in self.links:
            raise PreconditionFailed(
                f"model {spec.name!r} would run on {device}, and no engine of this server runs that device (they "
                f"run: {', '.join(self.links)}); list a model on it in the configuration and restart, or choose "
                "one of those devices"
            )
        return self.links[device]

    def _engine_of(self, name: str) -> EngineLink:
        """The link to the engine that holds model name (ModelNotFound, as in one process, if none)."""
        host = self._current(name)
        if host is None:
            self._router.get(name)  # raises ModelNotFound with the router's message
            raise ModelNotFound(f"model {name!r} is not served here")
        return self.links[host.device]

    def _device_at(self, link: EngineLink) -> str:
        return next(device for device, each in self.links.items() if each is link)
