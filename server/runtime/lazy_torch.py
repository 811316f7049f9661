"""torch, imported where first used rather than where named.

A front-end process imports the plugins to tokenize with them and never runs a pass; it keeps
torch, and the few hundred MiB it maps, out of its memory (see bertserve.app.front_end_imports).
So the modules a plugin is made of name torch through this module when they use it only inside
their functions; a module that subclasses a torch class at import (a torch.nn.Module) is itself
imported inside the functions that need it.
"""

from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Any

__all__ = ["torch"]


class _ImportedOnUse(types.ModuleType):
    """A stand-in for the module of its name that imports it at the first attribute read."""

    def __getattr__(self, name: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)  # later reads find it here, as fast as the module's own
        return getattr(module, name)


if TYPE_CHECKING:
    import torch as torch
else:
    torch = _ImportedOnUse("torch")
