"""The transformers-backed plugin that the BERT variants subclass, one module per part:

- :mod:`.options`: the plugins' ``options:`` schema;
- :mod:`.state`: what a plugin holds once loaded, shared by the parts below;
- :mod:`.loading`: a checkpoint's files, config, tokenizer and model;
- :mod:`.sentence_transformers`: the settings a sentence-transformers checkpoint declares;
- :mod:`.tokenization`: texts, pairs and question-answering windows as Encodings;
- :mod:`.passes`: the encoder's padded and packed passes (Embed);
- :mod:`.acceleration`: oneDNN linear layers, packing, compiling and tracing, checked at load;
- :mod:`.head_logits`: the heads' raw outputs;
- :mod:`.plugin`: :class:`TransformersPlugin`, composed of them, which loads and unloads.

``bertserve.transformers_plugin`` re-exports the public names, the path plugins import them by.
"""

from __future__ import annotations

from .options import TransformersOptions
from .plugin import TransformersPlugin

__all__ = ["TransformersOptions", "TransformersPlugin"]
