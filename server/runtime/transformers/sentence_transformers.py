"""The settings a sentence-transformers checkpoint declares beside its transformers files."""

from __future__ import annotations

import json
from pathlib import Path

from bertserve.api import Pooling

__all__ = ["sentence_transformers_settings"]


def sentence_transformers_settings(source: str) -> tuple[Pooling | None, int | None]:
    """The pooling and input limit a local sentence-transformers checkpoint declares, if any."""
    root = Path(source)
    pooling, limit = None, None
    pooling_file = root / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        modes = json.loads(pooling_file.read_text())
        if modes.get("pooling_mode_mean_tokens"):
            pooling = Pooling.MEAN
        elif modes.get("pooling_mode_cls_token"):
            pooling = Pooling.CLS
    settings_file = root / "sentence_bert_config.json"
    if settings_file.is_file():
        limit = json.loads(settings_file.read_text()).get("max_seq_length")
    return pooling, limit
