"""What the processes that run no model keep out of their imports: torch.

A front end runs the gRPC edge, tokenizes and post-processes; its engine runs the passes. The
supervisor reads the plugins' option schemas and watches the others. Yet transformers imports
torch along with its tokenizers whenever torch is installed, which costs each such process about
180 MiB of resident memory and a second or two of start-up (measured with MiniLM's tokenizer
loaded: 82 MiB without torch, 265 MiB with it; a CUDA build of torch maps more).

So before anything imports transformers, such a process marks torch absent: None in sys.modules, so
that ``import torch`` fails and transformers finds no torch. It does so when every installed
plugin is bertserve's own, whose modules name torch only inside the functions that load and run a
model (bertserve.runtime.lazy_torch) and whose load_tokenizer loads the tokenizer alone. A plugin
of another package may import torch at its top or tokenize with it (the default load_tokenizer
loads the whole model), so where one is installed, these processes import torch as they always did.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

from bertserve.app.discovery import ENTRY_POINT_GROUP

__all__ = ["keep_torch_out"]

log = logging.getLogger(__name__)

_OWN_DISTRIBUTION = "bertserve"
# transformers says so at import when it finds no torch; in a front end that is the point.
_NO_TORCH_NOTICE = "PyTorch was not found"


def keep_torch_out() -> bool:
    """In a process that runs no model (a front end, the supervisor), before transformers is
    imported: leave torch out of it when every installed plugin is bertserve's own; whether it did."""
    if "transformers" in sys.modules or "torch" in sys.modules:
        return False  # too late: something already took torch in, or decided without it
    plugins = entry_points(group=ENTRY_POINT_GROUP)
    foreign = sorted(ep.name for ep in plugins if ep.dist is None or ep.dist.name != _OWN_DISTRIBUTION)
    if foreign:
        log.debug("torch stays importable: plugins of other packages may need it (%s)", ", ".join(foreign))
        return False
    sys.modules["torch"] = None  # type: ignore[assignment]  # import torch raises ModuleNotFoundError
    logging.getLogger("transformers").addFilter(lambda record: _NO_TORCH_NOTICE not in record.getMessage())
    return True
