"""The shared transformers-backed plugin: everything BERT variants have in common.

A variant subclasses :class:`TransformersPlugin` and states only what differs: the model
types it accepts, its default checkpoint, whether it has token types. Third-party plugins
may subclass it too, importing it from here. It lives in :mod:`bertserve.runtime.transformers`,
one module per part; this module keeps the names where plugins have always found them.
"""

from __future__ import annotations

from bertserve.runtime.transformers import TransformersOptions, TransformersPlugin

__all__ = ["TransformersOptions", "TransformersPlugin"]
