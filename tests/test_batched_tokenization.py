"""Texts of many calls tokenized together, in one batch of the Rust tokenizer, come out exactly as
the model's own tokenizer makes each of them alone: ids, tokens, offsets, segment ids, special
tokens, the cut of truncation, and the prefix cut of a huge input. Through gRPC, with the calls
sent at once so that they share the tokenizer's jobs; a call of a sentence or two, tokenized on the
event loop without a job, comes out the same."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from bertserve.api import INLINE_TOKENIZE_TEXTS
from bertserve.app.server import BertServer
from bertserve.serving.shared_tokenization import SLICE_TEXTS
from bertserve_client import AsyncClient, Tokenization

from conftest import EMBED_MODELS, TINY, inline_tokenize_limit

TEXTS = [
    "Paris is a beautiful city",
    "Café naïve résumé, Ångström, façade: accents é è ê ë and a combining e\u0301",
    "Emoji 🙂🚀👩‍👩‍👧 and flags 🇫🇷 between words",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "   leading, trailing and   repeated   white space   ",
    "Tabs\tand\nnew lines\r\nand a zero-width\u200bspace",
    "x",
    "The quick brown fox jumps over the lazy dog " * 6,
    "UPPER lower MiXeD 12345 3.14159 e-mail@example.com https://example.com/a?b=c",
]
PAIRS = ["Where is it?", "ü", "A second segment 🙂", "中文", "end", "x y z", "?", "pairs " * 20, "a"]
HUGE = "word " * 200_000  # a megabyte of text, far over any model's limit


def _expected(tokenizer: Any, text: str, pair: str | None, max_length: int | None) -> dict[str, Any]:
    """The tokenizer's own call on one text (and pair), cut at max_length when it is given."""
    full = tokenizer(text, pair)["input_ids"]
    out = tokenizer(
        text,
        pair,
        truncation=max_length is not None,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_token_type_ids=True,
    )
    return {
        "ids": out["input_ids"],
        "tokens": out.tokens(),
        "token_type_ids": out["token_type_ids"],
        "special_tokens_mask": out["special_tokens_mask"],
        "offsets": [tuple(o) for o in out["offset_mapping"]],
        "sequence_ids": [-1 if s is None else s for s in out.sequence_ids()],
        "truncated": max_length is not None and len(full) > max_length,
    }


def _got(t: Tokenization) -> dict[str, Any]:
    """What the call answered for one text, in _expected's terms (the attention mask is all ones)."""
    fields = asdict(t)
    assert fields.pop("attention_mask") == [1] * len(t.ids)
    return fields


async def _at_once(client: AsyncClient, model: str, calls: list[dict[str, Any]]) -> list[list[Tokenization]]:
    """Every call sent before any is answered: their texts meet in the tokenizer's jobs."""
    return list(await asyncio.gather(*(client.tokenize(model=model, **call) for call in calls)))


