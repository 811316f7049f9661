"""``options:`` of the transformers-backed plugins: which faster paths a model may take."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

__all__ = ["TransformersOptions"]


class TransformersOptions(BaseModel):
    """``options:`` of the transformers-backed plugins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: float32, bfloat16 on CPU: linear layers on oneDNN with weights packed once, checked at load.
    onednn_linear: StrictBool = True
    #: Tokens per row when short sequences share the rows of a pass.
    pack_row_tokens: Annotated[StrictInt, Field(ge=1)] = 64
    #: The encoder under torch.compile, checked against eager at load (see bertserve.runtime.compiling).
    compile: StrictBool = False
    #: Packed passes as a TorchScript trace; unset: on CPUs, off on GPUs (see bertserve.runtime.tracing).
    trace: StrictBool | None = None
