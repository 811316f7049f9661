"""The `bertserve` command's client subcommands against the running test server."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertserve_client import AsyncClient

SEED_QUESTION = "What is machine learning?"
SEED_CONTEXT = (
    "Machine learning is a subset of artificial intelligence. It is widely for creating a variety of applications "
    "such as email filtering and computer vision"
)


async def bertserve(target: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the command in a thread: the test server shares this event loop and must keep serving."""
    command = [sys.executable, "-m", "bertserve.app.cli", *args, "--target", target]
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120)


async def test_answer_from_a_context_file(client: AsyncClient, target: str, tmp_path: Path) -> None:
    context = tmp_path / "context.txt"
    context.write_text(SEED_CONTEXT, encoding="utf-8")
    run = await bertserve(
        target,
        "answer",
        "--model",
        "spanbert-qa",
        "--question",
        SEED_QUESTION,
        "--context-file",
        str(context),
        "--top-k",
        "2",
    )
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    [expected] = await client.answer((SEED_QUESTION, SEED_CONTEXT), model="spanbert-qa", top_k=2)
    assert [(a["text"], a["start"], a["end"]) for a in printed] == [(a.text, a.start, a.end) for a in expected]
    assert [a["score"] for a in printed] == pytest.approx([a.score for a in expected], abs=1e-6)


async def test_embed_and_tokenize(client: AsyncClient, target: str) -> None:
    run = await bertserve(target, "embed", "--model", "minilm", "--normalize", "A man is playing a guitar.", "Hello")
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    expected = await client.embed(["A man is playing a guitar.", "Hello"], model="minilm", normalize=True)
    assert printed["model"] == "minilm" and printed["token_counts"] == expected.token_counts
    np.testing.assert_allclose(np.array(printed["embeddings"]), expected.embeddings, atol=1e-6)
    run = await bertserve(target, "tokenize", "--model", "roberta", "Paris was a city")
    assert run.returncode == 0, run.stderr
    [tokenization] = json.loads(run.stdout)
    [expected_tokens] = await client.tokenize("Paris was a city", model="roberta")
    assert tokenization["tokens"] == expected_tokens.tokens


async def test_errors_exit_non_zero_with_the_status(target: str) -> None:
    run = await bertserve(target, "embed", "--model", "no-such-model", "hello")
    assert run.returncode == 1
    assert run.stderr.startswith("bertserve: NOT_FOUND: no model named 'no-such-model'")
    run = await bertserve(target, "models")
    assert run.returncode == 0 and any(m["name"] == "minilm" for m in json.loads(run.stdout))


async def test_a_closed_pipe_ends_the_command_quietly(target: str) -> None:
    """`bertserve embed ... | head`: the reader leaves early, and the command stops without a traceback."""
    texts = [f"sentence number {i}" for i in range(64)]  # 64 x 384 numbers: far more JSON than a pipe holds
    command = shlex.join([sys.executable, "-m", "bertserve.app.cli", "embed", "--model", "minilm", *texts, "--target"])
    command += " " + shlex.quote(target)
    run = await asyncio.to_thread(
        subprocess.run,
        f"set -o pipefail; {command} | head -c 100",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert len(run.stdout) == 100
    assert run.stderr == ""
    assert run.returncode == 141  # as any writer that SIGPIPE ends
