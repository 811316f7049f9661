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


async def test_input_that_cannot_be_sent_is_a_usage_error_without_a_traceback(target: str, tmp_path: Path) -> None:
    """Numbers out of a request field's range, a context file that cannot be read, and text that
    is not UTF-8 exit 2 with one line saying why, before any call."""
    not_utf8 = tmp_path / "latin1.txt"
    not_utf8.write_bytes("caf\xe9".encode("latin-1"))
    cases = [
        (
            ["tokenize", "--truncate", "--max-length", "-5", "hi"],
            "argument --max-length: expected a whole number from 0 to 4294967295, got -5",
        ),
        (["tokenize", "--truncate", "--max-length", "99999999999", "hi"], "got 99999999999"),
        (
            ["answer", "--question", "q", "--context", "c", "--top-k", "-1"],
            "argument --top-k: expected a whole number from 0 to 4294967295, got -1",
        ),
        (["fill-mask", "--top-k", "x", "a [MASK]"], "argument --top-k: expected a whole number, got 'x'"),
        (["embed", "--timeout", "nan", "hi"], "argument --timeout: expected a number of seconds above 0, got nan"),
        (["embed", "--timeout", "0", "hi"], "argument --timeout: expected a number of seconds above 0, got 0"),
        (["answer", "--question", "q", "--context-file", str(tmp_path / "absent.txt")], "No such file or directory"),
        (["answer", "--question", "q", "--context-file", str(tmp_path)], "Is a directory"),
        (["answer", "--question", "q", "--context-file", str(not_utf8)], "bertserve: the input is not UTF-8 text"),
        (["tokenize", "\udcff\udcfe"], "bertserve: the input is not UTF-8 text"),
    ]
    for args, said in cases:
        run = await bertserve(target, *args)
        assert run.returncode == 2, (args, run.stderr)
        assert said in run.stderr and "Traceback" not in run.stderr, (args, run.stderr)


async def test_health_of_an_unknown_name_says_so(target: str) -> None:
    run = await bertserve(target, "health", "--service", "nope")
    assert run.returncode == 1
    assert run.stderr == "bertserve: NOT_FOUND: the server serves no model or service named 'nope'\n"
    run = await bertserve(target, "health", "--service", "minilm")
    assert (run.returncode, run.stdout) == (0, "SERVING\n")
