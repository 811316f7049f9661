"""Find plugins through the ``bertserve.plugins`` entry-point group.

A plugin that fails to import, or is not an EncoderPlugin, is logged and skipped: one broken
third-party package never keeps the server, or the other plugins, from starting.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from bertserve.api import EncoderPlugin

__all__ = ["ENTRY_POINT_GROUP", "PluginRegistry", "discover_plugins"]

ENTRY_POINT_GROUP = "bertserve.plugins"

log = logging.getLogger(__name__)


class PluginRegistry:
    """Plugins that imported, by entry-point name, and why the others did not."""

    def __init__(self, plugins: dict[str, type[EncoderPlugin]], broken: dict[str, str]) -> None:
        self.plugins = plugins
        self.broken = broken

    def get(self, name: str) -> type[EncoderPlugin]:
        """The plugin class of that name; KeyError with the reason when it is missing or broken."""
        if name in self.plugins:
            return self.plugins[name]
        if name in self.broken:
            raise KeyError(f"plugin {name!r} failed to import: {self.broken[name]}")
        raise KeyError(f"no plugin {name!r} is installed; installed: {sorted(self.plugins)}")


def discover_plugins() -> PluginRegistry:
    plugins: dict[str, type[EncoderPlugin]] = {}
    broken: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as e:  # a third party's import error must not stop the server
            broken[ep.name] = f"{type(e).__name__}: {e}"
            log.warning("skipping plugin %r (%s): %s", ep.name, ep.value, broken[ep.name])
            continue
        if not (isinstance(cls, type) and issubclass(cls, EncoderPlugin)):
            broken[ep.name] = f"{ep.value} is not an EncoderPlugin subclass"
            log.warning("skipping plugin %r: %s", ep.name, broken[ep.name])
            continue
        plugins[ep.name] = cls
    return PluginRegistry(plugins, broken)