@pytest.mark.parametrize("model", [*EMBED_MODELS, "minilm"])
async def test_texts_tokenized_together_equal_the_tokenizers_own_call_on_each(
    server: BertServer, client: AsyncClient, tiny_models: dict, hf: Any, minilm_dir: Path, model: str
) -> None:
    path = minilm_dir if model == "minilm" else tiny_models[TINY[model][1]]
    tokenizer = hf.tokenizer(path)
    inline = await inline_tokenize_limit(server, model)  # the loop tokenizes small calls from now on
    jobs_before = server.router.get(model).shared_tokenization.jobs
    calls: list[dict[str, Any]] = []
    for max_length in (None, 9):
        truncate = max_length is not None
        calls += [{"inputs": [text], "truncate": truncate, "max_length": max_length} for text in TEXTS]
        # Each over the limit of the loop's own tokenization: these go to the pool.
        calls += [{"inputs": [f"{text} {TEXTS[7]}"], "truncate": truncate, "max_length": max_length} for text in TEXTS]
        calls += [{"inputs": TEXTS, "pairs": PAIRS, "truncate": truncate, "max_length": max_length}]
        # One pair a call: most within the loop's limit, the long one over it.
        calls += [
            {"inputs": [text], "pairs": [pair], "truncate": truncate, "max_length": max_length}
            for text, pair in zip(TEXTS, PAIRS, strict=True)
        ]
        calls += [{"inputs": TEXTS * 3, "truncate": truncate, "max_length": max_length}]  # over several slices
        # Few characters, but too many texts for the loop.
        calls += [{"inputs": ["x", "é", "🙂", "中"] * 5, "truncate": truncate, "max_length": max_length}]
    answers = await _at_once(client, model, calls)
    jobs = server.router.get(model).shared_tokenization.jobs - jobs_before
    # A call of a sentence or two is tokenized on the loop; the others meet in the pool's jobs.
    pooled = [
        c
        for c in calls
        if sum(map(len, c["inputs"])) + sum(map(len, c.get("pairs") or ())) > inline
        or len(c["inputs"]) > INLINE_TOKENIZE_TEXTS
    ]
    assert 0 < len(pooled) < len(calls)
    slices = sum(-(-len(c["inputs"]) // SLICE_TEXTS) for c in pooled)  # what the pool takes one job each alone
    assert 0 < jobs < slices, f"{slices} slices took {jobs} jobs: none were tokenized together"
    for call, got in zip(calls, answers, strict=True):
        pairs = call.get("pairs") or [None] * len(call["inputs"])
        assert len(got) == len(call["inputs"])
        for text, pair, each in zip(call["inputs"], pairs, got, strict=True):
            assert _got(each) == _expected(tokenizer, text, pair, call["max_length"]), (text, pair, call["max_length"])
    assert any(each.truncated for got in answers for each in got)


@pytest.mark.parametrize("model", ["bert", "roberta", "minilm"])
async def test_a_huge_input_among_small_ones_is_cut_as_the_tokenizer_cuts_it(
    client: AsyncClient, tiny_models: dict, hf: Any, minilm_dir: Path, model: str
) -> None:
    path = minilm_dir if model == "minilm" else tiny_models[TINY[model][1]]
    tokenizer = hf.tokenizer(path)
    limit = (await client.model(model)).max_input_tokens
    calls: list[dict[str, Any]] = [{"inputs": [TEXTS[i], HUGE, TEXTS[i + 1]], "truncate": True} for i in range(3)]
    calls += [{"inputs": [HUGE], "pairs": ["a question?"], "truncate": True, "max_length": 40}]
    answers = await _at_once(client, model, calls)
    for call, got in zip(calls, answers, strict=True):
        pairs = call.get("pairs") or [None] * len(call["inputs"])
        for text, pair, each in zip(call["inputs"], pairs, got, strict=True):
            assert _got(each) == _expected(tokenizer, text, pair, call.get("max_length", limit))
    assert all(got[1].truncated for got in answers[:3]) and answers[3][0].truncated


async def test_a_call_of_many_tiny_texts_goes_to_the_pool_and_a_short_one_stays_on_the_loop(
    server: BertServer, client: AsyncClient
) -> None:
    """However few their characters, many texts cost the Rust tokenizer about 20 us each: more than
    the hop to the pool, so they are not tokenized on the event loop."""
    inline = await inline_tokenize_limit(server, "bert")
    host = server.router.get("bert")
    tiny = ["x"] * (INLINE_TOKENIZE_TEXTS + 1)
    assert sum(map(len, tiny)) <= inline
    before = host.shared_tokenization.jobs
    await client.tokenize(["x"] * INLINE_TOKENIZE_TEXTS, model="bert")
    assert host.shared_tokenization.jobs == before
    got = await client.tokenize(tiny, model="bert")
    assert host.shared_tokenization.jobs == before + 1
    assert [t.tokens for t in got] == [["[CLS]", "x", "[SEP]"]] * len(tiny)
