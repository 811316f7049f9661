"""The plugin contract: what a BERT variant implements to be served by bertserve.

A plugin is a subclass of :class:`EncoderPlugin` registered under the entry-point group
``bertserve.plugins``. The server builds one instance per configured model, calls
:meth:`EncoderPlugin.fetch` on a loader thread and :meth:`EncoderPlugin.load` on the worker
of the model's device, then calls ``tokenize``, ``embed`` and ``head_logits`` from worker
threads only: every method here may block, and none of them ever sees protobuf or gRPC. This
module imports neither.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bertserve.errors import CapabilityNotSupported

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "INLINE_TOKENIZE_TEXTS",
    "Capability",
    "EmbedOutput",
    "EncoderPlugin",
    "Encoding",
    "Head",
    "ModelInfo",
    "ModelSpec",
    "Pooling",
    "QAWindowLogits",
    "tokenized_inline",
]


class Pooling(enum.Enum):
    """How per-token hidden states become one vector per input."""

    CLS = "cls"
    MEAN = "mean"
    POOLER = "pooler"


class Head(enum.Enum):
    """A head a plugin runs through head_logits: what its raw outputs are, per sequence."""

    QUESTION_ANSWERING = "question_answering"
    MASKED_LM = "masked_lm"
    REPLACED_TOKENS = "replaced_tokens"
    SEQUENCE_CLASSIFICATION = "sequence_classification"
    TOKEN_CLASSIFICATION = "token_classification"


#: The most texts of one call the server tokenizes on its event loop (see
#: EncoderPlugin.inline_tokenize_chars), however short: each costs a Rust tokenizer about 20 us
#: whatever its length (160 one-letter texts: 3.5 ms, where the hop to a tokenizer thread costs
#: about 250 us).
INLINE_TOKENIZE_TEXTS = 4


def tokenized_inline(texts: Sequence[str], pairs: Sequence[str] | None, max_chars: int) -> bool:
    """Whether a call is one the server tokenizes on its event loop: at most INLINE_TOKENIZE_TEXTS
    texts, of at most max_chars characters with their pairs (the plugin's inline_tokenize_chars)."""
    if len(texts) > INLINE_TOKENIZE_TEXTS:
        return False
    return sum(map(len, texts)) + (sum(map(len, pairs)) if pairs is not None else 0) <= max_chars


#: The method of each head in the older plugin contract, which head_logits replaces.
LEGACY_HEAD_METHODS = {
    Head.QUESTION_ANSWERING: "answer_windows",
    Head.MASKED_LM: "mask_logits",
    Head.REPLACED_TOKENS: "replaced_logits",
    Head.SEQUENCE_CLASSIFICATION: "sequence_logits",
    Head.TOKEN_CLASSIFICATION: "token_logits",
}


class Capability(enum.Enum):
    """A kind of work a loaded model can do."""

    TOKENIZE = "tokenize"
    EMBED = "embed"
    SIMILARITY = "similarity"
    ANSWER = "answer"
    FILL_MASK = "fill_mask"
    DETECT_REPLACED_TOKENS = "detect_replaced_tokens"
    CLASSIFY = "classify"
    RERANK = "rerank"
    CLASSIFY_TOKENS = "classify_tokens"


@dataclass(frozen=True)
class ModelSpec:
    """One model as the configuration describes it."""

    name: str
    plugin: str
    source: str  # a hub id, a local directory, or "pkg:<package>/<dir>" inside an installed package
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    revision: str | None = None
    max_input_tokens: int | None = None  # None: the model's own limit
    default_pooling: Pooling | None = None  # None: the plugin's default
    allow_pickle: bool = False  # load .bin (pickle) weights; off means safetensors only
    max_batch_tokens: int = 16384
    max_batch_size: int = 64
    max_queue_tokens: int = 262144
    max_queue_requests: int = 1024
    max_wait_ms: float = 0.0  # extra wait for more work after a busy pass; never when the model is idle
    pass_overhead_tokens: float = 32.0  # a pass's fixed cost in padded tokens: batching vs padding
    workers: int = 0  # worker threads, each running one forward pass at a time; 0: one per core's share on a CPU
    max_pass_ms: float = 100.0  # while calls contend, a pass holds what the model computes in this long
    max_context_bytes: int = 4 * 1024 * 1024  # UTF-8 bytes of one Answer context; its windows go through in parts
    options: dict[str, Any] = field(default_factory=dict)  # plugin-specific extras


@dataclass(frozen=True)
class ModelInfo:
    """What a model reports about itself once loaded."""

    capabilities: frozenset[Capability]
    devices: tuple[str, ...]
    dtype: str
    hidden_size: int
    max_input_tokens: int
    poolings: tuple[Pooling, ...]
    default_pooling: Pooling
    #: Poolings whose batches run packed (no padding computed): the batcher then fills passes fully.
    packed_poolings: tuple[Pooling, ...] = ()
    #: The classifier token's id ([CLS], <s>): Answer scores "no answer" on it, as the classic pipeline does.
    cls_token_id: int | None = None
    #: The labels of a classification head (sequence or token), by index (the checkpoint's id2label).
    labels: tuple[str, ...] = ()
    #: The checkpoint's problem_type ("single_label_classification", "multi_label_classification",
    #: "regression") or None: what Classify's default function follows.
    problem_type: str | None = None
    #: The mask token and its id, for FillMask.
    mask_token: str | None = None
    mask_token_id: int | None = None
    pad_token_id: int | None = None
    #: The unknown token's id: ClassifyTokens reports such a token by the text it covers.
    unk_token_id: int | None = None
    #: Whether the tokenizer's model marks word-continuing pieces (WordPiece's "##"): ClassifyTokens
    #: then tells subwords by their length, else by the spaces around them, as the pipeline does.
    word_aware: bool = False
    #: Whether the model takes segment ids: its encodings carry them, else zeros.
    uses_token_types: bool = True


@dataclass(frozen=True)
class Encoding:
    """One tokenized input (or input pair), unpadded. All lists have one entry per token."""

    ids: list[int]
    tokens: list[str]
    type_ids: list[int]
    special_tokens_mask: list[int]
    offsets: list[tuple[int, int]]
    sequence_ids: list[int]  # 0 first text, 1 pair, -1 special token
    word_ids: list[int]  # index of the word each token belongs to in its segment, -1 for special tokens
    full_length: int  # tokens before truncation; equals len(ids) when nothing was cut

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class EmbedOutput:
    """Embeddings of one batch, in batch order."""

    pooled: np.ndarray  # [batch, hidden] float32
    token_states: list[np.ndarray] | None  # per input [tokens, hidden] float32, when asked for


@dataclass(frozen=True)
class QAWindowLogits:
    """Start and end logits of one question-answering window, unpadded, as float32: what the older
    contract's answer_windows returns (head_logits returns them as one [tokens, 2] array)."""

    start: np.ndarray  # [tokens]
    end: np.ndarray  # [tokens]


class EncoderPlugin(abc.ABC):
    """One BERT variant.

    Methods are synchronous and may block; the server calls them on the model's worker
    thread (tokenization on a shared tokenizer thread), never on the event loop, except
    ``tokenize`` of small inputs where the plugin says that it is quick (see inline_tokenize_chars).
    """

    #: The entry-point name users put in ``plugin:`` of the configuration.
    variant: ClassVar[str]
    #: The schema of ``options:`` (a pydantic model; unknown options are errors), or None to take any.
    options_schema: ClassVar[type[BaseModel] | None] = None

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    def fetch(self) -> None:  # noqa: B027 (optional hook: a plugin whose files are local keeps it)
        """Get the model's files where load() can read them: downloads and disk only, no device work.

        Runs on a loader thread before load(), never on the device's worker, so a slow or failing
        download never holds up the traffic of other models on the same device.
        """

    @abc.abstractmethod
    def load(self) -> ModelInfo:
        """Load weights and tokenizer, place them on the device(s), and report capabilities.

        Runs on the worker of the model's device, after fetch().
        """

    def load_tokenizer(self, info: ModelInfo) -> None:
        """Load only what tokenize, tokenize_windows and the decoding methods need: in a front-end
        process, whose engine loaded the model with load() and reported info.

        Runs on a loader thread, after fetch(). The default loads the whole model, which is right
        for any plugin and costs a front end a copy of the weights; a plugin whose tokenizer stands
        alone loads just that.
        """
        self.load()

    def inline_tokenize_chars(self) -> int:
        """The most characters (texts and pairs together) of one call that tokenize costs less
        than a hop to a tokenizer thread and back (a few hundred microseconds): the server then
        calls tokenize on its event loop for a call of at most INLINE_TOKENIZE_TEXTS texts, and
        the call crosses no thread to be tokenized. 0, the default, keeps every call off the loop:
        right for a tokenizer written in Python. Asked on the loop before each call, quickly: the
        answer may change (0 until the loop's own copy of a tokenizer is ready, say)."""
        return 0

    @abc.abstractmethod
    def tokenize(
        self,
        texts: Sequence[str],
        *,
        pairs: Sequence[str] | None = None,
        add_special_tokens: bool = True,
        max_length: int | None = None,
    ) -> list[Encoding]:
        """Tokenize texts (and optional second segments); cut to max_length tokens when given."""

    @abc.abstractmethod
    def embed(self, batch: Sequence[Encoding], *, pooling: Pooling, with_token_states: bool) -> EmbedOutput:
        """Run one forward pass over a batch of encodings and pool each."""

    def tokenize_windows(
        self, question: str, context: str, *, max_seq_len: int, doc_stride: int, max_question_len: int
    ) -> Iterable[Encoding]:
        """Split (question, context) into overlapping windows of at most max_seq_len tokens.

        The question (cut to max_question_len tokens) is the first segment (sequence id 0), the
        context the second (1), and context offsets index into ``context``. Consecutive windows
        overlap by doc_stride tokens, lowered to half the room for context when it leaves none to
        advance. Raises InvalidRequest at once when the question leaves no room for context.

        The windows may come as a lazy iterator: the server takes them a pass's worth at a time,
        so a plugin need not hold every window of a long context at once.
        """
        raise CapabilityNotSupported(f"model {self.spec.name!r} has no question-answering head")

    def head_logits(self, head: Head, batch: Sequence[Encoding]) -> list[np.ndarray]:
        """Run one head over a batch: per sequence, its raw outputs as float32 numpy, unpadded.

        What each head returns, per sequence (the server postprocesses them once for every variant):

        - ``Head.QUESTION_ANSWERING``: ``[tokens, 2]``, the start and the end logit of each token;
        - ``Head.MASKED_LM``: ``[masks, vocabulary]``, the logits at the sequence's mask tokens only;
        - ``Head.REPLACED_TOKENS``: ``[tokens]``, the discriminator's logit of each token;
        - ``Head.SEQUENCE_CLASSIFICATION``: ``[labels]``;
        - ``Head.TOKEN_CLASSIFICATION``: ``[tokens, labels]``.

        A plugin offers the heads whose capabilities its ModelInfo lists (see
        bertserve.capabilities); the server checks at load that it overrides this method. A plugin
        written against the older contract, with one method per head (``answer_windows``,
        ``mask_logits``, ``replaced_logits``, ``sequence_logits``, ``token_logits``), still works:
        this default calls them, and the server logs at load which method to write instead.
        """
        legacy = LEGACY_HEAD_METHODS[head]
        if getattr(type(self), legacy, None) is None:
            raise CapabilityNotSupported(f"model {self.spec.name!r} has no {head.value.replace('_', '-')} head")
        out = getattr(self, legacy)(batch)
        if head is Head.QUESTION_ANSWERING:
            return [np.stack([w.start, w.end], axis=1) for w in out]
        return list(out)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """The tokenizer's decoding of ids (FillMask's sequences and tokens)."""
        raise NotImplementedError

    def target_ids(self, targets: Sequence[str]) -> list[int]:
        """FillMask's targets as vocabulary ids, as the fill-mask pipeline takes them: a target in
        the vocabulary is its id; any other text stands for its first token, and one that
        tokenizes to nothing is skipped (InvalidRequest when none is left). Ids come in target
        order, repeats kept: the server dedupes them."""
        raise NotImplementedError

    def tokens_to_string(self, tokens: Sequence[str]) -> str:
        """The tokenizer's joining of tokens into text (ClassifyTokens' entity words)."""
        raise NotImplementedError

    def unload(self) -> None:  # noqa: B027 (optional hook)
        """Free the model's memory."""
