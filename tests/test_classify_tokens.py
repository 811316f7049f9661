"""ClassifyTokens equals transformers' token-classification pipeline on the tiny NER checkpoints
(WordPiece and byte-level BPE), for every aggregation strategy, through the real gRPC surface."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bertserve_client import AsyncClient, BertserveError, Entity
from bertserve_client.v1 import encoder_service_pb2_grpc, heads_pb2

from conftest import TINY

# The tiny WordPiece checkpoint labels nearly every token I-LOC; its copy with another classifier
# (loaded for this module) meets O, B- and I- labels, so that WordPiece words meet every grouping rule.
VARIED = "bert-ner-varied"
NER_MODELS = ["bert-ner", VARIED, "roberta-ner"]
AGGREGATIONS = ["none", "simple", "first", "average", "max"]

TEXTS = [
    "Paris is the capital of France.",
    "Tim Peters wrote the Zen of Python in Amsterdam.",
    "Café naïve résumé à Zürich, façade coöperate Ångström",
    # Decomposed accents inside words: the text a token covers is longer than the token, which
    # makes the pipeline take it for a subword of the word before.
    "Paris cafe\u0301 the e\u0301te\u0301 of re\u0301sume\u0301 and fac\u0327ade or no\u0308el in Zu\u0308rich",
    "🙂 emoji 🚀 rocket 🎉 party with Guido",
    "xyzzyplugh frobnicates quuxly unbelievably",  # words split into several pieces
    "東京は日本の首都です。 ☃ ⛄",  # CJK, and characters that are no token of the vocabulary ([UNK])
    "Multiple   spaces\tand\ttabs   between    words",
    "  leading and trailing spaces  ",
    "don't stop-believing: e-mail (jean-baptiste) @home #1!",
    "",
]


def _pipeline(path: Path) -> Any:
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    return pipeline(
        "token-classification",
        model=AutoModelForTokenClassification.from_pretrained(path).eval(),
        tokenizer=AutoTokenizer.from_pretrained(path),
    )


@pytest.fixture(scope="module", autouse=True)
async def varied(
    client: AsyncClient, tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Path]:
    """bert-ner with a classifier of larger random weights, served as VARIED while this module runs."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    source = tiny_models[TINY["bert-ner"][1]]
    path = tmp_path_factory.mktemp("ner") / VARIED
    model = AutoModelForTokenClassification.from_pretrained(source)
    torch.manual_seed(5)  # a seed whose labels mix O, B- and I- of every type on TEXTS
    torch.nn.init.normal_(model.classifier.weight, std=1.0)
    torch.nn.init.zeros_(model.classifier.bias)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    await client.load_model({"name": VARIED, "plugin": "bert", "source": str(path), "device": "cpu"})
    yield path
    await client.unload_model(VARIED)


@pytest.fixture(scope="module")
def pipelines(tiny_models: dict[str, Path], varied: Path) -> dict[str, Any]:
    paths = {model: tiny_models[TINY[model][1]] for model in NER_MODELS if model != VARIED}
    return {model: _pipeline(path) for model, path in {**paths, VARIED: varied}.items()}


def _expected(pipe: Any, texts: list[str], aggregation: str, ignore_labels: list[str] | None) -> list[list[dict]]:
    options: dict[str, Any] = {"aggregation_strategy": aggregation}
    if ignore_labels is not None:
        options["ignore_labels"] = ignore_labels
    with warnings.catch_warnings():  # byte-level BPE: "Tokenizer does not support real words, using fallback heuristic"
        warnings.simplefilter("ignore", UserWarning)
        return [pipe(text, **options) for text in texts]


def _mismatches(got: list[list[Entity]], expected: list[list[dict]], texts: list[str]) -> list[str]:
    """Every difference: label, word, start, end, index exactly; score within 1e-5."""
    problems = []
    for text, entities, wanted in zip(texts, got, expected, strict=True):
        if len(entities) != len(wanted):
            problems.append(f"{text!r}: {len(entities)} entities, the pipeline {len(wanted)}:\n{entities}\n{wanted}")
            continue
        for entity, want in zip(entities, wanted, strict=True):
            fields = (want.get("entity", want.get("entity_group")), want["word"], want["start"], want["end"])
            if (entity.label, entity.word, entity.start, entity.end) != fields or (
                entity.index != want.get("index", 0) or abs(entity.score - float(want["score"])) > 1e-5
            ):
                problems.append(f"{text!r}: got {entity}, the pipeline {want}")
    return problems


