"""DetectReplacedTokens on the tiny ELECTRA discriminator, through the real gRPC surface: each
token's probability is the sigmoid of ElectraForPreTraining's logit, its text and offsets are
Tokenize's, and words take the highest probability of their tokens."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch

from bertserve_client import AsyncClient, BertserveError, ReplacedTokens, ReplacedTokensResults

from conftest import TINY
from test_cli import bertserve

MODEL = "electra-discriminator"
TEXTS = [
    "Paris is a beautiful city.",
    "The chef cooked the meal, and the meal ate the chef.",
    "Paris is the capital of a city-state, tokenization notwithstanding.",
    "Café naïve résumé, 😀 emoji! \U0002000b\U0002000c too.",
    "yes",
]


@pytest.fixture(scope="module")
def discriminator(tiny_models: dict[str, Path]) -> tuple[Any, Any]:
    from transformers import AutoTokenizer, ElectraForPreTraining

    path = tiny_models[TINY[MODEL][1]]
    return AutoTokenizer.from_pretrained(path), ElectraForPreTraining.from_pretrained(path).eval()


def _probabilities(discriminator: tuple[Any, Any], text: str) -> np.ndarray:
    tokenizer, model = discriminator
    with torch.inference_mode():
        logits = model(**tokenizer(text, return_tensors="pt")).logits[0]
    return torch.sigmoid(logits).numpy()


def _words(discriminator: tuple[Any, Any], text: str) -> list[tuple[str, int, int, float]]:
    """Each word as the tokenizer's own word maps give it: (text, start, end, its tokens' highest probability)."""
    tokenizer, _ = discriminator
    encoding = tokenizer(text)
    probabilities = _probabilities(discriminator, text)
    words = []
    for word in dict.fromkeys(w for w in encoding.word_ids() if w is not None):
        tokens = encoding.word_to_tokens(word)
        chars = encoding.word_to_chars(word)
        best = float(probabilities[tokens.start : tokens.end].max())
        words.append((text[chars.start : chars.end], chars.start, chars.end, best))
    return words


async def test_probabilities_are_the_sigmoid_of_the_discriminator(
    client: AsyncClient, discriminator: tuple[Any, Any]
) -> None:
    results = await client.detect_replaced_tokens(TEXTS, model=MODEL)
    assert isinstance(results, ReplacedTokensResults) and results.model == MODEL
    tokenizations = await client.tokenize(TEXTS, model=MODEL)
    assert results.usage.tokens == sum(len(t.tokens) for t in tokenizations)
    for text, got, tokenization in zip(TEXTS, results, tokenizations, strict=True):
        assert [t.text for t in got.tokens] == tokenization.tokens
        assert [(t.start, t.end) for t in got.tokens] == tokenization.offsets
        assert [t.special for t in got.tokens] == [bool(m) for m in tokenization.special_tokens_mask]
        np.testing.assert_allclose(
            [t.probability for t in got.tokens], _probabilities(discriminator, text), rtol=0, atol=1e-5
        )
        assert got.words == []
    assert [t.text for t in results[0].tokens if t.special] == ["[CLS]", "[SEP]"]
    assert all((t.start, t.end) == (0, 0) for r in results for t in r.tokens if t.special)


async def test_words_take_their_tokens_highest_probability(client: AsyncClient, discriminator: tuple[Any, Any]) -> None:
    results = await client.detect_replaced_tokens(TEXTS, model=MODEL, aggregate_words=True)
    alone = await client.detect_replaced_tokens(TEXTS, model=MODEL)
    for text, got, tokens_only in zip(TEXTS, results, alone, strict=True):
        assert got.tokens == tokens_only.tokens
        want = _words(discriminator, text)
        assert [(w.text, w.start, w.end) for w in got.words] == [(t, s, e) for t, s, e, _ in want]
        np.testing.assert_allclose([w.probability for w in got.words], [p for *_, p in want], rtol=0, atol=1e-5)
        assert not any(w.special for w in got.words)
    # What the texts cover: a word of several tokens, whose probability is not its first token's.
    tokenizer, _ = discriminator
    several = [
        (text, w)
        for text in TEXTS
        for w in dict.fromkeys(x for x in tokenizer(text).word_ids() if x is not None)
        if len(range(*tokenizer(text).word_to_tokens(w))) > 1
    ]
    assert len(several) >= 3


@pytest.mark.parametrize("unit", ["utf16", "utf8"])
async def test_offsets_in_other_units_slice_the_text(client: AsyncClient, unit: Any) -> None:
    codec = {"utf16": ("utf-16-le", 2), "utf8": ("utf-8", 1)}[unit]

    def sliced(text: str, start: int, end: int) -> str:
        encoded = text.encode(codec[0])
        return encoded[start * codec[1] : end * codec[1]].decode(codec[0])

    in_unit = await client.detect_replaced_tokens(TEXTS, model=MODEL, aggregate_words=True, offset_unit=unit)
    in_points = await client.detect_replaced_tokens(TEXTS, model=MODEL, aggregate_words=True)
    tokenizations = await client.tokenize(TEXTS, model=MODEL, offset_unit=unit)
    for text, got, points, tokenization in zip(TEXTS, in_unit, in_points, tokenizations, strict=True):
        assert [(t.start, t.end) for t in got.tokens] == tokenization.offsets
        for token, point in zip(got.tokens, points.tokens, strict=True):
            assert sliced(text, token.start, token.end) == text[point.start : point.end]
        assert [sliced(text, w.start, w.end) for w in got.words] == [w.text for w in points.words]
    # The emoji and the two CJK ideographs are outside the BMP: their units and code points differ.
    assert any(w.end != p.end for w, p in zip(in_unit[3].words, in_points[3].words, strict=True))


async def test_results_do_not_depend_on_the_batch(client: AsyncClient) -> None:
    """Calls of different lengths sent together (so that they share passes, padded) get what each gets alone."""
    texts = [*TEXTS, " ".join(TEXTS)]
    alone = [(await client.detect_replaced_tokens(t, model=MODEL, aggregate_words=True))[0] for t in texts]
    for _ in range(2):
        together = await asyncio.gather(
            *(client.detect_replaced_tokens(t, model=MODEL, aggregate_words=True) for t in texts * 3)
        )
        for results, want in zip(together, alone * 3, strict=True):
            _assert_same(results[0], want)
    one_call = await client.detect_replaced_tokens(texts, model=MODEL, aggregate_words=True)
    for got, want in zip(one_call, alone, strict=True):
        _assert_same(got, want)


def _assert_same(got: ReplacedTokens, want: ReplacedTokens) -> None:
    for ours, theirs in ((got.tokens, want.tokens), (got.words, want.words)):
        assert [(t.text, t.start, t.end, t.special) for t in ours] == [
            (t.text, t.start, t.end, t.special) for t in theirs
        ]
        np.testing.assert_allclose([t.probability for t in ours], [t.probability for t in theirs], rtol=0, atol=1e-5)


async def test_truncate(client: AsyncClient, discriminator: tuple[Any, Any]) -> None:
    limit = (await client.model(MODEL)).max_input_tokens
    long = "paris is a city " * limit
    with pytest.raises(BertserveError) as e:
        await client.detect_replaced_tokens(["short", long], model=MODEL)
    assert e.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.message == (
        f"input 1 has more than {limit} tokens, the limit of model '{MODEL}'; shorten it or set truncate"
    )
    [got] = await client.detect_replaced_tokens(long, model=MODEL, truncate=True)
    assert len(got.tokens) == limit and got.tokens[-1].text == "[SEP]"
    tokenizer, model = discriminator
    with torch.inference_mode():
        inputs = tokenizer(long, truncation=True, max_length=limit, return_tensors="pt")
        want = torch.sigmoid(model(**inputs).logits[0]).numpy()
    np.testing.assert_allclose([t.probability for t in got.tokens], want, rtol=0, atol=1e-5)


async def test_errors(client: AsyncClient) -> None:
    async def error(*args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(BertserveError) as e:
            await client.detect_replaced_tokens(*args, **kwargs)
        return e.value.code, e.value.message

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert await error([], model=MODEL) == (invalid, "inputs is empty: send at least one text")
    assert await error(["fine", " "], model=MODEL) == (invalid, "input 1 is empty")
    assert await error("a text", model="bert") == (
        grpc.StatusCode.UNIMPLEMENTED,
        "model 'bert' cannot serve DetectReplacedTokens: that needs ELECTRA's discriminator head; "
        "it serves Tokenize, Embed, Similarity",
    )
    # A generator is ELECTRA too, but a masked-language model: it has no discriminator head.
    assert await error("a text", model="electra-generator") == (
        grpc.StatusCode.UNIMPLEMENTED,
        "model 'electra-generator' cannot serve DetectReplacedTokens: that needs ELECTRA's discriminator head; "
        "it serves Tokenize, Embed, Similarity, FillMask",
    )


async def test_the_command_prints_tokens_and_words(client: AsyncClient, target: str) -> None:
    texts = ["Paris is a city-state.", "yes"]
    run = await bertserve(target, "detect-replaced", "--model", MODEL, "--words", *texts)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    expected = await client.detect_replaced_tokens(texts, model=MODEL, aggregate_words=True)
    assert [[t["text"] for t in r["tokens"]] for r in printed] == [[t.text for t in r.tokens] for r in expected]
    assert [[(w["text"], w["start"], w["end"]) for w in r["words"]] for r in printed] == [
        [(w.text, w.start, w.end) for w in r.words] for r in expected
    ]
    np.testing.assert_allclose(
        [t["probability"] for r in printed for t in r["tokens"]],
        [t.probability for r in expected for t in r.tokens],
        rtol=0,
        atol=1e-6,
    )
    run = await bertserve(target, "detect-replaced", "--model", "electra-generator", "yes")
    assert run.returncode == 1
    assert run.stderr.startswith(
        "bertserve: UNIMPLEMENTED: model 'electra-generator' cannot serve DetectReplacedTokens"
    )
