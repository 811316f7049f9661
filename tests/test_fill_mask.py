"""FillMask equals transformers' fill-mask pipeline on the tiny masked-language models, each through
the real gRPC surface: candidates, their order, scores, tokens and sequences, with one mask and with
several, top_k, targets and truncation; and its errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from bertserve_client import AsyncClient, BertserveError, FillMaskResults, MaskCandidate

from conftest import TINY
from test_cli import bertserve

MLM_MODELS = ["albert-mlm", "roberta-mlm", "bert-mlm", "electra-generator"]
# {m} is the mask; "zzqx" is no token of any tiny vocabulary: it stands for its first token.
SINGLE = "Paris is the {m} of France."
TWO = "The {m} is the capital of {m}, and Paris is a city."
# {p} is the pad token: the pipeline leaves it out of the sequences.
PADDED = "Paris {p}is the {m} of {p}France."
LONGER = "Machine learning models learn patterns from {m}, and data makes machine learning work."
TARGETS = ["capital", "city", "Paris", "zzqx", " city", "city", "data"]


@pytest.fixture(scope="module")
def pipelines(tiny_models: dict[str, Path]) -> dict[str, Any]:
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    return {
        name: pipeline(
            "fill-mask",
            model=AutoModelForMaskedLM.from_pretrained(tiny_models[TINY[name][1]]).eval(),
            tokenizer=AutoTokenizer.from_pretrained(tiny_models[TINY[name][1]]),
        )
        for name in MLM_MODELS
    }


def _pipeline_masks(pipe: Any, text: str, **kwargs: Any) -> list[list[dict[str, Any]]]:
    """The pipeline's answer for one text as a list per mask (it flattens a single mask's)."""
    out = pipe(text, **kwargs)
    return [out] if out and isinstance(out[0], dict) else out


def _assert_same(got: list[list[MaskCandidate]], want: list[list[dict[str, Any]]]) -> None:
    assert len(got) == len(want), "one entry per mask"
    for served, expected in zip(got, want, strict=True):
        assert [c.token_id for c in served] == [e["token"] for e in expected]
        assert [c.token for c in served] == [e["token_str"] for e in expected]
        assert [c.sequence for c in served] == [e["sequence"] for e in expected]
        np.testing.assert_allclose([c.score for c in served], [e["score"] for e in expected], rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", MLM_MODELS)
async def test_fill_mask_equals_the_pipeline(client: AsyncClient, pipelines: dict[str, Any], model: str) -> None:
    pipe = pipelines[model]
    m = pipe.tokenizer.mask_token
    cases: list[tuple[str, dict[str, Any]]] = [
        (SINGLE, {}),
        (SINGLE, {"top_k": 1}),
        (LONGER, {"top_k": 12}),
        (TWO, {}),
        (TWO, {"top_k": 3}),
        (SINGLE, {"targets": TARGETS}),
        (TWO, {"targets": TARGETS, "top_k": 2}),
        (SINGLE, {"targets": ["zzqx"], "top_k": 4}),  # top_k capped to the one target, as the pipeline does
        (SINGLE, {"targets": ["", "capital"]}),  # a target that tokenizes to nothing is skipped
        (PADDED, {"top_k": 2}),
        (PADDED + " {m}", {"top_k": 2}),
    ]
    for template, options in cases:
        text = template.format(m=m, p=pipe.tokenizer.pad_token)
        want = _pipeline_masks(pipe, text, **options)
        [got] = await client.fill_mask(text, model=model, **options)
        _assert_same(got, want)
    # What the cases cover, so that a change to the vocabularies cannot quietly hollow them out.
    padded = pipe.tokenizer(PADDED.format(m=m, p=pipe.tokenizer.pad_token))["input_ids"]
    assert padded.count(pipe.tokenizer.pad_token_id) == 2
    vocab = pipe.tokenizer.get_vocab()
    assert "zzqx" not in vocab and len(pipe.tokenizer("zzqx", add_special_tokens=False)["input_ids"]) > 1
    [[one]] = await client.fill_mask(SINGLE.format(m=m), model=model, targets=["zzqx"], top_k=4)
    assert len(one) == 1
    [multi] = await client.fill_mask(TWO.format(m=m), model=model)
    assert len(multi) == 2 and all(len(c) == 5 for c in multi)
    assert multi[0][0].sequence != multi[1][0].sequence  # each fills its own mask only


@pytest.mark.parametrize("model", MLM_MODELS)
async def test_a_batch_of_inputs_equals_each_alone(client: AsyncClient, pipelines: dict[str, Any], model: str) -> None:
    m = pipelines[model].tokenizer.mask_token
    texts = [SINGLE.format(m=m), TWO.format(m=m), LONGER.format(m=m), f"{m}."]
    together = await client.fill_mask(texts, model=model, top_k=3)
    assert isinstance(together, FillMaskResults) and together.model == model
    assert together.usage.tokens > 0
    for text, got in zip(texts, together, strict=True):
        _assert_same(got, _pipeline_masks(pipelines[model], text, top_k=3))


async def test_results_do_not_depend_on_the_batch(client: AsyncClient) -> None:
    """Calls of different lengths sent together (so that they share passes, padded) get what each gets alone."""
    texts = [
        "[MASK].",
        "Paris is the [MASK] of France.",
        "The [MASK] is the capital of [MASK], and Paris is a city.",
        "Machine learning models learn patterns from [MASK], and data makes machine learning work. " * 3,
    ]
    for model in ("roberta-mlm", "bert-mlm"):
        alone = [(await client.fill_mask(t, model=model, top_k=4))[0] for t in texts]
        for _ in range(2):
            together = await asyncio.gather(*(client.fill_mask(t, model=model, top_k=4) for t in texts * 3))
            for got, want in zip(together, alone * 3, strict=True):
                _assert_same_candidates(got[0], want)


def _assert_same_candidates(got: list[list[MaskCandidate]], want: list[list[MaskCandidate]]) -> None:
    assert [[(c.token_id, c.token, c.sequence) for c in mask] for mask in got] == [
        [(c.token_id, c.token, c.sequence) for c in mask] for mask in want
    ]
    np.testing.assert_allclose(
        [c.score for mask in got for c in mask], [c.score for mask in want for c in mask], rtol=0, atol=1e-5
    )


async def test_the_placeholder_is_the_models_own_mask(client: AsyncClient, pipelines: dict[str, Any]) -> None:
    """The placeholder [MASK] works for any model: on RoBERTa it becomes "<mask>", with the same result."""
    pipe = pipelines["roberta-mlm"]
    assert pipe.tokenizer.mask_token == "<mask>"
    assert "[MASK]" not in pipe.tokenizer.get_vocab()
    cases: list[tuple[str, dict[str, Any]]] = [(SINGLE, {}), (TWO, {"top_k": 3}), (SINGLE, {"targets": TARGETS})]
    for template, options in cases:
        placeholder = await client.fill_mask(template.format(m="[MASK]"), model="roberta-mlm", **options)
        own = await client.fill_mask(template.format(m="<mask>"), model="roberta-mlm", **options)
        assert placeholder == own
        _assert_same(own[0], _pipeline_masks(pipe, template.format(m="<mask>"), **options))
    mixed = await client.fill_mask("The [MASK] is the capital of <mask>, and Paris is a city.", model="roberta-mlm")
    assert mixed == await client.fill_mask(TWO.format(m="<mask>"), model="roberta-mlm")


async def test_truncate_cuts_and_a_mask_past_the_cut_is_not_filled(
    client: AsyncClient, pipelines: dict[str, Any]
) -> None:
    model = "bert-mlm"
    limit = (await client.model(model)).max_input_tokens
    filler = " and paris is a city" * limit
    early, late = f"paris is the [MASK] of france{filler}.", f"paris{filler} is the [MASK] of france."
    with pytest.raises(BertserveError) as e:
        await client.fill_mask(["the [MASK].", early], model=model)
    assert e.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.message == (
        f"input 1 has more than {limit} tokens, the limit of model 'bert-mlm'; shorten it or set truncate"
    )
    got = await client.fill_mask([early, late], model=model, truncate=True)
    want = _pipeline_masks(pipelines[model], early, tokenizer_kwargs={"truncation": True, "max_length": limit})
    _assert_same(got[0], want)
    assert got[1] == []


async def test_errors(client: AsyncClient) -> None:
    async def error(*args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(BertserveError) as e:
            await client.fill_mask(*args, **kwargs)
        return e.value.code, e.value.message

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert await error(["a [MASK].", "<mask> too", "no mask here"], model="roberta-mlm") == (
        invalid,
        "input 2 has no mask: put [MASK] (or the model's own mask token '<mask>') where a token should be predicted",
    )
    assert await error(["no mask"], model="bert-mlm") == (
        invalid,
        "input 0 has no mask: put [MASK] where a token should be predicted",
    )
    assert await error([], model="bert-mlm") == (invalid, "inputs is empty: send at least one text")
    assert await error("the [MASK].", model="bert-mlm", top_k=0) == (invalid, "top_k must be at least 1, got 0")
    assert await error("the [MASK].", model="bert-mlm", targets=["", ""]) == (
        invalid,
        "no target is a token of model 'bert-mlm': each of the 2 targets tokenizes to nothing; "
        "send a word or a token of the model's vocabulary",
    )
    with pytest.raises(ValueError, match="targets is empty"):
        await client.fill_mask("the [MASK].", model="bert-mlm", targets=[])
    assert await error("the [MASK].", model="bert") == (
        grpc.StatusCode.UNIMPLEMENTED,
        "model 'bert' cannot serve FillMask: that needs a masked-language-model head; "
        "it serves Tokenize, Embed, Similarity",
    )
    assert await error("the [MASK].", model="electra-discriminator") == (
        grpc.StatusCode.UNIMPLEMENTED,
        "model 'electra-discriminator' cannot serve FillMask: that needs a masked-language-model head; "
        "it serves Tokenize, Embed, Similarity, DetectReplacedTokens",
    )


async def test_the_command_prints_the_candidates(client: AsyncClient, target: str) -> None:
    texts = ["Paris is the [MASK] of France.", "The [MASK] of [MASK]."]
    args = ["--model", "roberta-mlm", "--top-k", "2", "--candidate", "capital", "--candidate", "city"]
    args += ["--candidate", "data"]
    run = await bertserve(target, "fill-mask", *args, *texts)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    expected = await client.fill_mask(texts, model="roberta-mlm", top_k=2, targets=["capital", "city", "data"])
    assert [[[(c["token"], c["token_id"], c["sequence"]) for c in mask] for mask in masks] for masks in printed] == [
        [[(c.token, c.token_id, c.sequence) for c in mask] for mask in masks] for masks in expected
    ]
    assert [len(masks) for masks in printed] == [1, 2]
    run = await bertserve(target, "fill-mask", "--model", "bert", "the [MASK].")
    assert run.returncode == 1
    assert run.stderr.startswith("bertserve: UNIMPLEMENTED: model 'bert' cannot serve FillMask")
