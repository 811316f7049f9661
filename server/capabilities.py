"""The capability table: for each kind of work a model can do, its RPC, the operation it runs,
the plugin methods it needs and its protobuf value.

Adding a head is one row here, one flow module in bertserve.serving, and its codec in
bertserve.edge. The table is checked against a plugin as a model loads (check_plugin): a plugin
that claims a capability it cannot serve fails then, naming the method, not on the first call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from bertserve.api import LEGACY_HEAD_METHODS, Capability, EncoderPlugin, Head
from bertserve.errors import PluginContractError

__all__ = ["CAPABILITIES", "CapabilityRow", "check_plugin", "missing_message"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CapabilityRow:
    capability: Capability
    rpc: str  # the RPC that uses it
    needs: str  # what a model must have for it, for the message of one that lacks it
    head: Head | None  # the head it runs through head_logits, if any (Embed runs embed)
    methods: tuple[str, ...]  # the plugin methods it needs besides load and tokenize
    proto_value: int  # its value in the protobuf enum bertserve.v1.Capability


CAPABILITIES: dict[Capability, CapabilityRow] = {
    row.capability: row
    for row in (
        CapabilityRow(Capability.TOKENIZE, "Tokenize", "a tokenizer", None, (), 1),
        CapabilityRow(Capability.EMBED, "Embed", "an encoder", None, ("embed",), 2),
        CapabilityRow(
            Capability.ANSWER,
            "Answer",
            "a question-answering head (a checkpoint fine-tuned for QA)",
            Head.QUESTION_ANSWERING,
            ("tokenize_windows",),
            3,
        ),
        CapabilityRow(
            Capability.FILL_MASK,
            "FillMask",
            "a masked-language-model head",
            Head.MASKED_LM,
            ("decode", "target_ids"),
            4,
        ),
        CapabilityRow(
            Capability.DETECT_REPLACED_TOKENS,
            "DetectReplacedTokens",
            "ELECTRA's discriminator head",
            Head.REPLACED_TOKENS,
            (),
            5,
        ),
        CapabilityRow(
            Capability.CLASSIFY, "Classify", "a sequence-classification head", Head.SEQUENCE_CLASSIFICATION, (), 6
        ),
        CapabilityRow(
            Capability.RERANK,
            "Rerank",
            "a cross-encoder head (sequence classification with one label)",
            Head.SEQUENCE_CLASSIFICATION,
            (),
            7,
        ),
        CapabilityRow(
            Capability.CLASSIFY_TOKENS,
            "ClassifyTokens",
            "a token-classification head",
            Head.TOKEN_CLASSIFICATION,
            ("tokens_to_string",),
            8,
        ),
        CapabilityRow(Capability.SIMILARITY, "Similarity", "an encoder", None, ("embed",), 9),
    )
}


def missing_message(name: str, capability: Capability, offered: Iterable[Capability]) -> str:
    """What a call to a model that lacks capability is told."""
    row = CAPABILITIES[capability]
    serves = ", ".join(CAPABILITIES[c].rpc for c in Capability if c in set(offered))
    return f"model {name!r} cannot serve {row.rpc}: that needs {row.needs}; it serves {serves}"


def check_plugin(plugin: EncoderPlugin, capabilities: Iterable[Capability]) -> None:
    """Raise PluginContractError, naming the method, when the plugin claims a capability whose
    methods it does not implement; log once for each head it serves through the older contract."""
    cls = type(plugin)
    for capability in capabilities:
        row = CAPABILITIES[capability]
        for method in row.methods:
            if not _overrides(cls, method):
                raise PluginContractError(
                    f"plugin {cls.__name__} claims {row.rpc} but does not implement {method}(): implement it, "
                    f"or leave {capability.name} out of ModelInfo.capabilities"
                )
        if row.head is None or _overrides(cls, "head_logits"):
            continue
        legacy = LEGACY_HEAD_METHODS[row.head]
        if getattr(cls, legacy, None) is None:
            raise PluginContractError(
                f"plugin {cls.__name__} claims {row.rpc} but does not implement head_logits() for "
                f"Head.{row.head.name}: implement it, or leave {capability.name} out of ModelInfo.capabilities"
            )
        log.warning(
            "plugin %s serves %s through %s(), of the older plugin contract: implement head_logits(head, batch) "
            "for Head.%s instead",
            cls.__name__,
            row.rpc,
            legacy,
            row.head.name,
        )


def _overrides(cls: type[EncoderPlugin], method: str) -> bool:
    return getattr(cls, method, None) is not getattr(EncoderPlugin, method, None)