@pytest.mark.parametrize("model", NER_MODELS)
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("ignore_labels", [None, [], ["O", "I-LOC"]], ids=["default", "none-ignored", "O-and-I-LOC"])
async def test_equals_the_pipeline(
    client: AsyncClient, pipelines: dict[str, Any], model: str, aggregation: Any, ignore_labels: list[str] | None
) -> None:
    result = await client.classify_tokens(TEXTS, model=model, aggregation=aggregation, ignore_labels=ignore_labels)
    expected = _expected(pipelines[model], TEXTS, aggregation, ignore_labels)
    assert result.model == model and len(result) == len(TEXTS)
    assert not _mismatches(result, expected, TEXTS), "\n".join(_mismatches(result, expected, TEXTS))
    # What the comparison covers, so that a change of texts or models cannot hollow it out.
    labels = {e.label for entities in result for e in entities}
    assert labels
    if model != "bert-ner":
        assert len(labels) >= 3, labels
        assert aggregation != "none" or any(label.startswith("B-") for label in labels)
        assert ignore_labels != [] or "O" in labels
    if ignore_labels is None:
        assert "O" not in labels
    elif ignore_labels:
        assert not labels & {"O", "I-LOC"}
    if aggregation != "none":
        assert any(len(e.word) > 1 and e.end - e.start > 1 for entities in result for e in entities)
        assert all(e.index == 0 for entities in result for e in entities)
    assert result.usage.tokens > len(TEXTS) * 2 and result.usage.inference_time_ns > 0


async def test_the_texts_meet_every_subword_rule(client: AsyncClient, pipelines: dict[str, Any]) -> None:
    """Both tokenizer kinds split words into pieces here, and the WordPiece one meets [UNK]: the
    parity above covers both ways of telling subwords, and the unknown token's own rule; and
    words whose tokens disagree, which the word strategies settle each its own way."""
    bert = await client.classify_tokens(TEXTS, model="bert-ner", ignore_labels=[])
    words = [e.word for entities in bert for e in entities]
    assert any(w.startswith("##") for w in words)
    unk = pipelines["bert-ner"].tokenizer.unk_token_id
    ids = [pipelines["bert-ner"].tokenizer(t)["input_ids"] for t in TEXTS]
    assert any(unk in row for row in ids)
    assert "☃" in words  # an unknown token is reported by the text it covers
    roberta = await client.classify_tokens(TEXTS, model="roberta-ner", ignore_labels=[])
    assert any(e.word.startswith("Ġ") for entities in roberta for e in entities)
    assert len(roberta[TEXTS.index("xyzzyplugh frobnicates quuxly unbelievably")]) > 4
    for model in (VARIED, "roberta-ner"):
        by_strategy = [
            [
                [(e.label, e.start, e.end) for e in entities]
                for entities in await client.classify_tokens(TEXTS, model=model, aggregation=a, ignore_labels=[])
            ]
            for a in ("simple", "first", "average", "max")
        ]
        assert len({repr(r) for r in by_strategy}) == 4, f"{model}: two strategies agree on every text"


@pytest.mark.parametrize("model", NER_MODELS)
async def test_truncate_cuts_as_the_pipeline_does(client: AsyncClient, pipelines: dict[str, Any], model: str) -> None:
    long = " ".join(["Paris is the capital of France, and Tim Peters lives there."] * 30)
    with pytest.raises(BertserveError) as refused:
        await client.classify_tokens(["Paris", long], model=model)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.message == (
        f"input 1 has more than 128 tokens, the limit of model {model!r}; shorten it or set truncate"
    )
    # The pipeline always cuts at the tokenizer's model_max_length (128 here, the model's limit).
    aggregations: tuple[Any, ...] = ("none", "simple", "max")
    for aggregation in aggregations:
        result = await client.classify_tokens(long, model=model, aggregation=aggregation, truncate=True)
        expected = _expected(pipelines[model], [long], aggregation, None)
        assert not _mismatches(result, expected, [long]), "\n".join(_mismatches(result, expected, [long]))
        assert result[0] and max(e.end for e in result[0]) < len(long) // 2
    assert result.usage.tokens == 128


@pytest.mark.parametrize("model", NER_MODELS)
@pytest.mark.parametrize("aggregation", ["none", "first"])
async def test_utf16_and_utf8_offsets_slice_the_same_text(client: AsyncClient, model: str, aggregation: Any) -> None:
    texts = [t for t in TEXTS if any(ord(c) > 0x7F for c in t)]
    points = await client.classify_tokens(texts, model=model, aggregation=aggregation, ignore_labels=[])
    utf16 = await client.classify_tokens(
        texts, model=model, aggregation=aggregation, ignore_labels=[], offset_unit="utf16"
    )
    utf8 = await client.classify_tokens(
        texts, model=model, aggregation=aggregation, ignore_labels=[], offset_unit="utf8"
    )
    moved = 0
    for text, by_point, by_unit, by_byte in zip(texts, points, utf16, utf8, strict=True):
        units, raw = text.encode("utf-16-le"), text.encode()
        assert [(e.label, e.word) for e in by_unit] == [(e.label, e.word) for e in by_point]
        for p, u, b in zip(by_point, by_unit, by_byte, strict=True):
            assert units[2 * u.start : 2 * u.end].decode("utf-16-le") == text[p.start : p.end]  # JS's text.slice
            assert raw[b.start : b.end].decode() == text[p.start : p.end]  # Go's text[start:end]
            moved += (u.start, u.end) != (p.start, p.end)
    assert moved, "no text has characters outside the BMP before an entity"


