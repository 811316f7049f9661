"""Route a request's model name to its ModelHost; the table changes as models are loaded and unloaded."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from bertserve.errors import ModelNotFound, quoted
from bertserve.serving.model_host import ModelHost

__all__ = ["Router"]


class Router:
    def __init__(self, hosts: list[ModelHost], default_model: str) -> None:
        self._hosts = {h.name: h for h in hosts}
        self.default_model = default_model

    def __iter__(self) -> Iterator[ModelHost]:
        return iter(list(self._hosts.values()))  # a copy: the table may change while a caller iterates

    def __contains__(self, name: object) -> bool:
        return name in self._hosts

    def get(self, name: str) -> ModelHost:
        """The host of name; an empty name means the default model."""
        key = name or self.default_model
        try:
            return self._hosts[key]
        except KeyError:
            raise ModelNotFound(f"no model named {quoted(key)}; models: {sorted(self._hosts)}") from None

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[ModelHost]:
        """The host of name, held for one call: a host being replaced or removed frees its model only
        once the calls that hold it have ended (see ModelHost.drain)."""
        host = self.get(name)
        with host.held():
            yield host

    def put(self, host: ModelHost) -> ModelHost | None:
        """Route host's name to host from now on (its place in the listing kept); the host it replaces."""
        previous = self._hosts.get(host.name)
        self._hosts[host.name] = host
        return previous

    def remove(self, name: str) -> ModelHost:
        host = self.get(name)
        del self._hosts[host.name]
        return host
