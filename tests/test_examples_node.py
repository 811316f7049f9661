"""The Node.js example client (examples/node) run against the test server, and what it printed checked
against the Python client: tensors decoded, UTF-16 offsets sliced by JavaScript, the stream's per-item
error, health, and the errors (NOT_FOUND; RESOURCE_EXHAUSTED with its retry hint)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from bertserve_client import AsyncClient, BertserveError, EmbedResult

from cancellation import MODELS, TOKEN, Setup, alive, serving, spare_entry

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "node"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = [
    pytest.mark.skipif(
        NODE is None or NPM is None, reason="the Node.js example needs node and npm on PATH (Node.js 18 or newer)"
    ),
    pytest.mark.timeout(600),  # npm ci downloads the locked packages when its cache lacks them
]

MODEL = "minilm"
QA_MODEL = "spanbert-qa"
TIGHT_MODEL = "minilm-tight"  # a queue of 4 sequences, one sequence per pass


async def run(command: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run in a thread: the test server shares this event loop and must keep serving."""
    done = await asyncio.to_thread(
        subprocess.run, command, cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{command[:2]} exited {done.returncode}:\n{done.stderr}\n{done.stdout[-2000:]}"
    return done.stdout


@pytest.fixture(scope="module")
async def installed() -> None:
    """The example's locked dependencies, installed."""
    assert NODE is not None and NPM is not None
    await run([NPM, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline", "--loglevel=error"])


@pytest.fixture(scope="module")
async def printed(installed: None, target: str) -> dict[str, Any]:
    """Run the example once against the test server, parse its JSON."""
    assert NODE is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("BERTSERVE_")}
    env.update(
        BERTSERVE_TARGET=target,
        BERTSERVE_MODEL=MODEL,
        BERTSERVE_QA_MODEL=QA_MODEL,
        BERTSERVE_TIGHT_MODEL=TIGHT_MODEL,
    )
    result: dict[str, Any] = json.loads(await run([NODE, "client.mjs"], env=env, timeout=180))
    return result


async def test_embeddings_are_the_python_clients(printed: dict[str, Any], client: AsyncClient) -> None:
    embed = printed["embed"]
    expected = await client.embed(embed["texts"], model=MODEL, pooling="mean", normalize=True)
    assert embed["model"] == MODEL
    assert embed["shape"] == list(expected.embeddings.shape) == [len(embed["texts"]), 384]
    assert embed["token_counts"] == expected.token_counts
    np.testing.assert_allclose(np.array(embed["embeddings"], dtype=np.float64), expected.embeddings, atol=1e-5)
    assert int(embed["usage"]["tokens"]) == sum(expected.token_counts)  # uint64 as a string (longs: String)


async def test_similarity_scores_are_the_python_clients(printed: dict[str, Any], client: AsyncClient) -> None:
    similarity = printed["similarity"]
    expected = await client.similarity(similarity["source_sentence"], similarity["sentences"], model=MODEL)
    assert similarity["model"] == MODEL and len(similarity["scores"]) == len(similarity["sentences"]) == 2
    np.testing.assert_allclose(similarity["scores"], list(expected), atol=1e-6)


async def test_utf16_offsets_slice_the_tokens_in_javascript(printed: dict[str, Any], client: AsyncClient) -> None:
    tokenize = printed["tokenize"]
    text = tokenize["text"]
    [by_point] = await client.tokenize(text, model=MODEL)
    [by_utf16] = await client.tokenize(text, model=MODEL, offset_unit="utf16")
    tokens = tokenize["tokens"]
    assert [t["token"] for t in tokens] == by_point.tokens
    assert [t["id"] for t in tokens] == by_point.ids
    assert [(t["start"], t["end"]) for t in tokens] == by_utf16.offsets
    shifted = 0
    for token, (start, end), special in zip(tokens, by_point.offsets, by_point.special_tokens_mask, strict=True):
        assert token["special"] == bool(special)
        assert token["piece"] == text[start:end], token  # JavaScript's slice is Python's code-point slice
        shifted += (token["start"], token["end"]) != (start, end)
    assert {t["piece"] for t in tokens} >= {"Zoë", "Zürich"}
    assert any(not t["piece"].isascii() and not t["piece"].isalpha() for t in tokens), "the emoji is a token"
    assert shifted >= 2, "tokens after the emoji have other offsets in UTF-16 than in code points"


async def test_answers_are_javascript_slices_of_the_context(printed: dict[str, Any], client: AsyncClient) -> None:
    answer = printed["answer"]
    context = answer["context"]
    [expected] = await client.answer((answer["question"], context), model=QA_MODEL, top_k=3, offset_unit="utf16")
    answers = answer["answers"]
    assert answer["model"] == QA_MODEL and answers
    assert [(a["text"], a["start"], a["end"]) for a in answers] == [(a.text, a.start, a.end) for a in expected]
    for a in answers:
        assert a["slice"] == a["text"] and a["matches"] is True
    [by_point] = await client.answer((answer["question"], context), model=QA_MODEL, top_k=3)
    assert [context[a.start : a.end] for a in by_point] == [a["slice"] for a in answers]


async def test_stream_answers_in_order_with_a_per_item_error(printed: dict[str, Any], client: AsyncClient) -> None:
    items = printed["stream"]
    assert [item["index"] for item in items] == [0, 1, 2]
    inputs = [item["inputs"] for item in items]
    assert inputs[1] == [""]
    python = [item async for item in client.embed_stream(inputs, model=MODEL, normalize=True)]
    error = python[1]
    assert isinstance(error, BertserveError) and error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert items[1]["error"] == {"code": 3, "code_name": "INVALID_ARGUMENT", "message": error.message}
    for i in (0, 2):
        expected = python[i]
        assert isinstance(expected, EmbedResult) and "error" not in items[i]
        assert items[i]["model"] == MODEL and items[i]["shape"] == [len(inputs[i]), 384]
        np.testing.assert_allclose(np.array(items[i]["embeddings"]), expected.embeddings, atol=1e-5)


async def test_health_is_serving(printed: dict[str, Any]) -> None:
    assert printed["health"] == {"": "SERVING", MODEL: "SERVING"}


async def test_not_found_is_the_python_clients(printed: dict[str, Any], client: AsyncClient) -> None:
    with pytest.raises(BertserveError) as info:
        await client.embed("hello", model="no-such-model")
    assert info.value.code is grpc.StatusCode.NOT_FOUND
    assert printed["errors"]["not_found"] == {"code": 5, "code_name": "NOT_FOUND", "message": info.value.message}


async def test_a_burst_is_refused_with_a_retry_hint(printed: dict[str, Any]) -> None:
    burst = printed["errors"]["resource_exhausted"]
    assert burst["model"] == TIGHT_MODEL and burst["other_errors"] == []
    assert burst["refused"] >= 1 and burst["served"] >= 1
    assert burst["refused"] + burst["served"] == burst["calls"]
    refusal = burst["first_refusal"]
    assert refusal["code"] == 8 and refusal["code_name"] == "RESOURCE_EXHAUSTED"
    assert refusal["message"].startswith(f"model '{TIGHT_MODEL}' is at capacity: ")
    assert isinstance(refusal["retry_after_ms"], int) and refusal["retry_after_ms"] > 0
    if refusal["grpc_retry_pushback_ms"] is not None:  # gRPC's own hint, where the server sends it
        assert refusal["grpc_retry_pushback_ms"] > 0
    assert burst["retried"]["served"] is True, burst["retried"]  # after waiting as the hint said


async def test_an_unknown_enum_name_is_caught_before_sending(printed: dict[str, Any]) -> None:
    pitfall = printed["enum_pitfall"]
    assert pitfall["sent"] == "POOLING_AVERAGE"
    assert pitfall["server_would_see"] == "POOLING_UNSPECIFIED"  # protobufjs dropped the name without a word
    assert pitfall["known_names"] == ["POOLING_UNSPECIFIED", "POOLING_CLS", "POOLING_MEAN", "POOLING_POOLER"]
    assert '"POOLING_AVERAGE" is not one of' in pitfall["checked_rejects"]


async def test_calls_cut_by_grpc_js_leave_the_server_serving(
    installed: None, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """cancel.mjs cuts calls as grpc-js does (its cancel() sends RST_STREAM at once, and closing a
    client tears its connection down), against a server in a child process with the access log,
    metrics, tracing and token auth on."""
    assert NODE is not None
    async with serving(Setup(), tiny_models, tmp_path) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BERTSERVE_")}
        env.update(
            BERTSERVE_TARGET=server.target,
            BERTSERVE_MODEL="minilm",
            BERTSERVE_QA_MODEL="qa",
            BERTSERVE_ENTRY=spare_entry(tiny_models, "loaded-by-node"),
            BERTSERVE_MODELS=",".join(MODELS),
            BERTSERVE_TOKEN=TOKEN,
        )
        result = json.loads(await run([NODE, "cancel.mjs"], env=env, timeout=300))
        server.check_alive("the Node.js cancels")
        await alive(server.stubs)
    cut = {"CANCELLED"}
    assert result["cases"] == {
        "stream_before_first_message": ["CANCELLED"] * 3,
        "stream_mid_stream": ["CANCELLED"] * 3,
        "stream_after_answers": ["CANCELLED"] * 3,
        "stream_mid_pass": ["CANCELLED"] * 3,
        "unary_at_once": ["CANCELLED"] * 3,
        "unary_mid_pass": ["CANCELLED"] * 3,
        "unary_deadline": ["DEADLINE_EXCEEDED"] * 3,
        "answer_mid_pass": ["CANCELLED"] * 3,
        # The first load is cut; the next two find the model it went on loading.
        "load_mid_load": result["cases"]["load_mid_load"],
        "client_closed_mid_stream": ["CANCELLED"] * 3,
    }
    assert set(result["cases"]["load_mid_load"]) <= cut | {"ALREADY_EXISTS"}, result["cases"]
    assert result["after"] == "OK"
    assert result["health"] == {"": "SERVING", **dict.fromkeys(MODELS, "SERVING")}
    assert not (found := server.tracebacks()), "\n---\n".join(found)
