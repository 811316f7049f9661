"""A front end's models: the engine's table applied to this process's router, and the admin
changes sent to the engine (the models are the engine's; see bertserve.serving.engine_service).

An instance the engine loaded anew (a load, a reload, an engine restarted) gets a host of its own
here; during a reload the host of the old instance serves until the new one's tokenizer is
loaded, as within one process. A model the table no longer lists is gone here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bertserve.api import ModelSpec
from bertserve.errors import InvalidRequest
from bertserve.serving.engine_link import EngineLink
from bertserve.serving.engine_wire import ModelEntry, Table
from bertserve.serving.front_host import FrontEndHost
from bertserve.serving.model_host import Drained, ModelHost, ModelState
from bertserve.serving.router import Router

__all__ = ["EngineModels"]


class EngineModels:
    """The model changes of a front end (the same calls as bertserve.serving.model_manager's), and
    the table that keeps its router in step with the engine's."""

    def __init__(
        self,
        router: Router,
        *,
        new_host: Callable[[ModelEntry, str], FrontEndHost],
        parse_entry: Callable[[str], ModelSpec],
        published: Callable[[ModelHost], None],
        removed: Callable[[str], None],
    ) -> None:
        self._router = router
        self._new_host = new_host
        self._parse_entry = parse_entry
        self._published = published
        self._removed = removed
        self.link: EngineLink | None = None  # set once made: the link calls apply and lost
        self._stopping: set[asyncio.Task[None]] = set()

    # -- the engine's table -----------------------------------------------------------------

    async def apply(self, table: Table) -> None:
        """Make the router what the table says: new instances get hosts (their tokenizers loaded
        before they take over from a ready one), gone models leave."""
        self._router.default_model = table.default_model
        listed = {entry.spec.name for entry in table.models}
        for host in list(self._router):
            if host.name not in listed:
                self._router.remove(host.name)
                self._retire(host)
                self._removed(host.name)
        loads = []
        for entry in table.models:
            current = self._current(entry.spec.name)
            if current is not None and current.is_instance(table.engine, entry):
                current.follow(entry)
                if entry.state == ModelState.READY.value and current.state is not ModelState.READY:
                    loads.append(current.load(retry=False))
                continue
            new = self._new_host(entry, table.engine)
            if entry.state == ModelState.READY.value and current is not None and current.state is ModelState.READY:
                loads.append(self._take_over_when_loaded(current, new))
            else:
                self._take_over(current, new)
                if entry.state == ModelState.READY.value:
                    loads.append(new.load(retry=False))
        await asyncio.gather(*loads)

    def lost(self) -> None:
        """The engine went away: every model waits for it."""
        for host in self._router:
            if isinstance(host, FrontEndHost):
                host.engine_lost()

    def _current(self, name: str) -> FrontEndHost | None:
        if name not in self._router:
            return None
        host = self._router.get(name)
        return host if isinstance(host, FrontEndHost) else None

    async def _take_over_when_loaded(self, old: FrontEndHost, new: FrontEndHost) -> None:
        await new.load(retry=False)
        if self._current(new.name) is old:
            self._take_over(old, new)

    def _take_over(self, old: FrontEndHost | None, new: FrontEndHost) -> None:
        if old is not None:
            old.unpublish()
            self._retire(old)
        self._router.put(new)
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
        name = await self._engine().admin("load", spec)
        host = self._router.get(name)
        host.ready()
        return host

    async def unload(self, name: str) -> Drained:
        drained: Drained = await self._engine().admin("unload", name)
        return drained

    async def reload(self, name: str, spec: ModelSpec | None = None) -> ModelHost:
        name = await self._engine().admin("reload", name, spec)
        host = self._router.get(name)
        host.ready()
        return host

    async def stop(self) -> None:
        """Nothing to call off here: the changes under way are the engine's."""

    def _engine(self) -> EngineLink:
        assert self.link is not None, "the link to the engine is not made"
        return self.link