@pytest.mark.parametrize("model", NER_MODELS)
async def test_results_do_not_depend_on_batching(client: AsyncClient, model: str) -> None:
    texts = [t for t in TEXTS if t] + [" ".join(TEXTS[:6]), "Paris"]
    alone = [(await client.classify_tokens(t, model=model, aggregation="simple", ignore_labels=[]))[0] for t in texts]
    together = await client.classify_tokens(texts, model=model, aggregation="simple", ignore_labels=[])
    concurrent = await asyncio.gather(
        *(client.classify_tokens(t, model=model, aggregation="simple", ignore_labels=[]) for t in texts)
    )
    for single, batched, gathered in zip(alone, together, concurrent, strict=True):
        for entities in (batched, gathered[0]):
            assert [(e.label, e.word, e.start, e.end) for e in entities] == [
                (e.label, e.word, e.start, e.end) for e in single
            ]
            assert [e.score for e in entities] == pytest.approx([e.score for e in single], abs=1e-5)


async def test_a_model_without_the_head_is_unimplemented(client: AsyncClient) -> None:
    with pytest.raises(BertserveError) as missing:
        await client.classify_tokens("Paris is a city", model="bert")
    assert missing.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert missing.value.message == (
        "model 'bert' cannot serve ClassifyTokens: that needs a token-classification head; "
        "it serves Tokenize, Embed, Similarity"
    )


async def test_bad_requests(client: AsyncClient, channel: grpc.aio.Channel) -> None:
    with pytest.raises(BertserveError) as empty:
        await client.classify_tokens([], model="bert-ner")
    assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert empty.value.message == "inputs is empty: send at least one text"
    with pytest.raises(ValueError, match="aggregation must be one of"):
        await client.classify_tokens("Paris", model="bert-ner", aggregation="mean")  # type: ignore[arg-type]

    stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
    both = heads_pb2.ClassifyTokensRequest(
        model="bert-ner", inputs=["Paris"], ignore_labels=["O"], keep_all_labels=True
    )
    with pytest.raises(grpc.aio.AioRpcError) as conflicting:
        await stub.ClassifyTokens(both)
    assert conflicting.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert conflicting.value.details() == "keep_all_labels leaves no label out: send it with an empty ignore_labels"
    unknown = heads_pb2.ClassifyTokensRequest(model="bert-ner", inputs=["Paris"], aggregation=42)  # type: ignore[arg-type]
    with pytest.raises(grpc.aio.AioRpcError) as unknown_value:
        await stub.ClassifyTokens(unknown)
    assert unknown_value.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert unknown_value.value.details() == "aggregation 42 is not a known Aggregation value"


async def test_the_wire_default_leaves_out_o(channel: grpc.aio.Channel, client: AsyncClient) -> None:
    """A caller in another language sends no ignore_labels: "O" is left out, as in the pipeline."""
    stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
    reply = await stub.ClassifyTokens(heads_pb2.ClassifyTokensRequest(model=VARIED, inputs=TEXTS))
    every = await client.classify_tokens(TEXTS, model=VARIED, ignore_labels=[])
    assert [[e.word for e in r.entities] for r in reply.results] == [
        [e.word for e in entities if e.label != "O"] for entities in every
    ]
    assert any(e.label == "O" for entities in every for e in entities)


async def test_cli(client: AsyncClient, target: str) -> None:
    text = "Tim Peters wrote the Zen of Python in Amsterdam."
    command = [sys.executable, "-m", "bertserve.app.cli", "classify-tokens", "--model", "roberta-ner", text, "Paris"]
    command += ["--aggregation", "average", "--all-labels", "--target", target]
    run = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    expected = await client.classify_tokens(
        [text, "Paris"], model="roberta-ner", aggregation="average", ignore_labels=[]
    )
    assert printed == [[_as_json(e) for e in entities] for entities in expected]

    command = [
        sys.executable,
        "-m",
        "bertserve.app.cli",
        "classify-tokens",
        "--model",
        "bert",
        "Paris",
        "--target",
        target,
    ]
    run = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.startswith("bertserve: UNIMPLEMENTED: model 'bert' cannot serve ClassifyTokens")


def _as_json(entity: Entity) -> dict[str, Any]:
    return {
        "label": entity.label,
        "score": entity.score,
        "word": entity.word,
        "start": entity.start,
        "end": entity.end,
        "index": entity.index,
    }
