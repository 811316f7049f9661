"""Process-wide settings that decide how gRPC, tokenization and torch share the CPU cores."""

from __future__ import annotations

import logging
import os

from bertserve.config import ServerConfig

__all__ = ["configure_runtime"]

log = logging.getLogger(__name__)


def configure_runtime(config: ServerConfig) -> None:
    """Apply the thread settings before any model loads.

    Tokenizers' own Rust thread pool would compete with torch's intra-op threads on small
    machines; bertserve already tokenizes on its own pool, so that inner parallelism is off
    unless the environment says otherwise.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # per-model progress bars would interleave in server logs

    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    log.info(
        "threads: torch intra-op %d, tokenizers parallelism %s",
        torch.get_num_threads(),
        os.environ["TOKENIZERS_PARALLELISM"],
    )
