"""Tokenization: texts and pairs as the server's Encodings, cut to a length, question-answering
windows, and the tokenizer's decoding for FillMask."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from bertserve.api import Encoding, tokenized_inline
from bertserve.errors import InvalidRequest

from .state import PluginState

__all__ = ["Tokenization"]

# A text longer than this many characters per allowed token is tokenized from a prefix first (real
# text has more than one token in eight characters; where it has not, the prefix grows).
_CHARS_PER_TOKEN = 8
# Tokens past max_length that a prefix must hold, so that where it was cut cannot reach the kept ones.
_PREFIX_MARGIN = 16


#: The most characters of one call tokenized on the server's event loop. The Rust tokenizer takes
#: about 0.8 us a character with the encoding's conversion (a 40-character sentence: 50 us), and the
#: hop to a tokenizer thread and back costs a call about 250 us of CPU: so a call of a sentence or
#: two is cheaper tokenized where it is, and the loop is never held much longer than by a hop.
INLINE_TOKENIZE_CHARS = 160


class Tokenization(PluginState):
    """The plugin's tokenizer calls, each on the calling thread's own copy of the tokenizer."""

    def inline_tokenize_chars(self) -> int:
        # A fast (Rust) tokenizer: every transformers plugin loads one. The calling thread (the
        # event loop) tokenizes inline once its own copy of the tokenizer is made, off that thread.
        if self._tokenizers is None or not self._tokenizers.ready_here():
            return 0
        return INLINE_TOKENIZE_CHARS

    def tokenize(
        self,
        texts: Sequence[str],
        *,
        pairs: Sequence[str] | None = None,
        add_special_tokens: bool = True,
        max_length: int | None = None,
    ) -> list[Encoding]:
        if max_length is not None:
            specials = self._pair_specials if pairs is not None else self._single_specials
            specials = specials if add_special_tokens else 0
            if max_length <= specials:
                raise InvalidRequest(
                    f"max_length {max_length} leaves no room for text: model {self.spec.name!r} adds {specials} "
                    f"special tokens to each {'pair' if pairs is not None else 'text'}"
                )
        if max_length is None:
            return self._encode(texts, pairs, add_special_tokens, truncate_to=None)
        if pairs is None:  # never tokenize 200,000 words to learn that they are over 256 tokens
            limit = max_length * _CHARS_PER_TOKEN
            texts = [self._deciding_prefix(t, max_length, add_special_tokens) if len(t) > limit else t for t in texts]
        encodings = self._encode(texts, pairs, add_special_tokens, truncate_to=None)
        # Over-long inputs are rare: tokenize those alone a second time, with truncation.
        long = [i for i, e in enumerate(encodings) if len(e) > max_length]
        if long:
            cut = self._encode(
                [texts[i] for i in long],
                [pairs[i] for i in long] if pairs is not None else None,
                add_special_tokens,
                truncate_to=max_length,
            )
            for i, encoding in zip(long, cut, strict=True):
                encodings[i] = replace(encoding, full_length=len(encodings[i]))
        return encodings

    def _deciding_prefix(self, text: str, max_length: int, add_special_tokens: bool) -> str:
        """The shortest prefix (of a few tried) that shows a text to be over max_length tokens.

        A prefix ends at white space, where no tokenizer of the family joins tokens across, and
        grows fourfold until it holds max_length tokens and a margin, or is the whole text. Its
        first max_length tokens are the whole text's; cut from it, the encoding's full_length
        counts the prefix's tokens: all a caller needs to know is that it is over max_length.
        """
        size = max_length * _CHARS_PER_TOKEN
        while size < len(text):
            end = next((k for k in range(size - 1, size // 2, -1) if text[k].isspace()), size)
            prefix = text[:end]
            if len(self._encode([prefix], None, add_special_tokens, truncate_to=None)[0]) > max_length + _PREFIX_MARGIN:
                return prefix
            size *= 4
        return text

    def _encode(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None,
        add_special_tokens: bool,
        truncate_to: int | None,
    ) -> list[Encoding]:
        """One encode_batch of the Rust tokenizer, set as transformers' own call sets it (see
        _backend_for): the same encodings, without the Python wrapper's per-call work.

        A few short texts (a call tokenized on the event loop) are encoded one by one instead, the
        same encodings: encode_batch lets go of the interpreter lock, and on a loaded server a
        device worker takes it there and starts its next pass with the few calls batched so far,
        while the loop waits to take it back (see docs/performance.md: passes of 3 sequences
        where they held 9)."""
        backend = self._backend_for(truncate_to)
        if tokenized_inline(texts, pairs, INLINE_TOKENIZE_CHARS):
            pieces = pairs if pairs is not None else [None] * len(texts)
            return [
                self._encoding_of(backend.encode(text, pair, add_special_tokens=add_special_tokens))
                for text, pair in zip(texts, pieces, strict=True)
            ]
        inputs: list[Any] = list(zip(texts, pairs, strict=True)) if pairs is not None else list(texts)
        return [self._encoding_of(e) for e in backend.encode_batch(inputs, add_special_tokens=add_special_tokens)]

    def _backend_for(self, truncate_to: int | None) -> Any:
        """This thread's Rust tokenizer, set as transformers' fast tokenizer sets it for a call
        without padding: "longest_first" truncation to truncate_to (stride 0, the tokenizer's
        truncation side) or none, and special tokens in the text split or not as it says."""
        tokenizer = self._tokenize_with()
        backend = tokenizer.backend_tokenizer
        if backend.padding is not None:
            backend.no_padding()
        if truncate_to is None:
            if backend.truncation is not None:
                backend.no_truncation()
        else:
            wanted = {"max_length": truncate_to, "stride": 0, "strategy": "longest_first"}
            wanted["direction"] = tokenizer.truncation_side
            current = backend.truncation
            if current is None or any(current.get(k) != v for k, v in wanted.items()):
                backend.enable_truncation(**wanted)
        split = bool(getattr(tokenizer, "split_special_tokens", False))
        if backend.encode_special_tokens != split:
            backend.encode_special_tokens = split
        return backend

    def _encoding_of(self, encoding: Any) -> Encoding:
        """A tokenizers.Encoding as the server's Encoding; segment ids as the model gets them."""
        ids = encoding.ids
        return Encoding(
            ids=ids,
            tokens=encoding.tokens,
            type_ids=encoding.type_ids if self._uses_token_types else [0] * len(ids),
            special_tokens_mask=encoding.special_tokens_mask,
            offsets=encoding.offsets,
            sequence_ids=[-1 if s is None else s for s in encoding.sequence_ids],
            word_ids=[-1 if w is None else w for w in encoding.word_ids],
            full_length=len(ids),
        )

    def tokenize_windows(
        self, question: str, context: str, *, max_seq_len: int, doc_stride: int, max_question_len: int
    ) -> Iterator[Encoding]:
        self._require_qa_head()
        question, question_tokens = self._cut_question(question, max_question_len)
        room = max_seq_len - question_tokens - self._pair_specials
        if room < 1:
            raise InvalidRequest(
                f"the question takes {question_tokens} tokens (max_question_len {max_question_len}) and model "
                f"{self.spec.name!r} adds {self._pair_specials} special tokens, leaving no room for context within "
                f"max_seq_len {max_seq_len}; shorten the question or raise max_seq_len"
            )
        if doc_stride >= room:  # the windows must advance by at least one token
            doc_stride = room // 2
        return self._windows(question, context, max_seq_len=max_seq_len, doc_stride=doc_stride)

    def _windows(self, question: str, context: str, *, max_seq_len: int, doc_stride: int) -> Iterator[Encoding]:
        """The windows as the question-answering pipeline's tokenizer call makes them (the pair cut
        "only_second" with a stride), taken from the Rust encoding one at a time: a long context's
        windows never all sit in Python at once."""
        backend = self._backend_for(None)
        backend.enable_truncation(
            max_seq_len, stride=doc_stride, strategy="only_second", direction=self._tokenizer.truncation_side
        )
        try:
            # encode_batch runs without the interpreter lock (encode holds it): a megabyte takes a second.
            [first] = backend.encode_batch([(question, context)], add_special_tokens=True)
        finally:
            backend.no_truncation()
        rest = deque(first.overflowing)
        window = self._encoding_of(first)
        del first  # it holds a copy of every other window
        yield window
        while rest:
            yield self._encoding_of(rest.popleft())

    def _cut_question(self, question: str, max_question_len: int) -> tuple[str, int]:
        """The question cut to its first max_question_len tokens (the classic query limit), and its length."""
        tokenizer = self._tokenize_with()
        offsets = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) <= max_question_len:
            return question, len(offsets)
        question = question[: offsets[max_question_len - 1][1]]
        # Counted again: a word cut in two can come out as more pieces than it had.
        return question, len(tokenizer(question, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return str(self._tokenize_with().decode(list(ids), skip_special_tokens=skip_special_tokens))

    def target_ids(self, targets: Sequence[str]) -> list[int]:
        # As the fill-mask pipeline's get_target_ids: a target that tokenizes to nothing is skipped.
        tokenizer = self._tokenize_with()
        vocab = tokenizer.get_vocab()
        ids = []
        for target in targets:
            id_ = vocab.get(target)
            if id_ is None:
                pieces = tokenizer(target, add_special_tokens=False, max_length=1, truncation=True)["input_ids"]
                if not pieces:
                    continue
                id_ = pieces[0]
            ids.append(int(id_))
        if not ids:
            raise InvalidRequest(
                f"no target is a token of model {self.spec.name!r}: each of the {len(targets)} targets tokenizes "
                "to nothing; send a word or a token of the model's vocabulary"
            )
        return ids

    def tokens_to_string(self, tokens: Sequence[str]) -> str:
        return str(self._tokenize_with().convert_tokens_to_string(list(tokens)))
