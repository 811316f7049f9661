"""Route a request's model name to its ModelHost."""

from __future__ import annotations

from collections.abc import Iterator

from bertserve.errors import ModelNotFound, quoted
from bertserve.serving.model_host import ModelHost

__all__ = ["Router"]


class Router:
    def __init__(self, hosts: list[ModelHost], default_model: str) -> None:
        self._hosts = {h.name: h for h in hosts}
        self.default_model = default_model

    def __iter__(self) -> Iterator[ModelHost]:
        return iter(self._hosts.values())

    def get(self, name: str) -> ModelHost:
        """The host of name; an empty name means the default model."""
        key = name or self.default_model
        try:
            return self._hosts[key]
        except KeyError:
            raise ModelNotFound(f"no model named {quoted(key)}; configured models: {sorted(self._hosts)}") from None
